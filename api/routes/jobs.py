"""Jobs: the queue, running jobs with live progress, history with attempts; submit and cancel need the token."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from api.deps import EngineDep, require_token
from api.schemas import MAX_ID, READ_ERRORS, WRITE_ERRORS, Text
from api.security import scrub_text
from datagen.config import DEFAULT_QUEUE
from datagen.jobs import queue
from datagen.jobs.kinds import KINDS
from datagen.storage import jobs as job_store
from datagen.storage import schedules as schedule_store

router = APIRouter(tags=["jobs"], responses=READ_ERRORS)
JobId = Annotated[int, Path(ge=1, le=MAX_ID)]
StateName = Literal["queued", "running", "succeeded", "failed", "cancelled", "skipped"]


class Progress(BaseModel):
    run: str
    state: str
    accepted: int
    target: int
    requests: int
    errors: int
    tokens_in: int
    tokens_out: int
    cost: float


class AttemptOut(BaseModel):
    n: int
    worker: str
    state: str
    exit_code: int | None
    message: str | None
    started_at: datetime
    finished_at: datetime | None
    cost: float


class JobOut(BaseModel):
    id: int
    kind: str
    args: list[str]
    queue: str
    state: str
    schedule_id: int | None
    schedule: str | None = Field(description="schedule name (None for a job submitted by hand or a removed schedule)")
    scheduled_for: datetime | None
    run: str | None
    worker: str | None
    message: str | None
    tokens_in: int
    tokens_out: int
    cost: float
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: Progress | None = Field(description="the run's accepted / target, requests and cost, live while it runs")
    attempts: list[AttemptOut]


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Text = Field(..., max_length=32, json_schema_extra={"enum": list(KINDS)})  # checked by queue.submit, with its message
    args: list[Annotated[Text, Field(max_length=2000)]] = Field(default_factory=list, max_length=100)
    queue: Text = Field(DEFAULT_QUEUE, min_length=1, max_length=64)


def _outs(engine, jobs) -> list[JobOut]:
    names = {s.id: s.name for s in schedule_store.list_schedules(engine)}
    attempts = job_store.attempts_of(engine, [j.id for j in jobs])
    progress: dict[str, dict | None] = {}  # jobs of one run share its progress: computed once
    for j in jobs:
        if j.run_name and j.run_name not in progress:
            progress[j.run_name] = queue.progress(engine, j)
    return [
        JobOut(
            id=j.id, kind=j.kind, args=[scrub_text(a) for a in json.loads(j.args)], queue=j.queue, state=j.state, schedule_id=j.schedule_id,
            schedule=names.get(j.schedule_id), scheduled_for=j.scheduled_for, run=j.run_name, worker=j.claimed_by,
            message=scrub_text(j.exit_message), tokens_in=j.tokens_in, tokens_out=j.tokens_out, cost=j.cost,
            created_at=j.created_at, started_at=j.started_at, finished_at=j.finished_at,
            progress=progress.get(j.run_name) if j.run_name else None,
            attempts=[AttemptOut(n=a.n, worker=a.worker, state=a.state, exit_code=a.exit_code, message=scrub_text(a.exit_message),
                                 started_at=a.started_at, finished_at=a.finished_at, cost=a.cost) for a in attempts.get(j.id, [])],
        )
        for j in jobs
    ]


@router.get("/jobs", response_model=list[JobOut], summary="Jobs, newest first, with progress and attempts")
def list_jobs(
    engine: EngineDep,
    state: StateName | None = None,
    schedule: Annotated[Text | None, Query(max_length=100, description="schedule id or name")] = None,
    job_queue: Annotated[Text | None, Query(alias="queue", max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
):
    sid = schedule_store.get_schedule(engine, schedule).id if schedule else None
    return _outs(engine, queue.list_jobs(engine, state=state, queue=job_queue, schedule_id=sid, limit=limit))


def _get(engine, job_id: int):
    return queue.get(engine, job_id)[0]


@router.get("/jobs/{job_id}", response_model=JobOut, summary="One job with its attempt history")
def get_job(engine: EngineDep, job_id: JobId):
    return _outs(engine, [_get(engine, job_id)])[0]


@router.post("/jobs", response_model=JobOut, status_code=201, dependencies=[Depends(require_token)], responses=WRITE_ERRORS,
             summary="Submit a job; options its command would reject are refused here")
def submit(engine: EngineDep, body: JobIn):
    job = queue.submit(engine, body.kind, body.args, queue=body.queue)
    return _outs(engine, [job])[0]


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, dependencies=[Depends(require_token)], responses=WRITE_ERRORS,
             summary="Cancel: a queued job at once, a running one within seconds")
def cancel(engine: EngineDep, job_id: JobId):
    _get(engine, job_id)
    queue.cancel(engine, job_id)
    return _outs(engine, [_get(engine, job_id)])[0]
