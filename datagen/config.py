"""Settings: every option declared once, with its default, its limits and its help; the
environment is read here and nowhere else. The CLI and the API take their defaults from these."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field

Lang = Literal["en", "zh"]
LANGS: tuple[str, ...] = get_args(Lang)
Api = Literal["chat", "completion", "local"]

# Alpaca's rule: a candidate whose ROUGE-L F against anything kept is above this is a near-duplicate.
THRESHOLD = 0.7

# Exit status of a generate stopped by SIGTERM before its target (EX_TEMPFAIL: run it again);
# the CLI exits with it and a job worker reads it as "drained, not failed".
DRAINED = 75
# Exit status of a command whose database went away for longer than DB_WAIT (EX_UNAVAILABLE): a
# job worker hands the job back to the queue, as it does when a worker dies, within the same limit.
DB_GONE = 69
# Seconds a running generate waits for its database to come back (a restart, a failover) before it
# gives up with DB_GONE; DATAGEN_DB_WAIT overrides.
DB_WAIT = 120.0
# A job whose child exits DRAINED on its own (a `generate --mode batch --no-wait` round with batches
# still in flight) is queued again this many seconds later: it polls its batches at that pace
# without holding a worker slot in between.
AGAIN_AFTER = 60.0

DEFAULT_TICK = 10.0  # seconds between the scheduler's looks at the schedule table

# OpenAI's Batch API: half the synchronous price, at most 50,000 lines and 200 MB per input file.
BATCH_DISCOUNT = 0.5
BATCH_MAX_LINES = 50_000
BATCH_MAX_BYTES = 200 * 1024 * 1024
# Batch mode's stall rule: this many ended batches in a row without one good answer (every line failed,
# or the batch failed validation) stop the run, resumable; so does --stall-timeout of only such batches.
BATCH_MAX_FAILED_IN_A_ROW = 4

# --- the environment -----------------------------------------------------------------------------

ENV = {
    "database_url": "DATAGEN_DATABASE_URL",  # --db for every command
    "api_token": "DATAGEN_API_TOKEN",  # serve: the bearer token for changes
    "allowed_hosts": "DATAGEN_ALLOWED_HOSTS",  # serve: host names besides loopback (comma-separated)
    "openai_base_url": "OPENAI_BASE_URL",  # --base-url
    "openai_api_key": "OPENAI_API_KEY",
    "cache": "DATAGEN_CACHE",  # converted embedded models [default: ~/.cache/datagen]
    "threads": "DATAGEN_THREADS",  # torch threads for --api local [default: cores - 1]
    "debug": "DATAGEN_DEBUG",  # any value: a crash prints its traceback instead of one line and a file
    "db_wait": "DATAGEN_DB_WAIT",  # seconds a run waits for its database to come back [default: DB_WAIT]
    "lease_ttl": "DATAGEN_LEASE_TTL",  # seconds a silent run or job holder keeps its lease [default: 30]
    "cuda_cache": "DATAGEN_CUDA_CACHE",  # the transformers engine's loop on CUDA: slots, static, dynamic [default: CUDA_CACHE]
}


def env(key: str) -> str | None:
    """A setting from the environment (by its key in ENV), None when unset or empty."""
    return os.environ.get(ENV[key]) or None


def db_wait() -> float:
    return float(env("db_wait") or DB_WAIT)
# Seconds a silent holder keeps its lease: long enough for a stalled database write, short
# enough that a vanished machine's run resumes soon (tests and slow links set DATAGEN_LEASE_TTL).
LEASE_TTL = float(env("lease_ttl") or 30)
# A Postgres transaction left idle this long belongs to a frozen process (SIGSTOP, a suspended VM):
# the server ends it, so the row locks it holds lapse with its leases instead of blocking the
# process that took them over. Our transactions never wait on anything but the database.
IDLE_TX_TIMEOUT = 2 * LEASE_TTL

DEFAULT_QUEUE = "default"  # the job queue a job goes to and a worker takes from unless told
SERVE_HOST, SERVE_PORT = "127.0.0.1", 8000  # `datagen serve`: loopback unless told (anything else needs the token)
CONTEXT_WINDOW = 4096  # assumed for an API model when --context-window is not given


def cache_dir() -> Path:
    return Path(env("cache") or Path.home() / ".cache" / "datagen")


# --- generation ----------------------------------------------------------------------------------


class PipelineConfig(BaseModel):
    """What the self-instruct loop decides with; stored with the run, so review re-checks by the same values."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    target: int = Field(100, ge=1, description="Accepted instructions to reach.")
    num_seed_examples: int = Field(6, ge=1, description="Seed tasks shown per bootstrap prompt.")
    num_machine_examples: int = Field(2, ge=0, description="Machine tasks shown per bootstrap prompt.")
    new_per_prompt: int = Field(8, ge=1, description="New instructions asked for per prompt.")
    threshold: float = Field(THRESHOLD, ge=0, le=1, description="Reject when ROUGE-L to a kept instruction is above this.")
    max_instances: int = Field(5, ge=1, description="Instances kept per instruction.")
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    bootstrap_max_tokens: int = Field(1024, ge=1)
    classify_max_tokens: int = Field(3, ge=1)
    instances_max_tokens: int = Field(1024, ge=1)
    max_bootstrap_inflight: int = Field(8, ge=1)
    max_consecutive_failures: int = Field(30, ge=1)
    max_barren_rounds: int = Field(200, ge=1)
    random_seed: int | None = Field(None, description="Random seed for example sampling.")
    # A server that accepts connections and never answers would otherwise hold a run for
    # tries x timeout x failures (about an hour).
    stall_timeout: float = Field(300.0, gt=0, description="Stop (resumable) when no model call has succeeded for this many seconds.")


