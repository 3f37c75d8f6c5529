"""`datagen generate` as a library call: options in, a finished (or resumable) run out."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
import tomllib
from datetime import datetime
from importlib import resources


from datagen import storage
from datagen.backends import make_backend
from datagen.client import BudgetSpent, LLMClient, Price
from datagen.batch.run import BatchRun
from datagen.config import BATCH_DISCOUNT, CONTEXT_WINDOW, GenerateOptions, check_combination, env
from datagen.errors import DatagenError, InputError
from datagen.lease import RunLeaseHolder
from datagen.pipeline import Pipeline, Progress
from datagen.ratelimit import shared_limiters
from datagen.prompts import load_prompts
from datagen.records import Generation, Prompt
from datagen.seeds import default_seed_path, load_seeds

DEFAULT_MODELS = {"chat": "gpt-3.5-turbo", "completion": "davinci-002", "local": "smollm2-135m-instruct"}


def pick_api(opts: GenerateOptions) -> str:
    if opts.api:
        return opts.api
    if opts.base_url or env("openai_base_url") or env("openai_api_key"):
        return "chat"
    return "local"


def price_for(model: str, price_in: float | None, price_out: float | None, api: str) -> Price:
    if api == "local":
        return Price(price_in or 0.0, price_out or 0.0)
    table = tomllib.loads(resources.files("datagen").joinpath("prices.toml").read_text("utf-8"))["models"]
    match = max((k for k in table if model.startswith(k)), key=len, default=None)
    base = table.get(match, {}) if match else {}
    return Price(price_in if price_in is not None else base.get("input", 0.0), price_out if price_out is not None else base.get("output", 0.0))


class LeaseLost(DatagenError):
    """Another process took the run over (this one stalled past its lease)."""


async def generate(opts: GenerateOptions, on_start=None) -> tuple[str, Progress]:
    """Run (or resume) a named generation run until its target is reached, holding the run lease.

    `on_start(run_name, progress, client, task)` lets a caller watch the run (the CLI shows a live table).
    SIGTERM (main thread only) drains: no new work, candidates in progress finish, the run stays
    resumable and the returned progress is short of its target.
    """
    api, seeds, prompts = _checked(opts)
    engine = storage.connect(opts.db)
    name = opts.run or datetime.now().strftime("run-%Y%m%d-%H%M%S")
    existing = storage.get_run(engine, name)
    resumed = _resumed(opts, existing)
    if resumed is not opts:
        opts = resumed
        api, seeds, prompts = _checked(opts)
    model = opts.model or DEFAULT_MODELS.get(api, "")
    if existing and opts.mode != "batch" and storage.list_batches(engine, existing.id, open_only=True):
        # Online requests for candidates whose batch lines are in flight would pay for them twice.
        raise InputError(f"run {name!r} has batches in flight: resume it in batch mode (leave out --mode), or wait for them")
    if existing and existing.lang != opts.lang:
        raise InputError(f"run {name!r} is a {existing.lang} run; pass --lang {existing.lang} to resume it")
    lease = RunLeaseHolder(engine, name)
    await asyncio.to_thread(lease.acquire, opts.lease_wait)
    with lease:
        return await _generate_held(opts, api, model, seeds, prompts, engine, name, lease, on_start)


def _checked(opts: GenerateOptions):
    """The API, seeds and prompts the options name, every combination checked before anything is written."""
    api = pick_api(opts)
    check_combination(opts, api)
    return api, load_seeds(opts.seeds or default_seed_path(opts.lang)), load_prompts(opts.lang, opts.prompts)


# How this one call behaves, never taken from the stored run.
PER_CALL = ("db", "run", "pipeline", "wait", "lease_wait")


def _resumed(opts: GenerateOptions, run) -> GenerateOptions:
    """`generate --run NAME` without --mode continues a batch run as it was started: every option
    left at its default takes the run's stored value, so a scheduled job needs only the name."""
    if opts.mode is not None or run is None:
        return opts
    stored = json.loads(run.config or "{}")
    if stored.get("mode") != "batch":
        return opts
    defaults = GenerateOptions()

    def merge(given, default, saved: dict) -> dict:
        return {k: saved[k] if k in saved and getattr(given, k) == getattr(default, k) else getattr(given, k)
                for k in type(given).model_fields if k not in PER_CALL}

    values = merge(opts, defaults, stored)
    values["pipeline"] = merge(opts.pipeline, defaults.pipeline, stored.get("pipeline") or {})
    return GenerateOptions(**values, db=opts.db, run=opts.run)


async def _generate_held(opts, api, model, seeds, prompts, engine, name, lease, on_start) -> tuple[str, Progress]:
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
            context_window=opts.context_window or CONTEXT_WINDOW,
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
    if opts.mode == "batch":
        return await _run_batch(opts, engine, name, lease, api, model, backend, seeds, prompts, config)
    return await _run(opts, engine, name, lease, api, model, backend, concurrency, seeds, prompts, config, on_start)


