"""`datagen generate` as a library call: options in, a finished (or resumable) run out."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
import tomllib
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

from datagen import storage
from datagen.backends import make_backend
from datagen.client import LLMClient, Price
from datagen.batch.provider import provider_for
from datagen.batch.manage import drop_unsent
from datagen.batch.run import BatchRun
from datagen.config import BATCH_DISCOUNT, CONTEXT_WINDOW, PER_CALL_OPTIONS, GenerateOptions, check_combination, env
from datagen.errors import BudgetSpent, Crashed, DatagenError, InputError, one_line
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


async def generate(opts: GenerateOptions, on_start=None, resume_only: bool = False) -> tuple[str, Progress]:
    """Run (or resume) a named generation run until its target is reached, holding the run lease.

    `on_start(run_name, progress, client, task)` lets a caller watch the run (the CLI shows a live table).
    `resume_only`: the command named a run and nothing else, so it means a resume; a name that is
    no run is refused rather than started as a new run on default options (a typo).
    SIGTERM (main thread only) drains: no new work, candidates in progress finish, the run stays
    resumable and the returned progress is short of its target.
    """
    api, seeds, prompts = _checked(opts)
    engine = storage.connect(opts.db)
    name = opts.run or datetime.now().strftime("run-%Y%m%d-%H%M%S")
    existing = storage.get_run(engine, name)
    if existing is None and opts.run:
        if resume_only:
            raise InputError(f"no run named {name!r}: to start a new run give its options too (e.g. -n 100 --api chat)")
        print(f"new run {name!r} (no run by that name yet)", flush=True)
    resumed = _resumed(opts, existing)
    if resumed is not opts:
        opts = resumed
        api, seeds, prompts = _checked(opts)
    if existing and opts.mode != "batch" and any(
        b.provider_id for b in storage.list_batches(engine, existing.id, open_only=True, stages=BatchRun.stages)):
        _refuse_in_flight(name)
    if existing and existing.lang != opts.lang:
        raise InputError(f"run {name!r} is in {existing.lang}: leave out --lang to resume it")
    if existing and opts.mode != "batch":
        kept = storage.run_stats(engine, existing.id).kept
        if kept >= opts.pipeline.target:  # say so, rather than a "succeeded" that added nothing
            return name, Progress(target=opts.pipeline.target, accepted=kept, note=(
                f"nothing to do: run {name!r} already has {kept} accepted of the {opts.pipeline.target} asked for; "
                "raise -n to grow it, or name a new --run (a schedule: --run 'NAME-{slot:%Y%m%d}')"))
    ctx = RunContext(opts=opts, api=api, model=opts.model or DEFAULT_MODELS.get(api, ""), seeds=seeds, prompts=prompts,
                     engine=engine, name=name, lease=RunLeaseHolder(engine, name))
    await asyncio.to_thread(ctx.lease.acquire, opts.lease_wait)
    with ctx.lease:
        return await _generate_held(ctx, on_start)


@dataclass
class RunContext:
    """The run being generated, built once and read by online and batch mode alike: its options (the
    stored ones on a batch resume), its model, where it is stored, its lease; then its backend and row."""

    opts: GenerateOptions
    api: str
    model: str
    seeds: list
    prompts: Any
    engine: Any
    name: str
    lease: RunLeaseHolder
    backend: Any = None
    concurrency: int = 1  # requests (or local batches) in flight
    run: Any = None  # the stored run, once opened

    @property
    def run_id(self) -> int:
        return self.run.id

    def price(self) -> Price:
        """The list price per 1M tokens; batch lines pay BATCH_DISCOUNT of it."""
        listed = price_for(self.model, self.opts.price_in, self.opts.price_out, self.api)
        if self.opts.mode == "batch":
            return Price(listed.input * BATCH_DISCOUNT, listed.output * BATCH_DISCOUNT)
        return listed

    def open(self) -> None:
        """Store the run (or update a resumed one) with the options it runs with."""
        config = self.opts.model_dump(mode="json", exclude={"db"})
        config.update(api=self.api, model=self.model)
        if self.opts.ray:
            config["ray_replicas"] = self.backend.describe()  # which engine and device each replica really got
        elif self.api == "local":
            config["local_engine"] = self.backend.engine  # what --engine auto picked (transformers or llama.cpp)
            if getattr(self.backend, "loop", None):  # the transformers engine's loop: slots, static or dynamic
                config["local_loop"] = self.backend.loop
        self.run, _ = storage.open_run(self.engine, self.name, lang=self.opts.lang, api=self.api, model=self.model,
                                       target=self.opts.pipeline.target, config=config)


def _refuse_in_flight(name: str):
    # Online requests for candidates whose batch lines are in flight would pay for them twice.
    raise InputError(f"run {name!r} has batches in flight: resume it in batch mode (leave out --mode), wait for them, "
                     "or `datagen batches cancel ID`")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _checked(opts: GenerateOptions):
    """The API, seeds and prompts the options name, every combination checked before anything is written."""
    api = pick_api(opts)
    check_combination(opts, api)
    return api, load_seeds(opts.seeds or default_seed_path(opts.lang)), load_prompts(opts.lang, opts.prompts)


def _resumed(opts: GenerateOptions, run) -> GenerateOptions:
    """`generate --run NAME` continues a run as it was started: every option left at its default
    takes the run's stored value (its API, model, server, target, mode...), so a scheduled job needs
    only the name and `--mode online` moves a batch run to the same server. Options of this
    invocation (config.PER_CALL: --no-wait, --lease-wait, ...) are always this call's; a model and
    a server belong to their API, so another --api leaves them at this call's values."""
    if run is None:
        return opts
    stored = json.loads(run.config or "{}")
    if opts.api and opts.api != stored.get("api"):
        stored = {k: v for k, v in stored.items() if k not in ("model", "base_url")}
    defaults = GenerateOptions()

    def merge(given, default, saved: dict) -> dict:
        return {k: saved[k] if k in saved and getattr(given, k) == getattr(default, k) else getattr(given, k)
                for k in type(given).model_fields if k not in PER_CALL_OPTIONS and k != "pipeline"}

    values = merge(opts, defaults, stored)
    values["pipeline"] = merge(opts.pipeline, defaults.pipeline, stored.get("pipeline") or {})
    return GenerateOptions(**values, **{k: getattr(opts, k) for k in PER_CALL_OPTIONS})


