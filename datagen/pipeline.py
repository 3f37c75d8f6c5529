"""The self-instruct loop as a chain of small async stages.

    bootstrap  -> list[Candidate]   new instructions from a prompt of seed + machine tasks
    screen     -> Candidate         heuristics, then exact ROUGE-L against everything kept
    classify   -> Candidate         classification task or not (few-shot yes/no)
    instances  -> Candidate         input-first, or output-first for classification tasks
    finish     -> Candidate         instance rules, then the verdict is committed

Every candidate is stored, rejected ones with their reason. A candidate that passes screening
is committed as `pending` at once and each stage's answer as it arrives (the classify verdict),
so a crash loses nothing: the next run with the same name continues each pending candidate from
its last finished stage and rebuilds the similarity index from the database. A failed model call
leaves its candidate pending: only a model's answer rejects it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from datagen import storage
from datagen.client import LLMClient
from datagen.config import PipelineConfig
from datagen.errors import DatagenError
from datagen.prompts import (
    PromptSet,
    bootstrap_prompt,
    classify_prompt,
    instances_prompt,
    instruction_lines,
    next_number,
    parse_instances,
    parse_task_list,
    parse_yes_no,
    pick_classify_shots,
    pick_instance_shots,
)
from datagen.records import Candidate, Generation, Prompt, SeedTask, Stage, Status
from datagen.review import Rule
from datagen.similarity import SimilarityIndex


class _CallFailed(Exception):
    """A stage's model call failed after its retries: the candidate stays pending."""


@dataclass
class Progress:
    """What the live display and the final summary read."""

    target: int
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    bootstraps: int = 0
    candidates: int = 0
    in_progress: int = 0
    started: float = field(default_factory=time.monotonic)
    note: str | None = None  # a line for the summary (e.g. why nothing was generated)


