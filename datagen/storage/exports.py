"""What exports read besides the samples: the audit log of a selection and the runs behind it."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import exists, func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from datagen.records import Instance
from datagen.storage.models import Audit, InstanceRow, Run, Sample
from datagen.storage.queries import SampleFilter, where

AUDIT_FIELDS = (Audit.id, Audit.action, Audit.actor, Audit.note, Audit.before, Audit.after, Audit.at)


def review_histories(engine: Engine, f: SampleFilter, chunk: int = 500) -> Iterator[tuple[dict, list[Instance], list[dict]]]:
    """Every matching sample that has audit rows: (sample, its instances now, its audit rows oldest first), in id order."""
    conds = [*where(engine, f), exists().where(Audit.sample_id == Sample.id)]
    last = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(Sample.id, Sample.run_id, Sample.lang, Sample.instruction, Sample.status)
                .where(*conds, Sample.id > last).order_by(Sample.id).limit(chunk)
            ).mappings().all()
            if not rows:
                return
            ids = [r["id"] for r in rows]
            inst: dict[int, list[Instance]] = {i: [] for i in ids}
            for r in conn.execute(
                select(InstanceRow.sample_id, InstanceRow.input, InstanceRow.output)
                .where(InstanceRow.sample_id.in_(ids)).order_by(InstanceRow.sample_id, InstanceRow.idx)
            ):
                inst[r[0]].append(Instance(input=r[1], output=r[2]))
            audit: dict[int, list[dict]] = {i: [] for i in ids}
            for r in conn.execute(
                select(Audit.sample_id, *AUDIT_FIELDS).where(Audit.sample_id.in_(ids)).order_by(Audit.sample_id, Audit.id)
            ).mappings():
                audit[r["sample_id"]].append({k: r[k] for k in ("id", "action", "actor", "note", "before", "after", "at")})
        for r in rows:
            yield dict(r), inst[r["id"]], audit[r["id"]]
        last = ids[-1]


def audit_counts(engine: Engine, f: SampleFilter) -> tuple[dict[str, int], int]:
    """({action: audit rows}, samples with any audit row) over the samples matching the filter."""
    conds = where(engine, f)
    with engine.connect() as conn:
        by = dict(conn.execute(
            select(Audit.action, func.count()).join(Sample, Sample.id == Audit.sample_id).where(*conds).group_by(Audit.action)
        ).all())
        n = conn.execute(select(func.count(func.distinct(Audit.sample_id))).join(Sample, Sample.id == Audit.sample_id).where(*conds)).scalar_one()
    return {k: by[k] for k in sorted(by)}, n


def runs_by_id(engine: Engine, ids: list[int]) -> list[Run]:
    with Session(engine) as s:
        return list(s.execute(select(Run).where(Run.id.in_(ids)).order_by(Run.id)).scalars())
