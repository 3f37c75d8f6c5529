"""What a run's report card reads: the funnel's counts, the kept samples with their instances, and
(when the quality tables exist and hold rows) scores, selections and cached embeddings.

Every result comes back in a fixed order (ids, names), so the same database gives the same figures.
The score / selection / embedding tables belong to the quality work (migration 0011); they are read
through plain table descriptions and only after checking that they exist, so a database without them
gives a report without those figures.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import column, func, inspect, select, table
from sqlalchemy.engine import Engine

from datagen.records import KEPT
from datagen.storage.models import InstanceRow, Request, Sample

_score = table("score", column("sample_id"), column("scorer"), column("rubric"), column("model"), column("value"))
_selection = table("selection", column("id"), column("name"), column("run_id"), column("size"))
_member = table("selection_member", column("selection_id"), column("sample_id"))
_embedding = table("embedding", column("id"), column("sample_id"), column("model"), column("dim"), column("vector"))


@dataclass
class FunnelCounts:
    """Candidates by (status, passed-the-instruction-filters, reason), and the run's request ledger."""

    rows: list[tuple[str, bool, str | None, int]] = field(default_factory=list)
    requests: int = 0
    request_errors: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    by_stage: list[tuple[str, int]] = field(default_factory=list)


def funnel_counts(engine: Engine, run_id: int) -> FunnelCounts:
    out = FunnelCounts()
    with engine.connect() as conn:
        q = (
            select(Sample.status, Sample.indexed, Sample.reason, func.count())
            .where(Sample.run_id == run_id)
            .group_by(Sample.status, Sample.indexed, Sample.reason)
        )
        out.rows = sorted(((r[0], bool(r[1]), r[2], int(r[3])) for r in conn.execute(q)), key=lambda r: (r[0], r[1], r[2] or ""))
        row = conn.execute(
            select(
                func.count(),
                func.count(Request.error),
                func.coalesce(func.sum(Request.tokens_in), 0),
                func.coalesce(func.sum(Request.tokens_out), 0),
                func.coalesce(func.sum(Request.cost), 0.0),
            ).where(Request.run_id == run_id)
        ).one()
        out.requests, out.request_errors, out.tokens_in, out.tokens_out = (int(x) for x in row[:4])
        out.cost = float(row[4])
        q = select(Request.stage, func.count()).where(Request.run_id == run_id).group_by(Request.stage).order_by(Request.stage)
        out.by_stage = [(r[0], int(r[1])) for r in conn.execute(q)]
    return out


def kept_count(engine: Engine, run_id: int) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(Sample.run_id == run_id, Sample.status.in_(KEPT))).scalar_one())


@dataclass
class KeptSample:
    id: int
    instruction: str
    is_classification: bool | None
    instances: list[tuple[str, str]]  # (input, output) in order


def kept_samples(engine: Engine, run_id: int, chunk: int = 2000) -> Iterator[KeptSample]:
    """Every kept (accepted or approved) sample of a run with its instances, in id order, read in chunks."""
    last = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(Sample.id, Sample.instruction, Sample.is_classification)
                .where(Sample.run_id == run_id, Sample.status.in_(KEPT), Sample.id > last)
                .order_by(Sample.id)
                .limit(chunk)
            ).all()
            if not rows:
                return
            ids = [r[0] for r in rows]
            inst: dict[int, list[tuple[str, str]]] = {i: [] for i in ids}
            for sid, inp, outp in conn.execute(
                select(InstanceRow.sample_id, InstanceRow.input, InstanceRow.output)
                .where(InstanceRow.sample_id.in_(ids))
                .order_by(InstanceRow.sample_id, InstanceRow.idx)
            ):
                inst[sid].append((inp, outp))
        for r in rows:
            yield KeptSample(r[0], r[1], None if r[2] is None else bool(r[2]), inst[r[0]])
        last = ids[-1]


def has_table(engine: Engine, name: str) -> bool:
    return inspect(engine).has_table(name)


def scores(engine: Engine, run_id: int) -> dict[str, list[float]]:
    """Stored score values of the run's kept samples by key, `scorer[:rubric]@model` as the score
    commands spell it, values sorted."""
    if not has_table(engine, "score"):
        return {}
    out: dict[str, list[float]] = {}
    q = (
        select(_score.c.scorer, _score.c.rubric, _score.c.model, _score.c.value)
        .select_from(_score.join(Sample, Sample.id == _score.c.sample_id))
        .where(Sample.run_id == run_id, Sample.status.in_(KEPT), _score.c.value.is_not(None))
    )
    with engine.connect() as conn:
        for scorer, rubric, model, value in conn.execute(q):
            out.setdefault(f"{scorer}{':' + rubric if rubric else ''}@{model}", []).append(float(value))
    return {k: sorted(v) for k, v in sorted(out.items())}


def selections(engine: Engine, run_id: int) -> list[tuple[str, int]]:
    """(name, members) of the selections made from this run, by name."""
    if not (has_table(engine, "selection") and has_table(engine, "selection_member")):
        return []
    members = select(func.count()).where(_member.c.selection_id == _selection.c.id).scalar_subquery()
    q = select(_selection.c.name, members).where(_selection.c.run_id == run_id).order_by(_selection.c.name)
    with engine.connect() as conn:
        return [(r[0], int(r[1])) for r in conn.execute(q)]


def embeddings(engine: Engine, run_id: int) -> tuple[str | None, int, list[tuple[int, bytes]]]:
    """(model, dim, [(sample id, float32 bytes)]) of the embedding model covering most kept samples
    (ties: the first name), one vector per sample, in sample id order; (None, 0, []) when there are none."""
    if not has_table(engine, "embedding"):
        return None, 0, []
    kept = (Sample.run_id == run_id) & Sample.status.in_(KEPT)
    j = _embedding.join(Sample, Sample.id == _embedding.c.sample_id)
    with engine.connect() as conn:
        counts = conn.execute(
            select(_embedding.c.model, _embedding.c.dim, func.count(func.distinct(_embedding.c.sample_id)))
            .select_from(j).where(kept).group_by(_embedding.c.model, _embedding.c.dim)
        ).all()
        if not counts:
            return None, 0, []
        model, dim, _ = sorted(counts, key=lambda r: (-int(r[2]), r[0], int(r[1])))[0]
        rows = conn.execute(
            select(_embedding.c.sample_id, _embedding.c.vector)
            .select_from(j).where(kept, _embedding.c.model == model, _embedding.c.dim == dim)
            .order_by(_embedding.c.sample_id, _embedding.c.id)
        ).all()
    seen: set[int] = set()
    vecs = []
    for sid, vec in rows:
        if sid not in seen:  # a sample embedded twice by one model: its first vector
            seen.add(sid)
            vecs.append((int(sid), bytes(vec)))
    return model, int(dim), vecs