def _backend(ctx: RunContext):
    """(backend, requests in flight) for the run's API."""
    opts, api, model = ctx.opts, ctx.api, ctx.model
    if opts.ray:
        from datagen.backends.ray_pool import RayPool

        backend = RayPool(
            model, address=opts.ray, replicas=opts.replicas, gpus_per_replica=opts.gpus_per_replica,
            threads_per_replica=opts.threads_per_replica, batch_size=opts.batch_size,
            context_window=opts.context_window, engine=opts.engine,
        )
        return backend, opts.replicas  # one batch per replica at a time
    if api == "local":
        backend = make_backend(api, model, batch_size=opts.batch_size, context_window=opts.context_window, engine=opts.engine)
        # One batch at a time; the batch is the parallelism. The llama.cpp engine takes prompts into its
        # running batch as rows end (continuous batching), so a second batch waits there to fill free slots.
        return backend, 2 if backend.engine == "llama.cpp" else 1
    backend = make_backend(api, model, base_url=opts.base_url, timeout=opts.timeout, prompts_per_request=opts.prompts_per_request,
                           context_window=opts.context_window or CONTEXT_WINDOW)
    return backend, opts.concurrency


async def _generate_held(ctx: RunContext, on_start) -> tuple[str, Progress]:
    ctx.backend, ctx.concurrency = _backend(ctx)
    try:
        await ctx.backend.check()
        if ctx.opts.mode != "batch" and (run := storage.get_run(ctx.engine, ctx.name)) and storage.list_batches(
                ctx.engine, run.id, open_only=True, stages=BatchRun.stages):
            # Only batches the provider may never have seen are left (a run that failed before its first
            # create): those it does not know are dropped, a known one keeps the run in batch mode.
            try:
                provider = provider_for(ctx.backend, ctx.opts.max_tries)
            except InputError:  # a backend with no Batch API cannot tell whether the provider saw them
                provider = None
            if provider is None or not await drop_unsent(ctx.engine, run.id, provider, _say, stages=BatchRun.stages):
                _refuse_in_flight(ctx.name)
        ctx.open()
    except BaseException:
        await ctx.backend.aclose()  # a half-started Ray pool must not outlive the error
        raise
    if ctx.opts.mode == "batch":
        return await _run_batch(ctx)
    return await _run(ctx, on_start)


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


