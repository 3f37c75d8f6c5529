"""Heuristic filters for instructions and instances. Each rule returns a reason name or None.

The ROUGE-L near-duplicate rule lives in datagen.similarity; these are the cheap checks that
run before it. Reason names are stable: the dashboard filters and counts by them.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from datagen.records import Instance
from datagen.similarity import rouge_l_tokens, tokenize

# Things a text-only model cannot do or receive. Whole-word for English, substring for Chinese.
BLACKLIST = {
    "en": [
        "image", "images", "graph", "graphs", "picture", "pictures", "photo", "photos", "file", "files",
        "map", "maps", "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram",
        "screenshot", "attached", "attachment", "url", "website", "link",
    ],
    "zh": [
        "图片", "图像", "照片", "图表", "视频", "音频", "音乐", "录音", "文件", "附件", "流程图",
        "示意图", "地图", "绘制", "画一", "画出", "链接", "网址", "网站", "截图",
    ],
}


# Characters that change how text displays without being seen: bidi embeddings, overrides and
# isolates (U+202E turns "invoice\u202efdp.exe" into "invoiceexe.pdf"), marks, zero-width
# spaces and joiners, word joiner, invisible operators, BOM. Generated text has no use for them.
INVISIBLE = re.compile("[\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")


def invisible_characters(text: str) -> str | None:
    """The first invisible or bidi control character in text, as 'U+XXXX', or None."""
    m = INVISIBLE.search(text)
    return None if m is None else f"U+{ord(m.group(0)):04X}"


@dataclass
class Limits:
    """Instruction length bounds: words for English, characters for Chinese."""

    min_len: int
    max_len: int


DEFAULT_LIMITS = {"en": Limits(3, 150), "zh": Limits(5, 300)}

# ROUGE-L F (numbers dropped) above which an instruction is the bootstrap prompt written back.
# "Here are eight new tasks, numbered from 7:" scores 0.67 against "Write new tasks, numbered from."
ECHO_THRESHOLD = 0.6
_PLACEHOLDER = re.compile(r"\$\w+")
_NUMBER_WORDS = {"one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
                 "fifteen", "twenty", "a", "few", "some", "more", "another", "several",
                 "一", "二", "两", "三", "四", "五", "六", "七", "八", "九", "十", "几"}


@dataclass
class InstructionFilter:
    lang: str
    limits: Limits | None = None
    blacklist: list[str] = field(default_factory=list)
    echo_lines: list[str] = field(default_factory=list)  # datagen.prompts.instruction_lines of the prompt set

    def __post_init__(self) -> None:
        self.limits = self.limits or DEFAULT_LIMITS[self.lang]
        self.blacklist = self.blacklist or BLACKLIST[self.lang]
        self._echo = [(line, t) for line in self.echo_lines if (t := self._words(_PLACEHOLDER.sub(" ", line)))]
        # The template's request sentence ("Write $count new tasks, numbered from $next.") around each
        # placeholder, numbers and list markers normalised: found anywhere in a candidate, it is the
        # request written back in other words ("Now write 8 new tasks for ...").
        self._requests = [(line, w) for line in self.echo_lines for w in self._windows(line)]
        words = "|".join(re.escape(w) for w in self.blacklist)
        self._black = re.compile(rf"\b(?:{words})\b", re.I) if self.lang == "en" else re.compile(words)

    def length(self, text: str) -> int:
        if self.lang == "en":
            return len(text.split())
        return sum(1 for ch in text if not ch.isspace())

    def _words(self, text: str) -> list[str]:
        return [w for w in tokenize(text, self.lang) if not w.isdigit()]  # "7", "9" are the prompt's numbers

    def _loose(self, text: str) -> list[str]:
        """Word tokens (characters for zh), every number or number word as '#', list markers and punctuation gone."""
        text = _PLACEHOLDER.sub(" 7 ", text.lower())
        toks = re.findall(r"[a-z]+|\d+", text) if self.lang == "en" else re.findall(r"[\u3400-\u9fff]|\d+", text)
        out: list[str] = []
        for t in toks:
            t = "#" if t.isdigit() or t in _NUMBER_WORDS else t
            if not (t == "#" and out and out[-1] == "#"):
                out.append(t)
        return out

    def _windows(self, line: str) -> list[list[str]]:
        if not _PLACEHOLDER.search(line):
            return []
        toks = self._loose(line)
        before, after = (3, 2) if self.lang == "en" else (2, 4)
        wins = []
        for i, t in enumerate(toks):
            if t == "#":
                w = toks[max(0, i - before): i + after + 1]
                if len(w) >= 4:  # enough of the sentence that a real task does not say it by chance
                    wins.append(w)
        return wins

    def echo(self, text: str) -> str | None:
        """The prompt line this instruction echoes, if any."""
        words = self._words(text)
        for line, t in self._echo:
            if rouge_l_tokens(t, words) > ECHO_THRESHOLD:
                return line
        loose = self._loose(text)
        for line, w in self._requests:
            n = len(w)
            if any(loose[i:i + n] == w for i in range(len(loose) - n + 1)):
                return line
        return None

    def check(self, text: str) -> tuple[str, str] | None:
        """Return (reason, detail) when the instruction should be rejected."""
        t = text.strip()
        if not t:
            return "empty", "no text"
        n = self.length(t)
        if n < self.limits.min_len:
            return "too_short", f"{n} < {self.limits.min_len}"
        if n > self.limits.max_len:
            return "too_long", f"{n} > {self.limits.max_len}"
        hidden = invisible_characters(t)
        if hidden:
            return "invisible_characters", hidden
        m = self._black.search(t)
        if m:
            return "blacklist", m.group(0)
        if not re.search(r"[^\W\d_]", t):  # list scaffolding only ("- 2:\n1. ..."): the template's "$next." written back
            return "prompt_echo", "list markers and numbers only"
        if unicodedata.category(t[0])[0] in "PS":
            return "leading_punctuation", t[0]
        if self.lang == "en":
            if not t[0].isascii():
                return "non_english_start", t[0]
            if t.lower().startswith("write a program"):  # too open to have one right answer
                return "write_a_program", ""
        elif not re.search(r"[\u3400-\u9fff]", t):
            return "not_chinese", ""
        if re.search(r"(.{4,}?)\1{3,}", t):  # degenerate repetition from a small model
            return "repetition", ""
        line = self.echo(t)
        if line:
            return "prompt_echo", line
        return None


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def filter_instances(
    instances: list[Instance], max_instances: int = 5, max_output_chars: int = 4000, instruction: str = ""
) -> tuple[list[Instance], list[str]]:
    """Drop bad instances; return the kept ones and the reasons for each dropped one."""
    reasons: list[str] = []
    kept: list[Instance] = []
    task = _norm(instruction)
    for inst in instances:
        out, inp = inst.output.strip(), inst.input.strip()
        if not out:
            reasons.append("empty_output")
        elif inp and inp == out:
            reasons.append("input_equals_output")
        elif invisible_characters(inp + out):
            reasons.append("invisible_characters")
        elif task and _norm(out) == task:  # the model wrote the task back instead of doing it
            reasons.append("output_equals_instruction")
        elif out.endswith((":", "：")):
            reasons.append("trailing_colon")
        elif len(out) > max_output_chars:
            reasons.append("output_too_long")
        else:
            kept.append(Instance(input=inp, output=out))
    # One input with two different outputs means the model does not know the answer: drop them all.
    outputs: dict[str, set[str]] = {}
    for inst in kept:
        outputs.setdefault(inst.input, set()).add(inst.output)
    conflicted = {i for i, outs in outputs.items() if len(outs) > 1}
    seen: set[tuple[str, str]] = set()
    final: list[Instance] = []
    for inst in kept:
        if inst.input in conflicted:
            reasons.append("conflicting_outputs")
        elif (inst.input, inst.output) in seen:
            reasons.append("duplicate_instance")
        else:
            seen.add((inst.input, inst.output))
            final.append(inst)
    return final[:max_instances], reasons
