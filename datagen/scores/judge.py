"""The judge scorer: a chat or completion model rates each kept sample of a run by a rubric.

    datagen score --run nightly --scorer judge --api chat --model gpt-4o-mini [--mode batch] [--rubric accuracy]

Every call goes through the client and the request ledger of the scored run (stage "judge:<rubric>",
the sample in `sample_id`): rate limits, retries, cost and --budget as for generate. --mode batch goes
through the same batch loop as generate (datagen/batch/run.py) at the Batch API's price.

Each answer becomes one score row (datagen/storage/scores.py) naming its ledger row: a success with
the score and the judge's one-line reason, or a failure with the answer's text and why it is unusable.
A sample is asked again while it has fewer than --max-tries failures. Resumable at any moment:

- a sample with a success is never asked again (and the unique index refuses a second success);
- an answer stored in the ledger but not yet read (killed in between) is read on the next start, not
  asked again; batch lines are never sent twice (the write-ahead rules of batch mode);
- one process scores a run with a rubric at a time (a lease like the run lease of generate).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import SimpleNamespace

from datagen import storage
from datagen.backends import make_backend
from datagen.batch.provider import provider_for
from datagen.batch.run import BatchRun
from datagen.client import LLMClient, Price
from datagen.config import BATCH_DISCOUNT, JUDGE_MAX_GIVE_UPS, JudgeOptions
from datagen.errors import InputError, LeaseHeld, NotFound, Unavailable
from datagen.lease import RunLeaseHolder
from datagen.ratelimit import shared_limiters
from datagen.records import Generation, Prompt, Stage
from datagen.scores.rubric import Rubric, Verdict, load_rubric, parse_verdict, render
from datagen.storage import batches as batch_store
from datagen.storage import judge as jstore
from datagen.storage import leases
from datagen.storage import scores as S

SCORER = "judge"
PAGE = 200  # samples read from the database at a time
# The first ask is greedy (the same sample, the same verdict); an unusable answer is asked again with
# some randomness, or a deterministic model would write the same unusable answer every time.
RETRY_TEMPERATURE = 0.7

_SAMPLE: ContextVar[int | None] = ContextVar("judge_sample", default=None)  # the sample a request is for


def stage_of(rubric: str) -> str:
    """The ledger stage of a judge's requests: one rubric's requests and batches are kept apart from others'."""
    return f"{Stage.judge.value}:{rubric}"


@dataclass
class JudgeReport:
    run: str
    rubric: str
    model: str
    mode: str
    scored: int = 0  # successes stored by this session
    failed: int = 0  # unusable answers stored as failures by this session
    gave_up: int = 0  # samples left unscored: --max-tries failures
    remaining: int = 0  # samples still to score when the session ended
    requests: int = 0  # ledger rows of this judge, all sessions
    cost: float = 0.0
    seconds: float = 0.0
    stopped: bool = False  # SIGTERM ended the session early (resumable)
    errors: dict[str, int] = field(default_factory=dict)  # why answers were unusable, this session

    def line(self) -> str:
        return (f"run={self.run} scorer=judge rubric={self.rubric} model={self.model} mode={self.mode} scored={self.scored} "
                f"failed={self.failed} gave_up={self.gave_up} remaining={self.remaining} requests={self.requests} "
                f"cost={self.cost:.4f} seconds={self.seconds:.1f}")


@dataclass
class Todo:
    sample_id: int
    tries: int  # failures stored so far
    instruction: str
    instances: list[tuple[str, str]]


