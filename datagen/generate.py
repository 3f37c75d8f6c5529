"""`datagen generate` as a library call: options in, a finished (or resumable) run out."""

from __future__ import annotations

import asyncio
import signal
import tomllib
from datetime import datetime
from importlib import resources

from sqlalchemy.exc import OperationalError

from datagen import storage
from datagen.backends import make_backend
from datagen.client import LLMClient, Price
from datagen.config import GenerateOptions, env
from datagen.errors import InputError
from datagen.pipeline import Pipeline, Progress
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


async def generate(opts: GenerateOptions, on_start=None) -> tuple[str, Progress]:
    """Run (or resume) a named generation run until its target is reached.

    `on_start(run_name, progress, client, task)` lets a caller watch the run (the CLI shows a live table).
    """
    api = pick_api(opts)
    model = opts.model or DEFAULT_MODELS.get(api, "")
    seeds = load_seeds(opts.seeds or default_seed_path(opts.lang))
    prompts = load_prompts(opts.lang, opts.prompts)
    engine = storage.connect(opts.db)
    name = opts.run or datetime.now().strftime("run-%Y%m%d-%H%M%S")
    existing = storage.get_run(engine, name)
    if existing and existing.lang != opts.lang:
        raise InputError(f"run {name!r} is a {existing.lang} run; pass --lang {existing.lang} to resume it")

    if api == "local":
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
    await backend.check()

    config = opts.model_dump(mode="json", exclude={"db"})
    config.update(api=api, model=model)
    try:
        return await _generate(opts, engine, name, api, model, backend, concurrency, seeds, prompts, config, on_start)
    except OperationalError as exc:  # e.g. a read-only file: say which database
        where = engine.url.database if engine.dialect.name == "sqlite" else engine.url.render_as_string(hide_password=True)
        msg = str(exc.orig).splitlines()[0] if exc.orig else str(exc).splitlines()[0]
        raise storage.StorageError(f"database {where}: {msg}") from None


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


async def _generate(opts, engine, name, api, model, backend, concurrency, seeds, prompts, config, on_start):
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
    )
    # Local batches fill from concurrent stages, so let enough prompts be in flight to fill them.
    cfg = opts.pipeline
    if api == "local":
        # A batch runs until its longest row ends, so a small model that rambles costs the whole
        # batch: cap answers unless the user chose a budget (8 tasks or 5 examples fit in 320 tokens).
        update = {"max_bootstrap_inflight": max(cfg.max_bootstrap_inflight, opts.batch_size)}
        for key in ("bootstrap_max_tokens", "instances_max_tokens"):
            if key not in cfg.model_fields_set:
                update[key] = 320
        cfg = cfg.model_copy(update=update)
        client.batch_wait = 0.2
    pipe = Pipeline(cfg, client, engine, run.id, opts.lang, seeds, prompts)
    task = asyncio.create_task(pipe.run())
    # SIGTERM (docker stop, a job queue's timeout) ends the run like Ctrl-C: recorded as interrupted.
    terminated = _on_sigterm(asyncio.current_task())
    try:
        if on_start:
            await on_start(name, pipe.progress, client, task)
        progress = await task
        storage.set_run_state(engine, run.id, "finished")
    except (asyncio.CancelledError, KeyboardInterrupt):
        storage.set_run_state(engine, run.id, "interrupted")
        if terminated():
            raise KeyboardInterrupt from None
        raise
    except Exception:
        storage.set_run_state(engine, run.id, "failed")
        raise
    finally:
        # Stop the stages before closing the connection under them: a request cut by the close
        # would otherwise be logged as a "client has been closed" error.
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()
    return name, progress


def _on_sigterm(main: asyncio.Task | None):
    """Cancel `main` on SIGTERM; the returned function says whether that happened."""
    got: list[bool] = []

    def handler() -> None:
        got.append(True)
        if main:
            main.cancel()

    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, handler)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
        pass
    return lambda: bool(got)
