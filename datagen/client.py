"""The pipeline's way to call a model: concurrency, RPM/TPM limits, retries, batching, logging.

Stages call `await client.generate(prompt)` one prompt at a time; prompts that arrive together
are grouped into one backend call when the backend takes batches (local model, Completion API).
Free slots go to the most advanced stage first (see PRIORITY). Every HTTP request is a ledger
row written before it is sent and completed when it returns, so a crash loses no attempt.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiolimiter import AsyncLimiter

from datagen.backends import Backend
from datagen.errors import BackendError, BatchRefused, BudgetSpent
from datagen.records import Generation, Prompt, Stage

# Lower goes first. A candidate whose classify call is answered is one instances call from being
# accepted, and its classify call is already paid for: finishing it beats starting new ones. Without
# this a run against a 2 s server made 56 classify calls and no instances call in its first 20 s.
PRIORITY = {Stage.instances: 0, Stage.classify: 1, Stage.bootstrap: 2, Stage.judge: 3}

# An answer that took this share of --timeout (or a timeout) says the server queues our requests:
# the timeout is meant for the model's work, so the client halves the requests it keeps in flight,
# and adds one back after a round of answers under half the timeout.
SLOW_SHARE = 0.8


class RequestLog(Protocol):
    """The request ledger: one row per HTTP request, begun before it is sent."""

    def begin(self, prompts: list[Prompt], attempt: int) -> int | None: ...

    def end(self, row: int | None, prompts: list[Prompt], gens: list[Generation], cost: float, state: str) -> None:
        """`gens` holds one Generation per prompt, or a single one carrying the error; state done | cancelled."""


def budget_line(budget: float, spent: float, committed: float) -> str:
    return f"budget ${budget:.4f}: spent ${spent:.4f}, ${committed:.4f} in flight; raise --budget and run again with the same --run"


@dataclass
class Price:
    """US dollars per million tokens."""

    input: float = 0.0
    output: float = 0.0

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input + tokens_out * self.output) / 1e6


@dataclass
class Counters:
    requests: int = 0
    errors: int = 0
    retries: int = 0
    rate_limited: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    by_error: dict[str, int] = field(default_factory=dict)
    last_success: float = field(default_factory=time.monotonic)  # the pipeline's stall watchdog reads it


class _Slots:
    """Requests in flight: a semaphore whose free slots go to the lowest priority value, FIFO within one."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._waiting: list[tuple[int, int, asyncio.Future]] = []
        self._seq = itertools.count()

    async def acquire(self, priority: int) -> None:
        if self.used < self.limit and not self._waiting:
            self.used += 1
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._seq), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # handed a slot just as we were cancelled
                self.release()
            raise

    def release(self) -> None:
        self.used -= 1
        # Wake on the next loop turn: the task that released usually asks again at once for its
        # candidate's next stage, and that request should compete for this slot.
        asyncio.get_running_loop().call_soon(self._wake)

    def resize(self, limit: int) -> None:
        self.limit = limit
        self._wake()

    def _wake(self) -> None:
        while self._waiting and self.used < self.limit:
            _, _, fut = heapq.heappop(self._waiting)
            if not fut.done():  # a cancelled waiter is skipped
                self.used += 1
                fut.set_result(None)


def fit(prompt: Prompt, backend: Backend) -> Prompt:
    """Shrink max_tokens so prompt + answer fit the model's context window (0: the prompt alone does not fit)."""
    room = backend.context_window - backend.count_tokens(prompt.text) - 8
    if room < 16:
        return prompt.model_copy(update={"max_tokens": 0})
    return prompt.model_copy(update={"max_tokens": min(prompt.max_tokens, room)})


