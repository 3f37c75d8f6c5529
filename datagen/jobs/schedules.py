"""Cron schedules: parsing, the next fire time in the schedule's zone, misfire and overlap rules.

Pure functions over datetimes; the scheduler (datagen/jobs/scheduler.py) applies them to stored
schedules. All instants are aware UTC datetimes; wall-clock times exist only inside this module.

DST: cron fields are matched against the wall clock of the schedule's IANA zone, by Vixie cron's
rules (see _instants): fixed-time slots fire once per wall-clock slot (a gap slot shifted forward,
a repeated-hour slot at its first occurrence); interval slots (minute or hour field starting with
'*') follow real time (none in the gap, both passes of the repeated hour). Fire times always
increase strictly, so a slot that lands on an instant already fired is not fired twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from datagen.config import DEFAULT_QUEUE
from datagen.errors import InputError
from datagen.storage.models import unstorable

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
# The rules as patterns (the API's schema states them; the checks below apply them): a name needs a
# character that is not an ASCII digit or a space (all-digit refs are ids) and has no '/' or NUL.
NAME_PATTERN = r"^[^/\x00]*[^/\x00\s0-9][^/\x00]*$"
MISFIRE_PATTERN = r"^(skip|run_once|catch_up:([1-9][0-9]?|100))$"  # N in 1..MAX_CATCH_UP (tests hold the two together)




def parse_cron(expr: str) -> str:
    expr = " ".join(expr.split())
    # Five fields only: croniter also takes a seconds field, which a cron line never has.
    if len(expr.split(" ")) != 5:
        raise InputError(f"bad cron expression {expr!r}: want 5 fields, e.g. '0 2 * * *' (minute hour day month weekday)")
    if not croniter.is_valid(expr):
        raise InputError(f"bad cron expression {expr!r}: a field is out of range or malformed")
    try:  # valid fields can still name no date at all (the 31st of February)
        croniter(expr, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        raise InputError(f"bad cron expression {expr!r}: it never fires") from None
    return expr


def parse_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(f"unknown time zone {name!r}: use an IANA name such as Asia/Shanghai or UTC") from None


@dataclass(frozen=True)
class Misfire:
    policy: str  # skip | run_once | catch_up
    n: int = 1  # catch_up: how many of the missed slots to run

    def __str__(self) -> str:
        return f"catch_up:{self.n}" if self.policy == "catch_up" else self.policy


def parse_misfire(text: str) -> Misfire:
    if not re.fullmatch(MISFIRE_PATTERN, text):
        name, _, n = text.partition(":")
        if name == "catch_up" and n.isascii() and n.isdigit():
            raise InputError(f"bad --misfire {text!r}: N must be 1-{MAX_CATCH_UP}")
        raise InputError(f"bad --misfire {text!r}: use skip, run_once or catch_up:N")
    name, _, n = text.partition(":")
    if not n:
        return Misfire(name)
    if not 1 <= int(n) <= MAX_CATCH_UP:
        raise InputError(f"bad --misfire {text!r}: N must be 1-{MAX_CATCH_UP}")
    return Misfire(name, int(n))


def parse_overlap(text: str) -> str:
    if text not in OVERLAP:
        raise InputError(f"bad --overlap {text!r}: use skip, queue or replace")
    return text


def _as_utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def next_after(cron: str, tz: str, after: datetime) -> datetime:
    """The first fire instant (UTC) strictly after `after`."""
    zone = parse_zone(tz)
    after = _as_utc(after)
    fast = _next_plain(cron, zone, after)
    # Away from a DST change (none within a few hours either side) wall time is real time shifted
    # by a constant: the plain walk is exact. Near one, every wall slot's instants are weighed.
    if not _changes(zone, after - _NEAR, fast + _NEAR):
        return fast
    return _next_near_change(cron, zone, after)


_NEAR = timedelta(hours=3)  # more than any DST change moves a clock


def _next_plain(cron: str, zone: ZoneInfo, after: datetime) -> datetime:
    # Walk wall-clock times (naive, so croniter sees no DST) from the wall time of `after`.
    it = croniter(cron, after.astimezone(zone).replace(tzinfo=None))
    while True:
        instant = it.get_next(datetime).replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
        if instant > after:
            return instant


def _changes(zone: ZoneInfo, start: datetime, end: datetime) -> bool:
    """Whether the zone's UTC offset changes between two instants (checked hourly: changes are months apart)."""
    first, t = start.astimezone(zone).utcoffset(), start
    while t < end:
        t = min(t + timedelta(hours=1), end)
        if t.astimezone(zone).utcoffset() != first:
            return True
    return False


def _is_interval(cron: str) -> bool:
    """Vixie cron's "wildcard" job: minute or hour field starts with '*' (every N minutes, hourly...).
    Such slots follow real time across DST changes; fixed-time ones (`30 1 * * *`) follow the wall clock."""
    minute, hour = cron.split(" ")[:2]
    return minute.startswith("*") or hour.startswith("*")


