"""Cron schedules: DST in the schedule's zone, misfire and overlap rules, two schedulers, the CLI.

The scheduler is driven by explicit instants (`tick(engine, now)`), the same function the
`datagen scheduler` loop calls with its clock, over a real SQLite file.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from conftest import core_cli, core_env, core_one_line_error
from datagen.jobs import schedules
from datagen.jobs.schedules import ScheduleError, next_after, parse_misfire, plan_due

UTC = timezone.utc
NY = "America/New_York"  # 2026: spring forward 03-08 02:00 -> 03:00, fall back 11-01 02:00 -> 01:00


def utc(*a) -> datetime:
    return datetime(*a, tzinfo=UTC)


def fires(cron: str, tz: str, start: datetime, n: int) -> list[datetime]:
    out, t = [], start
    for _ in range(n):
        t = next_after(cron, tz, t)
        out.append(t)
    return out


def test_daily_slot_in_the_zone_is_stored_as_utc():
    # 02:00 in Shanghai (UTC+8, no DST) is 18:00 UTC the day before.
    assert next_after("0 2 * * *", "Asia/Shanghai", utc(2026, 12, 2, 2)) == utc(2026, 12, 2, 18)
    assert schedules.local_time(utc(2026, 12, 2, 18), "Asia/Shanghai") == "2026-12-03 02:00 CST"


def test_spring_forward_runs_a_gap_slot_once():
    # 02:30 does not exist on 03-08: it runs once, shifted by the gap to 03:30 EDT; every other day 02:30.
    got = fires("30 2 * * *", NY, utc(2026, 3, 6, 12), 3)
    assert [schedules.local_time(t, NY) for t in got] == ["2026-03-07 02:30 EST", "2026-03-08 03:30 EDT", "2026-03-09 02:30 EDT"]
    # Every 30 minutes across the gap: strictly increasing, nothing fired twice.
    half = fires("*/30 * * * *", NY, utc(2026, 3, 8, 6), 4)
    assert half == sorted(set(half))
    assert [schedules.local_time(t, NY)[11:] for t in half] == ["01:30 EST", "03:00 EDT", "03:30 EDT", "04:00 EDT"]


def test_fall_back_runs_a_repeated_slot_once():
    # 01:30 happens twice on 11-01 (EDT, then EST): it runs at the first only.
    got = fires("30 1 * * *", NY, utc(2026, 10, 31, 12), 3)
    assert [schedules.local_time(t, NY) for t in got] == ["2026-11-01 01:30 EDT", "2026-11-02 01:30 EST", "2026-11-03 01:30 EST"]
    # From inside the second 01:xx hour, 01:30 is not fired again.
    assert next_after("30 1 * * *", NY, utc(2026, 11, 1, 6, 10)) == utc(2026, 11, 2, 6, 30)


@pytest.mark.parametrize(
    "bad, msg",
    [("0 2 * *", "bad cron"), ("61 * * * *", "bad cron"), ("0 0 0 2 * *", "bad cron"), ("@reboot", "bad cron")],
)
def test_bad_cron_is_refused(bad, msg):
    with pytest.raises(ScheduleError, match=msg):
        schedules.parse_cron(bad)


def test_bad_zone_and_policies_are_refused():
    with pytest.raises(ScheduleError, match="unknown time zone"):
        schedules.parse_zone("Mars/Olympus")
    for bad in ("sometimes", "catch_up", "catch_up:0", "catch_up:x", "skip:2", "catch_up:1000"):
        with pytest.raises(ScheduleError, match="bad --misfire"):
            parse_misfire(bad)
    with pytest.raises(ScheduleError, match="bad --overlap"):
        schedules.parse_overlap("parallel")
    assert str(parse_misfire("catch_up:3")) == "catch_up:3"


def test_misfire_policies():
    now = utc(2026, 12, 2, 10, 0, 30)
    due = [utc(2026, 12, 2, 9, m) for m in (56, 57, 58, 59)] + [utc(2026, 12, 2, 10, 0)]
    skip = plan_due(due, now, parse_misfire("skip"))
    assert skip.fire == [due[-1]] and [t for t, _ in skip.missed] == due[:-1]
    assert "misfire=skip" in skip.missed[0][1] and "4m ago" in skip.missed[0][1]
    # Down for an hour: skip runs nothing, run_once the newest, catch_up:2 the newest two.
    late = utc(2026, 12, 2, 11)
    assert plan_due(due, late, parse_misfire("skip")).fire == []
    assert plan_due(due, late, parse_misfire("run_once")).fire == [due[-1]]
    cu = plan_due(due, late, parse_misfire("catch_up:2"))
    assert cu.fire == due[-2:] and len(cu.missed) == 3
