"""Settings: every option declared once, with its default, its limits and its help; the
environment is read here and nowhere else. The CLI and the API take their defaults from these."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, get_args

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
}


def env(key: str) -> str | None:
    """A setting from the environment (by its key in ENV), None when unset or empty."""
    return os.environ.get(ENV[key]) or None


def db_wait() -> float:
    return float(env("db_wait") or DB_WAIT)


def cache_dir() -> Path:
    return Path(env("cache") or Path.home() / ".cache" / "datagen")


# --- generation ----------------------------------------------------------------------------------


class PipelineConfig(BaseModel):
    """What the self-instruct loop decides with; stored with the run, so review re-checks by the same values."""

    model_config = ConfigDict(extra="forbid")

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
    model_config = ConfigDict(extra="forbid")

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
# The transformers engine's KV cache on CUDA: "dynamic" (transformers' default) or "static" (compiled
# decode step; bench/local_gpu.py --cache static measures it). The CPU always uses the dynamic cache.
CUDA_CACHE = "dynamic"