class Judge:
    """What online and batch mode share: the rubric, a sample's prompt, and reading an answer into a score row."""

    def __init__(self, engine, run, rubric: Rubric, model: str, opts: JudgeOptions, report: JudgeReport):
        self.engine, self.run, self.rubric, self.model, self.opts, self.report = engine, run, rubric, model, opts, report
        self.stage = stage_of(rubric.name)
        self.lang = run.lang if run.lang in rubric.langs() else rubric.langs()[0]

    def prompt(self, t: Todo) -> Prompt:
        return Prompt(stage=Stage.judge, text=render(self.rubric, self.lang, t.instruction, t.instances),
                      max_tokens=self.rubric.max_tokens, temperature=0.0 if t.tries == 0 else RETRY_TEMPERATURE, top_p=1.0)

    def todo(self, *, skip: set[int] | frozenset = frozenset(), only: set[int] | None = None) -> Iterator[Todo]:
        """The run's kept samples with no success for this judge and fewer than --max-tries failures, in id order.

        Samples at --max-tries are counted in report.gave_up (once per call)."""
        after, self.report.gave_up = 0, 0
        while True:
            ids = S.unscored_sample_ids(self.engine, self.run.id, SCORER, self.model, self.rubric.name, after=after, limit=PAGE)
            if not ids:
                return
            after = ids[-1]
            tries = S.failed_tries(self.engine, ids, SCORER, self.model, self.rubric.name)
            ids = [i for i in ids if i not in skip and (only is None or i in only)]
            texts = S.sample_texts(self.engine, ids)
            for sid in ids:
                if tries.get(sid, 0) >= self.opts.max_tries:
                    self.report.gave_up += 1
                    continue
                instruction, instances = texts[sid]
                yield Todo(sid, tries.get(sid, 0), instruction, list(instances))

    def read(self, sample_id: int, request_id: int | None, text: str, error: str | None) -> Verdict:
        """Store what one answer says: a score with its reason, or a failure with the answer's text."""
        v = Verdict(error=error) if error else parse_verdict(text, self.rubric.min, self.rubric.max)
        stored = S.ScoreIn(sample_id, SCORER, self.model, v.value, rubric=self.rubric.name, reason=v.reason if v.ok else (text or None),
                           request_id=request_id, error=None if v.ok else f"unusable answer: {v.error}" if not error else error[:500])
        S.store_scores(self.engine, [stored])
        if v.ok:
            self.report.scored += 1
        else:
            self.report.failed += 1
            key = (error.split(":")[0][:40] if error else v.error.split(":")[0])
            self.report.errors[key] = self.report.errors.get(key, 0) + 1
        return v

    def count(self) -> None:
        """Requests and cost of this judge so far (every session), and what is left to score."""
        self.report.requests, self.report.cost = jstore.request_counts(self.engine, self.run.id, self.stage, self.model)
        self.report.remaining = sum(1 for _ in self.todo())


class _Ledger:
    """The client's request log: judge rows in the scored run's ledger, each naming its sample."""

    def __init__(self, engine, run_id: int, stage: str, model: str):
        self.engine, self.run_id, self.stage, self.model = engine, run_id, stage, model

    def begin(self, prompts: list[Prompt], attempt: int) -> int:
        return jstore.begin_request(self.engine, self.run_id, self.stage, self.model, prompts[0].text, _SAMPLE.get(), attempt=attempt)

    def end(self, row: int | None, prompts: list[Prompt], gens: list[Generation], cost: float, state: str) -> None:
        if row is not None:
            storage.end_request(self.engine, row, gens, cost=cost, state=state)


# ---------------------------------------------------------------- entry point


