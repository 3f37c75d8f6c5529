"""Prompt templates (data files in datagen/prompts/) and the parsers for what models write back."""

from __future__ import annotations

import random
import re
import tomllib
from importlib import resources
from pathlib import Path
from string import Template

from pydantic import BaseModel, ValidationError

from datagen.errors import InputError
from datagen.records import Instance, SeedTask




class _Bootstrap(BaseModel):
    template: str


class _Classify(BaseModel):
    header: str
    example: str
    query: str
    yes: str
    no: str


class _Instances(BaseModel):
    header: str
    example: str
    item: str
    query: str


class _Labels(BaseModel):
    input: list[str]
    output: list[str]
    label: list[str]
    example: list[str]
    noinput: list[str]
    # Words a model puts before a label ("Your Input:"); stripped with the label. Optional in user files.
    owner: list[str] = []


class PromptSet(BaseModel):
    lang: str
    bootstrap: _Bootstrap
    classify: _Classify
    instances_input_first: _Instances
    instances_output_first: _Instances
    labels: _Labels


def load_prompts(lang: str, path: str | Path | None = None) -> PromptSet:
    """Load the built-in templates for `lang`, or a user's TOML file with the same sections."""
    try:
        if path is None:
            raw = resources.files("datagen").joinpath("prompts", f"{lang}.toml").read_text("utf-8")
        else:
            raw = Path(path).read_text("utf-8-sig")  # a BOM from a Windows editor is not TOML
        data = tomllib.loads(raw)
        return PromptSet(**{**data, "lang": lang})  # a file's own `lang` key must not clash
    except FileNotFoundError:
        raise InputError(f"prompt file not found: {path or lang + '.toml'}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"prompt file {path} is not valid TOML: {exc}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(f"prompt file {path or lang}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def _fill(template: str, **values: object) -> str:
    return Template(template).safe_substitute({k: str(v) for k, v in values.items()})


# ---------------------------------------------------------------- step 1: new instructions


def bootstrap_prompt(ps: PromptSet, examples: list[str], count: int) -> tuple[str, int]:
    """Return the prompt and the number the model continues from."""
    listing = "\n".join(f"{i}. {_one_line(t)}" for i, t in enumerate(examples, 1))
    nxt = len(examples) + 1
    return _fill(ps.bootstrap.template, examples=listing, next=nxt, count=count), nxt


def next_number(prompt: str) -> int:
    """The number a bootstrap prompt asks the model to continue from, read back from the prompt.

    Batch mode takes answers after a restart, when only the stored prompt is left: the examples are
    the last run of lines numbered 1., 2., ... (one line each), so the model continues after them.
    """
    run = last = 0
    for line in prompt.splitlines():
        m = re.match(r"(\d+)\. \S", line)
        if m and int(m.group(1)) == run + 1:
            run += 1
        else:
            if run:
                last = run
            run = 1 if m and m.group(1) == "1" else 0
    return (run or last) + 1


def instruction_lines(ps: PromptSet) -> list[str]:
    """The bootstrap template's own sentences, placeholders dropped: what a prompt echo looks like.

    A small model asked to continue a list often writes the request back ("Write 7 new tasks,
    numbered from 9 to 10."); the filters compare candidates with these lines.
    """
    out = []
    for line in ps.bootstrap.template.splitlines():
        if "$examples" in line:
            continue
        # Placeholders stay ($count, $next): the filter matches the request sentence around them loosely.
        text = line.strip(" -*\t")
        if re.search(r"\w", re.sub(r"\$\w+", " ", text)):
            out.append(re.sub(r"\s+", " ", text))
    return out


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", text.strip())


# "9.", "9)", "(9)", "（9）", "9、", "9：", "Task 9:", "第9条：", full-width digits (\d is Unicode-aware).
_ITEM = re.compile(
    r"^\s*(?:[-*#]+\s*)?(?:\*\*)?(?:task|instruction|任务|指令)?\s*"
    r"(?:[(（]\s*(\d{1,3})\s*[)）]|第\s*(\d{1,3})\s*[条个项]?\s*[.:：、．]?|(\d{1,3})\s*(?:[.)．、:：]|\s+-))"
    r"(?:\*\*)?\s*(.*)$",
    re.IGNORECASE,
)
_PREFIX = re.compile(r"^(?:task|instruction|new task|任务|指令|新任务)\s*\d*\s*[:：]\s*", re.IGNORECASE)


def parse_task_list(text: str, first: int, truncated: bool) -> list[str]:
    """Pull the numbered tasks out of a model's continuation.

    The prompt ends with "$next.", so a completion model starts mid-item; a chat model may
    repeat the number. A blank line followed by unnumbered text ends the list (models often
    add a closing remark). When generation stopped on the length limit the last item may be
    cut short, so it is dropped.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    # Unnumbered text before the list is item `first` continued only if the list goes on at
    # `first + 1`; a list that starts again (at `first`, or at 1 as small chat models do) makes
    # it a chat model's preamble ("Here are the 8 new tasks:").
    later = next((m for m in map(_ITEM.match, lines[1:]) if m), None)
    restarts = later is not None and int(next(g for g in later.groups()[:3] if g)) != first + 1
    if lines and not _ITEM.match(lines[0]) and not restarts:
        lines[0] = f"{first}. {lines[0]}"
    items: list[str] = []
    blank = False
    for line in lines:
        if not line.strip():
            blank = True
            continue
        m = _ITEM.match(line)
        if m:
            items.append(m.group(4))
        elif items and not blank:
            items[-1] += " " + line.strip()
        elif items:
            break
        blank = False
    if truncated and items:
        items.pop()
    return [t for t in (_clean(i) for i in items) if t]


_NUMBER = re.compile(r"^\s*\d{1,3}\s*[.)．、:：]\s*")


def _clean(item: str) -> str:
    item = item.replace("**", "").strip()
    while _NUMBER.match(item):  # small models write "8. 1. Do X": keep only the text
        item = _NUMBER.sub("", item, count=1)
    item = _PREFIX.sub("", item).strip()
    if len(item) >= 2 and item[0] in "\"'“「" and item[-1] in "\"'”」":
        item = item[1:-1].strip()
    return re.sub(r"\s+", " ", item)


# ---------------------------------------------------------------- step 2: classification or not


def classify_prompt(ps: PromptSet, fewshot: list[SeedTask], instruction: str) -> str:
    c = ps.classify
    shots = [_fill(c.example, instruction=_one_line(t.instruction), answer=c.yes if t.is_classification else c.no) for t in fewshot]
    return "\n\n".join([c.header, *shots, _fill(c.query, instruction=_one_line(instruction))])


def parse_yes_no(ps: PromptSet, text: str) -> bool | None:
    head = text.strip().lstrip("*:： ").lower()
    label = ps.classify.query.rsplit("\n", 1)[-1].strip().rstrip(":：").lower()
    if label and head.startswith(label):  # a chat model restating "Classification: No"
        head = head[len(label) :].lstrip("*:： ")
    if head.startswith(ps.classify.yes.lower()):
        return True
    if head.startswith(ps.classify.no.lower()):
        return False
    return None


def pick_classify_shots(seeds: list[SeedTask], rng: random.Random, k: int = 8) -> list[SeedTask]:
    yes = [s for s in seeds if s.is_classification]
    no = [s for s in seeds if not s.is_classification]
    shots = rng.sample(yes, min(k // 2, len(yes))) + rng.sample(no, min(k - k // 2, len(no)))
    rng.shuffle(shots)
    return shots


# ---------------------------------------------------------------- step 3: instances


def instances_prompt(
    ps: PromptSet, fewshot: list[SeedTask], instruction: str, output_first: bool, max_instances: int = 5
) -> str:
    t = ps.instances_output_first if output_first else ps.instances_input_first
    noinput = ps.labels.noinput[0]
    blocks = []
    for task in fewshot:
        items = [
            _fill(t.item, n=n, input=inst.input.strip() or noinput, output=inst.output.strip())
            for n, inst in enumerate(task.instances, 1)
        ]
        blocks.append(_fill(t.example, instruction=task.instruction.strip(), examples="\n\n".join(items)))
    header = _fill(t.header, max_instances=max_instances)
    return "\n\n".join([header, *blocks, _fill(t.query, instruction=instruction.strip())])


def pick_instance_shots(seeds: list[SeedTask], rng: random.Random, output_first: bool, k: int = 2) -> list[SeedTask]:
    pool = [s for s in seeds if s.is_classification == output_first] or seeds
    return rng.sample(pool, min(k, len(pool)))


def _label_re(words: list[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


def parse_instances(ps: PromptSet, text: str, output_first: bool, truncated: bool, query_tail: str) -> list[Instance]:
    """Read Input/Output (or Class label/Input) pairs back from a model's continuation.

    `query_tail` is how the prompt ended ("Example 1\\nInput:"); it is put back in front of
    the continuation unless the model restated a label itself, as chat models tend to.
    """
    L = ps.labels
    owner = rf"(?:(?:{_label_re(L.owner)})\s*)?" if L.owner else ""
    field_re = re.compile(
        rf"^\s*(?:\*\*)?{owner}(?P<name>{_label_re(L.input + L.output + L.label)})(?:\*\*)?\s*\d*\s*[:：]\s*(?:\*\*)?(?P<rest>.*)$",
        re.IGNORECASE,
    )
    # A label repeated inside a value ("Input: Your Input: ...") is the model restating it, not data.
    restated = re.compile(rf"^\s*(?:\*\*)?{owner}(?:{_label_re(L.input + L.output + L.label)})(?:\*\*)?\s*[:：]\s*(?:\*\*)?", re.IGNORECASE)
    sep_re = re.compile(rf"^\s*(?:\*\*)?(?:{_label_re(L.example)})\s*\d*\s*[:：]?(?:\*\*)?\s*$", re.IGNORECASE)
    stop_re = re.compile(r"^\s*(?:task|任务)\s*[:：]", re.IGNORECASE)

    body = text.replace("\r\n", "\n")
    first = next((ln for ln in body.split("\n") if ln.strip()), "")
    if not (field_re.match(first) or sep_re.match(first)):
        body = query_tail + (" " if not query_tail.endswith("\n") else "") + body.lstrip(" ")

    kind_of = {w.lower(): "input" for w in L.input}
    kind_of.update({w.lower(): "output" for w in L.output})
    kind_of.update({w.lower(): "label" for w in L.label})
    fields: list[list[str]] = []  # [kind, text]
    for line in body.split("\n"):
        if stop_re.match(line):
            break
        if sep_re.match(line):
            fields.append(["sep", ""])
            continue
        m = field_re.match(line)
        if m:
            rest = m.group("rest")
            while restated.match(rest):
                rest = restated.sub("", rest, count=1)
            fields.append([kind_of[m.group("name").lower()], rest])
        elif fields and fields[-1][0] != "sep":
            fields[-1][1] += "\n" + line
    if truncated and fields:
        fields.pop()

    noinput = {w.lower() for w in L.noinput}

    def norm_input(s: str) -> str:
        s = s.strip()
        return "" if s.lower() in noinput else s

    out: list[Instance] = []
    first_kind, second_kind = ("label", "input") if output_first else ("input", "output")
    pending: str | None = None
    for kind, value in fields:
        if kind == "sep":
            pending = None
        elif kind == first_kind:
            pending = value
        elif kind == second_kind:
            if output_first:
                if pending is not None:
                    out.append(Instance(input=norm_input(value), output=pending.strip()))
            else:
                out.append(Instance(input=norm_input(pending or ""), output=value.strip()))
            pending = None
    if not out and not output_first:
        # The prompt says a task that needs no input may be answered directly; models that do so
        # write the answer where the Input would go and never write an Output label.
        first = next((v.strip() for k, v in fields if k == "input" and v.strip()), "")
        if first and norm_input(first):
            out.append(Instance(input="", output=first))
    return out
