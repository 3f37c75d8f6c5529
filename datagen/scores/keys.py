"""Score keys as users write them: `scorer[:rubric][@model]` (`ifd`, `judge:accuracy`, `ifd@smollm2`)."""

from __future__ import annotations

from dataclasses import dataclass

from datagen.config import SCORE_DIRECTION
from datagen.errors import InputError


@dataclass(frozen=True)
class ScoreKey:
    scorer: str
    rubric: str = ""
    model: str | None = None  # None: whichever model scored the run (refused when several did)

    def __str__(self) -> str:
        return self.scorer + (f":{self.rubric}" if self.rubric else "") + (f"@{self.model}" if self.model else "")

    @property
    def higher_is_better(self) -> bool:
        return SCORE_DIRECTION[self.scorer] == "higher"


def parse_key(text: str) -> ScoreKey:
    raw = text.strip()
    body, _, model = raw.partition("@")
    scorer, _, rubric = body.partition(":")
    scorer, rubric, model = scorer.strip(), rubric.strip(), model.strip()
    if not scorer or ("@" in raw and not model) or (":" in body and not rubric):
        raise InputError(f"bad score key {text!r}: write scorer[:rubric][@model], e.g. judge:accuracy or ifd")
    if scorer not in SCORE_DIRECTION:
        raise InputError(f"unknown scorer {scorer!r} in {text!r}: use {', '.join(SCORE_DIRECTION)}")
    return ScoreKey(scorer, rubric, model or None)


def parse_keys(text: str) -> list[ScoreKey]:
    """A comma-separated list (`--by judge:accuracy,ifd`), each key once."""
    keys = [parse_key(p) for p in text.split(",") if p.strip()]
    if not keys:
        raise InputError("no score key given: e.g. --by judge:accuracy,ifd")
    if len(set(keys)) != len(keys):
        raise InputError(f"a score key is repeated in {text!r}")
    return keys


def parse_min(text: str) -> tuple[ScoreKey, float]:
    """`judge:accuracy=4.5` -> (key, 4.5)."""
    key, sep, value = text.rpartition("=")
    if not sep or not key.strip():
        raise InputError(f"bad minimum {text!r}: write KEY=VALUE, e.g. judge:accuracy=4.5")
    try:
        v = float(value)
    except ValueError:
        raise InputError(f"bad minimum {text!r}: {value!r} is not a number") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise InputError(f"bad minimum {text!r}: not a finite number")
    return parse_key(key), v


def score_filter(engine, f, selection: str | None = None, min_scores=()) -> None:
    """Narrow a SampleFilter to a named selection and/or minimum scores (export's --selection, --min-score)."""
    from datagen.storage import scores as S

    if selection is not None:
        sel = S.get_selection(engine, selection)
        if sel is None:
            raise InputError(f"no selection named {selection!r}")
        f.selection_id = sel["id"]
    for text in min_scores:
        key, v = parse_min(text)
        f.score_ranges.append(S.ScoreRange(key.scorer, key.rubric, key.model, min=v))
