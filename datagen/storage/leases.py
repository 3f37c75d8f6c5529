"""The run lease table: compare-and-swap on the holder token, so two processes never both win."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from datagen.storage.db import added
from datagen.storage.models import RunLease


def get_lease(engine: Engine, name: str) -> RunLease | None:
    with Session(engine) as s:
        return s.execute(select(RunLease).where(RunLease.run_name == name)).scalars().first()


def insert_lease(engine: Engine, lease: RunLease) -> bool:
    """Take a free lease; False when another process inserted one first."""
    with Session(engine) as s:
        return added(s, RunLease(**lease.model_dump()), commit=True)


def replace_lease(engine: Engine, old_holder: str, lease: RunLease) -> bool:
    """Take over a dead holder's lease; False when someone else changed it meanwhile."""
    values = lease.model_dump(exclude={"run_name"})
    with Session(engine) as s:
        res = s.execute(update(RunLease).where(RunLease.run_name == lease.run_name, RunLease.holder == old_holder).values(**values))
        s.commit()
        return res.rowcount == 1


def renew_lease(engine: Engine, name: str, holder: str, now: datetime, expires_at: datetime) -> bool:
    """Heartbeat; False when the lease is no longer this holder's (it was taken over)."""
    with Session(engine) as s:
        res = s.execute(
            update(RunLease).where(RunLease.run_name == name, RunLease.holder == holder).values(heartbeat_at=now, expires_at=expires_at)
        )
        s.commit()
        return res.rowcount == 1


def drop_lease(engine: Engine, name: str, holder: str) -> None:
    with Session(engine) as s:
        s.execute(delete(RunLease).where(RunLease.run_name == name, RunLease.holder == holder))
        s.commit()
