"""What the generation pipeline writes and reads: runs, the request log, samples."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from datagen.errors import NotFound
from datagen.records import KEPT, LIVE, Candidate, Generation, Status
from datagen.storage.db import added, outlasting
from datagen.storage.models import InstanceRow, Request, Run, RunLease, Sample, utcnow
from datagen.storage.overview import RunStats, shown_state, stats_by_run, via

# A live run touches its row every HEARTBEAT (updated_at: when it last did something). Whether it
# is alive is the run lease's to say (shown_state); STALE_AFTER is kept for callers that guess by age.
HEARTBEAT = timedelta(seconds=30)
STALE_AFTER = 4 * HEARTBEAT


def instruction_hash(text: str) -> str:
    norm = re.sub(r"\s+", " ", text.strip().lower())
    return hashlib.sha1(norm.encode("utf-8")).hexdigest()


def prompt_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def get_run(engine: Engine, name: str) -> Run | None:
    with Session(engine) as s:
        return s.exec(select(Run).where(Run.name == name)).scalars().first()


def run_id_of(engine: Engine, name: str | None) -> int | None:
    """The id of the run with this name (None for None); an unknown name is NotFound."""
    if name is None:
        return None
    run = get_run(engine, name)
    if run is None:
        raise NotFound(f"no run named {name!r}")
    return run.id


def open_run(engine: Engine, name: str, *, lang: str, api: str, model: str, target: int, config: dict) -> tuple[Run, bool]:
    """Return (run, created). An existing run keeps its language; target and config are updated."""
    with Session(engine, expire_on_commit=False) as s:
        run = s.exec(select(Run).where(Run.name == name)).scalars().first()
        created = run is None
        if run is None:
            run = Run(name=name, lang=lang, api=api, model=model, target=target, config=json.dumps(config))
        else:
            run.target, run.api, run.model = target, api, model
            run.config = json.dumps(config)
            run.state = "running"
            run.updated_at = utcnow()
            # The caller holds the run lease, so an online request still `sent` was cut off by the death
            # of the process before (kill -9): it never gets an answer here. Its cost is unknown.
            s.execute(update(Request).where(Request.run_id == run.id, Request.state == "sent", Request.batch_id.is_(None))
                      .values(state="lost", error="cut off: the process died before the answer came back"))
        s.add(run)
        s.commit()
        return run, created


@outlasting
def set_run_state(engine: Engine, run_id: int, state: str) -> None:
    with Session(engine) as s:
        s.execute(update(Run).where(Run.id == run_id).values(state=state, updated_at=utcnow()))
        s.commit()


@outlasting
def touch_run(engine: Engine, run_id: int) -> None:
    """The live run's heartbeat."""
    with Session(engine) as s:
        s.execute(update(Run).where(Run.id == run_id).values(updated_at=utcnow()))
        s.commit()


@outlasting
def begin_request(engine: Engine, run_id: int, stage: str, model: str, prompts: list[str], *, attempt: int = 1) -> int:
    """The ledger row of one HTTP request, written before it is sent."""
    text = prompts[0] if len(prompts) == 1 else json.dumps(prompts, ensure_ascii=False)
    row = Request(run_id=run_id, stage=stage, model=model, prompt_hash=prompt_hash(text), prompt=text,
                  attempt=attempt, state="sent", prompts=len(prompts))
    with Session(engine) as s:
        s.add(row)
        s.commit()
        return row.id


@outlasting
def end_request(engine: Engine, row_id: int, gens: list[Generation], *, cost: float = 0.0, state: str = "done") -> None:
    """Complete a ledger row: one Generation per prompt, or one carrying the error."""
    texts = [g.text for g in gens]
    finish = sorted({g.finish_reason for g in gens if g.finish_reason})
    with Session(engine) as s:
        s.execute(
            update(Request)
            .where(Request.id == row_id)
            .values(
                response=texts[0] if len(texts) == 1 else json.dumps(texts, ensure_ascii=False),
                tokens_in=sum(g.tokens_in for g in gens),
                tokens_out=sum(g.tokens_out for g in gens),
                cost=cost,
                finish_reason=",".join(finish) or None,
                latency_ms=int(max(g.latency_s for g in gens) * 1000),
                error=gens[0].error if len(gens) == 1 else None,
                state=state,
            )
        )
        s.commit()


