"""Request and response bodies. Limits here are the first line against oversized input."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from datagen.storage.models import MAX_ROW_ID, unstorable

StatusName = Literal["pending", "accepted", "rejected", "approved", "discarded"]
LangName = Literal["en", "zh"]
SortName = Literal["id", "-id", "score", "-score", "length", "-length", "updated", "-updated", "scored", "-scored"]

MAX_INSTRUCTION = 8_000
MAX_FIELD = 20_000
MAX_INSTANCES = 20
MAX_NOTE = 2_000
MAX_ID = MAX_ROW_ID  # ids and row counts: what the id columns hold on every database
MAX_IDS = 500


def _storable(value: str) -> str:
    # What the database would refuse with an error is a clear 422 here, never a 500.
    if unstorable(value):
        raise ValueError("NUL characters and unpaired surrogates are not allowed")
    return value


class _SaysNoNul:
    """The schema states what _storable refuses (JSON cannot carry a lone surrogate); the check stays
    _storable's, so the message is ours and every client sees the same one."""

    def __get_pydantic_json_schema__(self, core_schema, handler):
        schema = handler(core_schema)
        schema.setdefault("pattern", NO_NUL)
        return schema


NO_NUL = r"^[^\x00]*$"
Text = Annotated[str, AfterValidator(_storable), _SaysNoNul()]


class Filter(BaseModel):
    """Which samples: every field narrows the set; all of them together are ANDed.

    A range whose minimum is above its maximum is valid and matches nothing, as the schema says.
    """

    model_config = ConfigDict(extra="forbid")

    run: Text | None = Field(None, max_length=200, description="run name")
    lang: LangName | None = None
    status: list[StatusName] = Field(default_factory=list, max_length=5)
    classification: bool | None = Field(None, description="is_classification")
    reason: Text | None = Field(None, max_length=64, description="filter that rejected it")
    score_min: float | None = Field(None, ge=0, le=1, description="nearest ROUGE-L at least")
    score_max: float | None = Field(None, ge=0, le=1)
    len_min: int | None = Field(None, ge=0, le=1_000_000, description="instruction length in characters")
    len_max: int | None = Field(None, ge=0, le=1_000_000)
    q: Text | None = Field(None, max_length=200, description="search instructions, inputs and outputs: every word must occur")
    by: Text | None = Field(None, max_length=200,
                            description="a score key, scorer[:rubric][@model] (judge:accuracy, ifd): by_min/by_max filter by it, sort=scored/-scored sorts by it")
    # OpenAPI cannot say "needs `by`" or "min <= max": a bound without `by` bounds nothing, a reversed range matches nothing.
    by_min: float | None = Field(None, ge=-1e9, le=1e9, description="the `by` score at least (ignored without `by`)")
    by_max: float | None = Field(None, ge=-1e9, le=1e9, description="the `by` score at most (ignored without `by`)")


class ListParams(Filter):
    sort: SortName = "id"
    limit: int = Field(50, ge=1, le=500)
    cursor: Text | None = Field(None, max_length=200)


class SampleSummary(BaseModel):
    id: int
    run_id: int
    lang: str
    instruction: str
    status: str
    reason: str | None
    detail: str | None
    nearest_score: float | None
    is_classification: bool | None
    reviewed_by: str | None
    review_note: str | None
    updated_at: datetime
    length: int
    scores: dict[str, float] = Field(default_factory=dict, description="each score key (scorer[:rubric]@model) and the sample's value")


class SamplePage(BaseModel):
    items: list[SampleSummary]
    next_cursor: str | None


class Count(BaseModel):
    count: int
    capped: bool = Field(description="true when there are more than `count`")
    reviewed: int = Field(0, description="how many of those a reviewer approved or discarded")


# JSON bodies are strict: 0 is not false and "1" is not 1 (query strings stay lax: all text).
BODY = ConfigDict(extra="forbid", strict=True)


class BodyFilter(Filter):
    model_config = BODY


class InstanceIn(BaseModel):
    model_config = BODY
    input: Text = Field("", max_length=MAX_FIELD)
    output: Text = Field(..., max_length=MAX_FIELD)


class EditIn(BaseModel):
    # The schema states the one rule between fields: an instruction, instances, or both (not null).
    model_config = ConfigDict(**BODY, json_schema_extra={"anyOf": [
        {"required": ["instruction"], "properties": {"instruction": {"type": "string"}}},
        {"required": ["instances"], "properties": {"instances": {"type": "array"}}},
    ]})
    instruction: Text | None = Field(None, min_length=1, max_length=MAX_INSTRUCTION)
    instances: list[InstanceIn] | None = Field(None, max_length=MAX_INSTANCES)
    note: Text | None = Field(None, max_length=MAX_NOTE)

    @model_validator(mode="after")
    def _something(self):
        if self.instruction is None and self.instances is None:
            raise ValueError("send an instruction, instances, or both")
        return self