# Marks an option of one invocation (how this process behaves: where, how long it waits, how often it
# looks), never taken from a stored run when `generate --run NAME` resumes it with the run's own options.
PER_CALL = {"per_call": True}


class GenerateOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    run: str | None = Field(None, min_length=1, max_length=200, description="Run name; an existing run is resumed.", json_schema_extra=PER_CALL)
    api: Api | None = Field(None, description="chat | completion | local [default: local unless a key or base URL is set]")
    model: str | None = Field(None, description="Model name, or for --api local a HF directory / .gguf file.")
    base_url: str | None = Field(None, description="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 [env: OPENAI_BASE_URL]")
    lang: Lang = Field("en", description="en | zh")
    seeds: Path | None = Field(None, description="Seed task file (JSONL) [default: the built-in pool for --lang]")
    prompts: Path | None = Field(None, description="Prompt template TOML [default: built-in for --lang]")
    db: str | None = Field(None, json_schema_extra=PER_CALL)
    concurrency: int = Field(16, ge=1, description="Requests in flight (API backends).")
    batch_size: int = Field(16, ge=1, description="Prompts per forward pass (--api local).")
    prompts_per_request: int = Field(1, ge=1, description="Prompts per Completion API request.")
    rpm: float | None = Field(None, gt=0, description="Requests per minute limit.")
    tpm: float | None = Field(None, gt=0, description="Tokens per minute limit (estimated prompt + max answer).")
    max_tries: int = Field(5, ge=1, description="Attempts per request, with exponential backoff.")
    timeout: float = Field(120.0, gt=0, description="Seconds per request.")
    context_window: int | None = Field(None, ge=64, description="Model context size, to fit max_tokens to the prompt.")
    price_in: float | None = Field(None, ge=0, description="USD per 1M input tokens (overrides prices.toml).")
    price_out: float | None = Field(None, ge=0, description="USD per 1M output tokens.")
    lease_wait: float = Field(0.0, ge=0, description="Seconds to wait while another live process generates this run [default: refuse at once].", json_schema_extra=PER_CALL)
    ray: str | None = Field(None, description="Run --api local on Ray replicas: auto (local Ray, or RAY_ADDRESS) or a cluster address (host:6379, ray://host:10001).")
    replicas: int = Field(1, ge=1, description="Model replicas in the Ray pool.")
    gpus_per_replica: float = Field(0.0, ge=0, description="GPUs each Ray replica reserves.")
    threads_per_replica: int = Field(1, ge=1, description="CPU cores (torch threads) each Ray replica reserves.")
    engine: Literal["auto", "transformers", "llamacpp", "vllm"] = Field("auto", description="Engine for --api local: auto (on the CPU: llamacpp for a GGUF model; on a GPU: transformers, or vllm in a Ray replica when importable) | transformers | llamacpp | vllm (Ray replicas only).")
    mode: Literal["online", "batch"] | None = Field(None, description="online: request by request | batch: OpenAI's Batch API at half price (resumable; see `datagen batches`) [default: online, or the run's own mode when resuming]")
    wait: bool = Field(True, description="Batch mode: wait for the batches until the target is reached; --no-wait submits and ingests what is ready, then exits (75 while unfinished).", json_schema_extra=PER_CALL)
    poll_interval: float = Field(30.0, gt=0, description="Batch mode: seconds between status checks.", json_schema_extra=PER_CALL)
    max_enqueued_tokens: int | None = Field(None, ge=1, description="Batch mode: input tokens this model may have in unfinished batches (the provider's queue limit).")
    batch_max_lines: int = Field(BATCH_MAX_LINES, ge=1, le=BATCH_MAX_LINES, description="Batch mode: lines per input file.")
    budget: float | None = Field(None, gt=0, description="USD this run may spend; batch mode counts batches in flight at their estimate and stops submitting before it.")
    keep_files: bool = Field(False, description="Batch mode: keep each batch's input, output and error files at the provider [default: delete them once ingested].")
    pipeline: PipelineConfig = PipelineConfig()