def log_request(
    engine: Engine, run_id: int, stage: str, model: str, prompt: str, gen: Generation, *, attempt: int = 1, cost: float = 0.0
) -> int:
    """A request already answered, in one call (tests and benches): begin_request, then end_request."""
    row = begin_request(engine, run_id, stage, model, [prompt], attempt=attempt)
    end_request(engine, row, [gen], cost=cost)
    return row


def _sample_row(run_id: int, c: Candidate) -> Sample:
    return Sample(
        run_id=run_id,
        lang=c.lang,
        instruction=c.instruction,
        instruction_hash=instruction_hash(c.instruction),
        is_classification=c.is_classification,
        status=c.status.value,
        reason=c.reason,
        detail=c.detail,
        nearest=c.nearest,
        nearest_score=c.nearest_score,
        # Kept at insert time means it passed the ROUGE-L check; it stays in the index even if a
        # later stage rejects it, so a resumed run rebuilds exactly the index the crashed one had.
        indexed=c.status.value in LIVE,
        request_id=c.request_id,
    )


@outlasting
def add_sample(engine: Engine, run_id: int, c: Candidate) -> int | None:
    """Insert one candidate in its own transaction. None if an identical kept instruction exists."""
    row = _sample_row(run_id, c)
    with Session(engine) as s:
        if not added(s, row):
            return None
        for i, inst in enumerate(c.instances):
            s.add(InstanceRow(sample_id=row.id, idx=i, input=inst.input, output=inst.output))
        s.commit()
        return row.id


@outlasting
def set_classification(engine: Engine, sample_id: int, value: bool) -> None:
    """Store the classify verdict as it arrives, so a resumed run does not pay for it again."""
    with Session(engine) as s:
        s.execute(update(Sample).where(Sample.id == sample_id).values(is_classification=value, updated_at=utcnow()))
        s.commit()


@outlasting
def finish_sample(engine: Engine, sample_id: int, c: Candidate) -> None:
    """Record the verdict on a pending sample and its instances, atomically."""
    with Session(engine) as s:
        s.execute(
            update(Sample)
            .where(Sample.id == sample_id)
            .values(
                status=c.status.value,
                reason=c.reason,
                detail=c.detail,
                is_classification=c.is_classification,
                updated_at=utcnow(),
            )
        )
        s.execute(delete(InstanceRow).where(InstanceRow.sample_id == sample_id))
        for i, inst in enumerate(c.instances):
            s.add(InstanceRow(sample_id=sample_id, idx=i, input=inst.input, output=inst.output))
        s.commit()


def pending_samples(engine: Engine, run_id: int) -> list[Candidate]:
    with Session(engine) as s:
        rows = s.execute(
            select(Sample).where(Sample.run_id == run_id, Sample.status == Status.pending.value).order_by(Sample.id)
        ).scalars()
        return [
            Candidate(
                instruction=r.instruction,
                lang=r.lang,
                request_id=r.request_id,
                nearest=r.nearest,
                nearest_score=r.nearest_score,
                is_classification=r.is_classification,
                sample_id=r.id,
            )
            for r in rows
        ]


def indexed_instructions(engine: Engine, run_id: int) -> list[str]:
    """Instructions that passed the ROUGE-L check in this run, in order: the resumed index's contents."""
    with Session(engine) as s:
        return list(
            s.execute(select(Sample.instruction).where(Sample.run_id == run_id, Sample.indexed).order_by(Sample.id)).scalars()
        )


def kept_texts(engine: Engine, run_id: int) -> list[tuple[int, str]]:
    """(id, instruction) of the kept samples of a run, in id order."""
    with engine.connect() as conn:
        q = select(Sample.id, Sample.instruction).where(Sample.run_id == run_id, Sample.status.in_(KEPT)).order_by(Sample.id)
        return [(r[0], r[1]) for r in conn.execute(q)]


@outlasting
def run_stats(engine: Engine, run_id: int) -> RunStats:
    with engine.connect() as conn:
        return stats_by_run(via(conn), [run_id])[run_id]


def list_runs(engine: Engine) -> list[tuple[Run, RunStats]]:
    """Every run, oldest first, with its stats; the state is the shown one (overview.shown_state)."""
    with Session(engine) as s:
        runs = list(s.execute(select(Run).order_by(Run.id)).scalars())
        leases = {row.run_name: row for row in s.execute(select(RunLease)).scalars()}
        stats = stats_by_run(via(s.connection()))
    for r in runs:  # detached copies: what callers show, never written back
        r.state = shown_state(r, leases.get(r.name))
    return [(r, stats.get(r.id, RunStats())) for r in runs]
