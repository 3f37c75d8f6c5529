"""What batch mode writes and reads: provider batches and the ledger rows that are their lines.

A request row of a batch run goes queued -> sent (in a batch) -> answered (its result or error is
stored) -> done (the pipeline took the answer). Each step is one transaction, so a crash between
any two of them is picked up where it stopped: queued rows are batched again, sent rows wait for
their batch, answered rows are taken on the next start.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from datagen.batch.provider import ENDED  # the provider contract says when a batch ends
from datagen.records import KEPT, Generation, Status
from datagen.storage.models import Batch, Request, Run, Sample, utcnow
from datagen.storage.overview import batch_estimates, via
from datagen.storage.runs import prompt_hash

OUTSTANDING = ("queued", "sent", "answered")


@dataclass
class Line:
    """One request to put in a batch."""

    stage: str
    prompt: str
    body: str  # JSON, exactly as uploaded
    sample_id: int | None = None
    attempt: int = 1


def queue_requests(engine: Engine, run_id: int, model: str, lines: list[Line]) -> list[int]:
    with Session(engine) as s:
        rows = [
            Request(run_id=run_id, stage=ln.stage, model=model, prompt_hash=prompt_hash(ln.prompt), prompt=ln.prompt,
                    attempt=ln.attempt, state="queued", body=ln.body, sample_id=ln.sample_id)
            for ln in lines
        ]
        s.add_all(rows)
        s.commit()
        return [r.id for r in rows]


def _of_stages(col, stages):
    """No condition for None; else only these ledger stages (a run's generate and judge loops keep apart)."""
    return [] if stages is None else [col.in_(list(stages))]


def queued_requests(engine: Engine, run_id: int, *, stages=None) -> list[Request]:
    with Session(engine, expire_on_commit=False) as s:
        q = select(Request).where(Request.run_id == run_id, Request.state == "queued", *_of_stages(Request.stage, stages))
        return list(s.execute(q.order_by(Request.id)).scalars())


def outstanding(engine: Engine, run_id: int) -> tuple[set[int], int]:
    """(samples with a request on its way, bootstrap requests on their way)."""
    with Session(engine) as s:
        rows = s.execute(
            select(Request.stage, Request.sample_id).where(Request.run_id == run_id, Request.state.in_(OUTSTANDING))
        ).all()
    return {sid for _, sid in rows if sid is not None}, sum(1 for stage, _ in rows if stage == "bootstrap")


def add_batch(engine: Engine, batch: Batch, request_ids: list[int]) -> Batch:
    """Write the batch as `submitting` and put its lines in it, in one transaction (before any upload)."""
    with Session(engine, expire_on_commit=False) as s:
        batch.requests = len(request_ids)
        s.add(batch)
        s.flush()
        s.execute(update(Request).where(Request.id.in_(request_ids)).values(batch_id=batch.id, state="sent"))
        s.commit()
        return batch


def set_batch(engine: Engine, batch_id: int, **values) -> None:
    with Session(engine) as s:
        s.execute(update(Batch).where(Batch.id == batch_id).values(updated_at=utcnow(), **values))
        s.commit()


def list_batches(engine: Engine, run_id: int | None = None, *, open_only: bool = False, stages=None) -> list[Batch]:
    q = select(Batch).where(*_of_stages(Batch.stage, stages)).order_by(Batch.id)
    if run_id is not None:
        q = q.where(Batch.run_id == run_id)
    if open_only:
        q = q.where(Batch.ingested.is_(False))
    with Session(engine, expire_on_commit=False) as s:
        return list(s.execute(q).scalars())


def enqueued_tokens(engine: Engine, model: str) -> int:
    """Input tokens of this model's batches not yet ended, across runs: what the provider's queue limit counts.

    Not counted: a batch the provider never saw (no provider id yet), and the batches of a failed run
    (nobody polls them, so their status stays as last seen long after they ended).
    """
    with Session(engine) as s:
        q = (select(func.coalesce(func.sum(Batch.tokens_est), 0)).join(Run, Run.id == Batch.run_id)
             .where(Batch.model == model, Batch.status.not_in(ENDED), Batch.provider_id.is_not(None),
                    Batch.ingested.is_(False), Run.state != "failed"))
        return int(s.execute(q).scalar_one())


def last_error(engine: Engine, run_id: int) -> str | None:
    """The newest stored error of a run's lines."""
    with Session(engine) as s:
        q = select(Request.error).where(Request.run_id == run_id, Request.error.is_not(None)).order_by(Request.id.desc()).limit(1)
        return s.execute(q).scalar()


def batch_lines(engine: Engine, batch_id: int) -> list[Request]:
    with Session(engine, expire_on_commit=False) as s:
        return list(s.execute(select(Request).where(Request.batch_id == batch_id).order_by(Request.id)).scalars())


def ingest(engine: Engine, batch_id: int, results: dict[int, tuple[Generation, float]], missing: str, **batch_values) -> int:
    """Store every line's result (or `missing` as its error) and mark the batch ingested, in one transaction.

    `results` maps request id -> (generation, cost); ids not in this batch are ignored. Returns lines answered.
    """
    answered = 0
    with Session(engine) as s:
        rows = s.execute(select(Request).where(Request.batch_id == batch_id, Request.state == "sent")).scalars().all()
        total = 0.0
        for row in rows:
            gen, cost = results.get(row.id, (Generation(error=missing), 0.0))
            answered += gen.error is None
            row.response, row.error, row.finish_reason = gen.text, gen.error, gen.finish_reason
            row.tokens_in, row.tokens_out, row.cost, row.state = gen.tokens_in, gen.tokens_out, cost, "answered"
            total += cost
        s.execute(update(Batch).where(Batch.id == batch_id).values(ingested=True, cost=total, updated_at=utcnow(), **batch_values))
        s.commit()
    return answered


def answered_requests(engine: Engine, run_id: int, *, stages=None) -> list[Request]:
    """Lines whose results are stored but not yet taken by the pipeline, in the order they were made."""
    with Session(engine, expire_on_commit=False) as s:
        q = select(Request).where(Request.run_id == run_id, Request.state == "answered", *_of_stages(Request.stage, stages)).order_by(Request.id)
        return list(s.execute(q).scalars())


def settle(engine: Engine, row: Request, *, retry: bool) -> None:
    """The pipeline took this answer: mark the row done and, if it failed and may be tried again,
    queue its next attempt with the same body, in one transaction."""
    with Session(engine) as s:
        s.execute(update(Request).where(Request.id == row.id).values(state="done"))
        if retry:
            s.add(Request(run_id=row.run_id, stage=row.stage, model=row.model, prompt_hash=row.prompt_hash, prompt=row.prompt,
                          attempt=row.attempt + 1, state="queued", body=row.body, sample_id=row.sample_id))
        s.commit()


def hashes_from_request(engine: Engine, request_id: int) -> set[str]:
    """Instruction hashes already stored from one bootstrap answer (taking it again must skip them)."""
    with Session(engine) as s:
        return set(s.execute(select(Sample.instruction_hash).where(Sample.request_id == request_id)).scalars())


def sample_status(engine: Engine, sample_id: int) -> str | None:
    with Session(engine) as s:
        return s.execute(select(Sample.status).where(Sample.id == sample_id)).scalar()


@dataclass
class Yield:
    """What past bootstrap answers produced: the batch planner sizes the next round from it."""

    bootstraps: int  # bootstrap answers taken
    admitted: int  # candidates that passed screening
    finished: int  # of those, judged to the end
    kept: int
    pending: int


def bootstrap_yield(engine: Engine, run_id: int) -> Yield:
    with Session(engine) as s:
        boots = s.execute(
            select(func.count()).where(Request.run_id == run_id, Request.stage == "bootstrap", Request.state == "done", Request.error.is_(None))
        ).scalar_one()
        by = dict(s.execute(
            select(Sample.status, func.count()).where(Sample.run_id == run_id, Sample.indexed).group_by(Sample.status)
        ).all())
    admitted = sum(by.values())
    pending = by.get(Status.pending.value, 0)
    return Yield(boots, admitted, admitted - pending, sum(by.get(k, 0) for k in KEPT), pending)


def batch_costs(engine: Engine, run_ids: list[int]) -> dict[int, tuple[float, float]]:
    """run id -> (estimated cost of all its batches, estimated cost of those not yet ingested)."""
    with engine.connect() as conn:
        return batch_estimates(via(conn), run_ids)


def errors_json(errors) -> str | None:
    """A failed batch's error list, kept as JSON text."""
    return json.dumps(errors, ensure_ascii=False) if errors else None


def batches_with_runs(engine: Engine, run_id: int | None = None) -> list[tuple[Batch, str]]:
    """(batch, its run's name), oldest first: what the review API lists."""
    q = select(Batch, Run.name).join(Run, Run.id == Batch.run_id).order_by(Batch.id)
    if run_id is not None:
        q = q.where(Batch.run_id == run_id)
    with Session(engine, expire_on_commit=False) as s:
        return [(b, name) for b, name in s.execute(q).all()]


def get_batch(engine: Engine, batch_id: int) -> Batch | None:
    with Session(engine, expire_on_commit=False) as s:
        return s.get(Batch, batch_id)


def drop_batch(engine: Engine, batch_id: int) -> int:
    """Forget a batch the provider never saw, with its lines (never sent, never paid), in one transaction."""
    with Session(engine) as s:
        n = s.execute(delete(Request).where(Request.batch_id == batch_id, Request.state == "sent")).rowcount
        s.execute(delete(Batch).where(Batch.id == batch_id, Batch.provider_id.is_(None)))
        s.commit()
    return n


def run_of(engine: Engine, batch: Batch) -> Run:
    with Session(engine, expire_on_commit=False) as s:
        return s.get(Run, batch.run_id)
