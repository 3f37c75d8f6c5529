"""Batch mode: the self-instruct loop in rounds of provider batches, at the Batch API's price.

A round refreshes the open batches, ingests the ended ones (output and error files, joined on
custom_id = the ledger row's id), lets the pipeline take the answers (the same screen, classify,
instances and finish as online mode), plans the next requests and submits one batch per stage
that has work. Everything a round decides is stored before it acts on it:

  1. requests are ledger rows (`queued`) before they are batched;
  2. a batch row (`submitting`, a fresh key) holds its lines before the file is uploaded;
  3. the provider's batch carries the key in its metadata, and its id is stored once created;
  4. on start, a `submitting` batch is looked up by key: adopted if it exists, created if not.

So a request is in at most one created batch (paid at most once), and a result is stored in the
ledger before anything reads it (never lost). A run can stop at any moment and resume by name.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from datagen import storage
from datagen.errors import BackendError, DatagenError, FatalBackendError
from datagen.batch.provider import BatchProvider, RemoteBatch
from datagen.client import Price, budget_line, fit
from datagen.errors import BudgetSpent
from datagen.config import BATCH_MAX_FAILED_IN_A_ROW, PipelineConfig
from datagen.errors import InputError
from datagen.pipeline import Pipeline, Progress
from datagen.records import Candidate, Generation, Prompt, Stage, Status
from datagen.storage import batches as store
from datagen.storage.models import Batch

if TYPE_CHECKING:
    from datagen.generate import RunContext

ORDER = (Stage.instances, Stage.classify, Stage.bootstrap)  # the most advanced work is submitted first


class BatchRun:
    """The generate pipeline's rounds. Another stage (a judge scoring samples) reuses the provider's side by
    subclassing: it names its ledger `stages` and overrides _take_answers, _plan and _finished."""

    stages: tuple[str, ...] = tuple(s.value for s in ORDER)  # ledger stages this loop owns, in submit order

    def __init__(self, ctx: RunContext, pipe: Pipeline | None, provider: BatchProvider, say: Callable[[str], None]):
        """The run's backend builds the request bodies (as online mode would send them); `provider` carries them."""
        self.opts, self.engine, self.run_id, self.name = ctx.opts, ctx.engine, ctx.run_id, ctx.name
        self.pipe, self.backend, self.provider, self.price, self.say = pipe, ctx.backend, provider, ctx.price(), say
        # The stall rule's clock: the pipeline's (generate), else the option's declared default (a judge).
        self.stall_timeout = pipe.cfg.stall_timeout if pipe is not None else PipelineConfig.model_fields["stall_timeout"].default
        self.stopping = False
        self._wake = asyncio.Event()
        self._budget_blocked = False
        self._tokens_waiting = False  # said once that the enqueued-token limit holds the run
        self._failed_in_a_row = 0  # ended batches without a good answer, since the last one with
        self._failing: tuple[float, float] | None = None  # (first, latest) of those batches' ends

    def stop(self) -> None:
        """Stop after the step in progress; batches in flight stay with the provider for the resume."""
        self.stopping = True
        self._wake.set()

    @property
    def progress(self) -> Progress:
        return self.pipe.progress

    def _finished(self) -> bool:
        p = self.progress
        return p.accepted >= p.target

    async def run(self) -> Progress:
        await self._reconcile()
        while not self.stopping:
            await self._refresh()
            self._take_answers()
            self._check_stall()
            if self._finished():
                await self._cancel_open()  # their requests are no longer needed; finished lines are still kept
            else:
                self._plan()
                await self._submit()
            open_ = store.list_batches(self.engine, self.run_id, open_only=True, stages=self.stages)
            if not open_:
                if self._finished():
                    break
                if self._budget_blocked:
                    raise BudgetSpent(self._budget_line())
                if not store.queued_requests(self.engine, self.run_id, stages=self.stages):
                    raise DatagenError("batch mode has nothing to submit and nothing in flight")
            if not self.opts.wait:
                break
            try:
                await asyncio.wait_for(self._wake.wait(), self.opts.poll_interval)
            except asyncio.TimeoutError:
                pass
            storage.touch_run(self.engine, self.run_id)
        return self.progress

    # ------------------------------------------------------------ the provider's side

    async def _reconcile(self) -> None:
        """A batch written as `submitting` may or may not exist at the provider: look it up by its key."""
        for b in store.list_batches(self.engine, self.run_id, open_only=True, stages=self.stages):
            if b.provider_id:
                continue
            found = await self.provider.find(b.key, b.created_at)
            if found is not None:
                self._record(b, found)
                self.say(f"batch {b.id}: {b.stage} x{b.requests} adopted as {found.id} (created before the last stop)")
            else:
                await self._create(b)

    async def _create(self, b: Batch) -> None:
        if not b.input_file_id:
            rows = store.batch_lines(self.engine, b.id)
            data = b"".join(self.provider.line(r.id, r.body) for r in rows)
            b.input_file_id = await self.provider.upload(f"datagen-{self.name}-{b.id}.jsonl", data)
            store.set_batch(self.engine, b.id, input_file_id=b.input_file_id)
        how = "submitted"
        for attempt in range(1, self.opts.max_tries + 1):
            try:
                created = await self.provider.create(b.input_file_id, b.key)
                break
            except BackendError as exc:
                # The answer may have been lost after the provider made it: never create it twice.
                created = await self.provider.find(b.key, b.created_at)
                if created is not None:
                    how = "adopted"  # made by the create whose answer was lost
                    break
                if not exc.retryable or attempt == self.opts.max_tries:
                    raise
                await asyncio.sleep(min(30.0, 2.0**attempt))
        self._record(b, created)
        self.say(f"batch {b.id}: {b.stage} x{b.requests} {how} as {created.id} (est ${b.cost_est:.4f})")

    def _record(self, b: Batch, rb: RemoteBatch) -> None:
        record(self.engine, b, rb)

    async def _refresh(self) -> None:
        for b in store.list_batches(self.engine, self.run_id, open_only=True, stages=self.stages):
            if not b.provider_id:
                continue
            before = (b.status, b.completed, b.failed)
            self._record(b, await self.provider.poll(b.provider_id))
            if (b.status, b.completed, b.failed) != before:
                self.say(f"batch {b.id} ({b.provider_id}): {b.status} {b.completed + b.failed}/{b.requests}"
                         + (f", {b.failed} failed" if b.failed else ""))
            if b.status in store.ENDED:
                await self._ingest(b)

    async def _ingest(self, b: Batch) -> None:
        answered = await ingest(self.engine, b, self.provider, self.price, self.say, keep_files=self.opts.keep_files)
        if b.status != "cancelled":  # we stopped it (target reached, or a user): not a failure of the provider
            self._note_batch(answered > 0)

    def _note_batch(self, any_ok: bool) -> None:
        if any_ok:
            self._failed_in_a_row, self._failing = 0, None
        else:
            now = time.monotonic()
            self._failed_in_a_row += 1
            self._failing = (self._failing[0] if self._failing else now, now)

    def _check_stall(self) -> None:
        """The stall rule of online mode, for batches: nothing but failures keeps a run going forever.
        Time counts between failed batches only: waiting for the provider is not a stall."""
        if self._finished():
            return
        n = self._failed_in_a_row
        stalled_for = self._failing[1] - self._failing[0] if self._failing else 0.0
        if n >= BATCH_MAX_FAILED_IN_A_ROW or stalled_for >= self.stall_timeout:
            last = store.last_error(self.engine, self.run_id) or "unknown"
            raise DatagenError(
                f"{n} batches in a row ended without one good answer over {stalled_for:.0f} s (last error: {last[:200]}); "
                "the run is kept, run again with the same --run to resume"
            )

    async def _cancel_open(self) -> None:
        for b in store.list_batches(self.engine, self.run_id, open_only=True, stages=self.stages):
            if b.provider_id and b.status not in store.ENDED and b.status != "cancelling":
                self._record(b, await self.provider.cancel(b.provider_id))
                self.say(f"batch {b.id}: cancelled, the target is reached")

    # ------------------------------------------------------------ our side

    def _take_answers(self) -> None:
        """Let the pipeline take every stored answer, oldest first; each row is settled once taken."""
        p, pipe = self.progress, self.pipe
        rows = store.answered_requests(self.engine, self.run_id, stages=self.stages)
        if not rows:
            return
        pending = {c.sample_id: c for c in storage.pending_samples(self.engine, self.run_id)}
        for row in rows:
            retry = row.error is not None and row.attempt < self.opts.max_tries
            if row.stage == Stage.bootstrap.value:
                if row.error is None:
                    self._take_bootstrap(row, pending)
                store.settle(self.engine, row, retry=retry)
                continue
            c = pending.get(row.sample_id)
            if c is None:  # judged already (taken before a crash, or a reviewer acted)
                store.settle(self.engine, row, retry=False)
                continue
            if row.error is not None and not retry:
                c.status, c.reason, c.detail = Status.rejected, "model_call_failed", f"{row.attempt} tries; last: {row.error}"[:500]
                storage.finish_sample(self.engine, c.sample_id, c)
                p.rejected[c.reason] += 1
                del pending[c.sample_id]
            elif row.error is None:
                gen = Generation(text=row.response, finish_reason=row.finish_reason, request_id=row.id)
                if row.stage == Stage.classify.value:
                    pipe.take_classify(c, gen)
                elif p.accepted >= p.target:
                    # Never keep past the target (answers of cancelled batches, a target lowered on resume):
                    # the answer stays stored, untaken, for a resume with a higher target.
                    continue
                else:
                    pipe.finish(pipe.take_instances(c, gen))
                    del pending[c.sample_id]
            store.settle(self.engine, row, retry=retry)

    def _take_bootstrap(self, row, pending: dict[int, Candidate]) -> None:
        p = self.progress
        done = store.hashes_from_request(self.engine, row.id)  # taken before a crash: not again
        gen = Generation(text=row.response, finish_reason=row.finish_reason, request_id=row.id)
        for c in self.pipe.take_bootstrap(row.prompt, gen):
            if storage.instruction_hash(c.instruction) in done:
                continue
            # Unlike online mode every candidate is screened and stored, even past the target: the answer
            # is paid for, and a candidate not judged now waits (pending) for a later round or a resume.
            p.candidates += 1
            c = self.pipe.screen(c)
            if c.status is Status.pending:
                pending[c.sample_id] = c

    def _plan(self) -> None:
        """Queue the next requests: every pending candidate's next stage, and enough bootstraps for the gap."""
        p, cfg = self.progress, self.pipe.cfg
        busy, boots = store.outstanding(self.engine, self.run_id)
        lines: list[store.Line] = []
        pending = storage.pending_samples(self.engine, self.run_id)
        # Judge only as many candidates as could still be accepted, so the run never passes its target;
        # the rest wait (parked) and step in when a judged one is rejected: two rounds, not three.
        idle = [c for c in pending if c.sample_id not in busy]
        idle.sort(key=lambda c: c.is_classification is None)  # one request from done first
        for c in idle[: max(0, p.target - p.accepted - (len(pending) - len(idle)))]:
            prompt = self.pipe.classify_prompt(c) if c.is_classification is None else self.pipe.instances_prompt(c)
            lines.append(self._queue_line(prompt, c.sample_id))
        # Size the bootstrap round from what answers have yielded so far, so the run ends within about one
        # round of its target instead of asking for a fixed number and overshooting. Before any answer,
        # assume every requested task comes back usable: a low guess would pay for a round of surplus.
        y = store.bootstrap_yield(self.engine, self.run_id)
        per_prompt = y.admitted / y.bootstraps if y.bootstraps else cfg.new_per_prompt
        finish = y.kept / y.finished if y.finished >= 5 else 0.9
        if y.bootstraps >= cfg.max_barren_rounds and y.admitted == 0:
            raise DatagenError(f"{y.bootstraps} prompts produced no usable instruction: the model may not follow the prompt format")
        gap = p.target - p.accepted - len(pending) * finish - boots * per_prompt * finish
        want = math.ceil(gap / max(0.05, per_prompt * finish)) if gap > 0 else 0
        lines += [self._queue_line(self.pipe.bootstrap_prompt()) for _ in range(want)]
        if lines:
            store.queue_requests(self.engine, self.run_id, self.backend.model, lines)

    def _queue_line(self, prompt: Prompt, sample_id: int | None = None) -> store.Line:
        prompt = fit(prompt, self.backend)
        return store.Line(stage=prompt.stage.value, prompt=prompt.text, sample_id=sample_id,
                          body=json.dumps(self.backend.body([prompt]), ensure_ascii=False))

    def _estimate(self, row) -> tuple[int, float]:
        """(input tokens, cost if every answer runs to max_tokens): an upper bound, so the budget holds."""
        tin = self.backend.count_tokens(row.prompt)
        return tin, self.price.cost(tin, json.loads(row.body).get("max_tokens") or 0)

    def _spent(self) -> tuple[float, float]:
        """(spent: the ledger's actual costs, committed: open batches at their estimate)."""
        committed = store.batch_costs(self.engine, [self.run_id]).get(self.run_id, (0.0, 0.0))[1]
        return storage.run_stats(self.engine, self.run_id).cost, committed

    def _budget_line(self) -> str:
        return budget_line(self.opts.budget, *self._spent())

    async def _submit(self) -> None:
        """Queued rows into batches: one per stage (split at the provider's limits), within the
        enqueued-token limit and the budget; what does not fit waits for a later round."""
        self._budget_blocked = False
        queued = store.queued_requests(self.engine, self.run_id, stages=self.stages)
        if not queued:
            return
        limit = self.opts.max_enqueued_tokens
        tokens_room = limit - store.enqueued_tokens(self.engine, self.backend.model) if limit else math.inf
        money_room = math.inf
        if self.opts.budget is not None:
            spent, committed = self._spent()
            money_room = self.opts.budget - spent - committed
        for stage in self.stages:
            part: list = []
            size = tokens = 0
            cost = 0.0
            for row in (r for r in queued if r.stage == stage):
                tin, est = self._estimate(row)
                if limit and tin > limit:  # would wait for room forever
                    raise InputError(f"a {stage} request has about {tin} input tokens, more than --max-enqueued-tokens {limit}: raise the limit")
                if tin > tokens_room or est > money_room:
                    self._budget_blocked |= est > money_room
                    if tin > tokens_room and not self._tokens_waiting:
                        self._tokens_waiting = True
                        self.say(f"waiting: {limit - tokens_room:,} input tokens of {self.backend.model} are in unfinished batches "
                                 f"(--max-enqueued-tokens {limit:,}); the rest is submitted as they end")
                    break  # the rest of this stage waits for room
                nbytes = len(self.provider.line(row.id, row.body))
                if part and (len(part) >= min(self.opts.batch_max_lines, self.provider.max_lines) or size + nbytes > self.provider.max_bytes):
                    await self._open(stage, part, tokens, cost)
                    part, size, tokens, cost = [], 0, 0, 0.0
                part.append(row)
                size, tokens, cost = size + nbytes, tokens + tin, cost + est
                tokens_room -= tin
                money_room -= est
            if part:
                await self._open(stage, part, tokens, cost)

    async def _open(self, stage: str, rows: list, tokens: int, cost: float) -> None:
        self._tokens_waiting = False
        b = store.add_batch(self.engine, Batch(run_id=self.run_id, key=uuid.uuid4().hex, endpoint=self.provider.endpoint,
                                               model=self.backend.model, stage=stage, tokens_est=tokens, cost_est=cost),
                            [r.id for r in rows])
        await self._create(b)


