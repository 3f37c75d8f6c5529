"""The job queue's SQL: submit, claim (SKIP LOCKED on Postgres, one guarded UPDATE on SQLite),
heartbeat, finish, cancel. Every state change is a compare-and-swap on the job's current attempt,
so a worker that lost its lease can never overwrite the new holder's work.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import aliased
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from datagen.storage.db import added
from datagen.storage.models import Job, JobAttempt, Request, Run, utcnow

STATES = ("queued", "running", "succeeded", "failed", "cancelled", "skipped")
FINAL = ("succeeded", "failed", "cancelled", "skipped")


def insert_job(engine: Engine, job: Job) -> Job | None:
    """Store a new job; None when its unique_key is taken (a slot fired already)."""
    with Session(engine, expire_on_commit=False) as s:
        if not added(s, job):
            return None
        if job.kind == "generate" and job.run_name is None:
            # A re-claimed job must resume the same run, so a job without --run gets one now.
            job.run_name = f"job-{job.id}"
            job.args = json.dumps([*json.loads(job.args), "--run", job.run_name])
        s.commit()
        return job


def _claimable(now: datetime, queues: list[str]):
    # A schedule's jobs run one at a time, in slot order (overlap=queue, catch_up:N, run-now): a
    # queued job waits while another job of its schedule runs.
    other = aliased(Job)
    sibling_running = (
        select(other.id).where(other.schedule_id == Job.schedule_id, other.state == "running", other.id != Job.id)
        .correlate(Job).exists()
    )
    due = and_(Job.state == "queued", or_(Job.scheduled_for.is_(None), Job.scheduled_for <= now),
               or_(Job.schedule_id.is_(None), ~sibling_running))
    expired = and_(Job.state == "running", Job.lease_expires_at < now)
    return and_(Job.queue.in_(queues), or_(due, expired))


def fail_lost_jobs(engine: Engine, queues: list[str], max_attempts: int, now: datetime | None = None) -> None:
    """A job whose worker vanished `max_attempts` times (it may be what kills them) is failed, not retried."""
    now = now or utcnow()
    with Session(engine) as s:
        lost = s.execute(select(Job.id, Job.attempt_id).where(
            Job.queue.in_(queues), Job.state == "running", Job.lease_expires_at < now, Job.attempts >= max_attempts)).all()
        for job_id, attempt_id in lost:
            res = s.execute(update(Job).where(Job.id == job_id, Job.attempt_id == attempt_id, Job.state == "running",
                                              Job.lease_expires_at < now)
                            .values(state="failed", finished_at=now, lease_expires_at=None, claimed_by=None,
                                    exit_message=f"its worker was lost {max_attempts} times; not retried"))
            if res.rowcount == 1 and attempt_id is not None:
                _lose_attempt(s, job_id, attempt_id, now, "worker lease expired")
        s.commit()


def _lose_attempt(s: Session, job_id: int, attempt_id: int, now: datetime, message: str) -> None:
    """Close an attempt whose worker died: its usage (requests cut off by the kill estimated) joins the job's."""
    att = s.get(JobAttempt, attempt_id)
    if att is None or att.state != "running":
        return
    tin, tout, cost, cut = _usage(s, att.run_name, att.started_at, now)
    if cut:
        message += f"; usage includes an estimate for {cut} request(s) cut off"
    s.execute(update(JobAttempt).where(JobAttempt.id == attempt_id, JobAttempt.state == "running").values(
        state="lost", finished_at=now, exit_message=message, tokens_in=tin, tokens_out=tout, cost=cost))
    s.execute(update(Job).where(Job.id == job_id).values(
        tokens_in=Job.tokens_in + tin, tokens_out=Job.tokens_out + tout, cost=Job.cost + cost))


def claim_job(engine: Engine, queues: list[str], worker: str, ttl: float, now: datetime | None = None) -> tuple[Job, JobAttempt] | None:
    """Take the oldest due job (or one whose worker's lease ran out) and open an attempt for it.

    A schedule's second running job is refused by the database (ux_job_schedule_running): a
    claimer that loses that race to another worker's claim of a sibling passes the job by.
    """
    now = now or utcnow()  # one reading of the clock for the whole claim
    for _ in range(5):
        try:
            return _claim_one(engine, queues, worker, ttl, now)
        except IntegrityError:  # a sibling was claimed at the same moment: the next pick sees it committed
            continue
    return None


