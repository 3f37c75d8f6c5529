"""Reading kept samples with their instances, in id order, for export and training."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from datagen.records import Instance
from datagen.storage.models import InstanceRow, Run, Sample


def iter_samples(
    engine: Engine,
    *,
    run: str | None = None,
    statuses: Iterable[str] = ("accepted", "approved"),
    lang: str | None = None,
    sample_ids: Iterable[int] | None = None,
    chunk: int = 2000,
) -> Iterator[tuple[Sample, list[Instance]]]:
    """Yield (sample, instances) in id order, reading in chunks so a million rows stay cheap."""
    q = select(Sample).where(Sample.status.in_(list(statuses)))
    if run is not None:
        q = q.join(Run, Run.id == Sample.run_id).where(Run.name == run)
    if lang is not None:
        q = q.where(Sample.lang == lang)
    if sample_ids is not None:
        q = q.where(Sample.id.in_(list(sample_ids)))
    last = 0
    with Session(engine) as s:
        while True:
            rows = list(s.execute(q.where(Sample.id > last).order_by(Sample.id).limit(chunk)).scalars())
            if not rows:
                return
            ids = [r.id for r in rows]
            by_sample: dict[int, list[Instance]] = {i: [] for i in ids}
            for inst in s.execute(
                select(InstanceRow).where(InstanceRow.sample_id.in_(ids)).order_by(InstanceRow.sample_id, InstanceRow.idx)
            ).scalars():
                by_sample[inst.sample_id].append(Instance(input=inst.input, output=inst.output))
            for r in rows:
                yield r, by_sample[r.id]
            last = ids[-1]
