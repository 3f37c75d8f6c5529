"""The job queue's library API (stable: the scheduler and the dashboard build on it).

    submit(engine, "generate", ["--api", "chat", "-n", "500", "--run", "nightly"])  -> Job | None
    claim(engine, worker, queues)  -> (Job, JobAttempt) | None
    heartbeat / finish / cancel / get / list_jobs / progress

Postgres claims with SELECT ... FOR UPDATE SKIP LOCKED; SQLite with one guarded UPDATE under its
single write lock (fine for a few workers on one machine; SQLite over a network filesystem is not
safe, so use Postgres for workers on several machines).
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy.engine import Engine

from datagen import storage
from datagen.config import DEFAULT_QUEUE, LEASE_TTL
from datagen.errors import Conflict, InputError, NotFound
from datagen.jobs.kinds import KINDS, validate
from datagen.storage import jobs as store
from datagen.storage.models import Job, JobAttempt, unstorable, utcnow

__all__ = ["KINDS", "Job", "JobAttempt", "submit", "claim", "heartbeat", "finish", "cancel", "get", "list_jobs", "progress"]


def submit(engine: Engine, kind: str, args: list[str], *, queue: str = DEFAULT_QUEUE, unique_key: str | None = None,
           schedule_id: int | None = None, scheduled_for: datetime | None = None, skip_reason: str | None = None,
           slots: int = 1, scheduled_until: datetime | None = None) -> Job | None:
    """Validate and store a job; None when `unique_key` exists already (a scheduler's slot fired).

    `skip_reason` stores the job as `skipped` with that message (a scheduler's skipped or missed slot).
    """
    params = validate(kind, args)
    if not queue or unstorable(queue):
        raise InputError(f"bad queue name {queue!r}")
    job = Job(kind=kind, args=json.dumps(list(args)), queue=queue, unique_key=unique_key, schedule_id=schedule_id,
              scheduled_for=scheduled_for, run_name=params.get("run") if kind in ("generate", "score") else None,
              slots=slots, scheduled_until=scheduled_until)
    if skip_reason is not None:
        job.state, job.exit_message = "skipped", skip_reason
    return store.insert_job(engine, job)


MAX_ATTEMPTS = 3  # a job that loses its worker this often is failed: it may be what kills them


def claim(engine: Engine, worker: str, queues: list[str], ttl: float = LEASE_TTL) -> tuple[Job, JobAttempt] | None:
    """The next due job (or one whose worker vanished) with a new attempt; None when there is none."""
    # One clock reading for both: a lease that runs out between the two would otherwise hand a job
    # its worker lost MAX_ATTEMPTS times to a fourth one (found by polling instead of sleeping).
    now = utcnow()
    store.fail_lost_jobs(engine, queues, MAX_ATTEMPTS, now)
    return store.claim_job(engine, queues, worker, ttl, now)


def heartbeat(engine: Engine, job: Job, attempt: JobAttempt, ttl: float = LEASE_TTL) -> bool | None:
    """True: cancel was requested. False: carry on. None: the job was taken from this worker."""
    return store.heartbeat_job(engine, job.id, attempt.id, ttl)


def finish(engine: Engine, job: Job, attempt: JobAttempt, *, attempt_state: str, job_state: str,
           exit_code: int | None = None, message: str | None = None, again_in: float | None = None) -> bool:
    """Close the attempt; a job handed back (`queued`) with `again_in` is not claimed before that many seconds."""
    usage = store.run_usage_since(engine, job.run_name, attempt.started_at)
    if usage[3]:
        message = f"{message or ''}; usage includes an estimate for {usage[3]} request(s) cut off".lstrip("; ")
    return store.finish_attempt(engine, job.id, attempt.id, attempt_state=attempt_state, job_state=job_state,
                                exit_code=exit_code, message=message, usage=usage, again_in=again_in)


def cancel(engine: Engine, job_id: int, reason: str | None = None) -> Job:
    """A queued job is cancelled at once; a running one is flagged and its worker stops it within seconds.

    `reason` is stored as the job's message (a schedule's overlap=replace says why it cancelled)."""
    found = store.cancel_job(engine, job_id, reason)
    if found is None:
        raise NotFound(f"no job {job_id}")
    job, changed = found
    if not changed:
        raise Conflict(f"job {job_id} is already {job.state}")
    return job


def get(engine: Engine, job_id: int) -> tuple[Job, list[JobAttempt]]:
    found = store.get_job(engine, job_id)
    if found is None:
        raise NotFound(f"no job {job_id}")
    return found


def progress(engine: Engine, job: Job) -> dict | None:
    """A generate job's run so far (accepted / target, requests, tokens, cost); None before it has a run row."""
    run = storage.get_run(engine, job.run_name) if job.run_name else None
    if run is None:
        return None
    st = storage.run_stats(engine, run.id)
    return {"run": run.name, "state": run.state, "accepted": st.kept, "target": run.target, "requests": st.requests,
            "errors": st.errors, "tokens_in": st.tokens_in, "tokens_out": st.tokens_out, "cost": st.cost}


def list_jobs(engine: Engine, *, state: str | None = None, queue: str | None = None, schedule_id: int | None = None,
              limit: int = 100) -> list[Job]:
    if state is not None and state not in store.STATES:
        raise InputError(f"unknown job state {state!r}: use one of {', '.join(store.STATES)}")
    return store.list_jobs(engine, state=state, queue=queue, schedule_id=schedule_id, limit=limit)
