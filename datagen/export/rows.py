"""The rows each kind of export makes of a selection; the writers only lay them out.

- sft: a row per instance of each selected sample (instruction, input, output).
- preference: a row per instance a reviewer rewrote: the prompt as the reviewer left it, chosen =
  the reviewer's answer (the last edit's text), rejected = the model's (the text before the first
  edit). Only from `edit` rows of the audit log, which hold the whole sample before and after.
- kto: a row per instance of each sample whose reviewer's standing decision is approve (label
  true) or reject (false), replayed from the audit log (an undo takes back the decision before
  it), with the text the sample had when that decision was made.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from datagen.storage import queries
from datagen.storage.exports import review_histories

KINDS = ("sft", "preference", "kto")
APPROVE = ("approve", "force_approve")
REJECT = ("reject", "force_reject")

# What models and seed files write for "no input"; training files want an empty string.
NOINPUT = {"<noinput>", "<no input>", "noinput", "no input", "<无输入>", "无输入", "n/a", "none", "(none)", "null", "-"}


def clean_input(text: str) -> str:
    t = text.strip()
    return "" if t.lower() in NOINPUT else t


@dataclass
class Row:
    sample_id: int
    run_id: int
    lang: str
    instruction: str
    input: str
    output: str = ""  # sft, kto
    chosen: str = ""  # preference
    rejected: str = ""
    label: bool | None = None  # kto

    @property
    def prompt(self) -> str:
        """Instruction and input as one user turn, joined as the sharegpt export and `train` join them."""
        return self.instruction + (f"\n\n{self.input}" if self.input else "")


def _row(sample: dict, instruction: str, inst: dict, **kw) -> Row:
    return Row(sample["id"], sample["run_id"], sample["lang"], instruction.strip(), clean_input(inst["input"]), **kw)


def sft_rows(engine, f: queries.SampleFilter) -> Iterator[Row]:
    for sample, instances in queries.iter_samples(engine, f):
        for inst in instances:
            yield _row(sample, sample["instruction"], inst.model_dump(), output=inst.output.strip())


def _pairs(before: list[dict], after: list[dict]) -> list[tuple[int, int]]:
    """(index before, index after) of the same instance: same input, else the same place when the
    reviewer kept the number of instances (an input rewritten too)."""
    used: set[int] = set()
    out = []
    for i, x in enumerate(after):
        j = next((j for j, y in enumerate(before) if j not in used and clean_input(y["input"]) == clean_input(x["input"])), None)
        if j is None and len(before) == len(after) and i not in used:
            j = i
        if j is not None:
            used.add(j)
            out.append((j, i))
    return out


def preference_rows(engine, f: queries.SampleFilter) -> Iterator[Row]:
    for sample, _, audit in review_histories(engine, f):
        edits = [a for a in audit if a["action"] == "edit" and a["before"] and a["after"]]
        if not edits:
            continue
        first, last = json.loads(edits[0]["before"]), json.loads(edits[-1]["after"])
        for j, i in _pairs(first["instances"], last["instances"]):
            rejected, chosen = first["instances"][j]["output"].strip(), last["instances"][i]["output"].strip()
            if chosen != rejected:  # an edit of the prompt alone prefers no answer over another
                yield _row(sample, last["instruction"], last["instances"][i], chosen=chosen, rejected=rejected)


def decision(sample: dict, instances: list, audit: list[dict]) -> tuple[bool, dict] | None:
    """The reviewer's standing decision and the sample's text when it was made; None if there is none."""
    edits = [a for a in audit if a["action"] == "edit" and a["before"]]
    text = json.loads(edits[0]["before"]) if edits else {
        "instruction": sample["instruction"], "instances": [i.model_dump() for i in instances]}
    stack: list[tuple[bool, dict]] = []
    for a in audit:
        if a["action"] == "edit" and a["after"]:
            text = json.loads(a["after"])
        elif a["action"] in APPROVE + REJECT:
            stack.append((a["action"] in APPROVE, text))
        elif a["action"] == "undo" and stack:  # an undo always follows the review it takes back
            stack.pop()
    return stack[-1] if stack else None


def kto_rows(engine, f: queries.SampleFilter) -> Iterator[Row]:
    for sample, instances, audit in review_histories(engine, f):
        found = decision(sample, instances, audit)
        if found is None:
            continue
        label, text = found
        for inst in text["instances"]:
            yield _row(sample, text["instruction"], inst, output=inst["output"].strip(), label=label)


ROWS = {"sft": sft_rows, "preference": preference_rows, "kto": kto_rows}
