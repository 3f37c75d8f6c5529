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
import uuid
from collections.abc import Callable

from datagen import storage
from datagen.backends.openai_compat import OpenAIBackend
from datagen.batch.provider import Provider
from datagen.client import Price, budget_line, fit
from datagen.config import BATCH_MAX_BYTES, GenerateOptions
from datagen.errors import BackendError, BudgetSpent, DatagenError
from datagen.pipeline import Pipeline, Progress
from datagen.records import Candidate, Generation, Prompt, Stage, Status
from datagen.storage import batches as store
from datagen.storage.models import Batch

ORDER = (Stage.instances, Stage.classify, Stage.bootstrap)  # the most advanced work is submitted first


class BatchRun:
    """The generate pipeline's rounds. Another stage (a judge scoring samples) reuses the provider's side by
    subclassing: it names its ledger `stages` and overrides _take_answers, _plan and _finished."""

    stages: tuple[str, ...] = tuple(s.value for s in ORDER)  # ledger stages this loop owns, in submit order

    def __init__(self, opts: GenerateOptions, engine, run_id: int, name: str, pipe: Pipeline,
                 backend: OpenAIBackend, price: Price, say: Callable[[str], None]):
        self.opts, self.engine, self.run_id, self.name = opts, engine, run_id, name
        self.pipe, self.backend, self.price, self.say = pipe, backend, price, say
        self.provider = Provider(backend, tries=opts.max_tries)
        self.stopping = False
        self._wake = asyncio.Event()
        self._budget_blocked = False

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
                self.say(f"batch {b.id}: adopted {found.id} (created before the last stop)")
            else:
                await self._create(b)

    async def _create(self, b: Batch) -> None:
        if not b.input_file_id:
            rows = store.batch_lines(self.engine, b.id)
            data = "".join(self._line(r) for r in rows).encode("utf-8")
            b.input_file_id = await self.provider.upload(f"datagen-{self.name}-{b.id}.jsonl", data)
            store.set_batch(self.engine, b.id, input_file_id=b.input_file_id)
        for attempt in range(1, self.opts.max_tries + 1):
            try:
                created = await self.provider.create(b.input_file_id, b.endpoint, b.key)
                break
            except BackendError as exc:
                # The answer may have been lost after the provider made it: never create it twice.
                created = await self.provider.find(b.key, b.created_at)
                if created is not None:
                    break
                if not exc.retryable or attempt == self.opts.max_tries:
                    raise
                await asyncio.sleep(min(30.0, 2.0**attempt))
        self._record(b, created)
        self.say(f"batch {b.id}: {b.stage} x{b.requests} submitted as {created.id} (est ${b.cost_est:.4f})")

    def _record(self, b: Batch, pb) -> None:
        counts = pb.request_counts
        values = dict(provider_id=pb.id, status=pb.status, output_file_id=pb.output_file_id, error_file_id=pb.error_file_id,
                      completed=counts.completed if counts else 0, failed=counts.failed if counts else 0)
        errors = getattr(pb, "errors", None)
        if errors and getattr(errors, "data", None):
            values["errors"] = store.errors_json([e.model_dump() for e in errors.data])
        store.set_batch(self.engine, b.id, **values)
        for k, v in values.items():
            setattr(b, k, v)

    async def _refresh(self) -> None:
        for b in store.list_batches(self.engine, self.run_id, open_only=True, stages=self.stages):
            if not b.provider_id:
                continue
            before = (b.status, b.completed, b.failed)
            self._record(b, await self.provider.retrieve(b.provider_id))
            if (b.status, b.completed, b.failed) != before:
                self.say(f"batch {b.id} ({b.provider_id}): {b.status} {b.completed + b.failed}/{b.requests}"
                         + (f", {b.failed} failed" if b.failed else ""))
            if b.status in store.ENDED:
                await self._ingest(b)

    async def _ingest(self, b: Batch) -> None:
        rows = {r.id: r for r in store.batch_lines(self.engine, b.id)}
        results: dict[int, tuple[Generation, float]] = {}
        for file_id in (b.output_file_id, b.error_file_id):
            if not file_id:
                continue
            for raw in (await self.provider.content(file_id)).splitlines():
                if not raw.strip():
                    continue
                try:
                    line = json.loads(raw)
                    row = rows.get(int(line["custom_id"]))
                except (ValueError, KeyError, TypeError):
                    self.say(f"batch {b.id}: skipped an unreadable result line")
                    continue
                if row is not None and row.id not in results:
                    results[row.id] = self._result(row, line)
        missing = f"no result: batch {b.status}"
        if b.errors:
            missing += f" ({_first_error(b.errors)})"
        answered = store.ingest(self.engine, b.id, results, missing)
        cost = sum(c for _, c in results.values())
        self.say(f"batch {b.id}: ingested {answered}/{b.requests} answers, ${cost:.4f} (est ${b.cost_est:.4f})")

    def _result(self, row, line: dict) -> tuple[Generation, float]:
        resp, err = line.get("response"), line.get("error")
        if resp and resp.get("status_code") == 200:
            try:
                # A stage may carry a qualifier after a colon ("judge:accuracy")
                gen = self.backend.generations(resp.get("body") or {}, [Prompt(stage=Stage(row.stage.split(":")[0]), text=row.prompt)])[0]
            except Exception as exc:  # a body the SDK cannot read: an error for this line, retried
                return Generation(error=f"bad response: {type(exc).__name__}: {str(exc)[:200]}"), 0.0
            gen.request_id = row.id
            return gen, self.price.cost(gen.tokens_in, gen.tokens_out)
        if resp:
            body = resp.get("body") or {}
            msg = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
            return Generation(error=f"HTTP {resp.get('status_code')}: {msg or str(body)[:200]}"), 0.0
        err = err or {}
        return Generation(error=f"{err.get('code') or 'error'}: {err.get('message') or 'no message'}"), 0.0

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

    def _line(self, row) -> str:
        return f'{{"custom_id": "{row.id}", "method": "POST", "url": "{self.backend.endpoint}", "body": {row.body}}}\n'

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
        tokens_room = (self.opts.max_enqueued_tokens - store.enqueued_tokens(self.engine, self.backend.model)
                       if self.opts.max_enqueued_tokens else math.inf)
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
                if tin > tokens_room or est > money_room:
                    self._budget_blocked |= est > money_room
                    break  # the rest of this stage waits for room
                nbytes = len(self._line(row).encode("utf-8"))
                if part and (len(part) >= self.opts.batch_max_lines or size + nbytes > BATCH_MAX_BYTES):
                    await self._open(stage, part, tokens, cost)
                    part, size, tokens, cost = [], 0, 0, 0.0
                part.append(row)
                size, tokens, cost = size + nbytes, tokens + tin, cost + est
                tokens_room -= tin
                money_room -= est
            if part:
                await self._open(stage, part, tokens, cost)

    async def _open(self, stage: str, rows: list, tokens: int, cost: float) -> None:
        b = store.add_batch(self.engine, Batch(run_id=self.run_id, key=uuid.uuid4().hex, endpoint=self.backend.endpoint,
                                               model=self.backend.model, stage=stage, tokens_est=tokens, cost_est=cost),
                            [r.id for r in rows])
        await self._create(b)


def _first_error(errors: str) -> str:
    try:
        e = json.loads(errors)[0]
        return f"{e.get('code')}: {e.get('message')}"[:200]
    except (ValueError, IndexError, KeyError, TypeError, AttributeError):
        return errors[:200]