def _claim_one(engine: Engine, queues: list[str], worker: str, ttl: float, now: datetime) -> tuple[Job, JobAttempt] | None:
    cond = _claimable(now, queues)
    with Session(engine, expire_on_commit=False) as s:
        pick = (
            select(Job.id).where(cond)
            .order_by(func.coalesce(Job.scheduled_for, Job.created_at), Job.id).limit(1)
            .with_for_update(skip_locked=True)  # Postgres: concurrent claimers skip each other's row
            .scalar_subquery()
        )
        # SQLite ignores FOR UPDATE; the UPDATE itself takes the database's write lock, and the
        # repeated condition makes it a no-op for a row another claimer changed first.
        try:
            row = s.execute(
                update(Job).where(Job.id == pick, cond)
                .values(state="running", claimed_by=worker, heartbeat_at=now, lease_expires_at=now + timedelta(seconds=ttl),
                        attempts=Job.attempts + 1, started_at=func.coalesce(Job.started_at, now))
                .returning(Job.id, Job.attempt_id, Job.attempts, Job.schedule_id)
            ).first()
        except IntegrityError:
            s.rollback()
            raise
        if row is None:
            s.rollback()
            return None
        job_id, previous, n, _ = row
        if previous is not None:  # its worker vanished: that attempt is lost
            _lose_attempt(s, job_id, previous, now, "worker lease expired")
        job = s.get(Job, job_id)
        attempt = JobAttempt(job_id=job_id, n=n, worker=worker, run_name=job.run_name, started_at=now, heartbeat_at=now)
        s.add(attempt)
        s.flush()
        job.attempt_id = attempt.id
        s.commit()
        return job, attempt


def heartbeat_job(engine: Engine, job_id: int, attempt_id: int, ttl: float) -> bool | None:
    """Renew the lease; returns cancel_requested, or None when the job is no longer this attempt's."""
    now = utcnow()
    with Session(engine) as s:
        row = s.execute(
            update(Job).where(Job.id == job_id, Job.attempt_id == attempt_id, Job.state == "running")
            .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=ttl))
            .returning(Job.cancel_requested)
        ).first()
        if row is not None:
            s.execute(update(JobAttempt).where(JobAttempt.id == attempt_id).values(heartbeat_at=now))
        s.commit()
        return None if row is None else bool(row[0])