async def _supervise(ctx: RunContext, work, stop, started=None) -> Progress:
    """Run a run's main task: SIGTERM calls `stop` (the run ends resumable), a lost lease cancels
    it, and the run's state says how it ended."""
    engine, run_id, name, lease = ctx.engine, ctx.run_id, ctx.name, ctx.lease
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
            raise DatagenError(f"run {name!r} was taken over by another process (this one missed its lease); stopped") from None
        raise
    except BudgetSpent:
        storage.set_run_state(engine, run_id, "interrupted")
        raise
    except storage.StorageError:  # the database went away: resumable, not failed
        try:
            storage.set_run_state(engine, run_id, "interrupted")
        except storage.StorageError:
            pass
        raise
    except Exception as exc:
        storage.set_run_state(engine, run_id, "failed")
        if isinstance(exc, DatagenError):
            raise
        # A bug, not bad input: the run is resumable, so the user gets one line that says how.
        raise Crashed(f"run {name!r} failed ({type(exc).__name__}: {one_line(exc)}); it is resumable: datagen generate --run {name}") from exc
    finally:
        if signals:
            loop.remove_signal_handler(signal.SIGTERM)
        # Stop the stages before closing the connection under them: a request cut by the close
        # would otherwise be logged as a "client has been closed" error.
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _run_batch(ctx: RunContext) -> tuple[str, Progress]:
    pipe = Pipeline(ctx.opts.pipeline, None, ctx.engine, ctx.run_id, ctx.opts.lang, ctx.seeds, ctx.prompts)
    job = BatchRun(ctx, pipe, provider_for(ctx.backend, ctx.opts.max_tries), say=_say)
    try:
        progress = await _supervise(ctx, job.run(), job.stop)
    finally:
        await ctx.backend.aclose()
    return ctx.name, progress


async def _run(ctx: RunContext, on_start) -> tuple[str, Progress]:
    opts, api, engine = ctx.opts, ctx.api, ctx.engine
    client = LLMClient(
        ctx.backend,
        concurrency=ctx.concurrency,
        rpm=opts.rpm,
        tpm=opts.tpm,
        max_tries=opts.max_tries,
        price=ctx.price(),
        log=_Ledger(engine, ctx.run_id, ctx.model),
        timeout=None if api == "local" else opts.timeout,
        # One limit per API key and base URL across processes: two workers on a key share it.
        shared_limits=shared_limiters(engine, opts.base_url, opts.rpm, opts.tpm) if api != "local" else None,
        budget=opts.budget,
        spent=storage.run_stats(engine, ctx.run_id).cost,
    )
    # Local batches fill from concurrent stages, so let enough prompts be in flight to fill them.
    cfg = opts.pipeline
    if api == "local":
        # A batch runs until its longest row ends, so a small model that rambles costs the whole
        # batch: cap answers unless the user chose a budget (8 tasks or 5 examples fit in 320 tokens).
        update = {"max_bootstrap_inflight": max(cfg.max_bootstrap_inflight, opts.batch_size * ctx.concurrency)}
        for key in ("bootstrap_max_tokens", "instances_max_tokens"):
            if key not in cfg.model_fields_set:
                update[key] = 320
        cfg = cfg.model_copy(update=update)
        client.batch_wait = 0.2
    pipe = Pipeline(cfg, client, engine, ctx.run_id, opts.lang, ctx.seeds, ctx.prompts)

    async def started(task):
        if on_start:
            await on_start(ctx.name, pipe.progress, client, task)

    try:
        # SIGTERM (docker stop, a worker draining) drains: no new request, answers in flight are stored.
        progress = await _supervise(ctx, pipe.run(), pipe.drain, started)
    finally:
        await client.aclose()
    return ctx.name, progress