class Pipeline:
    def __init__(
        self,
        cfg: PipelineConfig,
        client: LLMClient,
        engine,
        run_id: int,
        lang: str,
        seeds: list[SeedTask],
        prompts: PromptSet,
    ):
        self.cfg = cfg
        self.client = client
        self.engine = engine
        self.run_id = run_id
        self.lang = lang
        self.seeds = seeds
        self.prompts = prompts
        self.rng = random.Random(cfg.random_seed)
        # The rule a reviewer's change is checked by too; prompt echoes are judged against this run's templates.
        self.rule = Rule(lang, cfg.threshold, cfg.max_instances, instruction_lines(prompts))
        self.index = SimilarityIndex(lang=lang, threshold=cfg.threshold)
        for s in seeds:
            self.index.add(s.instruction)
        for text in storage.indexed_instructions(engine, run_id):
            self.index.add(text)
        self.machine = [text for _, text in storage.kept_texts(engine, run_id)]
        stats = storage.run_stats(engine, run_id)
        self.progress = Progress(target=cfg.target, accepted=stats.kept)
        self.progress.rejected.update(stats.by_reason)
        self._changed = asyncio.Event()
        self._retry: list[tuple[float, Candidate]] = []  # (when its call failed, candidate)
        self._touched = time.monotonic()
        self._failures = 0
        self._barren = 0
        self._fatal: BaseException | None = None
        self.draining = False  # drain(): start no new request

    # ------------------------------------------------------------ the loop

    async def run(self) -> Progress:
        p = self.progress
        boots: set[asyncio.Task] = set()
        work: set[asyncio.Task] = set()

        def spawn(coro, bucket: set) -> None:
            t = asyncio.create_task(coro)
            bucket.add(t)
            t.add_done_callback(lambda t: (bucket.discard(t), self._done(t)))

        for c in storage.pending_samples(self.engine, self.run_id):
            p.in_progress += 1
            spawn(self._process(c), work)
        try:
            while p.accepted < p.target:
                if self._fatal:
                    raise self._fatal
                self._watch()
                if self.draining and not boots and not work:
                    break
                # A candidate whose call failed is tried again once some call has succeeded since.
                ok_since = self.client.counters.last_success
                for item in [] if self.draining else [r for r in self._retry if r[0] < ok_since]:
                    self._retry.remove(item)
                    p.in_progress += 1
                    spawn(self._process(item[1]), work)
                need = 0 if self.draining else p.target - p.accepted - p.in_progress
                # Each prompt yields several candidates; keep only as many prompts in flight as the gap needs.
                want = min(self.cfg.max_bootstrap_inflight, max(0, -(-need // max(1, self.cfg.new_per_prompt // 2))))
                while need > 0 and len(boots) < want:
                    spawn(self._bootstrap_round(work), boots)
                if not boots and not work and not self._retry:
                    continue
                # asyncio.wait, not wait_for: on 3.11 wait_for can swallow a cancel (Ctrl-C) that
                # arrives as the event is set, and the run would go on as if nothing happened.
                changed = asyncio.ensure_future(self._changed.wait())
                try:
                    await asyncio.wait({changed}, timeout=self._tick())
                finally:
                    changed.cancel()
                self._changed.clear()
        finally:
            for t in boots | work:
                t.cancel()
            await asyncio.gather(*boots, *work, return_exceptions=True)
        return p

    def _tick(self) -> float:
        """Seconds until the next heartbeat or the stall deadline, whichever is first."""
        now = time.monotonic()
        stall_at = self.client.counters.last_success + self.cfg.stall_timeout
        return max(0.05, min(self._touched + storage.HEARTBEAT.total_seconds(), stall_at) - now)

    def _watch(self) -> None:
        now = time.monotonic()
        if now - self._touched >= storage.HEARTBEAT.total_seconds():
            storage.touch_run(self.engine, self.run_id)
            self._touched = now
        idle = now - self.client.counters.last_success
        if idle >= self.cfg.stall_timeout:
            raise DatagenError(
                f"no model call succeeded in {idle:.0f} s (--stall-timeout {self.cfg.stall_timeout:g}): "
                "the server takes requests but does not answer; pending work is kept, run again with the same --run to resume"
            )

    def drain(self) -> None:
        """Start no new request; run() returns once the requests in flight are answered and stored."""
        self.draining = True
        self.client.drain()
        self._changed.set()

    def _done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None and self._fatal is None:
            self._fatal = task.exception()
        self._changed.set()

    def _note_generation(self, ok: bool, error: str | None) -> None:
        self._failures = 0 if ok else self._failures + 1
        if self._failures >= self.cfg.max_consecutive_failures:
            raise DatagenError(f"{self._failures} model calls in a row failed; last error: {error}")

    # ------------------------------------------------------------ stages

    async def _bootstrap_round(self, work: set) -> None:
        cands = await self.bootstrap()
        p = self.progress
        p.bootstraps += 1
        accepted_before = p.accepted + p.in_progress
        for c in cands:
            if p.accepted + p.in_progress >= p.target:
                break  # enough in hand; extra candidates are not judged, so they are not stored either
            p.candidates += 1
            c = self.screen(c)
            if c.status is Status.pending and not self.draining:  # when draining it stays pending for the resume
                p.in_progress += 1
                t = asyncio.create_task(self._process(c))
                work.add(t)
                t.add_done_callback(lambda t: (work.discard(t), self._done(t)))
        self._barren = self._barren + 1 if p.accepted + p.in_progress == accepted_before else 0
        if self._barren >= self.cfg.max_barren_rounds:
            raise DatagenError(
                f"{self._barren} prompts in a row produced no usable instruction: the model may not follow the prompt format"
            )

    async def _process(self, c: Candidate) -> None:
        try:
            # Draining: a candidate whose next request has not started stays pending for the resume.
            if self.draining:
                return
            if c.is_classification is None:  # a resumed candidate may have its verdict already
                c = await self.classify(c)
            if self.draining:
                return
            c = await self.instances(c)
            c = self.finish(c)
        except _CallFailed:
            self._retry.append((time.monotonic(), c))
        finally:
            self.progress.in_progress -= 1

    # Each stage is a prompt to build and an answer to take: online mode awaits the answer in
    # between, batch mode (datagen/batch/) sends the prompts in a batch and takes the answers later.

    def bootstrap_prompt(self) -> Prompt:
        cfg = self.cfg
        n_machine = min(cfg.num_machine_examples, len(self.machine))
        examples = [s.instruction for s in self.rng.sample(self.seeds, min(cfg.num_seed_examples, len(self.seeds)))]
        examples += self.rng.sample(self.machine, n_machine)
        self.rng.shuffle(examples)
        text, _ = bootstrap_prompt(self.prompts, examples, cfg.new_per_prompt)
        return Prompt(stage=Stage.bootstrap, text=text, max_tokens=cfg.bootstrap_max_tokens, temperature=cfg.temperature, top_p=cfg.top_p)

    def take_bootstrap(self, prompt: str, gen: Generation) -> list[Candidate]:
        nxt = next_number(prompt)
        items = parse_task_list(gen.text, nxt, truncated=gen.finish_reason == "length")
        return [Candidate(instruction=i, lang=self.lang, request_id=gen.request_id) for i in items]

    async def bootstrap(self) -> list[Candidate]:
        prompt = self.bootstrap_prompt()
        gen = await self.client.generate(prompt)
        self._note_generation(gen.error is None, gen.error)
        return [] if gen.error else self.take_bootstrap(prompt.text, gen)

    def screen(self, c: Candidate) -> Candidate:
        """Heuristics, then ROUGE-L against seeds and everything kept; the verdict is stored now."""
        bad = self.rule.instruction(c.instruction)
        if bad:
            c.status, (c.reason, c.detail) = Status.rejected, bad
        else:
            v = self.index.offer(c.instruction)
            c.nearest, c.nearest_score = v.nearest, v.score if v.nearest is not None else None
            if not v.keep:
                c.status, c.reason = Status.rejected, v.reason or "similar"
                c.detail = f"ROUGE-L {v.score:.3f} > {self.cfg.threshold}" if v.reason == "similar" else "no words left after tokenizing"
        c.sample_id = storage.add_sample(self.engine, self.run_id, c)
        if c.sample_id is None:  # the same text is already kept in this run (e.g. a resumed prompt)
            c.status, c.reason = Status.rejected, "duplicate"
        if c.status is Status.rejected:
            self.progress.rejected[c.reason] += 1
        return c

    def classify_prompt(self, c: Candidate) -> Prompt:
        text = classify_prompt(self.prompts, pick_classify_shots(self.seeds, self.rng), c.instruction)
        return Prompt(stage=Stage.classify, text=text, max_tokens=self.cfg.classify_max_tokens, temperature=0.0, top_p=1.0)

    def take_classify(self, c: Candidate, gen: Generation) -> Candidate:
        # An unreadable answer counts as "not classification": input-first suits any task.
        c.is_classification = bool(parse_yes_no(self.prompts, gen.text))
        storage.set_classification(self.engine, c.sample_id, c.is_classification)
        return c

    async def classify(self, c: Candidate) -> Candidate:
        gen = await self.client.generate(self.classify_prompt(c))
        self._note_generation(gen.error is None, gen.error)
        if gen.error:
            raise _CallFailed(gen.error)
        return self.take_classify(c, gen)

    def instances_prompt(self, c: Candidate) -> Prompt:
        out_first = bool(c.is_classification)
        shots = pick_instance_shots(self.seeds, self.rng, out_first)
        text = instances_prompt(self.prompts, shots, c.instruction, out_first, self.cfg.max_instances)
        return Prompt(stage=Stage.instances, text=text, max_tokens=self.cfg.instances_max_tokens, temperature=self.cfg.temperature, top_p=self.cfg.top_p)

    def take_instances(self, c: Candidate, gen: Generation) -> Candidate:
        out_first = bool(c.is_classification)
        tail = (self.prompts.instances_output_first if out_first else self.prompts.instances_input_first).query
        tail = tail.split("\n", 1)[1] if "\n" in tail else tail  # the part after "Task: ..."
        c.instances = parse_instances(self.prompts, gen.text, out_first, gen.finish_reason == "length", tail)
        return c

    async def instances(self, c: Candidate) -> Candidate:
        gen = await self.client.generate(self.instances_prompt(c))
        self._note_generation(gen.error is None, gen.error)
        if gen.error:
            raise _CallFailed(gen.error)
        return self.take_instances(c, gen)

    def finish(self, c: Candidate) -> Candidate:
        kept, reasons = self.rule.instances(c.instances, c.instruction)
        c.instances = kept
        if kept:
            c.status, c.reason = Status.accepted, None
            c.detail = f"dropped {len(reasons)} instance(s): {', '.join(sorted(set(reasons)))}" if reasons else None
        else:
            c.status, c.reason = Status.rejected, "no_valid_instances"
            c.detail = c.detail or (f"instance rules: {', '.join(sorted(set(reasons)))}" if reasons else "no instances parsed")
        storage.finish_sample(self.engine, c.sample_id, c)
        if c.status is Status.accepted:
            self.progress.accepted += 1
            self.machine.append(c.instruction)
        else:
            self.progress.rejected[c.reason] += 1
        return c
