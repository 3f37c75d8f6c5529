"""Judge rubrics (data files in datagen/prompts/judge/) and the strict reader of a judge's answer.

A rubric is a TOML file: `name`, the scale `min`..`max`, `max_tokens` for the answer, and a
`template` per language ([en], [zh]) with $instruction, $examples, $inputs, $input, $output.
The answer must carry one score on the scale and a one-line reason; anything else is a failure
(stored with its text, and tried again up to --max-tries).
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from datagen.errors import InputError

BUILTIN = ("accuracy", "complexity", "quality")


class _Lang(BaseModel):
    model_config = ConfigDict(extra="forbid")
    template: str = Field(min_length=1)
    example: str | None = None
    none: str | None = None
    max_field_chars: int | None = Field(None, ge=100)


class Rubric(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    min: float
    max: float
    max_tokens: int = Field(96, ge=8, le=4096)
    en: _Lang | None = None
    zh: _Lang | None = None

    @model_validator(mode="after")
    def _check(self):
        if self.min >= self.max:
            raise ValueError("min must be below max")
        if self.en is None and self.zh is None:
            raise ValueError("give a template in an [en] or [zh] section")
        return self

    def langs(self) -> list[str]:
        return [k for k in ("en", "zh") if getattr(self, k) is not None]


def _read(raw: str, where: str, default_name: str) -> Rubric:
    try:
        data = tomllib.loads(raw)
        data.setdefault("name", default_name)
        return Rubric(**data)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"rubric {where} is not valid TOML: {exc}") from None
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(map(str, e["loc"])) or "file"
        raise InputError(f"rubric {where}: {loc}: {e['msg']}") from None


def load_rubric(spec: str) -> Rubric:
    """A built-in rubric by name (accuracy | complexity | quality), or a user's TOML file by path."""
    if spec in BUILTIN:
        raw = resources.files("datagen").joinpath("prompts", "judge", f"{spec}.toml").read_text("utf-8")
        return _read(raw, spec, spec)
    path = Path(spec)
    if not path.suffix and not path.exists():
        raise InputError(f"unknown rubric {spec!r}: use {', '.join(BUILTIN)} or the path of a rubric TOML file")
    try:
        raw = path.read_text("utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"rubric file not found: {spec}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"rubric file {spec}: {exc}") from None
    rubric = _read(raw, spec, path.stem)
    if rubric.name in BUILTIN:  # scores of a user's wording must never pass for the built-in rubric's
        raise InputError(f"rubric file {spec}: name {rubric.name!r} is a built-in rubric's; give the file its own `name`")
    return rubric


@functools.lru_cache(maxsize=None)
def _format(lang: str) -> dict:
    return tomllib.loads(resources.files("datagen").joinpath("prompts", "judge", "format.toml").read_text("utf-8"))[lang]


def _cut(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit].rstrip() + " [...]"


def render(rubric: Rubric, lang: str, instruction: str, instances: list[tuple[str, str]]) -> str:
    """The judge prompt for one sample: its instruction and (input, output) examples."""
    section = getattr(rubric, lang, None) or getattr(rubric, rubric.langs()[0])
    fmt = {**_format(lang), **{k: v for k, v in section.model_dump().items() if v is not None}}
    limit, none = int(fmt["max_field_chars"]), fmt["none"]
    shown = [(_cut(i, limit) or none, _cut(o, limit) or none) for i, o in instances] or [(none, none)]
    examples = "\n\n".join(Template(fmt["example"]).safe_substitute(n=n, input=i, output=o) for n, (i, o) in enumerate(shown, 1))
    inputs = "\n".join(i for i, _ in shown if i != none) or none
    return Template(section.template).safe_substitute(
        instruction=_cut(instruction, limit), examples=examples, inputs=inputs, input=shown[0][0], output=shown[0][1]
    )


# ---------------------------------------------------------------- reading the answer