def price_of(opts: JudgeOptions) -> Price:
    from datagen.generate import price_for

    p = price_for(opts.model, opts.price_in, opts.price_out, opts.api)
    return Price(p.input * BATCH_DISCOUNT, p.output * BATCH_DISCOUNT) if opts.mode == "batch" else p


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def score_judge(opts: JudgeOptions, say: Callable[[str], None] = _say) -> JudgeReport:
    """Score (or go on scoring) a run's kept samples with a judge; the report says what this session did."""
    rubric = load_rubric(opts.rubric)
    engine = storage.connect(opts.db, create=False)
    run = storage.get_run(engine, opts.run)
    if run is None:
        raise NotFound(f"no run named {opts.run!r}")
    if run.lang not in rubric.langs():
        raise InputError(f"rubric {opts.rubric} has no [{run.lang}] template and run {run.name!r} is a {run.lang} run")
    stage = stage_of(rubric.name)
    others = jstore.open_batch_models(engine, run.id, stage) - {opts.model}
    if others:
        raise InputError(f"run {run.name!r} has {stage} batches in flight for model {sorted(others)[0]!r}: resume with that --model first")
    if opts.mode == "online" and jstore.open_batch_models(engine, run.id, stage):
        raise InputError(f"run {run.name!r} has {stage} batches in flight: resume with --mode batch (their answers are paid for)")
    report = JudgeReport(run.name, rubric.name, opts.model, opts.mode)
    judge = Judge(engine, run, rubric, opts.model, opts, report)
    # One process per run and rubric: two would ask for the same samples and pay twice.
    lease = RunLeaseHolder(engine, f"{run.name} [{stage}]")
    try:
        await asyncio.to_thread(lease.acquire, opts.lease_wait)
    except LeaseHeld:
        held = leases.get_lease(engine, lease.run_name)
        who = f"host {held.host} pid {held.pid}" if held else "another process"
        raise LeaseHeld(f"run {run.name!r} is being scored with {stage} by {who}; wait for it, or pass --lease-wait SECONDS") from None
    t0 = time.monotonic()
    with lease:
        backend = make_backend(opts.api, opts.model, base_url=opts.base_url, timeout=opts.timeout, prompts_per_request=1,
                               context_window=opts.context_window)
        try:
            await backend.check()
            work = _batch(judge, opts, backend, say) if opts.mode == "batch" else _online(judge, opts, backend, say)
            await _supervised(work, report)
        finally:
            await backend.aclose()
            report.seconds = time.monotonic() - t0
            judge.count()
    return report


class Stopped(Exception):
    """SIGTERM: the session stopped early, resumable."""