PER_CALL_OPTIONS = tuple(k for k, f in GenerateOptions.model_fields.items() if (f.json_schema_extra or {}) == PER_CALL)

# --- report (datagen/report/) --------------------------------------------------------------------

# ROUGE-L to the nearest other kept sample is exact above this floor (the similarity index's prefix
# filter proves everything else is below it); lower scores are counted together as "below".
REPORT_ROUGE_FLOOR = 0.5
REPORT_NEAR_DUPLICATE = THRESHOLD  # a kept sample whose nearest other kept sample is above this is a near-duplicate
REPORT_EMBED_NEAR = 0.9  # embedding cosine above which two samples count as neighbours
REPORT_PARALLEL_MIN = 20_000  # from this many kept samples the two nearest-kept ROUGE-L passes run in two processes
REPORT_VERB_SAMPLE = 5_000  # instructions parsed for the verb-object figure (evenly spaced beyond this; the parse is the slow part)
REPORT_TOP_VERBS, REPORT_TOP_OBJECTS = 20, 4
REPORT_CLOSEST_PAIRS = 10
REPORT_MOVED = 5  # figures named at the top of a comparison

# --- curation by quality (datagen/scores/, issue 20) ---------------------------------------------

# Which way each scorer's value is better, declared once: `datagen select` sorts best-first by it
# (a scorer marked "lower" enters a product as 1/value) and the dashboard can colour it the same way.
# IFD = PPL(output | instruction) / PPL(output): higher means the instruction helps the model less,
# a harder sample, which is what Cherry LLM and Superfiltering keep. At IFD_CEILING or above the
# instruction does not help at all (the pair is likely misaligned), so selection drops the sample.
SCORE_DIRECTION: dict[str, Literal["higher", "lower"]] = {"ifd": "higher", "judge": "higher"}
IFD_CEILING = 1.0
SCORE_MODEL = "smollm2"  # IFD and embeddings: the embedded model unless --model names a HF directory
SCORE_BATCH_SIZE = 32  # sequences per forward pass (IFD runs two per instance; pages hold 4 batches of samples)
SCORE_MAX_TOKENS = 1024  # IFD and embeddings: tokens per sequence (longer ones are cut, see datagen/scores/ifd.py)
DIVERSITY = 0.9  # Deita's tau: keep a sample only if its cosine similarity to every kept one is <= this


# --- scoring by a judge model (datagen/scores/judge.py) ------------------------------------------

JUDGE_MODEL = "gpt-4o-mini"
# Big enough for an instruction and five long examples (fields are cut at the rubric's max_field_chars).
JUDGE_CONTEXT = 16_384
# Online: this many samples in a row that got no answer (the client gave up on each) stop the session.
JUDGE_MAX_GIVE_UPS = 20


