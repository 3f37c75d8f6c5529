"""`datagen scheduler`: turn due schedule slots into queued jobs.

Every slot, fired or not, becomes one job row whose unique key is (schedule id, slot time): a
fired slot is a queued job, a skipped or missed one a `skipped` job carrying its reason. Two
schedulers running by mistake therefore can never fire one slot twice: the second insert of a
key is refused by the database, and the compare-and-set on `next_fire_at` lets only one of them
move the schedule on. A crash between the two steps is harmless for the same reason.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy.engine import Engine

from datagen import storage
from datagen.jobs import queue
from datagen.jobs import schedules as cron
from datagen.jobs.schedules import DEFAULT_TICK
from datagen.storage import schedules as store

log = logging.getLogger("datagen.scheduler")



class Clock:
    """Wall-clock UTC, optionally running `speed` times faster from its start.

    The fast clock exists for tests (`datagen scheduler --clock-speed 30`): the scheduler code is
    the same, only the instants it reads come sooner.
    """

    def __init__(self, speed: float = 1.0, start: datetime | None = None):
        self.speed = speed
        self.origin = start or datetime.now(timezone.utc)
        self.t0 = time.monotonic()

    def now(self) -> datetime:
        return self.origin + timedelta(seconds=(time.monotonic() - self.t0) * self.speed)


def slot_key(schedule_id: int, slot: datetime) -> str:
    return f"schedule:{schedule_id}:{slot.astimezone(timezone.utc).isoformat()}"


@dataclass
class TickResult:
    fired: list[int] = field(default_factory=list)  # job ids
    skipped: list[tuple[str, datetime, str]] = field(default_factory=list)  # (schedule, slot, reason)


def tick(engine: Engine, now: datetime) -> TickResult:
    """Fire every due slot of every active schedule once; return what was done (by this caller)."""
    out = TickResult()
    for sch in store.due_schedules(engine, now):
        try:
            _fire(engine, sch, now, out)
        except Exception:  # noqa: BLE001 - one broken schedule must not stop the others
            log.exception("schedule %s: tick failed", sch.name)
    return out


def _fire(engine: Engine, sch, now: datetime, out: TickResult) -> None:
    due = cron.slots_between(sch.cron, sch.tz, sch.next_fire_at, now)
    plan = cron.plan_due(due, now, cron.parse_misfire(sch.misfire))
    args = store.args_of(sch)
    for slot, reason in plan.missed:
        if queue.record_skipped(engine, sch.kind, args, queue=sch.queue, unique_key=slot_key(sch.id, slot),
                                schedule_id=sch.id, scheduled_for=slot, reason=reason):
            out.skipped.append((sch.name, slot, reason))
    for slot in plan.fire:
        key = slot_key(sch.id, slot)
        active = [j for j in queue.active_for_schedule(engine, sch.id) if j.unique_key != key]
        if active and sch.overlap == "skip":
            reason = f"skipped: job {active[0].id} of this schedule is still {active[0].state} (overlap=skip)"
            if queue.record_skipped(engine, sch.kind, args, queue=sch.queue, unique_key=key,
                                    schedule_id=sch.id, scheduled_for=slot, reason=reason):
                out.skipped.append((sch.name, slot, reason))
            continue
        if active and sch.overlap == "replace":
            for j in active:
                queue.cancel(engine, j.id, reason=f"replaced by the {cron.local_time(slot, sch.tz)} slot (overlap=replace)")
        # overlap=queue: the new job waits in the queue; jobs on one run never run together (run lease).
        job = queue.submit(engine, sch.kind, args, queue=sch.queue, unique_key=key, schedule_id=sch.id, scheduled_for=slot)
        if job is not None:
            out.fired.append(job.id)
            log.info("schedule %s: slot %s -> job %s", sch.name, cron.local_time(slot, sch.tz), job.id)
    store.advance(engine, sch.id, sch.next_fire_at, cron.next_after(sch.cron, sch.tz, due[-1]))


def run(engine: Engine, *, tick_s: float = DEFAULT_TICK, clock: Clock | None = None, alive_file: Path | None = None,
        stop: threading.Event | None = None) -> None:
    """Tick until SIGTERM/SIGINT (or `stop`); a failing tick is logged and retried, never fatal."""
    clock = clock or Clock()
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    while not stop.is_set():
        try:
            res = tick(engine, clock.now())
            for name, slot, reason in res.skipped:
                log.info("schedule %s: slot %s not run: %s", name, slot.isoformat(), reason)
            if alive_file:  # the container healthcheck looks at its age
                alive_file.touch()
        except storage.StorageError as exc:
            log.warning("scheduler tick failed: %s", exc)
        except Exception:  # noqa: BLE001 - a database hiccup must not end the only scheduler
            log.exception("scheduler tick failed")
        stop.wait(tick_s)
