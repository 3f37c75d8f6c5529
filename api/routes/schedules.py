"""Schedules: list, add, pause, resume, run now, remove (writes need the token)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from api.deps import EngineDep, require_token
from api.schemas import READ_ERRORS, WRITE_ERRORS, Text
from api.security import scrub_text
from datagen.config import DEFAULT_QUEUE
from datagen.jobs import schedules
from datagen.jobs.kinds import KINDS
from datagen.jobs.schedules import DEFAULT_MISFIRE, DEFAULT_OVERLAP, MISFIRE_PATTERN, NAME_PATTERN, OVERLAP
from datagen.storage import schedules as store

router = APIRouter(tags=["schedules"], responses=READ_ERRORS)
# The schema states what it can of the rules schedules.create checks (not a zone's existence, a cron
# field's range or the job's options: those are a 422 the schema cannot foretell, as the summary says).
# Stated here, checked by schedules.create (the patterns are its own), with messages that name the rule.
ScheduleRef = Annotated[Text, Path(min_length=1, max_length=100, description="schedule id or name")]


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text = Field(..., min_length=1, max_length=100, json_schema_extra={"pattern": NAME_PATTERN}, description="not only digits (ids are), no '/'")
    cron: Text = Field(..., max_length=200, description="five cron fields, read in tz")
    tz: Text = Field("UTC", max_length=64, description="IANA zone, e.g. Asia/Shanghai")
    job: list[Annotated[Text, Field(max_length=2000)]] = Field(
        ..., min_length=1, max_length=100, json_schema_extra={"prefixItems": [{"type": "string", "enum": list(KINDS)}]},
        description="kind and its CLI options, e.g. ['generate', '-n', '100', '--run', 'nightly']",
    )
    misfire: Text = Field(DEFAULT_MISFIRE, max_length=32, json_schema_extra={"pattern": MISFIRE_PATTERN}, description="skip | run_once | catch_up:N (N 1-100)")
    overlap: Text = Field(DEFAULT_OVERLAP, max_length=16, json_schema_extra={"enum": list(OVERLAP)})
    queue: Text = Field(DEFAULT_QUEUE, min_length=1, max_length=64)


class ScheduleOut(BaseModel):
    id: int
    name: str
    cron: str
    tz: str
    kind: str
    args: list[str]
    queue: str
    misfire: str
    overlap: str
    paused: bool
    next_fire_at: datetime | None = Field(description="UTC")
    next_fire_local: str | None = Field(description="the same instant on the schedule's own clock")
    created_at: datetime


def out(sch) -> ScheduleOut:
    return ScheduleOut(
        id=sch.id, name=sch.name, cron=sch.cron, tz=sch.tz, kind=sch.kind, args=[scrub_text(a) for a in store.args_of(sch)], queue=sch.queue,
        misfire=sch.misfire, overlap=sch.overlap, paused=sch.paused, next_fire_at=sch.next_fire_at,
        next_fire_local=None if sch.paused or sch.next_fire_at is None else schedules.local_time(sch.next_fire_at, sch.tz),
        created_at=sch.created_at,
    )


@router.get("/schedules", response_model=list[ScheduleOut], summary="Schedules with their next fire time")
def list_schedules(engine: EngineDep):
    return [out(s) for s in store.list_schedules(engine)]


@router.get("/schedules/{ref}", response_model=ScheduleOut, summary="One schedule")
def get_schedule(engine: EngineDep, ref: ScheduleRef):
    return out(store.get_schedule(engine, ref))


@router.post("/schedules", response_model=ScheduleOut, status_code=201, dependencies=[Depends(require_token)], responses=WRITE_ERRORS,
             summary="Add a schedule; bad cron, zone or job options are refused here")
def add_schedule(engine: EngineDep, body: ScheduleIn):
    return out(schedules.create(engine, body.name, cron=body.cron, tz=body.tz, job=body.job, misfire=body.misfire,
                                overlap=body.overlap, queue=body.queue))


@router.post("/schedules/{ref}/pause", response_model=ScheduleOut, dependencies=[Depends(require_token)], responses=WRITE_ERRORS, summary="Pause")
def pause(engine: EngineDep, ref: ScheduleRef):
    return out(schedules.pause(engine, ref))


@router.post("/schedules/{ref}/resume", response_model=ScheduleOut, dependencies=[Depends(require_token)], responses=WRITE_ERRORS,
             summary="Resume; slots inside the pause are not run")
def resume(engine: EngineDep, ref: ScheduleRef):
    return out(schedules.resume(engine, ref))


@router.post("/schedules/{ref}/run-now", status_code=201, dependencies=[Depends(require_token)], responses=WRITE_ERRORS, summary="Queue the schedule's job now")
def run_now(engine: EngineDep, ref: ScheduleRef):
    job = schedules.run_now(engine, ref)
    return {"job_id": job.id}


@router.delete("/schedules/{ref}", status_code=204, dependencies=[Depends(require_token)], responses=WRITE_ERRORS, summary="Remove; its jobs stay in the history")
def remove(engine: EngineDep, ref: ScheduleRef):
    schedules.remove(engine, ref)