def _stderr_warning(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


class LLMClient:
    def __init__(
        self,
        backend: Backend,
        *,
        concurrency: int = 8,
        rpm: float | None = None,
        tpm: float | None = None,
        max_tries: int = 5,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        batch_wait: float = 0.05,
        price: Price | None = None,
        log: RequestLog | None = None,
        timeout: float | None = None,
        warn: Callable[[str], None] = _stderr_warning,
        shared_limits: tuple | None = None,
        budget: float | None = None,
        spent: float = 0.0,
    ):
        self.backend = backend
        self.max_tries = max(1, max_tries)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.batch_wait = batch_wait
        self.price = price or Price()
        self.log = log
        self.timeout = timeout
        self.warn = warn
        self.counters = Counters()
        self.concurrency = max(1, concurrency)
        self._slots = _Slots(self.concurrency)
        self._fast = 0
        self._shrunk_at = -1e9
        # A leaky bucket's capacity is the burst it allows: AsyncLimiter(rpm, 60) would let a whole
        # minute's requests out at once, which a server that counts any 60 s window (or enforces the
        # limit per second, as OpenAI does) answers with 429s and a long stall. Allow one second's worth.
        self._rpm = AsyncLimiter(max(1.0, rpm / 60), max(1.0, rpm / 60) * 60 / rpm) if rpm else None
        self._tpm = AsyncLimiter(tpm, 60) if tpm else None
        if shared_limits is not None:  # (rpm, tpm) limiters shared with other processes (datagen/ratelimit.py)
            self._rpm, self._tpm = shared_limits
        self._tpm_max = tpm or 0
        self._resume_at = 0.0  # a 429's Retry-After pauses every request, not just the one that got it
        self._queue: asyncio.PriorityQueue | None = None
        self._seq = itertools.count()
        self._dispatcher: asyncio.Task | None = None
        self._inflight: set[asyncio.Task] = set()
        self._closed = False
        self._told_refused = False
        self.draining = False  # drain(): requests not yet sent are cancelled, those in flight finish
        # --budget: what earlier sessions of the run spent, and requests in flight at their upper bound.
        self.budget, self.spent, self._committed, self._reserved = budget, spent, 0.0, 0
        self._settled = asyncio.Event()  # a request in flight ended: budget room may have come back

    @property
    def in_flight_limit(self) -> int:
        return self._slots.limit

    # ------------------------------------------------------------ public

    async def generate(self, prompt: Prompt) -> Generation:
        prompt = self._fit(prompt)
        if prompt.max_tokens <= 0:
            gen = Generation(error="prompt does not fit the context window")
            gen.request_id = self._end(self._begin([prompt], 1), [prompt], [gen], "done")
            return gen
        if self.backend.max_batch <= 1:
            return (await self._call_with_retries([prompt]))[0]
        if self._queue is None:
            self._queue = asyncio.PriorityQueue()
            self._dispatcher = asyncio.create_task(self._dispatch())
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((PRIORITY[prompt.stage], next(self._seq), prompt, fut))
        return await fut

    def drain(self) -> None:
        self.draining = True

    async def aclose(self) -> None:
        self._closed = True
        tasks = [t for t in (self._dispatcher, *self._inflight) if t]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.backend.aclose()

    # ------------------------------------------------------------ internals

    def _fit(self, prompt: Prompt) -> Prompt:
        return fit(prompt, self.backend)

    async def _dispatch(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            deadline = time.monotonic() + self.batch_wait
            while len(batch) < self.backend.max_batch:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            # Only prompts that share sampling settings can share a request; the most urgent group goes first.
            groups: dict[tuple, list] = {}
            for _, _, p, f in batch:
                groups.setdefault((p.temperature, p.top_p, tuple(p.stop)), []).append((p, f))
            for items in sorted(groups.values(), key=lambda items: min(PRIORITY[p.stage] for p, _ in items)):
                await self._slots.acquire(min(PRIORITY[p.stage] for p, _ in items))  # backpressure: wait for a slot first
                self._slots.release()
                task = asyncio.create_task(self._run_batch(items))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)

    async def _run_batch(self, items: list[tuple[Prompt, asyncio.Future]]) -> None:
        try:
            gens = await self._call_with_retries([p for p, _ in items])
        except BaseException as exc:  # a fatal error reaches every waiting stage
            for _, f in items:
                if not f.done():
                    f.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, f), g in zip(items, gens):
            if not f.done():
                f.set_result(g)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        # Full jitter spreads retries of many workers; a server's Retry-After is a floor.
        delay = random.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1)))
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    async def _call_with_retries(self, prompts: list[Prompt]) -> list[Generation]:
        est = sum(self.backend.count_tokens(p.text) + p.max_tokens for p in prompts)
        priority = min(PRIORITY[p.stage] for p in prompts)
        last = "no attempt"
        for attempt in range(1, self.max_tries + 1):
            refused = None
            await self._slots.acquire(priority)
            try:
                wait = self._resume_at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if self._rpm:
                    await self._rpm.acquire()
                if self._tpm:
                    await self._tpm.acquire(min(est, self._tpm_max))
                if self.draining:  # never sent: the caller's work stays pending for the resume
                    raise asyncio.CancelledError
                worst = await self._within_budget(prompts, est)
                try:
                    return await self._attempt(prompts, attempt)
                finally:
                    self._committed = 0.0 if self._reserved == 1 else self._committed - worst  # no float residue
                    self._reserved -= 1
                    self._settled.set()
            except BatchRefused as exc:
                refused = exc
            except BackendError as exc:
                last = str(exc)
                if exc.retry_after is not None or "429" in last:
                    self.counters.rate_limited += 1
                if not exc.retryable or attempt == self.max_tries:
                    break
                self.counters.retries += 1
                delay = self._backoff(attempt, exc.retry_after)
                if exc.retry_after is not None:
                    self._resume_at = max(self._resume_at, time.monotonic() + exc.retry_after)
            finally:
                self._slots.release()
            if refused is not None:
                if not self._told_refused:  # several batched requests may be refused at once; say it once
                    self._told_refused = True
                    self.warn(f"{refused}; sending one prompt per request from now on")
                return [g for part in await asyncio.gather(*(self._call_with_retries([p]) for p in prompts)) for g in part]
            await asyncio.sleep(delay)  # outside the slot: a backing-off request holds no capacity
        return [Generation(error=f"gave up after {attempt} tries: {last}") for _ in prompts]

    async def _within_budget(self, prompts: list[Prompt], est: int) -> float:
        """Reserve this request's worst cost (answers at max_tokens) under --budget: wait while requests in
        flight may free room, stop the run when none are left and it still does not fit."""
        out = sum(p.max_tokens for p in prompts)
        worst = self.price.cost(est - out, out)
        while self.budget is not None:
            spent = self.spent + self.counters.cost
            if spent + self._committed + worst <= self.budget:
                break
            if not self._reserved:
                raise BudgetSpent(budget_line(self.budget, spent, self._committed))
            self._settled.clear()
            await self._settled.wait()
        self._committed += worst
        self._reserved += 1
        return worst

    async def _attempt(self, prompts: list[Prompt], attempt: int) -> list[Generation]:
        """One HTTP request: its ledger row is written first and completed with the answer."""
        row = self._begin(prompts, attempt)
        t0, sent_at = time.perf_counter(), time.monotonic()
        try:
            gens = await self.backend.complete(prompts)
        except asyncio.CancelledError:
            self._end(row, prompts, [Generation(error="cancelled", latency_s=time.perf_counter() - t0)], "cancelled")
            raise
        except BackendError as exc:
            latency = time.perf_counter() - t0
            if self._closed:  # the run is stopping and closed the connection under this request
                self._end(row, prompts, [Generation(error="cancelled", latency_s=latency)], "cancelled")
                raise asyncio.CancelledError from None
            self._end(row, prompts, [Generation(error=str(exc), latency_s=latency)], "done")
            # A timeout says the server is queueing only if it answered others meanwhile; a silent
            # server answers nobody, and the stall rule (--stall-timeout) speaks for it.
            if str(exc) != "timeout" or self.counters.last_success > sent_at:
                self._adapt(latency)
            raise
        except BaseException as exc:  # fatal (bad key, ...): the row says why
            self._end(row, prompts, [Generation(error=str(exc)[:300] or type(exc).__name__, latency_s=time.perf_counter() - t0)], "done")
            raise
        self.counters.last_success = time.monotonic()
        self._end(row, prompts, gens, "done")
        for g in gens:
            g.request_id = row
        self._adapt(max(g.latency_s for g in gens))
        return gens

    def _adapt(self, latency: float) -> None:
        """Fewer requests in flight when answers near the timeout, more again when they are quick."""
        if not self.timeout:
            return
        now = time.monotonic()
        limit = self._slots.limit
        if latency >= SLOW_SHARE * self.timeout:
            self._fast = 0
            # One wave of slow answers is one signal: halve at most once per timeout period.
            if limit > 1 and now - self._shrunk_at >= SLOW_SHARE * self.timeout:
                self._shrunk_at = now
                self._slots.resize(max(1, limit // 2))
                self.warn(
                    f"a request took {latency:.1f} s of the {self.timeout:g} s timeout: the server is queueing; "
                    f"{self._slots.limit} requests in flight instead of {limit}"
                )
        elif latency < self.timeout / 2 and limit < self.concurrency:
            self._fast += 1
            if self._fast >= limit:
                self._fast = 0
                self._slots.resize(limit + 1)

    def _begin(self, prompts: list[Prompt], attempt: int) -> int | None:
        return self.log.begin(prompts, attempt) if self.log else None

    def _end(self, row: int | None, prompts: list[Prompt], gens: list[Generation], state: str) -> int | None:
        c = self.counters
        c.requests += 1
        error = gens[0].error if len(gens) == 1 else None
        if error and state == "done":
            c.errors += 1
            key = error.split(":")[0][:40]
            c.by_error[key] = c.by_error.get(key, 0) + 1
        tin, tout = sum(g.tokens_in for g in gens), sum(g.tokens_out for g in gens)
        c.tokens_in += tin
        c.tokens_out += tout
        cost = self.price.cost(tin, tout)
        c.cost += cost
        if self.log:
            self.log.end(row, prompts, gens, cost, state)
        return row
