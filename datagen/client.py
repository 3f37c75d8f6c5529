"""The pipeline's way to call a model: concurrency, RPM/TPM limits, retries, batching, logging.

Stages call `await client.generate(prompt)` one prompt at a time; prompts that arrive together
are grouped into one backend call when the backend takes batches (local model, Completion API).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiolimiter import AsyncLimiter

from datagen.backends import Backend, BackendError
from datagen.records import Generation, Prompt

# (prompt, generation, attempt, cost) -> request id in the log
RequestLogger = Callable[[Prompt, Generation, int, float], int | None]


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
        log: RequestLogger | None = None,
        shared_limits: tuple | None = None,
    ):
        self.backend = backend
        self.max_tries = max(1, max_tries)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.batch_wait = batch_wait
        self.price = price or Price()
        self.log = log
        self.counters = Counters()
        self._sem = asyncio.Semaphore(max(1, concurrency))
        # A leaky bucket's capacity is the burst it allows: AsyncLimiter(rpm, 60) would let a whole
        # minute's requests out at once, which a server that counts any 60 s window (or enforces the
        # limit per second, as OpenAI does) answers with 429s and a long stall. Allow one second's worth.
        self._rpm = AsyncLimiter(max(1.0, rpm / 60), max(1.0, rpm / 60) * 60 / rpm) if rpm else None
        self._tpm = AsyncLimiter(tpm, 60) if tpm else None
        if shared_limits is not None:  # (rpm, tpm) limiters shared with other processes (datagen/ratelimit.py)
            self._rpm, self._tpm = shared_limits
        self._tpm_max = tpm or 0
        self._resume_at = 0.0  # a 429's Retry-After pauses every request, not just the one that got it
        self._queue: asyncio.Queue[tuple[Prompt, asyncio.Future]] | None = None
        self._dispatcher: asyncio.Task | None = None
        self._inflight: set[asyncio.Task] = set()
        self.draining = False  # drain(): requests not yet sent are cancelled, those in flight finish

    # ------------------------------------------------------------ public

    async def generate(self, prompt: Prompt) -> Generation:
        prompt = self._fit(prompt)
        if prompt.max_tokens <= 0:
            gen = Generation(error="prompt does not fit the context window")
            self._record(prompt, gen, 1)
            return gen
        if self.backend.max_batch <= 1:
            return (await self._call_with_retries([prompt]))[0]
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._dispatcher = asyncio.create_task(self._dispatch())
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((prompt, fut))
        return await fut

    def drain(self) -> None:
        self.draining = True

    async def aclose(self) -> None:
        if self._dispatcher:
            self._dispatcher.cancel()
        for t in list(self._inflight):
            t.cancel()
        await self.backend.aclose()

    # ------------------------------------------------------------ internals

    def _fit(self, prompt: Prompt) -> Prompt:
        """Shrink max_tokens so prompt + answer fit the model's context window."""
        room = self.backend.context_window - self.backend.count_tokens(prompt.text) - 8
        if room < 16:
            return prompt.model_copy(update={"max_tokens": 0})
        return prompt.model_copy(update={"max_tokens": min(prompt.max_tokens, room)})

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
            # Only prompts that share sampling settings can share a request.
            groups: dict[tuple, list] = {}
            for p, f in batch:
                groups.setdefault((p.temperature, p.top_p, tuple(p.stop)), []).append((p, f))
            for items in groups.values():
                await self._sem.acquire()  # backpressure: wait for a slot before building the next batch
                self._sem.release()
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
        last = "no attempt"
        for attempt in range(1, self.max_tries + 1):
            wait = self._resume_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self._rpm:
                await self._rpm.acquire()
            if self._tpm:
                await self._tpm.acquire(min(est, self._tpm_max))
            async with self._sem:
                if self.draining:  # never sent: the caller's work stays pending for the resume
                    raise asyncio.CancelledError
                t0 = time.perf_counter()
                try:
                    gens = await self.backend.complete(prompts)
                except BackendError as exc:
                    last = str(exc)
                    gen = Generation(error=last, latency_s=time.perf_counter() - t0)
                    for p in prompts:
                        self._record(p, gen, attempt)
                    if exc.retry_after is not None or "429" in last:
                        self.counters.rate_limited += 1
                    if not exc.retryable or attempt == self.max_tries:
                        break
                    self.counters.retries += 1
                    delay = self._backoff(attempt, exc.retry_after)
                    if exc.retry_after is not None:
                        self._resume_at = max(self._resume_at, time.monotonic() + exc.retry_after)
                    await asyncio.sleep(delay)
                    continue
            for p, g in zip(prompts, gens):
                g.request_id = self._record(p, g, attempt)
            return gens
        return [Generation(error=f"gave up after {attempt} tries: {last}") for _ in prompts]

    def _record(self, prompt: Prompt, gen: Generation, attempt: int) -> int | None:
        c = self.counters
        c.requests += 1
        if gen.error:
            c.errors += 1
            key = gen.error.split(":")[0][:40]
            c.by_error[key] = c.by_error.get(key, 0) + 1
        c.tokens_in += gen.tokens_in
        c.tokens_out += gen.tokens_out
        cost = self.price.cost(gen.tokens_in, gen.tokens_out)
        c.cost += cost
        if self.log is None:
            return None
        return self.log(prompt, gen, attempt, cost)
