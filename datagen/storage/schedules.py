"""Stored schedules: create, list, pause, resume, remove, and the scheduler's compare-and-set advance."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from datagen.errors import Conflict, NotFound
from datagen.storage.db import added
from datagen.storage.models import MAX_ROW_ID, Schedule, unstorable, utcnow






def args_of(row: Schedule) -> list[str]:
    return json.loads(row.args)


def add_schedule(
    engine: Engine, name: str, *, cron: str, tz: str, kind: str, args: list[str], queue: str,
    misfire: str, overlap: str, next_fire_at: datetime,
) -> Schedule:
    row = Schedule(
        name=name, cron=cron, tz=tz, kind=kind, args=json.dumps(args), queue=queue, misfire=misfire,
        overlap=overlap, next_fire_at=next_fire_at,
    )
    with Session(engine, expire_on_commit=False) as s:
        if not added(s, row, commit=True):
            raise Conflict(f"a schedule named {name!r} exists already")
        return row


def list_schedules(engine: Engine) -> list[Schedule]:
    with Session(engine) as s:
        return list(s.exec(select(Schedule).order_by(Schedule.name)).scalars().all())


def get_schedule(engine: Engine, name: str) -> Schedule:
    """By name, or by id when `name` is all digits (the API and dashboard use ids)."""
    by_id = name.isascii() and name.isdigit()
    row = None
    if not unstorable(name) and (not by_id or int(name) <= MAX_ROW_ID):  # no row can have any other name or id
        with Session(engine) as s:
            col = Schedule.id if by_id else Schedule.name
            row = s.exec(select(Schedule).where(col == (int(name) if by_id else name))).scalars().first()
    if row is None:
        raise NotFound(f"no schedule {name!r}")
    return row


def set_paused(engine: Engine, schedule_id: int, paused: bool, next_fire_at: datetime | None = None) -> None:
    values = {"paused": paused, "updated_at": utcnow()}
    if next_fire_at is not None:
        values["next_fire_at"] = next_fire_at
    with Session(engine) as s:
        s.execute(update(Schedule).where(Schedule.id == schedule_id).values(**values))
        s.commit()


def remove_schedule(engine: Engine, schedule_id: int) -> None:
    """The schedule goes; the jobs it submitted stay in the history."""
    with Session(engine) as s:
        row = s.get(Schedule, schedule_id)
        if row is None:
            raise NotFound(f"no schedule {schedule_id}")
        s.delete(row)
        s.commit()


def due_schedules(engine: Engine, now: datetime) -> list[Schedule]:
    with Session(engine) as s:
        rows = s.exec(
            select(Schedule).where(Schedule.paused.is_(False), Schedule.next_fire_at <= now).order_by(Schedule.next_fire_at)
        ).scalars().all()
        return list(rows)


def advance(engine: Engine, schedule_id: int, expected: datetime, new: datetime) -> bool:
    """Move next_fire_at from `expected` to `new`; False when another scheduler moved it first."""
    with Session(engine) as s:
        res = s.execute(
            update(Schedule)
            .where(Schedule.id == schedule_id, Schedule.next_fire_at == expected, Schedule.paused.is_(False))
            .values(next_fire_at=new, updated_at=utcnow())
        )
        s.commit()
        return res.rowcount == 1