_NUM = r"(?:[-+]?\d+(?:\.\d+)?|[零〇一二两三四五六七八九十](?:点[零〇一二三四五六七八九])?)"
_ZH_DIGITS = {c: i for i, c in enumerate("零一二三四五六七八九十")} | {"〇": 0, "两": 2}
# A score line: optional list/markdown marks, optional words before the label, the label, a separator, the number,
# and an optional scale ("/5", "out of 5", "分（满分5分）"). Only at the start of a line: a reason that mentions
# "a score of 5" is not a second score.
_LEAD = r"^[ \t>*#_\-]*(?:(?:final|overall|my|the|total|accuracy|complexity|quality|总|最终|综合|总体|准确性|复杂度|质量)\s*)*"
_SCORE = re.compile(
    _LEAD + r"(?:score|rating|grade|分数|评分|得分|打分|分值)[ \t*_]*(?:is|为|是)?[ \t*_]*[:=]?[ \t*_]*"
    r"(?P<num>" + _NUM + r")(?:[ \t]*(?:/|out\s+of|of)[ \t]*(?P<scale>" + _NUM + r"))?[ \t]*分?(?P<rest>.*)$",
    re.IGNORECASE | re.MULTILINE,
)
_BARE = re.compile(r"^[ \t*_]*(?P<num>" + _NUM + r")(?:[ \t]*(?:/|out\s+of)[ \t]*(?P<scale>" + _NUM + r"))?[ \t]*分?[ \t*_.。]*$", re.IGNORECASE)
_REASON = re.compile(
    r"^[ \t>*#_\-]*(?:reason|reasoning|explanation|justification|rationale|理由|原因|解释|说明|评语)[ \t*_]*[:=][ \t*_]*(?P<text>.*)$",
    re.IGNORECASE | re.MULTILINE,
)
MAX_REASON = 500
# Full-width digits and signs read as ASCII; the rest of the answer (the reason) is kept as written.
_WIDE = str.maketrans({**{chr(0xFF10 + i): str(i) for i in range(10)}, "：": ":", "／": "/", "．": ".", "＝": "=", "＊": "*"})


@dataclass
class Verdict:
    value: float | None = None
    reason: str | None = None
    error: str | None = None  # why the answer is unusable (value is None then)

    @property
    def ok(self) -> bool:
        return self.error is None


def _number(s: str) -> float:
    if s[0] in _ZH_DIGITS:
        whole, _, frac = s.partition("点")
        return _ZH_DIGITS[whole] + (_ZH_DIGITS[frac] / 10 if frac else 0.0)
    return float(s)


def _clean_line(s: str) -> str:
    s = re.sub(r"\s+", " ", s.replace("**", "").replace("__", "")).strip(" \t*_")
    s = s.lstrip("-—:;,，；").strip()
    if len(s) >= 2 and s[0] in "\"'“「" and s[-1] in "\"'”」":
        s = s[1:-1].strip()
    return s[:MAX_REASON]


def parse_verdict(text: str, lo: float, hi: float) -> Verdict:
    """A score on [lo, hi] and a one-line reason from a judge's answer, or a Verdict carrying why not.

    Accepted: "Score: 4" / "Score: 4.5/5" / "**Rating:** 4 out of 5" / "分数：4分" / "评分：四" / a bare "4" as
    the first line; text before and after is ignored. Refused: no score, several different scores, a score
    off the scale or on another scale ("8/10" for a 0-5 rubric), no reason.
    """
    norm = (text or "").translate(_WIDE).replace("\r\n", "\n")
    if not norm.strip():
        return Verdict(error="empty answer")
    found = [(m, _number(m.group("num")), m.group("scale")) for m in _SCORE.finditer(norm)]
    score_line = None
    if found:
        values = sorted({v for _, v, _ in found})
        if len(values) > 1:
            return Verdict(error=f"several scores: {', '.join(f'{v:g}' for v in values)}")
        m, value, scale = found[0]
        score_line = m
    else:
        first = next((ln for ln in norm.split("\n") if ln.strip()), "")
        bare = _BARE.match(first)
        if bare is None:
            return Verdict(error="no score line")
        value, scale = _number(bare.group("num")), bare.group("scale")
    if scale is not None and _number(scale) != hi:
        return Verdict(error=f"score on a scale of {scale}, not {lo:g}-{hi:g}")
    if not lo <= value <= hi:
        return Verdict(error=f"score {value:g} is outside {lo:g}-{hi:g}")
    reason = None
    rm = _REASON.search(norm)
    if rm:
        reason = _clean_line(rm.group("text"))
        if not reason:  # "Reason:" with the sentence on the next line
            after = [ln for ln in norm[rm.end():].split("\n") if ln.strip() and not _SCORE.match(ln)]
            reason = _clean_line(after[0]) if after else ""
    elif score_line is not None and re.search(r"\w", score_line.group("rest") or ""):
        reason = _clean_line(score_line.group("rest"))  # "Score: 4 - correct but terse"
    else:  # the first other line with words in it
        skip = score_line.group(0).strip() if score_line else next(ln for ln in norm.split("\n") if ln.strip()).strip()
        reason = next((_clean_line(ln) for ln in norm.split("\n") if ln.strip() and ln.strip() != skip and re.search(r"\w", ln)), "")
    if not reason:
        return Verdict(error="no reason")
    return Verdict(value=value, reason=reason)