class ReviewIn(BaseModel):
    model_config = BODY
    note: Text | None = Field(None, max_length=MAX_NOTE)
    force: bool = Field(False, description="approve even though the filters rejected the sample (otherwise 409)")


class BulkIn(BaseModel):
    model_config = BODY
    action: Literal["approve", "reject"]
    filter: BodyFilter = Field(default_factory=BodyFilter)
    ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] | None = Field(None, min_length=1, max_length=MAX_IDS, description="only these samples (ANDed with the filter)")
    note: Text | None = Field(None, max_length=MAX_NOTE)
    all: bool = Field(False, description="must be true to act on an empty filter (every sample)")
    max_rows: int | None = Field(None, ge=1, le=MAX_ID, description="stop after this many")


class BulkOut(BaseModel):
    changed: int
    skipped: int = Field(description="approvals refused because the run already keeps the same instruction")
    status: str


class ReviewOut(BaseModel):
    id: int
    status: str
    reviewed_by: str


class Similar(BaseModel):
    id: int
    instruction: str
    score: float
    highlight: dict | None = None


class RunOut(BaseModel):
    id: int
    name: str
    lang: str
    api: str
    model: str
    target: int
    state: str
    config: dict
    created_at: datetime
    updated_at: datetime
    by_status: dict[str, int]
    by_reason: dict[str, int]
    kept: int
    acceptance: float
    requests: int
    errors: int
    tokens_in: int
    tokens_out: int
    cost: float
    cost_est: float = Field(description="batch mode: its batches' cost estimated at submit (answers at max_tokens, an upper bound); 0 for online runs")
    cost_in_flight: float = Field(description="the part of cost_est whose batches are not yet ingested (their actual cost is not in `cost` yet)")


class BatchOut(BaseModel):
    """One provider batch of a batch-mode run: the provider's status as last seen, estimated and actual cost."""

    id: int
    run: str
    provider_id: str | None = Field(description="None while it is still being submitted")
    endpoint: str
    model: str
    stage: str
    status: str = Field(description="submitting | validating | in_progress | finalizing | completed | expired | cancelling | cancelled | failed")
    ingested: bool = Field(description="its results are stored (then `cost` is the actual cost)")
    requests: int
    completed: int
    failed: int
    input_file_id: str | None
    output_file_id: str | None
    error_file_id: str | None
    tokens_est: int = Field(description="input tokens (what the provider's enqueued-token limit counts)")
    cost_est: float = Field(description="estimated at submit, answers at max_tokens: an upper bound")
    cost: float = Field(description="actual, from each line's usage; 0 until ingested")
    errors: list[dict[str, Any]] | None = Field(description="why the provider failed the batch, as it said")
    created_at: datetime
    updated_at: datetime


class Instance(BaseModel):
    input: str
    output: str


class SampleDetail(SampleSummary):
    """One sample with its instances, the request it came from and (GET) its audit log."""

    model_config = ConfigDict(extra="allow")  # columns added to the table later pass through
    run: str | None
    nearest: str | None
    instances: list[Instance]
    request: dict[str, Any] | None
    nearest_highlight: dict[str, Any] | None = None
    audit: list[dict[str, Any]] | None = None
    scores: list[dict[str, Any]] = Field(  # type: ignore[assignment]  # a list here, a column map in listings
        default_factory=list, description="every score of the sample: key, value, a judge's reason, threshold and suggested verdict; failures with their error")


class EditOut(BaseModel):
    sample: SampleDetail
    findings: dict[str, Any] = Field(description="what the filters say about the edited text")


class Error(BaseModel):
    detail: str


class ValidationItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorOut(BaseModel):
    detail: list[ValidationItem]


def _error(text: str) -> dict:
    return {"model": Error, "description": text}


# Documented on every route; FastAPI adds 422 itself (our handler keeps its shape: ValidationErrorOut).
READ_ERRORS = {
    400: _error("malformed request (bad Content-Length)"),
    401: _error("no bearer token (reads need one when serving beyond loopback)"),
    403: _error("wrong token"),
    404: _error("no such sample, run, job or schedule"),
    413: _error("request body too large"),
    421: _error("Host name not served here (DNS rebinding guard)"),
}
WRITE_ERRORS = {**READ_ERRORS, 409: _error("conflicts with a kept instruction, the filters, or the state of a job or schedule")}
# A run with nothing kept (yet, or any more after a review) has no report: the data's state, not the request.
REPORT_ERRORS = {**READ_ERRORS, 409: _error("the run (or the --vs run) has no kept samples: nothing to report")}
