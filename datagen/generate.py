"""`datagen generate` as a library call: options in, a finished (or resumable) run out."""

from __future__ import annotations

import asyncio
import os
import tomllib
from datetime import datetime
from importlib import resources
from pathlib import Path

from pydantic import BaseModel

from datagen import storage
from datagen.backends import FatalBackendError, make_backend
from datagen.client import LLMClient, Price
from datagen.pipeline import Pipeline, PipelineConfig, Progress
from datagen.prompts import load_prompts
from datagen.records import Generation, Prompt
from datagen.seeds import default_seed_path, load_seeds

DEFAULT_MODELS = {"chat": "gpt-3.5-turbo", "completion": "davinci-002", "local": "smollm2-135m-instruct"}


class GenerateOptions(BaseModel):
    run: str | None = None
    api: str | None = None  # None: chat when a key or base URL is given, else the embedded model
    model: str | None = None
    base_url: str | None = None
    lang: str = "en"
    seeds: Path | None = None
    prompts: Path | None = None
    db: str | None = None
    concurrency: int = 16
    batch_size: int = 16
    prompts_per_request: int = 1
    rpm: float | None = None
    tpm: float | None = None
    max_tries: int = 5
    timeout: float = 120.0
    context_window: int | None = None
    price_in: float | None = None
    price_out: float | None = None
    ray: str | None = None  # None: in-process; "auto" or a cluster address: a pool of Ray replicas (--api local)
    replicas: int = 1
    gpus_per_replica: float = 0.0
    threads_per_replica: int = 1
    engine: str = "auto"  # inside a Ray replica: auto | transformers | vllm
    pipeline: PipelineConfig = PipelineConfig()


def pick_api(opts: GenerateOptions) -> str:
    if opts.api:
        return opts.api
    if opts.base_url or os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_KEY"):
        return "chat"
    return "local"


def price_for(model: str, price_in: float | None, price_out: float | None, api: str) -> Price:
    if api == "local":
        return Price(price_in or 0.0, price_out or 0.0)
    table = tomllib.loads(resources.files("datagen").joinpath("prices.toml").read_text("utf-8"))["models"]
    match = max((k for k in table if model.startswith(k)), key=len, default=None)
    base = table.get(match, {}) if match else {}
    return Price(price_in if price_in is not None else base.get("input", 0.0), price_out if price_out is not None else base.get("output", 0.0))


async def generate(opts: GenerateOptions, on_start=None) -> tuple[str, Progress]:
    """Run (or resume) a named generation run until its target is reached.

    `on_start(run_name, progress, client, task)` lets a caller watch the run (the CLI shows a live table).
    """
    api = pick_api(opts)
    model = opts.model or DEFAULT_MODELS.get(api, "")
    if opts.lang not in ("en", "zh"):
        raise ValueError(f"unknown --lang {opts.lang!r}: use en or zh")
    seeds = load_seeds(opts.seeds or default_seed_path(opts.lang))
    prompts = load_prompts(opts.lang, opts.prompts)
    engine = storage.connect(opts.db)
    name = opts.run or datetime.now().strftime("run-%Y%m%d-%H%M%S")
    existing = storage.get_run(engine, name)
    if existing and existing.lang != opts.lang:
        raise ValueError(f"run {name!r} is a {existing.lang} run; pass --lang {existing.lang} to resume it")

    if opts.ray and api != "local":
        raise ValueError("--ray serves an open model from Ray replicas: use it with --api local")
    parallel = opts.replicas if opts.ray else 1
    if opts.ray:
        from datagen.backends.ray_pool import RayPool

        backend = RayPool(
            model, address=opts.ray, replicas=opts.replicas, gpus_per_replica=opts.gpus_per_replica,
            threads_per_replica=opts.threads_per_replica, batch_size=opts.batch_size,
            context_window=opts.context_window, engine=opts.engine,
        )
        concurrency = opts.replicas  # one batch per replica at a time
    elif api == "local":
        backend = make_backend(api, model, batch_size=opts.batch_size, context_window=opts.context_window)
        concurrency = 1  # one batch at a time; the batch is the parallelism
    else:
        backend = make_backend(
            api,
            model,
            base_url=opts.base_url,
            timeout=opts.timeout,
            prompts_per_request=opts.prompts_per_request,
            context_window=opts.context_window or 4096,
        )
        concurrency = opts.concurrency
    try:
        await backend.check()
    except BaseException:
        await backend.aclose()  # a half-started Ray pool must not outlive the error
        raise

    config = opts.model_dump(mode="json", exclude={"db"})
    config.update(api=api, model=model)
    if opts.ray:
        config["ray_replicas"] = backend.describe()  # which engine and device each replica really got
    run, _ = storage.open_run(engine, name, lang=opts.lang, api=api, model=model, target=opts.pipeline.target, config=config)

    def log(prompt: Prompt, gen: Generation, attempt: int, cost: float) -> int:
        return storage.log_request(engine, run.id, prompt.stage.value, model, prompt.text, gen, attempt=attempt, cost=cost)

    client = LLMClient(
        backend,
        concurrency=concurrency,
        rpm=opts.rpm,
        tpm=opts.tpm,
        max_tries=opts.max_tries,
        price=price_for(model, opts.price_in, opts.price_out, api),
        log=log,
    )
    # Local batches fill from concurrent stages, so let enough prompts be in flight to fill them.
    cfg = opts.pipeline
    if api == "local":
        # A batch runs until its longest row ends, so a small model that rambles costs the whole
        # batch: cap answers unless the user chose a budget (8 tasks or 5 examples fit in 320 tokens).
        update = {"max_bootstrap_inflight": max(cfg.max_bootstrap_inflight, opts.batch_size * parallel)}
        for key in ("bootstrap_max_tokens", "instances_max_tokens"):
            if key not in cfg.model_fields_set:
                update[key] = 320
        cfg = cfg.model_copy(update=update)
        client.batch_wait = 0.2
    pipe = Pipeline(cfg, client, engine, run.id, opts.lang, seeds, prompts)
    task = asyncio.create_task(pipe.run())
    try:
        if on_start:
            await on_start(name, pipe.progress, client, task)
        progress = await task
        storage.set_run_state(engine, run.id, "finished")
    except (FatalBackendError, Exception):
        storage.set_run_state(engine, run.id, "failed")
        raise
    finally:
        if not task.done():
            task.cancel()
        await client.aclose()
    return name, progress
