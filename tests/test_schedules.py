"""Cron schedules: DST in the schedule's zone, misfire and overlap rules, two schedulers, the CLI.

The scheduler is driven by explicit instants (`tick(engine, now)`), the same function the
`datagen scheduler` loop calls with its clock, over a real SQLite file.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime, timedelta, timezone

import pytest

from conftest import core_cli, core_env, core_one_line_error
from test_postgres import core_pg_url  # noqa: F401  (fixture)
from datagen.errors import InputError
from datagen.jobs import schedules
from datagen.jobs.schedules import next_after, parse_misfire, plan_due

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


def _day(cron: str, start: datetime, end: datetime) -> list[datetime]:
    out, t = [], start - timedelta(seconds=1)
    while (t := next_after(cron, NY, t)) < end:
        out.append(t)
    return out


def test_fall_back_interval_slots_follow_real_time():
    """The 25-hour day: */15 fires 100 times and hourly 25 (Vixie cron's rule for wildcard lines), no
    gap longer than the interval; a fixed-time slot in the repeated hour still fires once."""
    start, end = utc(2026, 11, 1, 4), utc(2026, 11, 2, 5)  # midnight EDT to midnight EST
    for cron, n, step in (("*/15 * * * *", 100, 15), ("0 * * * *", 25, 60)):
        got = _day(cron, start, end)
        assert len(got) == n and {b - a for a, b in zip(got, got[1:])} == {timedelta(minutes=step)}, cron
    hourly = [schedules.local_time(t, NY)[11:] for t in _day("0 * * * *", start, end)]
    assert hourly[:4] == ["00:00 EDT", "01:00 EDT", "01:00 EST", "02:00 EST"]
    assert [schedules.local_time(t, NY) for t in _day("30 1 * * *", start, end)] == ["2026-11-01 01:30 EDT"]


def test_spring_forward_gap_slots_are_not_lost():
    start, end = utc(2026, 3, 8, 5), utc(2026, 3, 9, 4)  # midnight EST to midnight EDT (23 hours)
    # Two fixed slots, one in the gap: both run that day (the gap's one when the gap ends).
    assert [schedules.local_time(t, NY)[11:] for t in _day("30 2,3 * * *", start, end)] == ["03:00 EDT", "03:30 EDT"]
    assert len(_day("*/15 * * * *", start, end)) == 92  # real time: the lost hour has no slots
    # Created or resumed at 03:10 EDT, after the gap but before the shifted 02:30 (03:30 EDT): it still runs.
    at_0310 = utc(2026, 3, 8, 7, 10)
    assert schedules.local_time(next_after("30 2 * * *", NY, at_0310), NY) == "2026-03-08 03:30 EDT"


def test_a_schedule_resumed_inside_the_shift_keeps_the_slot(engine):
    sch = schedules.create(engine, "gap", cron="30 2 * * *", tz=NY, job=["generate", "--api", "chat", "-n", "5", "--run", "g"],
                           now=utc(2026, 3, 8, 7, 10))
    assert schedules.local_time(sch.next_fire_at, NY) == "2026-03-08 03:30 EDT"
    schedules.pause(engine, "gap")
    assert schedules.local_time(schedules.resume(engine, "gap", now=utc(2026, 3, 8, 7, 20)).next_fire_at, NY) == "2026-03-08 03:30 EDT"


@pytest.mark.parametrize(
    "bad, msg",
    [("0 2 * *", "bad cron"), ("61 * * * *", "bad cron"), ("0 0 0 2 * *", "bad cron"), ("@reboot", "bad cron"), ("0 0 31 2 *", "never fires")],
)
def test_bad_cron_is_refused(bad, msg):
    with pytest.raises(InputError, match=msg):
        schedules.parse_cron(bad)


def test_bad_zone_and_policies_are_refused():
    with pytest.raises(InputError, match="unknown time zone"):
        schedules.parse_zone("Mars/Olympus")
    for bad in ("sometimes", "catch_up", "catch_up:0", "catch_up:x", "skip:2", "catch_up:1000"):
        with pytest.raises(InputError, match="bad --misfire"):
            parse_misfire(bad)
    with pytest.raises(InputError, match="bad --overlap"):
        schedules.parse_overlap("parallel")
    assert str(parse_misfire("catch_up:3")) == "catch_up:3"


def test_the_patterns_the_api_schema_states_are_the_checks():
    """Issue 19.5: the schema states the misfire and name rules as patterns; the checks accept exactly those."""
    def accepted(fn, value) -> bool:
        try:
            fn(value)
        except InputError:
            return False
        return True

    for text in ["skip", "run_once", " skip", "skip ", "catch_up", "catch_up:", "catch_up:05", "catch_up:٣",
                 *(f"catch_up:{n}" for n in range(0, 1001))]:
        assert accepted(parse_misfire, text) == bool(re.fullmatch(schedules.MISFIRE_PATTERN, text)), text
    for name in ["nightly", "42", " 42 ", "1 2", "٣", "a/b", "a\x00", " ", "", "n-1", "x" * 100]:
        refused_by_name = not re.fullmatch(schedules.NAME_PATTERN, name) or len(name) > 100
        with_name = lambda n: schedules.create(None, n, cron="bad", job=["export"])  # noqa: E731 - the name is checked first
        try:
            with_name(name)
        except InputError as exc:
            assert ("bad schedule name" in str(exc)) == refused_by_name, (name, str(exc))


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


# --- the REST API (a real app over a real SQLite file) ------------------------------------------


@pytest.fixture()
def api_client(tmp_path):
    from fastapi.testclient import TestClient

    from api.config import Settings
    from api.main import create_app
    from conftest import TOKEN
    from datagen import storage

    url = f"sqlite:///{tmp_path / 'api.db'}"
    storage.connect(url)  # serve opens an existing database only (as `datagen db upgrade` would make it)
    app = create_app(Settings(db_url=url, token=TOKEN, allowed_hosts=("testserver",)))
    with TestClient(app) as c:
        c.hdr = {"Authorization": f"Bearer {TOKEN}"}
        yield c
    storage.dispose_all()


NIGHTLY = {"name": "nightly", "cron": "30 2 * * *", "tz": "America/New_York",
           "job": ["generate", "--api", "chat", "-n", "50", "--run", "nightly"], "misfire": "catch_up:2", "overlap": "queue"}


def test_schedule_api(api_client):
    c = api_client
    assert c.post("/api/schedules", json=NIGHTLY).status_code == 401  # writes need the token
    r = c.post("/api/schedules", json=NIGHTLY, headers=c.hdr)
    assert r.status_code == 201, r.text
    sch = r.json()
    assert sch["next_fire_local"].endswith(("02:30 EST", "02:30 EDT")) and sch["args"][-1] == "nightly"
    assert c.post("/api/schedules", json=NIGHTLY, headers=c.hdr).status_code == 409
    for bad, msg in [({"cron": "0 2 * *"}, "bad cron"), ({"tz": "Mars/Base"}, "unknown time zone"),
                     ({"job": ["mine-bitcoin"]}, "mine-bitcoin"), ({"job": ["generate", "--no-such-option"]}, "no-such-option"),
                     ({"misfire": "often"}, "bad --misfire"), ({"overlap": "both"}, "bad --overlap"),
                     ({"name": "a/b"}, "bad schedule name"), ({"name": "42"}, "bad schedule name")]:
        r = c.post("/api/schedules", json={**NIGHTLY, "name": "x", **bad}, headers=c.hdr)
        assert r.status_code == 422 and msg in r.json()["detail"][0]["msg"], (bad, r.text)
    assert [s["name"] for s in c.get("/api/schedules").json()] == ["nightly"]

    assert c.post(f"/api/schedules/{sch['id']}/pause", headers=c.hdr).json()["paused"] is True
    resumed = c.post("/api/schedules/nightly/resume", headers=c.hdr).json()
    assert resumed["paused"] is False and resumed["next_fire_at"]
    job = c.post(f"/api/schedules/{sch['id']}/run-now", headers=c.hdr)
    assert job.status_code == 201
    got = c.get(f"/api/jobs/{job.json()['job_id']}").json()
    assert (got["state"], got["schedule"], got["kind"]) == ("queued", "nightly", "generate")
    assert c.delete("/api/schedules/nightly").status_code == 401
    assert c.delete("/api/schedules/nightly", headers=c.hdr).status_code == 204
    assert c.get("/api/schedules/nightly").status_code == 404
    # The job outlives its schedule in the history.
    assert c.get(f"/api/jobs/{job.json()['job_id']}").json()["state"] == "queued"

    paths = c.get("/openapi.json").json()["paths"]
    assert {"/api/schedules", "/api/schedules/{ref}/run-now", "/api/jobs", "/api/jobs/{job_id}/cancel"} <= set(paths)


def test_schedule_cli(tmp_path):
    """The commands a user types (the API test covers every refusal; here the CLI's one-line form)."""
    env = core_env(DATAGEN_DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}")
    job = ["--", "generate", "--api", "chat", "-n", "5", "--run", "n1"]
    for args, msg in [
        (["--cron", "0 25 * * *", "--tz", "Asia/Shanghai", *job], "bad cron"),
        (["--cron", "0 2 * * *", "--", "frobnicate"], "unknown job kind 'frobnicate'"),
        (["--cron", "0 2 * * *", "--", "generate", "-n", "many"], "--num-instructions"),
    ]:
        line = core_one_line_error(core_cli("schedule", "add", "n1", *args, env=env))
        assert msg in line, (args, line)
    ok = core_cli("schedule", "add", "n1", "--cron", "0 2 * * *", "--tz", "Asia/Shanghai", *job, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "next=" in ok.stdout and "02:00 CST" in ok.stdout
    queued = core_cli("schedule", "run-now", "n1", env=env)
    assert re.fullmatch(r"queued job \d+\n", queued.stdout), queued.stderr
    listed = core_cli("schedule", "list", env=env)
    assert "n1" in listed.stdout and "generate --api chat -n 5 --run n1" in listed.stdout
    assert f"last: job {queued.stdout.split()[-1]} queued" in listed.stdout
    assert core_cli("schedule", "remove", "n1", env=env).returncode == 0
    assert "no schedule 'n1'" in core_one_line_error(core_cli("schedule", "pause", "n1", env=env))


# --- the scheduler over a real SQLite file ----------------------------------------------------


@pytest.fixture()
def engine(tmp_path):
    from datagen import storage

    yield storage.connect(f"sqlite:///{tmp_path / 'sched.db'}")
    storage.dispose_all()


@pytest.fixture()
def pg_engine(core_pg_url):  # noqa: F811
    from datagen import storage

    yield storage.connect(core_pg_url)
    storage.dispose_all()


def jobs_of(engine, name):
    from datagen.jobs import queue
    from datagen.storage import schedules as store

    sid = store.get_schedule(engine, name).id
    return sorted(queue.list_jobs(engine, schedule_id=sid, limit=10_000), key=lambda j: (j.scheduled_for, j.id))


def every_minute(engine, name="m", **kw):
    return schedules.create(engine, name, cron="* * * * *", tz="Asia/Shanghai",
                            job=["generate", "--api", "chat", "-n", "5", "--run", name], now=utc(2025, 12, 2, 10, 0, 30), **kw)


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_two_schedulers_never_fire_a_slot_twice(db, request):
    from datagen.jobs.scheduler import tick

    engine = request.getfixturevalue("engine" if db == "sqlite" else "pg_engine")

    every_minute(engine, overlap="queue")
    instants = [utc(2025, 12, 2, 10, 1, 0) + timedelta(seconds=7 * i) for i in range(40)]  # slots 10:01 .. 10:05
    errors = []

    def scheduler():
        try:
            for t in instants:
                tick(engine, t)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=scheduler) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    slots = [j.scheduled_for for j in jobs_of(engine, "m")]
    assert [s.replace(tzinfo=UTC) if s.tzinfo is None else s for s in slots] == [utc(2025, 12, 2, 10, m) for m in range(1, 6)]
    assert {j.state for j in jobs_of(engine, "m")} == {"queued"}


def test_overlap_skip_and_replace_are_stored_with_reasons(engine):
    from datagen.jobs.scheduler import tick

    every_minute(engine, "s", overlap="skip")
    every_minute(engine, "r", overlap="replace")
    tick(engine, utc(2025, 12, 2, 10, 1, 1))
    tick(engine, utc(2025, 12, 2, 10, 2, 1))
    s1, s2 = jobs_of(engine, "s")
    assert (s1.state, s2.state) == ("queued", "skipped")
    assert f"job {s1.id}" in s2.exit_message and "overlap=skip" in s2.exit_message
    r1, r2 = jobs_of(engine, "r")
    assert (r1.state, r2.state) == ("cancelled", "queued")
    assert r1.exit_message == "replaced by the schedule's next slot (overlap=replace)"


def test_overlap_replace_says_why_it_stopped_a_running_job(engine):
    from datagen.jobs import queue
    from datagen.jobs.scheduler import tick

    every_minute(engine, "r", overlap="replace")
    tick(engine, utc(2025, 12, 2, 10, 1, 1))
    job, attempt = queue.claim(engine, "w:1", ["default"])
    tick(engine, utc(2025, 12, 2, 10, 2, 1))  # flags the running job; its worker stops it and records the stop
    queue.finish(engine, job, attempt, attempt_state="cancelled", job_state="cancelled", message="cancelled")
    first, _ = queue.get(engine, job.id)
    assert first.state == "cancelled" and first.exit_message == "replaced by the schedule's next slot (overlap=replace)"


def test_misfire_after_downtime(engine):
    from datagen.jobs.scheduler import tick

    every_minute(engine, "skip")
    every_minute(engine, "once", misfire="run_once")
    every_minute(engine, "two", misfire="catch_up:2")
    tick(engine, utc(2025, 12, 2, 10, 10, 30))  # down since 10:00:30: slots 10:01 .. 10:10, the newest 30 s old
    for name, fired in (("skip", 1), ("once", 1), ("two", 2)):
        jobs = jobs_of(engine, name)
        # The missed slots are one row for the gap, with how many and from when to when.
        assert [(j.state, j.slots) for j in jobs] == [("skipped", 10 - fired)] + [("queued", 1)] * fired
        assert jobs[0].exit_message.startswith("missed: no scheduler ran (misfire=")
        assert f"[{10 - fired} slots, 2025-12-02 18:01 CST to " in jobs[0].exit_message
    tick(engine, utc(2025, 12, 2, 10, 30, 30))  # down again for 20 min: skip runs none of it
    got = [(j.state, j.slots) for j in jobs_of(engine, "skip")]
    # a new gap (the fired 10:10 lies between), then 10:30, on time but its predecessor still queued
    assert got == [("skipped", 9), ("queued", 1), ("skipped", 19), ("skipped", 1)], got
    assert "overlap=skip" in jobs_of(engine, "skip")[-1].exit_message


def test_paused_schedules_do_not_fire(engine):
    from datagen.jobs.scheduler import tick

    every_minute(engine, "p")
    schedules.pause(engine, "p")
    tick(engine, utc(2025, 12, 2, 10, 5, 1))
    assert jobs_of(engine, "p") == []
    sch = schedules.resume(engine, "p", now=utc(2025, 12, 2, 10, 5, 1))
    assert sch.next_fire_at == utc(2025, 12, 2, 10, 6)  # the paused slots are not run
    tick(engine, utc(2025, 12, 2, 10, 6, 2))
    assert len(jobs_of(engine, "p")) == 1


def test_jobs_api(api_client):
    c = api_client
    body = {"kind": "generate", "args": ["--api", "chat", "-n", "5", "--run", "hand"]}
    assert c.post("/api/jobs", json=body).status_code == 401
    assert c.post("/api/jobs", json={**body, "kind": "mine"}, headers=c.hdr).status_code == 422
    r = c.post("/api/jobs", json={**body, "args": ["--db", "sqlite:///elsewhere.db"]}, headers=c.hdr)
    assert r.status_code == 422 and "--db" in r.json()["detail"][0]["msg"]
    job = c.post("/api/jobs", json=body, headers=c.hdr).json()
    assert (job["state"], job["run"], job["attempts"], job["schedule"]) == ("queued", "hand", [], None)
    assert [j["id"] for j in c.get("/api/jobs", params={"state": "queued"}).json()] == [job["id"]]
    assert c.get("/api/jobs", params={"state": "bogus"}).status_code == 422
    assert c.get("/api/jobs", params={"schedule": "none-such"}).status_code == 404
    assert c.get("/api/jobs/999").status_code == 404
    pasted = c.post("/api/jobs", json={**body, "args": ["--model", "sk-proj-abcdefghijklmnop123456", "--run", "k"]}, headers=c.hdr)
    assert pasted.json()["args"] == ["--model", "***", "--run", "k"]  # a key pasted into options is never shown back
    c.post(f"/api/jobs/{pasted.json()['id']}/cancel", headers=c.hdr)
    assert c.post(f"/api/jobs/{job['id']}/cancel").status_code == 401
    done = c.post(f"/api/jobs/{job['id']}/cancel", headers=c.hdr).json()
    assert done["state"] == "cancelled" and done["message"]


def test_overlap_queue_runs_a_schedules_jobs_one_at_a_time(engine):
    from datagen.jobs import queue
    from datagen.jobs.scheduler import tick

    every_minute(engine, "q", overlap="queue")
    tick(engine, utc(2025, 12, 2, 10, 1, 1))
    first, attempt = queue.claim(engine, "w:1", ["default"])
    tick(engine, utc(2025, 12, 2, 10, 2, 1))
    tick(engine, utc(2025, 12, 2, 10, 3, 1))
    assert [j.state for j in jobs_of(engine, "q")] == ["running", "queued", "queued"]
    assert queue.claim(engine, "w:2", ["default"]) is None  # the next slot waits for the running one
    queue.submit(engine, "generate", ["--api", "chat", "-n", "5", "--run", "other"])
    other, _ = queue.claim(engine, "w:2", ["default"])  # jobs outside the schedule are not held up
    assert other.schedule_id is None
    queue.finish(engine, first, attempt, attempt_state="succeeded", job_state="succeeded")
    second, _ = queue.claim(engine, "w:2", ["default"])
    assert second.scheduled_for == jobs_of(engine, "q")[1].scheduled_for  # slot order


def test_a_long_outage_is_worked_through_in_batches_and_runs_once(engine, monkeypatch):
    from datagen.jobs import scheduler

    monkeypatch.setattr(schedules, "MAX_SLOTS_PER_TICK", 10)
    every_minute(engine, "long", misfire="run_once")
    now = utc(2025, 12, 2, 10, 25, 30)  # 25 slots due: three batches of at most 10, one row for the gap
    for _ in range(3):
        scheduler.tick(engine, now)
    jobs = jobs_of(engine, "long")
    assert [(j.state, j.slots) for j in jobs] == [("skipped", 24), ("queued", 1)]
    assert jobs[0].scheduled_until.replace(tzinfo=UTC) == utc(2025, 12, 2, 10, 24)


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_a_week_without_a_scheduler_is_one_row(db, request):
    """Seven days of missed every-minute slots: one `skipped` row for the gap (it was 10,088 rows,
    written at 24 rows/s, long enough to make another schedule's slot late), worked through in one tick."""
    import time as _time

    from datagen.jobs.scheduler import tick

    engine = request.getfixturevalue("engine" if db == "sqlite" else "pg_engine")
    every_minute(engine, "week")
    schedules.create(engine, "daily", cron="0 * * * *", tz="UTC", job=["generate", "--api", "chat", "-n", "5", "--run", "d"],
                     now=utc(2025, 12, 9, 9, 30))
    t0 = _time.monotonic()
    res = tick(engine, utc(2025, 12, 9, 10, 0, 20))  # 7 days of every-minute slots, and the other schedule on time
    took = _time.monotonic() - t0
    jobs = jobs_of(engine, "week")
    assert [(j.state, j.slots) for j in jobs] == [("skipped", 7 * 1440 - 1), ("queued", 1)], [(j.state, j.slots) for j in jobs]
    assert "[10,079 slots, 2025-12-02 18:01 CST to 2025-12-09 17:59 CST]" in jobs[0].exit_message
    assert [j.state for j in jobs_of(engine, "daily")] == ["queued"] and len(res.fired) == 2
    print(f"\nFIGURE a week of missed every-minute slots ({db}): one tick, {took:.1f} s, 2 rows")
    assert took < 30