async def _supervised(work, report: JudgeReport) -> None:
    """Run the work; SIGTERM (main thread only) stops it where it is: the ledger keeps what was asked."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    stopped = []
    signals = threading.current_thread() is threading.main_thread()
    if signals:
        loop.add_signal_handler(signal.SIGTERM, lambda: (stopped.append(True), task.cancel()))
    try:
        await task
    except asyncio.CancelledError:
        if not stopped:
            raise
        report.stopped = True
    finally:
        if signals:
            loop.remove_signal_handler(signal.SIGTERM)


# ---------------------------------------------------------------- online


async def _online(judge: Judge, opts: JudgeOptions, backend, say) -> None:
    engine, run = judge.engine, judge.run
    client = LLMClient(
        backend, concurrency=opts.concurrency, rpm=opts.rpm, tpm=opts.tpm, max_tries=opts.max_tries, price=price_of(opts),
        log=_Ledger(engine, run.id, judge.stage, judge.model), timeout=opts.timeout,
        shared_limits=shared_limiters(engine, opts.base_url, opts.rpm, opts.tpm), budget=opts.budget,
        spent=jstore.spent(engine, run.id, judge.stage, judge.model),
    )
    try:
        unread = jstore.unread_answers(engine, run.id, judge.stage, judge.model)
        for row in unread:  # answered before the last stop, never read: read now, not asked again
            judge.read(row.sample_id, row.id, row.response, row.error)
        if unread:
            say(f"read {len(unread)} answers stored before the last stop")
        await _pool(judge, opts, client)
    finally:
        await client.aclose()


async def _pool(judge: Judge, opts: JudgeOptions, client: LLMClient) -> None:
    queue: asyncio.Queue = asyncio.Queue(maxsize=2 * opts.concurrency)
    workers = 2 * opts.concurrency  # enough to keep every slot busy while some read their answers
    give_ups = [0]

    async def feed() -> None:
        n = 0
        for t in judge.todo():
            if opts.limit is not None and n >= opts.limit:
                break
            await queue.put(t)
            n += 1
        for _ in range(workers):
            await queue.put(None)

    async def one(t: Todo) -> None:
        while t.tries < opts.max_tries:
            token = _SAMPLE.set(t.sample_id)
            try:
                gen = await client.generate(judge.prompt(t))
            finally:
                _SAMPLE.reset(token)
            v = judge.read(t.sample_id, gen.request_id, gen.text, gen.error)
            if gen.error:
                give_ups[0] += 1
                if give_ups[0] >= JUDGE_MAX_GIVE_UPS:
                    raise Unavailable(f"{give_ups[0]} samples in a row got no answer (last: {gen.error[:200]}); stopped, run again to go on")
                return  # asked again by the next session (a failure is stored: it counts as a try)
            give_ups[0] = 0
            if v.ok:
                return
            t.tries += 1

    async def work() -> None:
        while (t := await queue.get()) is not None:
            await one(t)

    tasks = [asyncio.create_task(feed())] + [asyncio.create_task(work()) for _ in range(workers)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            if t.exception() is not None:
                raise t.exception()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# ---------------------------------------------------------------- batch


class JudgeBatch(BatchRun):
    """The batch loop of generate, asking the judge's questions: a line per sample, read into score rows."""

    def __init__(self, judge: Judge, opts: JudgeOptions, backend, say):
        # BatchRun reads the run it works for from a RunContext; the judge's is these few fields.
        ctx = SimpleNamespace(opts=opts, engine=judge.engine, run_id=judge.run.id, name=judge.run.name, backend=backend,
                              price=lambda: price_of(opts))
        super().__init__(ctx, None, provider_for(backend, tries=opts.max_tries), say)
        self.judge = judge
        self.stages = (judge.stage,)
        self.planned: set[int] = set()  # samples this session asked about (--limit counts them)

    @property
    def progress(self) -> JudgeReport:
        return self.judge.report

    def _open_todo(self) -> list[Todo]:
        """Samples that may be asked now: not on their way already, within --limit."""
        busy = jstore.busy_samples(self.engine, self.run_id, self.judge.stage)
        room = None if self.opts.limit is None else self.opts.limit - len(self.planned)
        out = []
        for t in self.judge.todo(skip=busy):
            if t.sample_id not in self.planned:
                if room is not None and room <= 0:
                    continue
                room = None if room is None else room - 1
            out.append(t)
        return out

    def _finished(self) -> bool:
        return not jstore.busy_samples(self.engine, self.run_id, self.judge.stage) and not self._open_todo()

    def _take_answers(self) -> None:
        jstore.settle_read(self.engine, self.run_id, self.judge.stage)  # read before a stop, not yet marked done
        for row in batch_store.answered_requests(self.engine, self.run_id, stages=self.stages):
            self.judge.read(row.sample_id, row.id, row.response, row.error)
        jstore.settle_read(self.engine, self.run_id, self.judge.stage)

    def _plan(self) -> None:
        lines = []
        for t in self._open_todo():
            p = self.judge.prompt(t)
            lines.append(batch_store.Line(stage=self.judge.stage, prompt=p.text, sample_id=t.sample_id, attempt=t.tries + 1,
                                          body=self._body(p)))
            self.planned.add(t.sample_id)
        if lines:
            batch_store.queue_requests(self.engine, self.run_id, self.backend.model, lines)

    def _body(self, p: Prompt) -> str:
        import json

        from datagen.client import fit

        return json.dumps(self.backend.body([fit(p, self.backend)]), ensure_ascii=False)

    def _spent(self) -> tuple[float, float]:
        j = self.judge
        return jstore.spent(self.engine, self.run_id, j.stage, j.model), jstore.open_batch_estimate(self.engine, self.run_id, self.stages)


async def _batch(judge: Judge, opts: JudgeOptions, backend, say) -> None:
    await JudgeBatch(judge, opts, backend, say).run()