def record(engine, b: Batch, rb: RemoteBatch) -> None:
    """Store the provider's view of a batch (and keep `b` in step)."""
    values = dict(provider_id=rb.id, status=rb.status, output_file_id=rb.output_file_id, error_file_id=rb.error_file_id,
                  completed=rb.completed, failed=rb.failed)
    if rb.errors:
        values["errors"] = store.errors_json(rb.errors)
    store.set_batch(engine, b.id, **values)
    for k, v in values.items():
        setattr(b, k, v)


async def ingest(engine, b: Batch, provider: BatchProvider, price: Price, say: Callable[[str], None], *, keep_files: bool = False) -> int:
    """Store an ended batch's results in the ledger (a line without one gets the batch's reason as its
    error), then delete its files at the provider unless kept. Returns the lines answered well."""
    rows = store.batch_lines(engine, b.id)
    remote = RemoteBatch(id=b.provider_id, status=b.status, output_file_id=b.output_file_id, error_file_id=b.error_file_id)
    # A stage may carry a qualifier after a colon: "judge:accuracy" is a judge line.
    got = await provider.results(remote, {r.id: Prompt(stage=Stage(r.stage.split(":")[0]), text=r.prompt) for r in rows})
    if got.unreadable:
        say(f"batch {b.id}: skipped {got.unreadable} unreadable result line(s)")
    results: dict[int, tuple[Generation, float]] = {}
    for rid, gen in got.answers.items():
        gen.request_id = rid
        results[rid] = (gen, 0.0 if gen.error else price.cost(gen.tokens_in, gen.tokens_out))
    missing = f"no result: batch {b.status}"
    if b.errors:
        missing += f" ({first_error(b.errors)})"
    ok = sum(1 for g, _ in results.values() if g.error is None)
    # Lines without a good answer (failed, expired, cancelled, never run) all count as failed.
    answered = store.ingest(engine, b.id, results, missing, completed=ok, failed=b.requests - ok)
    cost = sum(c for _, c in results.values())
    say(f"batch {b.id}: ingested {answered}/{b.requests} answers, ${cost:.4f} (est ${b.cost_est:.4f})")
    if not keep_files:
        # The provider keeps files until deleted (and counts them against storage): ours are stored now.
        for file_id in sorted({b.input_file_id, b.output_file_id, b.error_file_id} - {None}):
            try:
                await provider.delete(file_id)
            except (BackendError, FatalBackendError) as exc:  # a leftover file costs storage, not correctness
                say(f"batch {b.id}: could not delete file {file_id} ({exc}); delete it by hand or leave it to expire")
    return answered


def first_error(errors: str | None) -> str:
    """A failed batch's first reason, one line (stored errors are a JSON list, or text)."""
    if not errors:
        return ""
    try:
        e = json.loads(errors)[0]
        return f"{e.get('code')}: {e.get('message')}"[:200]
    except (ValueError, IndexError, KeyError, TypeError, AttributeError):
        return errors[:200]