def expire_job_lease(engine: Engine, job_id: int, attempt_id: int) -> None:
    """Mark a running job's lease as run out now (its worker is known dead), so it is claimable at once."""
    with Session(engine) as s:
        s.execute(update(Job).where(Job.id == job_id, Job.attempt_id == attempt_id, Job.state == "running")
                  .values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        s.commit()


def running_jobs(engine: Engine) -> list[Job]:
    with Session(engine) as s:
        return list(s.execute(select(Job).where(Job.state == "running")).scalars())


CUT_OFF = ("sent", "lost")  # online requests whose answer never came back (the process was killed)


def _usage(s: Session, run_name: str | None, since: datetime, until: datetime | None = None) -> tuple[int, int, float, int]:
    """Tokens in, out and cost of a run's requests logged in a window (one attempt's share), and how
    many of them were cut off by a kill: those are counted at the run's average for their stage,
    since the provider may well have served (and billed) them."""
    if not run_name:
        return 0, 0, 0.0, 0
    window = [Run.name == run_name, Request.created_at >= since]
    if until is not None:
        window.append(Request.created_at <= until)
    q = (select(func.coalesce(func.sum(Request.tokens_in), 0), func.coalesce(func.sum(Request.tokens_out), 0),
                func.coalesce(func.sum(Request.cost), 0.0))
         .join(Run, Run.id == Request.run_id).where(*window))
    tin, tout, cost = s.execute(q).one()
    tin, tout, cost = int(tin), int(tout), float(cost)
    cut = s.execute(select(Request.stage, func.count()).join(Run, Run.id == Request.run_id)
                    .where(*window, Request.state.in_(CUT_OFF), Request.batch_id.is_(None)).group_by(Request.stage)).all()
    n_cut = 0
    for stage, n in cut:
        avg = s.execute(select(func.avg(Request.tokens_in), func.avg(Request.tokens_out), func.avg(Request.cost))
                        .join(Run, Run.id == Request.run_id)
                        .where(Run.name == run_name, Request.stage == stage, Request.state == "done",
                               Request.error.is_(None))).one()
        tin += round((avg[0] or 0) * n)
        tout += round((avg[1] or 0) * n)
        cost += float(avg[2] or 0) * n
        n_cut += n
    return tin, tout, cost, n_cut


def run_usage_since(engine: Engine, run_name: str | None, since: datetime) -> tuple[int, int, float, int]:
    """(tokens in, tokens out, cost, requests cut off and estimated) of a run since a time."""
    with Session(engine) as s:
        return _usage(s, run_name, since)


def finish_attempt(engine: Engine, job_id: int, attempt_id: int, *, attempt_state: str, job_state: str,
                   exit_code: int | None, message: str | None, usage: tuple[int, int, float],
                   again_in: float | None = None) -> bool:
    """Close an attempt and move the job on (job_state 'queued' hands it back). False if it was not ours."""
    now = utcnow()
    tin, tout, cost = usage[:3]
    with Session(engine) as s:
        res = s.execute(
            update(Job).where(Job.id == job_id, Job.attempt_id == attempt_id, Job.state == "running")
            # a cancelled job keeps the reason its canceller stored (overlap=replace says why)
            .values(state=job_state, exit_message=func.coalesce(Job.exit_message, message) if job_state == "cancelled" else message,
                    tokens_in=Job.tokens_in + tin, tokens_out=Job.tokens_out + tout,
                    cost=Job.cost + cost, lease_expires_at=None, claimed_by=None,
                    finished_at=now if job_state in FINAL else None,
                    **({"scheduled_for": now + timedelta(seconds=again_in)} if again_in else {}))
        )
        ours = res.rowcount == 1
        s.execute(update(JobAttempt).where(JobAttempt.id == attempt_id).values(
            state=attempt_state if ours else "lost", exit_code=exit_code, exit_message=message, finished_at=now,
            tokens_in=tin, tokens_out=tout, cost=cost))
        s.commit()
        return ours


def cancel_job(engine: Engine, job_id: int, reason: str | None = None) -> tuple[Job, bool] | None:
    """Queued: cancelled now. Running: flagged; its worker stops it at the next heartbeat check.

    `reason` (who cancelled it and why) becomes the job's message, kept when its worker records the stop."""
    now = utcnow()
    with Session(engine, expire_on_commit=False) as s:
        res = s.execute(update(Job).where(Job.id == job_id, Job.state.in_(("queued", "running"))).values(
            cancel_requested=True,
            state=case((Job.state == "queued", "cancelled"), else_=Job.state),
            finished_at=case((Job.state == "queued", now), else_=Job.finished_at),
            exit_message=reason or case((Job.state == "queued", "cancelled before it started"), else_="cancelled"),
        ))
        s.commit()
        job = s.get(Job, job_id)
        return None if job is None else (job, res.rowcount == 1)


def newest_skipped(engine: Engine, schedule_id: int) -> Job | None:
    """The schedule's latest skipped row (a gap the next skipped slots may extend)."""
    with Session(engine, expire_on_commit=False) as s:
        return s.execute(select(Job).where(Job.schedule_id == schedule_id, Job.state == "skipped")
                         .order_by(Job.scheduled_for.desc(), Job.id.desc()).limit(1)).scalars().first()


def extend_gap(engine: Engine, job_id: int, slots_before: int, slots: int, until: datetime, message: str) -> bool:
    """Extend a skipped row's gap to `until`; False when another scheduler extended it first."""
    with Session(engine) as s:
        res = s.execute(update(Job).where(Job.id == job_id, Job.slots == slots_before, Job.state == "skipped")
                        .values(slots=slots, scheduled_until=until, exit_message=message, finished_at=utcnow()))
        s.commit()
        return res.rowcount == 1


def get_job(engine: Engine, job_id: int) -> tuple[Job, list[JobAttempt]] | None:
    with Session(engine, expire_on_commit=False) as s:
        job = s.get(Job, job_id)
        if job is None:
            return None
        attempts = list(s.execute(select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.n)).scalars())
        return job, attempts


def list_jobs(engine: Engine, *, state: str | None = None, queue: str | None = None, schedule_id: int | None = None,
              limit: int = 100) -> list[Job]:
    q = select(Job)
    if state:
        q = q.where(Job.state == state)
    if queue:
        q = q.where(Job.queue == queue)
    if schedule_id is not None:
        q = q.where(Job.schedule_id == schedule_id)
    with Session(engine, expire_on_commit=False) as s:
        return list(s.execute(q.order_by(Job.id.desc()).limit(limit)).scalars())


def attempts_of(engine: Engine, job_ids: list[int]) -> dict[int, list[JobAttempt]]:
    """The attempts of many jobs in one query (the Jobs page lists a few hundred)."""
    out: dict[int, list[JobAttempt]] = {i: [] for i in job_ids}
    if not job_ids:
        return out
    with Session(engine, expire_on_commit=False) as s:
        for a in s.execute(select(JobAttempt).where(JobAttempt.job_id.in_(job_ids)).order_by(JobAttempt.job_id, JobAttempt.n)).scalars():
            out[a.job_id].append(a)
    return out
