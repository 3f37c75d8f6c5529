"""What the judge scorer (datagen/scores/judge.py) reads and writes in the request ledger.

A judge request is a ledger row of the scored run with stage "judge:<rubric>" and the sample it
rates in `sample_id`, written before it is sent. Its answer becomes a score row (success or failure,
datagen/storage/scores.py) that names the row in `request_id`: an answered row that no score names
was answered but not yet read (the process died in between), and is read on the next start instead
of being asked again.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import exists, func, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from datagen.storage.batches import OUTSTANDING
from datagen.storage.models import Batch, Request, Score
from datagen.storage.runs import prompt_hash


def begin_request(engine: Engine, run_id: int, stage: str, model: str, prompt: str, sample_id: int | None, *, attempt: int = 1) -> int:
    """The ledger row of one judge request, carrying its sample, written before it is sent."""
    row = Request(run_id=run_id, stage=stage, model=model, prompt_hash=prompt_hash(prompt), prompt=prompt,
                  attempt=attempt, state="sent", sample_id=sample_id)
    with Session(engine) as s:
        s.add(row)
        s.commit()
        return row.id


def _unread():
    return ~exists().where(Score.request_id == Request.id)


def unread_answers(engine: Engine, run_id: int, stage: str, model: str) -> list[Request]:
    """Answered rows (online: done without an error; batch: answered) that no score row names yet."""
    q = select(Request).where(
        Request.run_id == run_id, Request.stage == stage, Request.model == model, Request.sample_id.is_not(None),
        ((Request.state == "done") & Request.error.is_(None)) | (Request.state == "answered"), _unread(),
    ).order_by(Request.id)
    with Session(engine, expire_on_commit=False) as s:
        return list(s.execute(q).scalars())


def settle_read(engine: Engine, run_id: int, stage: str) -> int:
    """Batch lines whose answers are read (a score row names them) are done; returns how many changed."""
    with Session(engine) as s:
        n = s.execute(update(Request).where(Request.run_id == run_id, Request.stage == stage, Request.state == "answered",
                                            ~_unread()).values(state="done")).rowcount
        s.commit()
        return n


def busy_samples(engine: Engine, run_id: int, stage: str) -> set[int]:
    """Samples with a batch line on its way (queued, sent, or answered and not yet read)."""
    with engine.connect() as conn:
        q = select(Request.sample_id).where(Request.run_id == run_id, Request.stage == stage, Request.state.in_(OUTSTANDING),
                                            Request.sample_id.is_not(None))
        return {r[0] for r in conn.execute(q)}


def spent(engine: Engine, run_id: int, stage: str, model: str) -> float:
    """What this judge (run, rubric, model) paid so far, over every session: the ledger's costs."""
    with engine.connect() as conn:
        q = select(func.coalesce(func.sum(Request.cost), 0.0)).where(Request.run_id == run_id, Request.stage == stage, Request.model == model)
        return float(conn.execute(q).scalar_one())


def open_batch_estimate(engine: Engine, run_id: int, stages: Sequence[str]) -> float:
    """Batches of these stages not yet ingested, at their submit-time estimate (an upper bound)."""
    with engine.connect() as conn:
        q = select(func.coalesce(func.sum(Batch.cost_est), 0.0)).where(Batch.run_id == run_id, Batch.stage.in_(list(stages)),
                                                                       Batch.ingested.is_(False))
        return float(conn.execute(q).scalar_one())


def open_batch_models(engine: Engine, run_id: int, stage: str) -> set[str]:
    with engine.connect() as conn:
        q = select(Batch.model).where(Batch.run_id == run_id, Batch.stage == stage, Batch.ingested.is_(False)).distinct()
        return {r[0] for r in conn.execute(q)}


def request_counts(engine: Engine, run_id: int, stage: str, model: str) -> tuple[int, float]:
    """(requests, cost) of this judge in the ledger."""
    with engine.connect() as conn:
        q = select(func.count(), func.coalesce(func.sum(Request.cost), 0.0)).where(
            Request.run_id == run_id, Request.stage == stage, Request.model == model)
        n, cost = conn.execute(q).one()
        return int(n), float(cost)
