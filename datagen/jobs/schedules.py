"""Cron schedules: parsing, the next fire time in the schedule's zone, misfire and overlap rules.

Pure functions over datetimes; the scheduler (datagen/jobs/scheduler.py) applies them to stored
schedules. All instants are aware UTC datetimes; wall-clock times exist only inside this module.

DST: cron fields are matched against the wall clock of the schedule's IANA zone. Each wall-clock
slot fires at most once:
- spring forward: a slot inside the gap (02:30 when 02:00 jumps to 03:00) does not exist; it fires
  once, shifted forward by the gap (PEP 495's fold=0 reading: 03:30);
- fall back: a slot in the repeated hour (01:30 seen twice) fires once, at its first occurrence.
Fire times always increase strictly, so a shifted slot that lands on or before one already
passed is dropped rather than fired twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from datagen.config import DEFAULT_QUEUE
from datagen.errors import InputError

MISFIRE = ("skip", "run_once", "catch_up")
OVERLAP = ("skip", "queue", "replace")
DEFAULT_MISFIRE = "skip"
DEFAULT_OVERLAP = "skip"
# A slot found due later than this (scheduler down, machine asleep) is a misfire; the scheduler
# polls far more often than this, so an on-time slot is never judged late.
MISFIRE_GRACE = timedelta(seconds=60)
# catch_up:N is capped so a long outage cannot flood the queue; slots looked at per tick, too.
MAX_CATCH_UP = 100
MAX_SLOTS_PER_TICK = 1000


class ScheduleError(InputError):
    """A bad cron expression, zone or policy: refused when the schedule is created."""


def parse_cron(expr: str) -> str:
    expr = " ".join(expr.split())
    # Five fields only: croniter also takes a seconds field, which a cron line never has.
    if len(expr.split(" ")) != 5:
        raise ScheduleError(f"bad cron expression {expr!r}: want 5 fields, e.g. '0 2 * * *' (minute hour day month weekday)")
    if not croniter.is_valid(expr):
        raise ScheduleError(f"bad cron expression {expr!r}: a field is out of range or malformed")
    try:  # valid fields can still name no date at all (the 31st of February)
        croniter(expr, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        raise ScheduleError(f"bad cron expression {expr!r}: it never fires") from None
    return expr


def parse_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {name!r}: use an IANA name such as Asia/Shanghai or UTC") from None


@dataclass(frozen=True)
class Misfire:
    policy: str  # skip | run_once | catch_up
    n: int = 1  # catch_up: how many of the missed slots to run

    def __str__(self) -> str:
        return f"catch_up:{self.n}" if self.policy == "catch_up" else self.policy


def parse_misfire(text: str) -> Misfire:
    name, _, n = text.strip().partition(":")
    if name not in MISFIRE or (name == "catch_up") != bool(n):
        raise ScheduleError(f"bad --misfire {text!r}: use skip, run_once or catch_up:N")
    if not n:
        return Misfire(name)
    if not n.isdigit() or not 1 <= int(n) <= MAX_CATCH_UP:
        raise ScheduleError(f"bad --misfire {text!r}: N must be 1-{MAX_CATCH_UP}")
    return Misfire(name, int(n))


def parse_overlap(text: str) -> str:
    if text not in OVERLAP:
        raise ScheduleError(f"bad --overlap {text!r}: use skip, queue or replace")
    return text


def _as_utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def next_after(cron: str, tz: str, after: datetime) -> datetime:
    """The first fire instant (UTC) strictly after `after`."""
    zone = parse_zone(tz)
    after = _as_utc(after)
    # Walk wall-clock times (naive, so croniter sees no DST) from the wall time of `after`.
    wall = after.astimezone(zone).replace(tzinfo=None)
    it = croniter(cron, wall)
    while True:
        nxt = it.get_next(datetime)
        instant = nxt.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
        if instant > after:
            return instant


def slots_between(cron: str, tz: str, first: datetime, now: datetime) -> list[datetime]:
    """Fire instants from `first` (itself a fire instant) up to `now`, oldest first, at most MAX_SLOTS_PER_TICK."""
    out, t, limit = [], _as_utc(first), MAX_SLOTS_PER_TICK
    now = _as_utc(now)
    while t <= now and len(out) < limit:
        out.append(t)
        t = next_after(cron, tz, t)
    return out


@dataclass(frozen=True)
class Plan:
    fire: list[datetime]  # slots to submit as jobs, oldest first
    missed: list[tuple[datetime, str]]  # slots not run, with the reason stored for each


def plan_due(due: list[datetime], now: datetime, misfire: Misfire, *, final: bool = True) -> Plan:
    """Which of the due slots (oldest first) run, by the misfire policy; the rest are missed.

    `final` is False for a batch of a long outage that more due slots follow: none of it runs.
    """
    now = _as_utc(now)
    if not final:
        fire = []
    elif misfire.policy == "skip":
        fire = [t for t in due if now - t <= MISFIRE_GRACE][-1:]
    elif misfire.policy == "run_once":
        fire = due[-1:]
    else:
        fire = due[-misfire.n:]
    late = [t for t in due if t not in fire]
    reason = f"missed: due {{ago}} ago while no scheduler ran (misfire={misfire})"
    return Plan(fire, [(t, reason.format(ago=_ago(now - t))) for t in late])


def _ago(d: timedelta) -> str:
    s = int(d.total_seconds())
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"


def local_time(instant: datetime, tz: str) -> str:
    """An instant as the schedule's wall clock, e.g. '2026-03-08 03:30 EDT'."""
    return _as_utc(instant).astimezone(parse_zone(tz)).strftime("%Y-%m-%d %H:%M %Z")