class JudgeOptions(BaseModel):
    """`datagen score --scorer judge`: a chat or completion model rates each kept sample of a run by a rubric."""

    model_config = ConfigDict(extra="forbid")

    run: str = Field(..., min_length=1, max_length=200, description="Run whose kept samples are scored.")
    api: Literal["chat", "completion"] = Field("chat", description="chat | completion")
    model: str = Field(JUDGE_MODEL, min_length=1, description="The judge model.")
    base_url: str | None = Field(None, description="OpenAI-compatible server [env: OPENAI_BASE_URL]")
    rubric: str = Field("accuracy", min_length=1, description="accuracy | complexity | quality | a rubric TOML file")
    db: str | None = None
    mode: Literal["online", "batch"] = Field("online", description="online: request by request | batch: the Batch API at half price (resumable)")
    concurrency: int = Field(16, ge=1, description="Requests in flight.")
    rpm: float | None = Field(None, gt=0, description="Requests per minute limit.")
    tpm: float | None = Field(None, gt=0, description="Tokens per minute limit (estimated prompt + max answer).")
    max_tries: int = Field(3, ge=1, description="Answers asked per sample: an unusable one is stored as a failure and asked again; also HTTP attempts per request.")
    timeout: float = Field(120.0, gt=0, description="Seconds per request.")
    context_window: int = Field(JUDGE_CONTEXT, ge=256, description="The judge's context size, to fit the answer budget to the prompt.")
    price_in: float | None = Field(None, ge=0, description="USD per 1M input tokens (overrides prices.toml).")
    price_out: float | None = Field(None, ge=0, description="USD per 1M output tokens.")
    budget: float | None = Field(None, gt=0, description="USD this scoring (run + rubric + model) may spend, over all its sessions.")
    limit: int | None = Field(None, ge=1, description="Score at most this many samples in this session.")
    wait: bool = Field(True, description="Batch mode: wait until every sample is scored; --no-wait submits and ingests what is ready, then exits (75 while unfinished).")
    poll_interval: float = Field(30.0, gt=0, description="Batch mode: seconds between status checks.")
    max_enqueued_tokens: int | None = Field(None, ge=1, description="Batch mode: input tokens this model may have in unfinished batches.")
    batch_max_lines: int = Field(BATCH_MAX_LINES, ge=1, le=BATCH_MAX_LINES, description="Batch mode: lines per input file.")
    lease_wait: float = Field(0.0, ge=0, description="Seconds to wait while another process scores the same run and rubric.")
    keep_files: bool = Field(False, description="Batch mode: keep the input and output files at the provider after ingest.")


# A judge's score at or above this says "keep": the suggestion shown beside the reviewer's buttons and the
# line reviewers' agreement is counted against. Accuracy: AlpaGasus kept >= 4.5 of 5. Deita ranks by
# complexity x quality rather than cutting either; 4 of 6 ("demanding" / "good") is our cut for a suggestion.
JUDGE_KEEP_AT: dict[str, float] = {"accuracy": 4.5, "complexity": 4.0, "quality": 4.0}
JUDGE_KEEP_DEFAULT = 4.0  # a user's rubric (--rubric FILE) unless the API is given another threshold


# --- the embedded model's engines (--api local) ----------------------------------------------------


def engine_threads(every_core: bool = False) -> int:
    """CPU threads for an in-process model unless DATAGEN_THREADS says otherwise. torch leaves one core
    free for the event loop, SQLite and the rest: with 2 threads on 2 cores and a busy neighbour it ran
    5x slower than with 1. llama.cpp takes every core: `make demo` on the idle 2-core VM accepted 20 in
    162 s with 2 threads against 318 s with 1 (2026-12-04)."""
    cores = os.cpu_count() or 1
    return int(env("threads") or 0) or (cores if every_core else max(1, cores - 1))