def _instants(cron: str, zone: ZoneInfo, wall: datetime) -> list[datetime]:
    """When one wall-clock slot fires (UTC):
    - a normal time: once;
    - in the repeated fall-back hour: a fixed-time slot at its first occurrence, an interval slot at both;
    - in a spring-forward gap: an interval slot not at all (real time skips it), a fixed-time slot once,
      shifted forward by the gap (02:30 -> 03:30); if another slot of the line already fires then
      (`30 2,3 * * *`), at the moment the gap ends (03:00) instead, so the day still has both.
    """
    early = wall.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
    late = wall.replace(tzinfo=zone, fold=1).astimezone(timezone.utc)
    if early == late:
        return [early]
    if early < late:  # the repeated hour
        return [early, late] if _is_interval(cron) else [early]
    if _is_interval(cron):  # a gap: `early` is the fold=0 reading, shifted forward by the gap
        return []
    if not croniter.match(cron, early.astimezone(zone).replace(tzinfo=None)):
        return [early]
    lo, hi = late, early  # the change is between: find its instant (to the second)
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(zone).utcoffset() == late.astimezone(zone).utcoffset():
            lo = mid
        else:
            hi = mid
    end_of_gap = hi.replace(microsecond=0) + (timedelta(seconds=1) if hi.microsecond else timedelta(0))
    return [] if croniter.match(cron, end_of_gap.astimezone(zone).replace(tzinfo=None)) else [end_of_gap]


def _next_near_change(cron: str, zone: ZoneInfo, after: datetime) -> datetime:
    # Slots whose wall time is up to _NEAR before `after` may fire after it (a shifted gap slot, the
    # second pass of the repeated hour): start there, keep the earliest instant after `after`, and
    # stop once wall times are far enough past it that nothing earlier can come.
    it = croniter(cron, (after - _NEAR).astimezone(zone).replace(tzinfo=None))
    best = None
    for _ in range(200_000):
        wall = it.get_next(datetime)
        for instant in _instants(cron, zone, wall):
            if instant > after and (best is None or instant < best):
                best = instant
        if best is not None and wall.replace(tzinfo=zone).astimezone(timezone.utc) > best + _NEAR:
            return best
    raise InputError(f"cron expression {cron!r}: no fire time found")  # not reached for a valid line


def slots_between(cron: str, tz: str, first: datetime, now: datetime) -> list[datetime]:
    """Fire instants from `first` (itself a fire instant) up to `now`, oldest first, at most MAX_SLOTS_PER_TICK."""
    out, t, limit = [], _as_utc(first), MAX_SLOTS_PER_TICK
    now = _as_utc(now)
    zone = parse_zone(tz)
    if t <= now and not _changes(zone, t - _NEAR, now + _NEAR):  # one walk of the wall clock (a long outage)
        it = croniter(cron, t.astimezone(zone).replace(tzinfo=None) - timedelta(seconds=1))
        while len(out) < limit:
            instant = it.get_next(datetime).replace(tzinfo=zone).astimezone(timezone.utc)
            if instant > now:
                break
            if instant >= t:
                out.append(instant)
        return out
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


# `{slot}` or `{slot:FORMAT}` (strftime, on the schedule's clock) in a job's arguments names what
# each slot makes: `--run 'nightly-{slot:%Y%m%d}'` starts a new run every night, where a fixed
# `--run nightly` would resume the same finished run and add nothing.
SLOT_FIELD = re.compile(r"\{slot(?::([^{}]*))?\}")
SLOT_DEFAULT_FORMAT = "%Y%m%d-%H%M"


def slot_args(args: list[str], slot: datetime, tz: str) -> list[str]:
    """The job's arguments for one slot, `{slot:FORMAT}` filled in with the slot's local time."""
    local = _as_utc(slot).astimezone(parse_zone(tz))
    return [SLOT_FIELD.sub(lambda m: local.strftime(m.group(1) or SLOT_DEFAULT_FORMAT), a) for a in args]


def local_time(instant: datetime, tz: str) -> str:
    """An instant as the schedule's wall clock, e.g. '2026-03-08 03:30 EDT'."""
    return _as_utc(instant).astimezone(parse_zone(tz)).strftime("%Y-%m-%d %H:%M %Z")


# --- operations: what `datagen schedule ...` and the API call ---------------------------------


def create(engine, name: str, *, cron: str, tz: str = "UTC", job: list[str], misfire: str = DEFAULT_MISFIRE,
           overlap: str = DEFAULT_OVERLAP, queue: str = DEFAULT_QUEUE, now: datetime | None = None):
    """Validate everything a 2 a.m. firing would trip on, then store the schedule."""
    from datagen.jobs import queue as jobs_queue
    from datagen.storage import schedules as store

    if len(name) > 100 or not re.fullmatch(NAME_PATTERN, name) or unstorable(name):
        raise InputError(f"bad schedule name {name!r}: 1-100 characters, no '/' or NUL, not only digits (ids are)")
    if not queue or unstorable(queue):
        raise InputError(f"bad queue name {queue!r}")
    cron = parse_cron(cron)
    parse_zone(tz)
    misfire = str(parse_misfire(misfire))
    overlap = parse_overlap(overlap)
    if not job:
        raise InputError("no job given: add it after --, e.g. -- generate --api chat -n 100 --run nightly")
    kind, args = job[0], list(job[1:])
    first = next_after(cron, tz, now or datetime.now(timezone.utc))
    jobs_queue.validate(kind, slot_args(args, first, tz))  # as the first slot will run it
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
    now = now or datetime.now(timezone.utc)
    return jobs_queue.submit(engine, sch.kind, slot_args(store.args_of(sch), now, sch.tz), queue=sch.queue,
                             schedule_id=sch.id, scheduled_for=now)


def remove(engine, name: str) -> None:
    from datagen.storage import schedules as store

    store.remove_schedule(engine, store.get_schedule(engine, name).id)