# --- operations: what `datagen schedule ...` and the API call ---------------------------------


def create(engine, name: str, *, cron: str, tz: str = "UTC", job: list[str], misfire: str = DEFAULT_MISFIRE,
           overlap: str = DEFAULT_OVERLAP, queue: str = DEFAULT_QUEUE, now: datetime | None = None):
    """Validate everything a 2 a.m. firing would trip on, then store the schedule."""
    from datagen.jobs import queue as jobs_queue
    from datagen.storage import schedules as store

    if not name.strip() or name.isdigit() or len(name) > 100 or "/" in name:
        raise ScheduleError(f"bad schedule name {name!r}: 1-100 characters, no '/', not only digits (ids are)")
    cron = parse_cron(cron)
    parse_zone(tz)
    misfire = str(parse_misfire(misfire))
    overlap = parse_overlap(overlap)
    if not job:
        raise ScheduleError("no job given: add it after --, e.g. -- generate --api chat -n 100 --run nightly")
    kind, args = job[0], list(job[1:])
    jobs_queue.validate(kind, args)
    first = next_after(cron, tz, now or datetime.now(timezone.utc))
    return store.add_schedule(engine, name, cron=cron, tz=tz, kind=kind, args=args, queue=queue, misfire=misfire,
                              overlap=overlap, next_fire_at=first)


def pause(engine, name: str):
    from datagen.storage import schedules as store

    sch = store.get_schedule(engine, name)
    store.set_paused(engine, sch.id, True)
    return store.get_schedule(engine, str(sch.id))


def resume(engine, name: str, now: datetime | None = None):
    """Slots that fell inside the pause are not run: the next one is computed from now."""
    from datagen.storage import schedules as store

    sch = store.get_schedule(engine, name)
    store.set_paused(engine, sch.id, False, next_after(sch.cron, sch.tz, now or datetime.now(timezone.utc)))
    return store.get_schedule(engine, str(sch.id))


def run_now(engine, name: str, now: datetime | None = None):
    """Queue the schedule's job at once, outside its slots (no unique key: every click is a job)."""
    from datagen.jobs import queue as jobs_queue
    from datagen.storage import schedules as store

    sch = store.get_schedule(engine, name)
    return jobs_queue.submit(engine, sch.kind, store.args_of(sch), queue=sch.queue, schedule_id=sch.id,
                             scheduled_for=now or datetime.now(timezone.utc))


def remove(engine, name: str) -> None:
    from datagen.storage import schedules as store

    store.remove_schedule(engine, store.get_schedule(engine, name).id)
