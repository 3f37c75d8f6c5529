"""Tables. One SQLModel class per table; the rest of the code talks to storage functions, not SQL."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from sqlalchemy import Column, Index, LargeBinary, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from datagen.config import DEFAULT_QUEUE
from datagen.records import LIVE


# The partial unique index's WHERE; queries spell it the same way so SQLite can use the index.
LIVE_WHERE = text("status IN (" + ",".join(f"'{s}'" for s in LIVE) + ")")


# What every column can hold, on every database we support; the API's limits and the library's
# checks read these. Ids are Postgres INTEGER (32-bit): 2,147,483,647 rows is far beyond any
# datagen database, so the limit is stated rather than every table and key migrated to BIGINT.
MAX_ROW_ID = 2**31 - 1
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable(value: str) -> bool:
    """Postgres refuses NUL in text and no database stores a lone surrogate."""
    return bool(_UNSTORABLE.search(value))


RUNNING_SCHEDULED = text("state = 'running' AND schedule_id IS NOT NULL")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Run(SQLModel, table=True):
    """A named, resumable generation job. `config` keeps the options it was started with (never keys)."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    lang: str
    api: str
    model: str
    target: int
    config: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    state: str = "running"  # running | finished | failed | interrupted (see storage.runs.shown_state)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)  # also the live run's heartbeat


class Request(SQLModel, table=True):
    """Every HTTP request to a model, one row per attempt (retries included), like `llm`'s log.

    The row is written before the request is sent (state `sent`) and completed when it returns
    (`done`), so a killed run loses no attempt. A request carrying several prompts is one row whose
    `prompt` and `response` are JSON arrays (`prompts` > 1).
    """

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    stage: str
    model: str
    prompt_hash: str
    prompt: str = Field(sa_column=Column(Text, nullable=False))
    response: str = Field(default="", sa_column=Column(Text, nullable=False))
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    finish_reason: str | None = None
    latency_ms: int = 0
    error: str | None = None
    attempt: int = 1
    created_at: datetime = Field(default_factory=utcnow)
    # sent (no answer yet) | done | cancelled (the run stopped it) | lost (still `sent` when the run
    # resumed: its process was killed, the answer never came back and its cost is unknown)
    state: str = "done"
    prompts: int = 1  # prompts carried by this one request
    # Batch mode (datagen/batch/): a row is a line of a batch, its id the line's custom_id. States:
    # queued (not in a batch yet) | sent | answered (result or error stored, not yet applied) | done.
    batch_id: int | None = Field(default=None, index=True)
    sample_id: int | None = None  # the candidate a classify or instances request works for
    body: str | None = Field(default=None, sa_column=Column(Text))  # the request body as uploaded (JSON)