class _Ledger:
    """The client's request log, written to the run's `request` table."""

    def __init__(self, engine, run_id: int, model: str):
        self.engine, self.run_id, self.model = engine, run_id, model

    def begin(self, prompts: list[Prompt], attempt: int) -> int:
        stage = "+".join(sorted({p.stage.value for p in prompts}))  # a local batch may mix stages
        return storage.begin_request(self.engine, self.run_id, stage, self.model, [p.text for p in prompts], attempt=attempt)

    def end(self, row: int | None, prompts: list[Prompt], gens: list[Generation], cost: float, state: str) -> None:
        if row is not None:
            storage.end_request(self.engine, row, gens, cost=cost, state=state)


async def _supervise(engine, run_id: int, name: str, lease, work, stop, started=None) -> Progress:
    """Run a run's main task: SIGTERM calls `stop` (the run ends resumable), a lost lease cancels
    it, and the run's state says how it ended."""
    task = asyncio.create_task(work)
    loop = asyncio.get_running_loop()
    lease.on_lost = lambda: loop.call_soon_threadsafe(task.cancel)
    signals = threading.current_thread() is threading.main_thread()  # handlers need the main thread
    if signals:
        loop.add_signal_handler(signal.SIGTERM, stop)
    try:
        if started:
            await started(task)
        progress = await task
        storage.set_run_state(engine, run_id, "finished" if progress.accepted >= progress.target else "interrupted")
        return progress
    except (asyncio.CancelledError, KeyboardInterrupt):
        storage.set_run_state(engine, run_id, "interrupted")
        if lease.lost:
            raise LeaseLost(f"run {name!r} was taken over by another process (this one missed its lease); stopped") from None
        raise
    except BudgetSpent:
        storage.set_run_state(engine, run_id, "interrupted")
        raise
    except Exception:
        storage.set_run_state(engine, run_id, "failed")
        raise
    finally:
        if signals:
            loop.remove_signal_handler(signal.SIGTERM)
        # Stop the stages before closing the connection under them: a request cut by the close
        # would otherwise be logged as a "client has been closed" error.
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _run_batch(opts, engine, name, lease, api, model, backend, seeds, prompts, config) -> tuple[str, Progress]:
    run, _ = storage.open_run(engine, name, lang=opts.lang, api=api, model=model, target=opts.pipeline.target, config=config)
    list_price = price_for(model, opts.price_in, opts.price_out, api)
    price = Price(list_price.input * BATCH_DISCOUNT, list_price.output * BATCH_DISCOUNT)
    pipe = Pipeline(opts.pipeline, None, engine, run.id, opts.lang, seeds, prompts)
    job = BatchRun(opts, engine, run.id, name, pipe, backend, price, say=lambda m: print(m, file=sys.stderr, flush=True))
    try:
        progress = await _supervise(engine, run.id, name, lease, job.run(), job.stop)
    finally:
        await backend.aclose()
    return name, progress


async def _run(opts, engine, name, lease, api, model, backend, concurrency, seeds, prompts, config, on_start):
    run, _ = storage.open_run(engine, name, lang=opts.lang, api=api, model=model, target=opts.pipeline.target, config=config)
    client = LLMClient(
        backend,
        concurrency=concurrency,
        rpm=opts.rpm,
        tpm=opts.tpm,
        max_tries=opts.max_tries,
        price=price_for(model, opts.price_in, opts.price_out, api),
        log=_Ledger(engine, run.id, model),
        timeout=None if api == "local" else opts.timeout,
        # One limit per API key and base URL across processes: two workers on a key share it.
        shared_limits=shared_limiters(engine, opts.base_url, opts.rpm, opts.tpm) if api != "local" else None,
        budget=opts.budget,
        spent=storage.run_stats(engine, run.id).cost,
    )
    # Local batches fill from concurrent stages, so let enough prompts be in flight to fill them.
    cfg = opts.pipeline
    if api == "local":
        # A batch runs until its longest row ends, so a small model that rambles costs the whole
        # batch: cap answers unless the user chose a budget (8 tasks or 5 examples fit in 320 tokens).
        update = {"max_bootstrap_inflight": max(cfg.max_bootstrap_inflight, opts.batch_size * (opts.replicas if opts.ray else 1))}
        for key in ("bootstrap_max_tokens", "instances_max_tokens"):
            if key not in cfg.model_fields_set:
                update[key] = 320
        cfg = cfg.model_copy(update=update)
        client.batch_wait = 0.2
    pipe = Pipeline(cfg, client, engine, run.id, opts.lang, seeds, prompts)

    async def started(task):
        if on_start:
            await on_start(name, pipe.progress, client, task)

    try:
        # SIGTERM (docker stop, a worker draining) drains: no new request, answers in flight are stored.
        progress = await _supervise(engine, run.id, name, lease, pipe.run(), pipe.drain, started)
    finally:
        await client.aclose()
    return name, progress