# KV cells per sequence for the llama.cpp engine unless --context-window says otherwise (the model's
# own window is larger: SmolLM2 8192; one stream per sequence is allocated up front, so batch 16 x 2048
# is about 0.75 GB of f16 cache for SmolLM2-135M).
LLAMACPP_SEQ_CTX = 2048
# The engine `--engine auto` picks for a GGUF model on the CPU: bench/local_cpu.py measured llama.cpp
# (batched, q4_1) against transformers (float32) on the embedded model, same prompts, same run.
CPU_ENGINE = "llamacpp"
# What the llama.cpp engine runs: "file" (the GGUF as shipped, q4_1 for SmolLM2) or an f16/f32 copy
# converted once (see datagen/backends/llamacpp.py, weights_file).
LLAMACPP_WEIGHTS = "f16"
# Tokens per llama_decode call: one per decoding sequence plus prompt tokens of sequences being admitted.
LLAMACPP_STEP_TOKENS = 512
# The transformers engine's KV cache and decode loop on CUDA: "slots" (datagen's continuous batching over
# a static cache with CUDA graphs, datagen/backends/slots.py; LLaMA-family models), "static" (transformers'
# static cache and compiled step) or "dynamic" (plain generate). bench/local_gpu.py --cache measures each.
# The CPU keeps "dynamic" unless asked. DATAGEN_CUDA_CACHE picks another (old against new on one GPU).
CUDA_CACHE = env("cuda_cache") or "slots"
# Positions per slot of the "slots" engine (prompt + answer), capped by the model's own window: the cache
# is allocated up front (1B LLaMA shape, 256 slots x 2048: 16 GiB of bf16).
SLOTS_SEQ_CTX = 2048


def check_combination(opts: GenerateOptions, api: str | None) -> None:
    """Options that cannot go together (a job is checked by this at submit, with the API it names)."""
    from datagen.errors import InputError  # here: datagen.errors reads its exit codes from this module

    if opts.mode == "batch" and (opts.ray or api == "local"):
        raise InputError("--mode batch sends requests through an OpenAI-compatible Batch API: use it with --api chat or --api completion")
    if opts.ray and api not in ("local", None):
        raise InputError("--ray serves an open model from Ray replicas: use it with --api local")


# --- the command lines of the job kinds ------------------------------------------------------------
# Declared once: the CLI builds its options from these (datagen/cli/) and the job queue parses a
# job's arguments with them (datagen/jobs/kinds.py), so a job is checked at submit exactly as the
# command would check it, without loading the CLI.


@dataclass(frozen=True)
class Param:
    """One command-line parameter: no flags is a positional argument; a bool is an on/off pair."""

    name: str
    flags: tuple[str, ...]
    type: type
    default: Any = None
    help: str | None = None
    required: bool = False

    @property
    def decls(self) -> tuple[str, ...]:
        if self.type is bool and len(self.flags) == 1:
            return (f"{self.flags[0]}/--no-{self.flags[0][2:]}",)
        return self.flags


def plain_type(annotation) -> type:
    """The one type a flag converts to: Optional and Literal dropped (the model checks the values)."""
    if get_origin(annotation) is Literal:
        return type(get_args(annotation)[0])
    if type(None) in get_args(annotation):
        return plain_type(next(a for a in get_args(annotation) if a is not type(None)))
    return annotation


def field_param(model: type[BaseModel], name: str, *flags: str, param: str | None = None) -> Param:
    """A parameter whose type, default and help are the model field's."""
    f = model.model_fields[name]
    return Param(param or name, flags or ("--" + name.replace("_", "-"),), plain_type(f.annotation), f.default, f.description)


