"""Review queries for the API and dashboard: filter, page, count, review, edit, bulk, stats.

Everything takes a SampleFilter, so the list, the counts, the charts, the bulk actions and
the export all see exactly the same set of samples.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from datagen.errors import Conflict, InputError, NotFound
from datagen.records import KEPT, LIVE, Instance, Status
from datagen.storage import search
from datagen.storage.db import added
from datagen.storage.functions import bin_of, least
from datagen.storage.scores import ScoreRange, filter_conditions
from datagen.storage.models import LIVE_WHERE, MAX_ROW_ID, Audit, InstanceRow, Request, Run, Sample, utcnow
from datagen.storage.runs import instruction_hash

REVIEW_ACTIONS = {"approve": Status.approved.value, "reject": Status.discarded.value}
REVIEWED_STATUSES = tuple(REVIEW_ACTIONS.values())  # a person decided: what review progress counts




@dataclass
class SampleFilter:
    run_id: int | None = None
    lang: str | None = None
    status: list[str] = field(default_factory=list)
    is_classification: bool | None = None
    reason: str | None = None
    score_min: float | None = None
    score_max: float | None = None
    len_min: int | None = None  # characters
    len_max: int | None = None
    q: str | None = None
    ids: list[int] | None = None  # only these samples (rows a reviewer picked)
    selection_id: int | None = None  # only members of this named selection (datagen select)
    score_ranges: list[ScoreRange] = field(default_factory=list)  # inside every range (datagen/storage/scores.py)

    def is_empty(self) -> bool:
        return not any(v not in (None, [], "") for v in asdict(self).values())


def _length():
    return func.length(Sample.instruction)


WIDE_SCORE_RANGE = 0.1
NARROW_LENGTH = 10  # characters
RARE_LENGTH = 300  # instructions this long are few: their index range is the cheap way in


def where(engine: Engine, f: SampleFilter, *, by_id: bool = False, fts_joined: bool = False) -> list:
    """The WHERE conditions for a filter, on the sample table.

    by_id: the caller walks rows in id order. A wide ROUGE-L range then matches so many
    rows that walking ids and testing each is far cheaper than collecting the range from
    its index and sorting it, so the score is written `nearest_score + 0`, which no index
    serves (SQLite's planner cannot tell the two cases apart without STAT4).
    """
    c: list = []
    if f.ids:
        c.append(Sample.id.in_(f.ids))
    if f.run_id is not None:
        c.append(Sample.run_id == f.run_id)
    if f.lang:
        c.append(Sample.lang == f.lang)
    if f.status:
        c.append(Sample.status == f.status[0] if len(f.status) == 1 else Sample.status.in_(f.status))
    if f.is_classification is not None:
        c.append(Sample.is_classification.is_(f.is_classification))
    if f.reason:
        c.append(Sample.reason == f.reason)
    score = Sample.nearest_score
    if by_id and (f.score_max if f.score_max is not None else 1.0) - (f.score_min or 0.0) >= WIDE_SCORE_RANGE:
        score = Sample.nearest_score + 0
    if f.score_min is not None:
        c.append(score >= f.score_min)
    if f.score_max is not None:
        c.append(score <= f.score_max)
    length = _length()
    if by_id and not ((f.len_min or 0) >= RARE_LENGTH or (f.len_max or 10**9) - (f.len_min or 0) < NARROW_LENGTH):
        length = _length() + 0  # same reasoning as the score range above
    if f.len_min is not None:
        c.append(length >= f.len_min)
    if f.len_max is not None:
        c.append(length <= f.len_max)
    if f.q:
        expr, likes = search.search_split(engine, f.q)
        if expr and fts_joined:
            c.append(search.fts_match(expr))
        elif expr:
            c.append(Sample.id.in_(search.fts_rowids(expr)))
        c.extend(search.like_clauses(likes, engine.dialect.name))
    c.extend(filter_conditions(f.selection_id, f.score_ranges))
    return c


def _fts_joinable(engine: Engine, f: SampleFilter) -> bool:
    return bool(f.q) and search.search_split(engine, f.q)[0] is not None


# --- Listing -----------------------------------------------------------------------------------

SORTS = {
    "id": (Sample.id, False),
    "-id": (Sample.id, True),
    # Sorting by ROUGE-L lists the samples that have a score (NULLs sort differently per database).
    "score": (Sample.nearest_score, False),
    "-score": (Sample.nearest_score, True),
    "length": (_length(), False),
    "-length": (_length(), True),
    "updated": (Sample.updated_at, False),
    "-updated": (Sample.updated_at, True),
}

SUMMARY_COLUMNS = (
    Sample.id,
    Sample.run_id,
    Sample.lang,
    Sample.instruction,
    Sample.status,
    Sample.reason,
    Sample.detail,
    Sample.nearest_score,
    Sample.is_classification,
    Sample.reviewed_by,
    Sample.review_note,
    Sample.updated_at,
)


def encode_cursor(key, id_: int) -> str:
    if hasattr(key, "isoformat"):
        key = key.isoformat()
    return base64.urlsafe_b64encode(json.dumps([key, id_]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key, id_ = json.loads(raw)
        if not isinstance(id_, int) or not isinstance(key, (int, float, str)) or isinstance(id_, bool):
            raise ValueError
        # Ids and lengths are 32-bit integer columns, scores finite floats; anything else is not our cursor.
        if abs(id_) > MAX_ROW_ID or (isinstance(key, int) and abs(key) > MAX_ROW_ID) or (isinstance(key, float) and not math.isfinite(key)):
            raise ValueError
        return key, id_
    except Exception:  # noqa: BLE001 - anything malformed is the client's mistake
        raise InputError("bad cursor") from None


@dataclass
class Page:
    items: list[dict]
    next_cursor: str | None


SCORED = ("scored", "-scored")  # by the value of one score key (judge:accuracy, ifd, ...): give `by`


def list_samples(engine: Engine, f: SampleFilter, *, sort: str = "id", limit: int = 50, cursor: str | None = None,
                 by: ScoreRange | None = None) -> Page:
    """One page of samples, keyset-paginated on (sort key, id): stable while rows change."""
    if sort in SCORED:
        if by is None:
            raise InputError("sorting by score needs a score key (by=judge:accuracy, by=ifd, ...)")
        from datagen.storage.score_views import value_expr

        key, desc = value_expr(by), sort == "-scored"
    elif sort not in SORTS:
        raise InputError(f"unknown sort {sort!r}: use {', '.join((*SORTS, *SCORED))}")
    else:
        key, desc = SORTS[sort]
    # Searching in id order: walk the FTS5 index in rowid order and stop at a page, instead
    # of collecting every match first (0.5 ms instead of 250 ms for a word in every row).
    joined = key is Sample.id and _fts_joinable(engine, f)
    conds = where(engine, f, by_id=key is Sample.id, fts_joined=joined)
    if key is Sample.nearest_score or sort in SCORED:  # only the samples that have the score
        conds.append(key.is_not(None))
    q = select(*SUMMARY_COLUMNS, key.label("_key")).where(*conds)
    if joined:
        fts = search.fts_table()
        q = q.select_from(Sample).join(fts, fts.c.rowid == Sample.id)
        key = fts.c.rowid
    if cursor:
        last_key, last_id = decode_cursor(cursor)
        if sort.lstrip("-") in ("id", "score", "length", "scored") and (isinstance(last_key, str) or isinstance(last_key, bool)):
            raise InputError("bad cursor for this sort")
        if sort.lstrip("-") == "updated":
            from datetime import datetime

            try:
                last_key = datetime.fromisoformat(str(last_key))
            except ValueError:
                raise InputError("bad cursor") from None
        if joined:
            q = q.where(key < last_id if desc else key > last_id)
        elif key is Sample.id:
            q = q.where(Sample.id < last_id if desc else Sample.id > last_id)
        else:
            pair, last = tuple_(key, Sample.id), tuple_(last_key, last_id)
            q = q.where(pair < last if desc else pair > last)
    order = (key.desc(), Sample.id.desc()) if desc else (key.asc(), Sample.id.asc())
    q = q.order_by(order[0]) if key is Sample.id or joined else q.order_by(*order)
    with engine.connect() as conn:
        rows = conn.execute(q.limit(limit + 1)).mappings().all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [_summary(r) for r in rows]
    nxt = encode_cursor(rows[-1]["_key"], rows[-1]["id"]) if more and rows else None
    return Page(items, nxt)


_SUMMARY_NAMES = tuple(c.key for c in SUMMARY_COLUMNS)


def _summary(r) -> dict:
    d = {name: r[name] for name in _SUMMARY_NAMES}
    d["length"] = len(d["instruction"])
    return d


@dataclass
class Count:
    count: int
    capped: bool  # more than `count` match
    reviewed: int  # approved or discarded, among those counted


def count_samples(engine: Engine, f: SampleFilter, cap: int = 10_000) -> Count:
    """How many match and how many of those a reviewer decided, counting at most `cap` rows."""
    joined = _fts_joinable(engine, f)
    inner = select(Sample.status).where(*where(engine, f, by_id=True, fts_joined=joined))
    if joined:
        fts = search.fts_table()
        inner = inner.select_from(Sample).join(fts, fts.c.rowid == Sample.id)
    inner = inner.limit(cap + 1).subquery()
    with engine.connect() as conn:
        by = dict(conn.execute(select(inner.c.status, func.count()).group_by(inner.c.status)).all())
    n = sum(by.values())
    return Count(min(n, cap), n > cap, sum(by.get(st, 0) for st in REVIEWED_STATUSES))


# --- One sample ----------------------------------------------------------------------------------


def get_sample(engine: Engine, sample_id: int) -> dict | None:
    with Session(engine) as s:
        row = s.get(Sample, sample_id)
        if row is None:
            return None
        out = row.model_dump()
        out.pop("instruction_hash", None)
        out["length"] = len(row.instruction)
        run = s.get(Run, row.run_id)
        out["run"] = run.name if run else None
        out["instances"] = [
            {"input": i.input, "output": i.output}
            for i in s.execute(
                select(InstanceRow).where(InstanceRow.sample_id == sample_id).order_by(InstanceRow.idx)
            ).scalars()
        ]
        req = s.get(Request, row.request_id) if row.request_id else None
        out["request"] = (
            None
            if req is None
            else {
                k: getattr(req, k)
                for k in ("id", "stage", "model", "prompt", "response", "tokens_in", "tokens_out", "finish_reason", "latency_ms", "error", "attempt", "created_at")
            }
        )
        return out


def audit_log(engine: Engine, sample_id: int, limit: int = 50) -> list[dict]:
    with Session(engine) as s:
        rows = s.execute(select(Audit).where(Audit.sample_id == sample_id).order_by(Audit.id.desc()).limit(limit)).scalars()
        return [r.model_dump() for r in rows]


def kept_signature(engine: Engine, run_id: int, lang: str) -> tuple:
    """Changes whenever the kept set of a run changes: a cache key for a similarity index."""
    with engine.connect() as conn:
        q = select(func.count(), func.max(Sample.id), func.max(Sample.updated_at)).where(
            Sample.run_id == run_id, Sample.lang == lang, Sample.status.in_(KEPT)
        )
        return tuple(conn.execute(q).one())


# --- Changes -------------------------------------------------------------------------------------


def _snapshot(s: Session, row: Sample) -> str:
    inst = [
        {"input": i.input, "output": i.output}
        for i in s.execute(select(InstanceRow).where(InstanceRow.sample_id == row.id).order_by(InstanceRow.idx)).scalars()
    ]
    return json.dumps({"instruction": row.instruction, "status": row.status, "instances": inst}, ensure_ascii=False)


def _row(s: Session, sample_id: int) -> Sample:
    row = s.get(Sample, sample_id)
    if row is None:
        raise NotFound(f"no sample {sample_id}")
    return row


def _save(s: Session, row: Sample, conflict: str) -> None:
    """Flush the change; the partial unique index refuses a second live copy of an instruction."""
    row.updated_at = utcnow()
    if not added(s, row):
        raise Conflict(conflict)


def edit_sample(
    engine: Engine, sample_id: int, *, actor: str, instruction: str | None = None, instances: list[Instance] | None = None, note: str | None = None
) -> None:
    """Replace the instruction and/or the instances, recording before and after in the audit log."""
    with Session(engine) as s:
        row = _row(s, sample_id)
        before = _snapshot(s, row)
        # Instances first: their flush would otherwise write a new instruction outside _save's
        # duplicate check (a 500 schemathesis found).
        if instances is not None:
            s.execute(delete(InstanceRow).where(InstanceRow.sample_id == sample_id))
            s.flush()
            for i, inst in enumerate(instances):
                s.add(InstanceRow(sample_id=sample_id, idx=i, input=inst.input, output=inst.output))
        if instruction is not None and instruction != row.instruction:
            row.instruction = instruction
            row.instruction_hash = instruction_hash(instruction)
        row.reviewed_by = actor
        _save(s, row, "this run already keeps an identical instruction")
        s.add(Audit(sample_id=sample_id, action="edit", actor=actor, note=note, before=before, after=_snapshot(s, row)))
        s.commit()


def review_sample(engine: Engine, sample_id: int, action: str, *, actor: str, note: str | None = None, forced: bool = False) -> str:
    """approve -> approved, reject -> discarded. Returns the new status. `forced`: approved against the filters' verdict."""
    new = REVIEW_ACTIONS[action]
    with Session(engine) as s:
        row = _row(s, sample_id)
        old = row.status
        row.status, row.review_note, row.reviewed_by = new, note, actor
        _save(s, row, "this run already keeps an identical instruction; edit this one first")
        s.add(Audit(sample_id=sample_id, action=f"force_{action}" if forced else action, actor=actor, note=note, before=old, after=new))
        s.commit()
        return new


def undo_review(engine: Engine, sample_id: int, *, actor: str) -> str:
    """Put back the status a sample had before its last change, if that was a review.

    The audit row of that review holds the status before and after; the undo is audited too,
    and refused when the sample changed since (its status is no longer the review's result).
    """
    with Session(engine) as s:
        row = s.get(Sample, sample_id)
        if row is None:
            raise NotFound(f"no sample {sample_id}")
        last = s.execute(select(Audit).where(Audit.sample_id == sample_id).order_by(Audit.id.desc()).limit(1)).scalar_one_or_none()
        if last is None or last.action not in REVIEW_ACTIONS or not last.before:
            raise Conflict(f"sample {sample_id}: its last change is not a review, nothing to undo")
        if row.status != last.after:
            raise Conflict(f"sample {sample_id} is {row.status} now, not {last.after}: nothing to undo")
        row.status, row.reviewed_by = last.before, actor
        _save(s, row, "this run keeps an identical instruction now; cannot restore this one")
        s.add(Audit(sample_id=sample_id, action="undo", actor=actor, note=f"undo {last.action} #{last.id}", before=last.after, after=last.before))
        s.commit()
        return last.before


def bulk_review(
    engine: Engine, f: SampleFilter, action: str, *, actor: str, note: str | None = None, chunk: int = 500, max_rows: int | None = None
) -> dict:
    """Apply a review action to every sample matching the filter, in id-ordered chunks.

    Each chunk is one transaction with an audit row per changed sample. A sample whose
    approval would duplicate a kept instruction of its run is skipped and counted.
    """
    new = REVIEW_ACTIONS[action]
    conds = where(engine, f)
    changed = skipped = 0
    last = 0
    now = utcnow()
    while max_rows is None or changed + skipped < max_rows:
        with Session(engine) as s:
            rows = s.execute(
                select(Sample.id, Sample.status, Sample.run_id, Sample.instruction_hash)
                .where(*conds, Sample.id > last, Sample.status != new)
                .order_by(Sample.id)
                .limit(chunk if max_rows is None else min(chunk, max_rows - changed - skipped))
            ).all()
            if not rows:
                break
            last = rows[-1][0]
            todo = [(r[0], r[1]) for r in rows]
            if new in KEPT:
                todo = _without_duplicates(s, rows)
                skipped += len(rows) - len(todo)
            if todo:
                ids = [sid for sid, _ in todo]
                s.execute(update(Sample).where(Sample.id.in_(ids)).values(status=new, review_note=note, reviewed_by=actor, updated_at=now))
                s.add_all([Audit(sample_id=sid, action=action, actor=actor, note=note, before=old, after=new, at=now) for sid, old in todo])
                s.commit()
            changed += len(todo)
    return {"changed": changed, "skipped": skipped, "status": new}


def _without_duplicates(s: Session, rows) -> list[tuple[int, str]]:
    """Rows that can become kept without breaking 'one kept copy per instruction per run'."""
    keys = {(r[2], r[3]) for r in rows if r[1] not in KEPT}
    taken: set[tuple[int, str]] = set()
    if keys:
        hashes = list({h for _, h in keys})
        runs = list({r for r, _ in keys})
        for run_id, h in s.execute(
            select(Sample.run_id, Sample.instruction_hash).where(
                Sample.run_id.in_(runs), Sample.instruction_hash.in_(hashes), LIVE_WHERE
            )
        ):
            taken.add((run_id, h))
    out = []
    for sid, old, run_id, h in rows:
        if old in LIVE:
            out.append((sid, old))
        elif (run_id, h) not in taken:
            taken.add((run_id, h))
            out.append((sid, old))
    return out


# --- Stats ---------------------------------------------------------------------------------------


def stats(engine: Engine, f: SampleFilter, *, score_bins: int = 20, length_bin: int = 20, length_bins: int = 30) -> dict:
    """Counts by status and reason, a nearest-ROUGE-L histogram and a length histogram."""
    conds = where(engine, f)
    with engine.connect() as conn:
        by_status = dict(conn.execute(select(Sample.status, func.count()).where(*conds).group_by(Sample.status)).all())
        by_reason = {
            (k or "unknown"): n
            for k, n in conn.execute(
                select(Sample.reason, func.count()).where(*conds, Sample.status == Status.rejected.value).group_by(Sample.reason)
            ).all()
        }
        b = least(bin_of(Sample.nearest_score * score_bins), score_bins - 1)
        hist = [0] * score_bins
        for k, n in conn.execute(select(b, func.count()).where(*conds, Sample.nearest_score.is_not(None)).group_by(b)).all():
            hist[max(0, min(score_bins - 1, int(k)))] += n
        lb = least(bin_of(_length() / length_bin), length_bins - 1)
        lengths = [0] * length_bins
        for k, n in conn.execute(select(lb, func.count()).where(*conds).group_by(lb)).all():
            lengths[max(0, min(length_bins - 1, int(k)))] += n
    return {
        "total": sum(by_status.values()),
        "by_status": by_status,
        "by_reason": dict(sorted(by_reason.items(), key=lambda kv: -kv[1])),
        "score_histogram": {"bin_width": 1 / score_bins, "counts": hist},
        "length_histogram": {"bin_width": length_bin, "counts": lengths, "unit": "characters", "last_bin_open": True},
    }


def sample_instructions(engine: Engine, f: SampleFilter, limit: int = 20_000) -> list[tuple[str, str]]:
    """(lang, instruction) of up to `limit` matching samples, newest first: input for text statistics."""
    with engine.connect() as conn:
        q = select(Sample.lang, Sample.instruction).where(*where(engine, f)).order_by(Sample.id.desc()).limit(limit)
        return [(r[0], r[1]) for r in conn.execute(q)]


def reasons(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(select(Sample.reason).where(Sample.reason.is_not(None)).distinct().order_by(Sample.reason))]


def iter_samples(engine: Engine, f: SampleFilter, chunk: int = 1000) -> Iterator[tuple[dict, list[Instance]]]:
    """Every matching sample with its instances, in id order, read in chunks."""
    conds = where(engine, f)
    last = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(Sample.id, Sample.run_id, Sample.instruction, Sample.lang, Sample.status).where(*conds, Sample.id > last).order_by(Sample.id).limit(chunk)
            ).mappings().all()
            if not rows:
                return
            ids = [r["id"] for r in rows]
            by: dict[int, list[Instance]] = {i: [] for i in ids}
            for r in conn.execute(
                select(InstanceRow.sample_id, InstanceRow.input, InstanceRow.output)
                .where(InstanceRow.sample_id.in_(ids))
                .order_by(InstanceRow.sample_id, InstanceRow.idx)
            ):
                by[r[0]].append(Instance(input=r[1], output=r[2]))
        for r in rows:
            yield dict(r), by[r["id"]]
        last = ids[-1]


def run_settings(engine: Engine, run_id: int) -> tuple[str, str]:
    """(lang, config JSON) of a run: what its samples were generated under."""
    with engine.connect() as conn:
        return tuple(conn.execute(select(Run.lang, Run.config).where(Run.id == run_id)).one())
