"""Typed records that pass between the pipeline stages.

Each stage takes one of these and returns the next, so a stage can be tested alone
and the pipeline reads as a chain: Prompt -> Generation -> Candidate -> Sample.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Lang = Literal["en", "zh"]


class Instance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: str = ""
    output: str


class SeedTask(BaseModel):
    """One line of a seed file; the schema of Alpaca's and BELLE's pools."""

    model_config = ConfigDict(extra="forbid")
    id: str
    name: str
    instruction: str = Field(min_length=1)
    instances: list[Instance] = Field(min_length=1)
    is_classification: bool


class Stage(str, Enum):
    bootstrap = "bootstrap"
    classify = "classify"
    instances = "instances"
    judge = "judge"  # a judge model scoring a stored sample (datagen/scores/judge.py); the ledger says which rubric


class Prompt(BaseModel):
    """What a stage asks a backend for. Chat backends send `text` as one user message."""

    stage: Stage
    text: str
    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.95
    stop: list[str] = Field(default_factory=list)


class Generation(BaseModel):
    """A backend's answer to one Prompt (one attempt)."""

    text: str = ""
    finish_reason: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0
    error: str | None = None
    request_id: int | None = None  # row in the request log, filled in by the client


class Status(str, Enum):
    pending = "pending"  # passed the instruction filters, instances not yet written
    accepted = "accepted"  # passed every filter
    rejected = "rejected"  # a filter said no; reason says which
    approved = "approved"  # a reviewer confirmed it
    discarded = "discarded"  # a reviewer threw it out


# Kept: training data (exports, counts, the neighbours a reviewer sees).
KEPT = (Status.accepted.value, Status.approved.value)
# Live: kept or still being judged. A run holds at most one live copy of an instruction (ux_sample_kept).
LIVE = (Status.pending.value, *KEPT)


class Candidate(BaseModel):
    """A machine-written instruction on its way through the filters."""

    instruction: str
    lang: Lang
    request_id: int | None = None
    is_classification: bool | None = None
    instances: list[Instance] = Field(default_factory=list)
    status: Status = Status.pending
    reason: str | None = None
    detail: str | None = None
    nearest: str | None = None
    nearest_score: float | None = None
    sample_id: int | None = None
