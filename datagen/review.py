"""The rule a kept sample obeys, shared by generation and review.

Generation screens an instruction (heuristics, then ROUGE-L against the seeds and everything
kept) and keeps the instances that pass the instance rules, up to `max_instances`. A reviewer's
edit of a kept sample, and an approval, are checked by the same Rule built from the run's own
stored settings, before anything is committed: a kept sample is never exportable in a state
generation would have rejected.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine

from datagen import similarity, storage
from datagen.config import PipelineConfig
from datagen.errors import Conflict, RuleViolation
from datagen.filters import InstructionFilter, filter_instances
from datagen.prompts import instruction_lines, load_prompts
from datagen.records import KEPT, Instance
from datagen.seeds import default_seed_path, load_seeds
from datagen.storage import queries


@dataclass
class Rule:
    lang: str
    threshold: float
    max_instances: int
    echo_lines: list[str] = field(default_factory=list)  # the prompt template's own sentences
    heuristics: InstructionFilter = field(init=False)

    def __post_init__(self) -> None:
        self.heuristics = InstructionFilter(self.lang, echo_lines=self.echo_lines)

    @classmethod
    def for_run(cls, lang: str, config: dict) -> Rule:
        """The rule a run was generated under, from the options stored with it (defaults for older runs)."""
        p = config.get("pipeline") if isinstance(config.get("pipeline"), dict) else {}
        cfg = PipelineConfig(**{k: p[k] for k in ("threshold", "max_instances") if k in p})
        # A prompt file moved since the run: the built-in templates of its language stand in.
        own = config.get("prompts")
        prompts = load_prompts(lang, own if own and Path(own).is_file() else None)
        return cls(lang, cfg.threshold, cfg.max_instances, instruction_lines(prompts))

    def instruction(self, text: str) -> tuple[str, str] | None:
        """(reason, detail) when the heuristics reject the instruction."""
        return self.heuristics.check(text)

    def instances(self, instances: list[Instance], instruction: str) -> tuple[list[Instance], list[str]]:
        """The instances generation would store, and a reason for each one it would drop."""
        return filter_instances(instances, self.max_instances, instruction=instruction)

    def check(self, instruction: str, instances: list[Instance], nearest: dict | None) -> dict:
        """Every reason generation would have to reject this sample as it stands.

        `nearest`: the most similar seed or kept instruction of the run ({"instruction", "score", ...}).
        """
        verdict = self.instruction(instruction)
        kept, dropped = self.instances(instances, instruction)
        reasons = []
        if verdict:
            reasons.append(f"instruction: {verdict[0]} ({verdict[1]})")
        if nearest and nearest["score"] > self.threshold:
            reasons.append(f"similar: ROUGE-L {nearest['score']:.3f} > {self.threshold} to {nearest['instruction'][:80]!r}")
        if dropped:
            reasons.append(f"instances: {', '.join(sorted(set(dropped)))}")
        elif len(instances) > self.max_instances:
            reasons.append(f"instances: {len(instances)} is more than the run's max_instances {self.max_instances}")
        elif not kept:
            reasons.append("instances: none")
        return {
            "instruction": None if verdict is None else {"reason": verdict[0], "detail": verdict[1]},
            "instances": {"kept": len(kept), "total": len(instances), "dropped": dropped},
            "similar": None if nearest is None else {**nearest, "over_threshold": nearest["score"] > self.threshold},
            "reasons": reasons,
            "ok": not reasons,
        }




# --- Nearest neighbours --------------------------------------------------------------------------


@dataclass
class _Entry:
    signature: tuple = ()
    index: similarity.SimilarityIndex | None = None
    sample_ids: list[int] = field(default_factory=list)  # index id -> sample id
    indexed: dict[int, str] = field(default_factory=dict)  # sample id -> text as indexed
    current: dict[int, str] = field(default_factory=dict)  # kept now: sample id -> text
    lock: threading.Lock = field(default_factory=threading.Lock)


class Reviewer:
    """Checks reviewers' changes by each run's Rule, with one similarity index per (run, language)
    over its kept samples, grown incrementally, and one over the run's seeds.

    Approvals and edits add texts; discards and stale texts are filtered out at query time
    against the current kept set, so the index never needs a rebuild.
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self._entries: dict[tuple[int, str], _Entry] = {}
        self._seeds: dict[tuple[str, str], similarity.SimilarityIndex] = {}
        self._rules: dict[int, tuple[Rule, str, str]] = {}  # run id -> rule, seed file, the config it came from
        self._lock = threading.Lock()

    def _entry(self, run_id: int, lang: str) -> _Entry:
        with self._lock:
            entry = self._entries.setdefault((run_id, lang), _Entry())
        with entry.lock:
            sig = queries.kept_signature(self.engine, run_id, lang)
            if entry.index is None or sig != entry.signature:
                if entry.index is None:
                    entry.index = similarity.SimilarityIndex(lang=lang)
                entry.current = dict(storage.kept_texts(self.engine, run_id))
                for sid, text in entry.current.items():
                    if entry.indexed.get(sid) != text:
                        entry.index.add(text)
                        entry.sample_ids.append(sid)
                        entry.indexed[sid] = text
                entry.signature = sig
        return entry

    def top_k(self, run_id: int, lang: str, text: str, k: int = 5, exclude: int | None = None) -> list[dict]:
        """The k kept instructions of the run most similar to `text` (the sample `exclude` left out)."""
        entry = self._entry(run_id, lang)
        want = k + 5
        while True:
            with entry.lock:
                hits = entry.index.top_k_similar(text, k=want)
                out = []
                for idx, hit_text, score in hits:
                    sid = entry.sample_ids[idx] if idx < len(entry.sample_ids) else None
                    if sid is None or sid == exclude or entry.current.get(sid) != hit_text:
                        continue  # discarded since, edited since, or the sample itself
                    out.append({"id": sid, "instruction": hit_text, "score": round(score, 4)})
                exhausted = len(hits) < want
            if len(out) >= k or exhausted or want > 10 * k + 100:
                return out[:k]
            want *= 4

    def _rule(self, run_id: int) -> tuple[Rule, str]:
        lang, config = queries.run_settings(self.engine, run_id)  # a resumed run may have new settings
        with self._lock:
            if self._rules.get(run_id, (None, None, ""))[2] != config:
                raw = json.loads(config or "{}")
                seeds = raw.get("seeds")
                # A seed file moved since the run: the built-in pool of its language stands in.
                seeds = seeds if seeds and Path(seeds).is_file() else default_seed_path(lang)
                self._rules[run_id] = (Rule.for_run(lang, raw), str(seeds), config)
            return self._rules[run_id][:2]

    def _nearest_seed(self, lang: str, seeds: str, text: str) -> dict | None:
        with self._lock:
            index = self._seeds.get((lang, seeds))
            if index is None:
                index = self._seeds[(lang, seeds)] = similarity.SimilarityIndex(lang=lang)
                for s in load_seeds(seeds):
                    index.add(s.instruction)
        hit = index.top_k_similar(text, k=1)
        return {"id": None, "instruction": hit[0][1], "score": round(hit[0][2], 4), "seed": True} if hit else None

    def check(self, sample_id: int, run_id: int, lang: str, instruction: str, instances: list[Instance]) -> dict:
        """What generation would say about this sample, by its run's settings."""
        rule, seeds = self._rule(run_id)
        near = [*self.top_k(run_id, lang, instruction, k=1, exclude=sample_id), self._nearest_seed(lang, seeds, instruction)]
        best = max((n for n in near if n), key=lambda n: n["score"], default=None)
        return rule.check(instruction, instances, best)

    def _check_sample(self, sample_id: int, instruction: str | None = None, instances: list[Instance] | None = None) -> tuple[dict, dict]:
        """(row, findings) for the sample as it would stand with these changes."""
        row = queries.get_sample(self.engine, sample_id)
        if row is None:
            raise queries.NotFound(f"no sample {sample_id}")
        text = row["instruction"] if instruction is None else instruction
        inst = [Instance(**i) for i in row["instances"]] if instances is None else instances
        return row, self.check(sample_id, row["run_id"], row["lang"], text, inst)

    def edit(self, sample_id: int, *, actor: str, instruction: str | None, instances: list[Instance] | None, note: str | None) -> dict:
        """Edit a sample. A kept one must still pass its run's rule (else RuleViolation, nothing saved);
        any other is saved with the findings, and must pass when it is approved."""
        row, findings = self._check_sample(sample_id, instruction, instances)
        if row["status"] in KEPT and not findings["ok"]:
            raise RuleViolation(findings)
        queries.edit_sample(self.engine, sample_id, actor=actor, instruction=instruction, instances=instances, note=note)
        return findings

    def approve(self, sample_id: int, *, actor: str, note: str | None, force: bool = False) -> str:
        """Approve a sample; one that fails its run's rule needs force=True (recorded in the audit log)."""
        _, findings = self._check_sample(sample_id)
        if not findings["ok"] and not force:
            raise RuleViolation(findings, " (send force=true to approve it anyway)")
        return queries.review_sample(self.engine, sample_id, "approve", actor=actor, note=note, forced=not findings["ok"])
