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
        lost = select(Job.attempt_id).where(Job.queue.in_(queues), Job.state == "running", Job.lease_expires_at < now,
                                            Job.attempts >= max_attempts)
        s.execute(update(JobAttempt).where(JobAttempt.id.in_(lost), JobAttempt.state == "running")
                  .values(state="lost", finished_at=now, exit_message="worker lease expired"))
        s.execute(update(Job).where(Job.queue.in_(queues), Job.state == "running", Job.lease_expires_at < now,
                                    Job.attempts >= max_attempts)
                  .values(state="failed", finished_at=now, lease_expires_at=None, claimed_by=None,
                          exit_message=f"its worker was lost {max_attempts} times; not retried"))
        s.commit()


def claim_job(engine: Engine, queues: list[str], worker: str, ttl: float, now: datetime | None = None) -> tuple[Job, JobAttempt] | None:
    """Take the oldest due job (or one whose worker's lease ran out) and open an attempt for it."""
    now = now or utcnow()
    with Session(engine, expire_on_commit=False) as s:
        pick = (
            select(Job.id).where(_claimable(now, queues))
            .order_by(func.coalesce(Job.scheduled_for, Job.created_at), Job.id).limit(1)
            .with_for_update(skip_locked=True)  # Postgres: concurrent claimers skip each other's row
            .scalar_subquery()
        )
        # SQLite ignores FOR UPDATE; the UPDATE itself takes the database's write lock, and the
        # repeated condition makes it a no-op for a row another claimer changed first.
        row = s.execute(
            update(Job).where(Job.id == pick, _claimable(now, queues))
            .values(state="running", claimed_by=worker, heartbeat_at=now, lease_expires_at=now + timedelta(seconds=ttl),
                    attempts=Job.attempts + 1, started_at=func.coalesce(Job.started_at, now))
            .returning(Job.id, Job.attempt_id, Job.attempts)
        ).first()
        if row is None:
            s.rollback()
            return None
        job_id, previous, n = row
        if previous is not None:  # its worker vanished: that attempt is lost
            s.execute(update(JobAttempt).where(JobAttempt.id == previous, JobAttempt.state == "running")
                      .values(state="lost", finished_at=now, exit_message="worker lease expired"))
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


def run_usage_since(engine: Engine, run_name: str | None, since: datetime) -> tuple[int, int, float]:
    """Tokens in, out and cost of a run's requests logged since a time (one attempt's share)."""
    if not run_name:
        return 0, 0, 0.0
    with Session(engine) as s:
        q = (select(func.coalesce(func.sum(Request.tokens_in), 0), func.coalesce(func.sum(Request.tokens_out), 0),
                    func.coalesce(func.sum(Request.cost), 0.0))
             .join(Run, Run.id == Request.run_id).where(Run.name == run_name, Request.created_at >= since))
        tin, tout, cost = s.execute(q).one()
        return int(tin), int(tout), float(cost)


def finish_attempt(engine: Engine, job_id: int, attempt_id: int, *, attempt_state: str, job_state: str,
                   exit_code: int | None, message: str | None, usage: tuple[int, int, float],
                   again_in: float | None = None) -> bool:
    """Close an attempt and move the job on (job_state 'queued' hands it back). False if it was not ours."""
    now = utcnow()
    tin, tout, cost = usage
    with Session(engine) as s:
        res = s.execute(
            update(Job).where(Job.id == job_id, Job.attempt_id == attempt_id, Job.state == "running")
            .values(state=job_state, exit_message=message, tokens_in=Job.tokens_in + tin, tokens_out=Job.tokens_out + tout,
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


def cancel_job(engine: Engine, job_id: int) -> tuple[Job, bool] | None:
    """Queued: cancelled now. Running: flagged; its worker stops it at the next heartbeat check."""
    now = utcnow()
    with Session(engine, expire_on_commit=False) as s:
        res = s.execute(update(Job).where(Job.id == job_id, Job.state.in_(("queued", "running"))).values(
            cancel_requested=True,
            state=case((Job.state == "queued", "cancelled"), else_=Job.state),
            finished_at=case((Job.state == "queued", now), else_=Job.finished_at),
            exit_message=case((Job.state == "queued", "cancelled before it started"), else_=Job.exit_message),
        ))
        s.commit()
        job = s.get(Job, job_id)
        return None if job is None else (job, res.rowcount == 1)


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