DB_PARAM = Param("db", ("--db",), str, None, "SQLAlchemy URL or SQLite path [env: DATAGEN_DATABASE_URL; default: sqlite:///datagen.db]")
_G, _P = GenerateOptions, PipelineConfig
GENERATE_PARAMS: tuple[Param, ...] = (
    field_param(_P, "target", "--num-instructions", "-n", param="num_instructions"),
    *(field_param(_G, n) for n in ("run", "api", "model", "base_url", "lang", "seeds", "prompts")),
    DB_PARAM,
    *(field_param(_G, n) for n in ("concurrency", "batch_size", "ray", "replicas", "gpus_per_replica", "threads_per_replica",
                                   "engine", "prompts_per_request", "rpm", "tpm", "max_tries", "timeout", "context_window")),
    *(field_param(_P, n) for n in ("threshold", "num_seed_examples", "num_machine_examples", "new_per_prompt", "max_instances",
                                   "temperature", "top_p")),
    Param("max_tokens", ("--max-tokens",), int, None, "Answer budget for instruction and instance prompts [default: 1024; 320 for --api local]."),
    field_param(_G, "price_in"), field_param(_G, "price_out"),
    field_param(_P, "random_seed", "--seed"),
    field_param(_P, "stall_timeout"),
    Param("progress", ("--progress",), bool, True, "Draw a live display."),
    *(field_param(_G, n) for n in ("lease_wait", "mode", "wait", "poll_interval", "max_enqueued_tokens", "batch_max_lines", "budget",
                                   "keep_files")),
)
EXPORT_PARAMS: tuple[Param, ...] = (
    Param("out", ("--out", "-o"), Path, None, "Output file (alpaca, jsonl, sharegpt) or folder (llama-factory, hf).", required=True),
    Param("fmt", ("--format",), str, "alpaca", "alpaca | jsonl | sharegpt | llama-factory | hf"),
    Param("kind", ("--kind",), str, "sft", "sft (instances) | preference (reviewers' edits as DPO pairs) | kto (approve/reject labels)"),
    Param("layout", ("--layout",), str, None, "llama-factory, hf: alpaca | sharegpt [default: alpaca]"),
    Param("name", ("--name",), str, None, "Dataset name (LLaMA-Factory's --dataset, the card's title) [default: the folder's name]"),
    Param("push_to_hub", ("--push-to-hub",), str, None, "hf: then upload the folder as this Hub dataset (user/name); needs a token."),
    Param("run", ("--run",), str, None, "Only this run."),
    Param("status", ("--status",), str, None, "accepted (accepted + approved) | approved | discarded | any [default: accepted; kto: any]"),
    Param("lang", ("--lang",), str, None, "en | zh"),
    Param("chosen", ("--selection",), str, None, "Only members of this selection (datagen select)."),
    Param("min_score", ("--min-score",), list, [], "KEY=VALUE: only samples scoring at least VALUE, e.g. judge:accuracy=4.5 (repeatable)."),
    DB_PARAM,
)
DEDUP_PARAMS: tuple[Param, ...] = (
    Param("input", (), str, None, "Candidates: .txt (a line each), .jsonl or .json (records with --field).", required=True),
    Param("lang", ("--lang",), str, "auto", "en | zh | auto (zh for texts with Han characters)"),
    Param("threshold", ("--threshold",), float, THRESHOLD, "Reject when ROUGE-L F against anything kept is above this."),
    Param("against", ("--against",), str, None, "Existing instructions (same formats) to dedup against."),
    Param("field", ("--field",), str, "instruction", "Record field holding the text (json/jsonl)."),
    Param("out", ("--out",), str, None, "Kept records [default: INPUT stem + .kept.jsonl]"),
    Param("rejected", ("--rejected",), str, None, "Write rejected records with nearest text and score (JSONL)."),
)
JOB_PARAMS: dict[str, tuple[Param, ...]] = {"generate": GENERATE_PARAMS, "export": EXPORT_PARAMS, "dedup": DEDUP_PARAMS}


def validated(schema: type[BaseModel], flags: dict[str, str] | None = None, **values):
    """Build an options model; a value outside its limits is an InputError naming the flag."""
    from pydantic import ValidationError

    from datagen.errors import InputError

    try:
        return schema(**values)
    except ValidationError as exc:
        e = exc.errors()[0]
        name = str(e["loc"][-1]) if e["loc"] else ""
        flag = (flags or {}).get(name, "--" + name.replace("_", "-"))
        raise InputError(f"{flag} {e.get('input')!r}: {e['msg']}") from None


# A field whose flag is not its own name (max_tokens sets both budgets).
_FLAGS = {"target": "--num-instructions", "random_seed": "--seed", "bootstrap_max_tokens": "--max-tokens", "instances_max_tokens": "--max-tokens"}


def generate_options(params: dict) -> GenerateOptions:
    """The `generate` command's parsed parameters as options, every value checked (a job's too, at submit)."""
    p = dict(params)
    max_tokens = p.pop("max_tokens", None)
    pipeline = {k: p.pop(k) for k in list(p) if k in PipelineConfig.model_fields and k != "target"}
    pipeline["target"] = p.pop("num_instructions")
    if max_tokens is not None:
        pipeline.update(bootstrap_max_tokens=max_tokens, instances_max_tokens=max_tokens)
    p.pop("progress", None)
    return validated(GenerateOptions, _FLAGS, **p, pipeline=validated(PipelineConfig, _FLAGS, **pipeline))