class Sample(SQLModel, table=True):
    """One machine-written instruction with its verdict; rejected ones are kept to show why."""

    __table_args__ = (
        Index("ix_sample_run_status", "run_id", "status"),
        # Review queries (datagen/storage/queries.py) page by id or by a sort key inside an
        # equality filter; these keep a 1M-row page under 100 ms (see bench/API.md).
        Index("ix_sample_run_lang_status", "run_id", "lang", "status"),
        Index("ix_sample_status_score", "status", "nearest_score"),
        Index("ix_sample_reason_score", "reason", "nearest_score"),
        Index("ix_sample_status_length", "status", text("length(instruction)")),
        # Resume must never store the same kept instruction twice.
        Index(
            "ux_sample_kept",
            "run_id",
            "instruction_hash",
            unique=True,
            sqlite_where=LIVE_WHERE,
            postgresql_where=LIVE_WHERE,
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    lang: str
    instruction: str = Field(sa_column=Column(Text, nullable=False))
    instruction_hash: str
    is_classification: bool | None = None
    status: str = Field(default="pending", index=True)
    reason: str | None = Field(default=None, index=True)  # why rejected (filter name)
    detail: str | None = None  # human-readable detail of the reason
    nearest: str | None = Field(default=None, sa_column=Column(Text))  # nearest kept instruction
    nearest_score: float | None = Field(default=None, index=True)  # its ROUGE-L
    indexed: bool = False  # in the similarity index (passed the ROUGE-L check)
    request_id: int | None = Field(default=None, foreign_key="request.id")
    review_note: str | None = None
    reviewed_by: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Batch(SQLModel, table=True):
    """One provider batch (OpenAI's /v1/batches) of a batch-mode run; see datagen/batch/.

    Written as `submitting` with a fresh `key` before the provider's batch exists; the key travels
    in the batch's metadata, so a crash before `provider_id` is stored is reconciled by listing.
    `status` is the provider's, as last seen. `ingested`: its results are in the request ledger.
    """

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    key: str = Field(unique=True, index=True)
    provider_id: str | None = None
    endpoint: str
    model: str
    stage: str
    status: str = "submitting"
    ingested: bool = Field(default=False, index=True)
    requests: int = 0
    completed: int = 0
    failed: int = 0
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    tokens_est: int = 0  # input tokens, what the provider's enqueued-token limit counts
    cost_est: float = 0.0  # at submit, answers at their max_tokens: an upper bound
    cost: float = 0.0  # at ingest, from each line's usage
    errors: str | None = Field(default=None, sa_column=Column(Text))  # a failed batch's reasons
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class InstanceRow(SQLModel, table=True):
    __tablename__ = "instance"
    __table_args__ = (UniqueConstraint("sample_id", "idx"),)

    id: int | None = Field(default=None, primary_key=True)
    sample_id: int = Field(foreign_key="sample.id", index=True)
    idx: int
    input: str = Field(default="", sa_column=Column(Text, nullable=False))
    output: str = Field(sa_column=Column(Text, nullable=False))


class Audit(SQLModel, table=True):
    """Who changed a sample, when, and how (review actions and edits)."""

    id: int | None = Field(default=None, primary_key=True)
    sample_id: int = Field(foreign_key="sample.id", index=True)
    action: str  # approve | reject | discard | edit | ...
    actor: str
    note: str | None = None
    before: str | None = Field(default=None, sa_column=Column(Text))
    after: str | None = Field(default=None, sa_column=Column(Text))
    at: datetime = Field(default_factory=utcnow)


class RunLease(SQLModel, table=True):
    """Who is generating a run now. One row per run being generated; a holder renews `expires_at`."""

    __tablename__ = "run_lease"

    run_name: str = Field(primary_key=True)
    holder: str  # a token unique to one acquisition, so a holder that lost its lease can tell
    host: str
    pid: int
    since: datetime
    heartbeat_at: datetime
    expires_at: datetime


class Job(SQLModel, table=True):
    """A stored unit of work (generate / export / dedup with CLI arguments) that a worker runs."""

    __table_args__ = (
        Index("ix_job_claim", "queue", "state", "scheduled_for"),
        # A schedule's jobs run one at a time: the database refuses a second running job of a
        # schedule, so two workers claiming at once cannot both win (the claim's check alone
        # cannot see another worker's uncommitted claim).
        Index("ux_job_schedule_running", "schedule_id", unique=True,
              sqlite_where=RUNNING_SCHEDULED, postgresql_where=RUNNING_SCHEDULED),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str
    args: str = Field(default="[]", sa_column=Column(Text, nullable=False))  # JSON list of CLI arguments
    queue: str = DEFAULT_QUEUE
    state: str = Field(default="queued", index=True)  # queued | running | succeeded | failed | cancelled | skipped
    unique_key: str | None = Field(default=None, unique=True)  # a scheduler's (schedule, slot): fired once
    schedule_id: int | None = Field(default=None, index=True)
    scheduled_for: datetime | None = None  # not claimed before this time
    # A skipped row may stand for a gap of consecutive slots not run for one reason (a scheduler
    # down for a week): `slots` of them, from scheduled_for to scheduled_until.
    slots: int = 1
    scheduled_until: datetime | None = None
    run_name: str | None = None  # the generate run it produces (resumed by name on a re-claim)
    attempt_id: int | None = None  # the current attempt: heartbeats and finishes must match it
    claimed_by: str | None = None  # host:pid of the worker
    lease_expires_at: datetime | None = None
    heartbeat_at: datetime | None = None
    cancel_requested: bool = False
    attempts: int = 0
    exit_message: str | None = Field(default=None, sa_column=Column(Text))
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None


class JobAttempt(SQLModel, table=True):
    """One worker's go at a job: running | succeeded | failed | cancelled | released (drained) | lost (lease expired)."""

    __tablename__ = "job_attempt"

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    n: int
    worker: str  # host:pid
    state: str = "running"
    run_name: str | None = None
    exit_code: int | None = None
    exit_message: str | None = Field(default=None, sa_column=Column(Text))
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    started_at: datetime = Field(default_factory=utcnow)
    heartbeat_at: datetime | None = None
    finished_at: datetime | None = None


class RateLimit(SQLModel, table=True):
    """A limit shared by every process using one API key and base URL: the next free slot, as a
    'theoretical arrival time' (GCRA) in epoch seconds. `key` is a hash, never the API key."""

    __tablename__ = "rate_limit"

    key: str = Field(primary_key=True)
    tat: float = 0.0


class Schedule(SQLModel, table=True):
    """A cron line that submits a job (kind + CLI-style args) on every slot; see datagen/jobs/schedules.py.

    Times are instants (UTC); `tz` is the IANA zone the cron fields are read in.
    """

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    cron: str
    tz: str = "UTC"
    kind: str
    args: str = Field(default="[]", sa_column=Column(Text, nullable=False))  # JSON list of CLI args
    queue: str = DEFAULT_QUEUE
    misfire: str = "skip"  # skip | run_once | catch_up:N
    overlap: str = "skip"  # skip | queue | replace
    paused: bool = False
    next_fire_at: datetime | None = Field(default=None, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


# --- Curation by quality (issue 20; datagen/scores/) ----------------------------------------------

# A success is a row with a value; failures (value NULL, error set) are kept, as many as there were
# tries, and never block a later success. The partial unique index below makes scoring idempotent.
SCORED_WHERE = text("value IS NOT NULL")


class Score(SQLModel, table=True):
    """One scorer's verdict on one sample: IFD, a judge's rubric score, ... (`rubric` is "" where a
    scorer has none). `extra` is JSON the scorer keeps beside the value (IFD's two perplexities)."""

    __table_args__ = (
        Index(
            "ux_score_done",
            "sample_id",
            "scorer",
            "rubric",
            "model",
            unique=True,
            sqlite_where=SCORED_WHERE,
            postgresql_where=SCORED_WHERE,
        ),
        Index("ix_score_key", "scorer", "rubric", "model", "value"),
    )

    id: int | None = Field(default=None, primary_key=True)
    sample_id: int = Field(foreign_key="sample.id", index=True)
    scorer: str
    rubric: str = ""
    model: str
    value: float | None = None
    reason: str | None = Field(default=None, sa_column=Column(Text))  # a judge's reason, or a failure's raw answer
    extra: str | None = Field(default=None, sa_column=Column(Text))  # JSON
    request_id: int | None = Field(default=None, foreign_key="request.id")  # the ledger row that paid for it
    error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)


class Selection(SQLModel, table=True):
    """A named subset of samples (`datagen select`), with the rule that chose it."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    run_id: int | None = Field(default=None, foreign_key="run.id")
    rule: str = Field(default="{}", sa_column=Column(Text, nullable=False))  # JSON: --by, --min, --diversity, --max, ...
    size: int = 0
    created_at: datetime = Field(default_factory=utcnow)


class SelectionMember(SQLModel, table=True):
    __tablename__ = "selection_member"
    __table_args__ = (UniqueConstraint("selection_id", "sample_id"),)

    selection_id: int = Field(foreign_key="selection.id", primary_key=True)
    rank: int = Field(primary_key=True)  # 0 = chosen first (the best)
    sample_id: int = Field(foreign_key="sample.id", index=True)


class Embedding(SQLModel, table=True):
    """A sample's embedding by one model, cached: float32 little-endian bytes of `dim` values."""

    __table_args__ = (UniqueConstraint("sample_id", "model"),)

    id: int | None = Field(default=None, primary_key=True)
    sample_id: int = Field(foreign_key="sample.id", index=True)
    model: str
    dim: int
    vector: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
