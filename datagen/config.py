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
# A job whose child exits DRAINED on its own (a `generate --mode batch --no-wait` round with batches
# still in flight) is queued again this many seconds later: it polls its batches at that pace
# without holding a worker slot in between.
AGAIN_AFTER = 60.0

# OpenAI's Batch API: half the synchronous price, at most 50,000 lines and 200 MB per input file.
BATCH_DISCOUNT = 0.5
BATCH_MAX_LINES = 50_000
BATCH_MAX_BYTES = 200 * 1024 * 1024

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
}


def env(key: str) -> str | None:
    """A setting from the environment (by its key in ENV), None when unset or empty."""
    return os.environ.get(ENV[key]) or None


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


class GenerateOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run: str | None = Field(None, min_length=1, max_length=200, description="Run name; an existing run is resumed.")
    api: Api | None = Field(None, description="chat | completion | local [default: local unless a key or base URL is set]")
    model: str | None = Field(None, description="Model name, or for --api local a HF directory / .gguf file.")
    base_url: str | None = Field(None, description="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 [env: OPENAI_BASE_URL]")
    lang: Lang = Field("en", description="en | zh")
    seeds: Path | None = Field(None, description="Seed task file (JSONL) [default: the built-in pool for --lang]")
    prompts: Path | None = Field(None, description="Prompt template TOML [default: built-in for --lang]")
    db: str | None = None
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
    lease_wait: float = Field(0.0, ge=0, description="Seconds to wait while another live process generates this run [default: refuse at once].")
    ray: str | None = Field(None, description="Run --api local on Ray replicas: auto (local Ray, or RAY_ADDRESS) or a cluster address (host:6379, ray://host:10001).")
    replicas: int = Field(1, ge=1, description="Model replicas in the Ray pool.")
    gpus_per_replica: float = Field(0.0, ge=0, description="GPUs each Ray replica reserves.")
    threads_per_replica: int = Field(1, ge=1, description="CPU cores (torch threads) each Ray replica reserves.")
    engine: Literal["auto", "transformers", "llamacpp", "vllm"] = Field("auto", description="Engine for --api local: auto (on the CPU: llamacpp for a GGUF model; on a GPU: transformers, or vllm in a Ray replica when importable) | transformers | llamacpp | vllm (Ray replicas only).")
    mode: Literal["online", "batch"] | None = Field(None, description="online: request by request | batch: OpenAI's Batch API at half price (resumable; see `datagen batches`) [default: online, or the run's own mode when resuming]")
    wait: bool = Field(True, description="Batch mode: wait for the batches until the target is reached; --no-wait submits and ingests what is ready, then exits (75 while unfinished).")
    poll_interval: float = Field(30.0, gt=0, description="Batch mode: seconds between status checks.")
    max_enqueued_tokens: int | None = Field(None, ge=1, description="Batch mode: input tokens this model may have in unfinished batches (the provider's queue limit).")
    batch_max_lines: int = Field(BATCH_MAX_LINES, ge=1, le=BATCH_MAX_LINES, description="Batch mode: lines per input file.")
    budget: float | None = Field(None, gt=0, description="USD this run may spend; batch mode counts batches in flight at their estimate and stops submitting before it.")
    pipeline: PipelineConfig = PipelineConfig()


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
