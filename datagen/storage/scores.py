"""Scores, selections and cached embeddings (issue 20): the SQL behind datagen/scores/.

A score row is one scorer's verdict on one sample. Success = a value; a failure (value NULL,
`error` set, `reason` the raw answer) is kept per try and never blocks a later success. The
partial unique index ux_score_done admits one success per (sample, scorer, rubric, model), and
`store_scores` inserts with ON CONFLICT DO NOTHING, so a resumed or concurrent scorer can never
store a second one. `rubric` is "" for scorers without one (IFD).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import and_, delete, exists, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session

from datagen.records import KEPT
from datagen.storage.models import Embedding, InstanceRow, Sample, Score, Selection, SelectionMember, utcnow

CHUNK = 500  # ids per IN (...) list: well under SQLite's bound-parameter limit


def _chunks(ids: Sequence[int], n: int = CHUNK):
    for i in range(0, len(ids), n):
        yield list(ids[i : i + n])


# --- Scores ----------------------------------------------------------------------------------------


@dataclass
class ScoreIn:
    """A score to store. value None = a failure (give `error`; `reason` may keep the raw answer)."""

    sample_id: int
    scorer: str
    model: str
    value: float | None
    rubric: str = ""
    reason: str | None = None
    extra: dict | None = None
    request_id: int | None = None
    error: str | None = None


def _dialect_insert(engine: Engine):
    """INSERT with ON CONFLICT DO NOTHING: SQLite and Postgres (the databases datagen is tested on)."""
    return postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert


def _insert(engine: Engine):
    return _dialect_insert(engine)(Score)


def store_scores(engine: Engine, scores: Iterable[ScoreIn]) -> int:
    """Store scores in one transaction; a success already stored for the same key is left as it is.

    Returns the number of successes newly stored. Failures are always added (one row per try).
    """
    rows = [
        {
            "sample_id": s.sample_id, "scorer": s.scorer, "rubric": s.rubric or "", "model": s.model,
            "value": None if s.value is None else float(s.value), "reason": s.reason,
            "extra": None if s.extra is None else json.dumps(s.extra, ensure_ascii=False),
            "request_id": s.request_id, "error": s.error if s.value is None else None, "created_at": utcnow(),
        }
        for s in scores
    ]
    for r in rows:
        if r["value"] is None and not r["error"]:
            r["error"] = "failed"
    if not rows:
        return 0
    new = 0
    with engine.begin() as conn:
        for r in rows:  # one statement per row: RETURNING tells a stored success from a duplicate
            q = _insert(engine).values(**r)
            if r["value"] is not None:
                q = q.on_conflict_do_nothing()
            new += conn.execute(q.returning(Score.id)).first() is not None and r["value"] is not None
    return new


def store_score(engine: Engine, sample_id: int, scorer: str, model: str, value: float | None, *, rubric: str = "",
                reason: str | None = None, extra: dict | None = None, request_id: int | None = None, error: str | None = None) -> bool:
    """Store one score; False when a success for the same key was already there (nothing changed)."""
    new = store_scores(engine, [ScoreIn(sample_id, scorer, model, value, rubric, reason, extra, request_id, error)])
    return value is None or new == 1


def _done(scorer: str, rubric: str, model: str):
    return exists().where(
        Score.sample_id == Sample.id, Score.scorer == scorer, Score.rubric == (rubric or ""), Score.model == model, Score.value.is_not(None)
    )


def unscored_sample_ids(engine: Engine, run_id: int | None, scorer: str, model: str, rubric: str = "", *,
                        statuses: Sequence[str] = KEPT, after: int = 0, limit: int | None = None) -> list[int]:
    """Ids (ascending) of the run's samples in `statuses` with no successful score for the key.

    `after` / `limit` page through them; run_id None means every run.
    """
    q = select(Sample.id).where(Sample.id > after, ~_done(scorer, rubric, model))
    if run_id is not None:
        q = q.where(Sample.run_id == run_id)
    if statuses:
        q = q.where(Sample.status.in_(list(statuses)))
    q = q.order_by(Sample.id)
    if limit is not None:
        q = q.limit(limit)
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(q)]


def count_unscored(engine: Engine, run_id: int | None, scorer: str, model: str, rubric: str = "", *, statuses: Sequence[str] = KEPT) -> int:
    q = select(func.count()).select_from(Sample).where(~_done(scorer, rubric, model))
    if run_id is not None:
        q = q.where(Sample.run_id == run_id)
    if statuses:
        q = q.where(Sample.status.in_(list(statuses)))
    with engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


def failed_tries(engine: Engine, sample_ids: Sequence[int], scorer: str, model: str, rubric: str = "") -> dict[int, int]:
    """Failures stored so far per sample for the key (a judge's --max-tries counts them)."""
    out: dict[int, int] = {}
    with engine.connect() as conn:
        for ids in _chunks(list(sample_ids)):
            q = (
                select(Score.sample_id, func.count())
                .where(Score.sample_id.in_(ids), Score.scorer == scorer, Score.rubric == (rubric or ""), Score.model == model, Score.value.is_(None))
                .group_by(Score.sample_id)
            )
            out.update({sid: n for sid, n in conn.execute(q)})
    return out


def _row(r) -> dict:
    d = dict(r._mapping)
    d["extra"] = json.loads(d["extra"]) if d.get("extra") else None
    return d


def scores_for(engine: Engine, sample_ids: Sequence[int], *, scorer: str | None = None, rubric: str | None = None,
               model: str | None = None, failures: bool = False) -> dict[int, list[dict]]:
    """Every stored score of these samples (successes only unless `failures`), oldest first, by sample."""
    out: dict[int, list[dict]] = {sid: [] for sid in sample_ids}
    cols = [Score.id, Score.sample_id, Score.scorer, Score.rubric, Score.model, Score.value, Score.reason, Score.extra,
            Score.request_id, Score.error, Score.created_at]
    with engine.connect() as conn:
        for ids in _chunks(list(sample_ids)):
            q = select(*cols).where(Score.sample_id.in_(ids))
            if scorer is not None:
                q = q.where(Score.scorer == scorer)
            if rubric is not None:
                q = q.where(Score.rubric == rubric)
            if model is not None:
                q = q.where(Score.model == model)
            if not failures:
                q = q.where(Score.value.is_not(None))
            for r in conn.execute(q.order_by(Score.id)):
                out[r.sample_id].append(_row(r))
    return out


def score_keys(engine: Engine, run_id: int | None = None) -> list[dict]:
    """The (scorer, rubric, model) keys with successes, with their count, min and max value."""
    q = select(Score.scorer, Score.rubric, Score.model, func.count(), func.min(Score.value), func.max(Score.value)).where(Score.value.is_not(None))
    if run_id is not None:
        q = q.join(Sample, Sample.id == Score.sample_id).where(Sample.run_id == run_id)
    q = q.group_by(Score.scorer, Score.rubric, Score.model).order_by(Score.scorer, Score.rubric, Score.model)
    with engine.connect() as conn:
        return [dict(scorer=r[0], rubric=r[1], model=r[2], count=r[3], min=r[4], max=r[5]) for r in conn.execute(q)]


def score_values(engine: Engine, run_id: int | None, scorer: str, rubric: str = "", model: str | None = None, *,
                 statuses: Sequence[str] = KEPT) -> dict[int, float]:
    """sample id -> successful value for one key, over the run's samples in `statuses`.

    model None: any model (the caller checks there is one, see score_keys)."""
    q = select(Score.sample_id, Score.value).join(Sample, Sample.id == Score.sample_id).where(
        Score.scorer == scorer, Score.rubric == (rubric or ""), Score.value.is_not(None)
    )
    if model is not None:
        q = q.where(Score.model == model)
    if run_id is not None:
        q = q.where(Sample.run_id == run_id)
    if statuses:
        q = q.where(Sample.status.in_(list(statuses)))
    with engine.connect() as conn:
        return {sid: v for sid, v in conn.execute(q.order_by(Score.id))}


def sample_texts(engine: Engine, sample_ids: Sequence[int]) -> dict[int, tuple[str, list[tuple[str, str]]]]:
    """sample id -> (instruction, [(input, output) per instance in order]): what scorers read."""
    out: dict[int, tuple[str, list[tuple[str, str]]]] = {}
    with engine.connect() as conn:
        for ids in _chunks(list(sample_ids)):
            for sid, ins in conn.execute(select(Sample.id, Sample.instruction).where(Sample.id.in_(ids))):
                out[sid] = (ins, [])
            q = select(InstanceRow.sample_id, InstanceRow.input, InstanceRow.output).where(InstanceRow.sample_id.in_(ids))
            for sid, inp, outp in conn.execute(q.order_by(InstanceRow.sample_id, InstanceRow.idx)):
                out[sid][1].append((inp, outp))
    return out


# --- Filters for listings and exports -------------------------------------------------------------


@dataclass
class ScoreRange:
    """Samples with a successful score for the key inside [min, max] (either end open when None).
    model None: a score by any model counts."""

    scorer: str
    rubric: str = ""
    model: str | None = None
    min: float | None = None
    max: float | None = None


def filter_conditions(selection_id: int | None = None, ranges: Sequence[ScoreRange] = ()) -> list:
    """WHERE conditions on the sample table: member of the selection, and inside every score range."""
    c: list = []
    if selection_id is not None:
        c.append(exists().where(SelectionMember.selection_id == selection_id, SelectionMember.sample_id == Sample.id))
    for r in ranges:
        conds = [Score.sample_id == Sample.id, Score.scorer == r.scorer, Score.rubric == (r.rubric or ""), Score.value.is_not(None)]
        if r.model is not None:
            conds.append(Score.model == r.model)
        if r.min is not None:
            conds.append(Score.value >= r.min)
        if r.max is not None:
            conds.append(Score.value <= r.max)
        c.append(exists().where(and_(*conds)))
    return c


# --- Selections ------------------------------------------------------------------------------------


def save_selection(engine: Engine, name: str, run_id: int | None, rule: dict, sample_ids: Sequence[int]) -> int:
    """Store (or replace, by name) a selection; members keep their order as ranks. Returns its id."""
    with Session(engine) as s:
        old = s.execute(select(Selection).where(Selection.name == name)).scalar_one_or_none()
        if old is not None:
            s.execute(delete(SelectionMember).where(SelectionMember.selection_id == old.id))
            s.delete(old)
            s.flush()
        sel = Selection(name=name, run_id=run_id, rule=json.dumps(rule, ensure_ascii=False), size=len(sample_ids))
        s.add(sel)
        s.flush()
        sel_id = sel.id
        if sample_ids:
            members = [{"selection_id": sel_id, "rank": i, "sample_id": int(sid)} for i, sid in enumerate(sample_ids)]
            s.execute(SelectionMember.__table__.insert(), members)
        s.commit()
    return sel_id


def get_selection(engine: Engine, name: str) -> dict | None:
    """{id, name, run_id, rule (dict), size, created_at}, or None."""
    with engine.connect() as conn:
        r = conn.execute(select(Selection).where(Selection.name == name)).first()
    if r is None:
        return None
    d = dict(r._mapping)
    d["rule"] = json.loads(d["rule"])
    return d


def list_selections(engine: Engine, run_id: int | None = None) -> list[dict]:
    q = select(Selection).order_by(Selection.id)
    if run_id is not None:
        q = q.where(Selection.run_id == run_id)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    for d in rows:
        d["rule"] = json.loads(d["rule"])
    return rows


def selection_members(engine: Engine, selection_id: int) -> list[int]:
    """Sample ids of a selection, best (rank 0) first."""
    with engine.connect() as conn:
        q = select(SelectionMember.sample_id).where(SelectionMember.selection_id == selection_id).order_by(SelectionMember.rank)
        return [r[0] for r in conn.execute(q)]


# --- Embeddings ------------------------------------------------------------------------------------


def get_embeddings(engine: Engine, sample_ids: Sequence[int], model: str) -> dict[int, np.ndarray]:
    """Cached vectors (float32) of these samples by `model`; missing ones are absent."""
    out: dict[int, np.ndarray] = {}
    with engine.connect() as conn:
        for ids in _chunks(list(sample_ids)):
            q = select(Embedding.sample_id, Embedding.dim, Embedding.vector).where(Embedding.sample_id.in_(ids), Embedding.model == model)
            for sid, dim, blob in conn.execute(q):
                v = np.frombuffer(bytes(blob), dtype="<f4")
                if v.shape[0] == dim:
                    out[sid] = v.astype(np.float32)
    return out


def put_embeddings(engine: Engine, model: str, vectors: dict[int, np.ndarray]) -> int:
    """Cache vectors (stored as float32); a sample already cached for the model keeps its vector."""
    if not vectors:
        return 0
    ins = _dialect_insert(engine)(Embedding)
    now = utcnow()
    rows = []
    for sid, v in vectors.items():
        a = np.asarray(v, dtype="<f4").ravel()
        rows.append({"sample_id": int(sid), "model": model, "dim": int(a.shape[0]), "vector": a.tobytes(), "created_at": now})
    stored = 0
    with engine.begin() as conn:
        for r in rows:
            stored += conn.execute(ins.values(**r).on_conflict_do_nothing().returning(Embedding.id)).first() is not None
    return stored
