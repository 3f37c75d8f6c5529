"""The shared rate limit's one statement: reserve the next slot atomically."""

from __future__ import annotations

from sqlalchemy import case, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlmodel import Session

from datagen.storage.db import outlasting
from datagen.storage.models import RateLimit


@outlasting
def reserve(engine: Engine, key: str, cost: float, burst: float, now: float, horizon: float) -> tuple[bool, float]:
    """Try to book `cost` seconds of the key's time line: (True, start) or (False, retry at).

    The slot starts at the key's arrival time, or `burst` seconds in the past if the line has been
    idle (so a quiet key allows a short burst), and the line moves on by `cost`. Nobody books more
    than `horizon` seconds ahead, so one busy process cannot queue up the line in front of others.
    """
    floor = now - burst
    start = case((RateLimit.tat > floor, RateLimit.tat), else_=floor)
    with Session(engine) as s:
        ins = (pg_insert if engine.dialect.name == "postgresql" else sqlite_insert)(RateLimit)
        s.execute(ins.values(key=key, tat=floor).on_conflict_do_nothing(index_elements=["key"]))
        booked = s.execute(
            update(RateLimit).where(RateLimit.key == key, start <= now + horizon)
            .values(tat=start + cost).returning(RateLimit.tat)
        ).scalar_one_or_none()
        if booked is None:
            tat = s.execute(select(RateLimit.tat).where(RateLimit.key == key)).scalar_one()
        s.commit()
    return (True, booked - cost) if booked is not None else (False, tat - horizon)
