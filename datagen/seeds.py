"""Seed task pools: loading and checking Alpaca/BELLE-format files (JSON Lines, or a JSON array)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from datagen.errors import InputError
from datagen.files import read_records
from datagen.records import SeedTask

# The pools live in the top-level seeds/ (where a user edits them); the wheel carries the same files
# as datagen/seeds/ (setup.py maps one to the other), so a checkout and an install both find them.
_HERE = Path(__file__).resolve().parent
# A pool file decides, not the folder: a checkout updated from the old layout can keep an empty
# datagen/seeds/ (git leaves untracked folders behind), which once hid the top-level pools.
SEEDS_DIR = _HERE / "seeds" if (_HERE / "seeds" / "en" / "seed_tasks.jsonl").is_file() else _HERE.parent / "seeds"
DEFAULT_SEEDS = {"en": SEEDS_DIR / "en" / "seed_tasks.jsonl", "zh": SEEDS_DIR / "zh" / "zh_seed_tasks.jsonl"}

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")




def default_seed_path(lang: str) -> Path:
    try:
        return DEFAULT_SEEDS[lang]
    except KeyError:
        raise InputError(f"no built-in seed pool for language {lang!r} (have: {', '.join(DEFAULT_SEEDS)})") from None


def load_seeds(path: str | Path) -> list[SeedTask]:
    """Read a seed file; any problem raises InputError naming the file and line."""
    path = Path(path)
    tasks = []
    for n, rec in read_records(path, InputError):
        try:
            tasks.append(SeedTask.model_validate(rec))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(map(str, err["loc"])) or "record"
            raise InputError(f"{path}:{n}: {where}: {err['msg']}") from None
    if not tasks:
        raise InputError(f"{path}: no seed tasks")
    ids = [t.id for t in tasks]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InputError(f"{path}: duplicate task id {dup!r}")
    return tasks


def detect_lang(tasks: list[SeedTask]) -> str:
    cjk = sum(bool(_CJK.search(t.instruction)) for t in tasks)
    return "zh" if cjk * 2 > len(tasks) else "en"


@dataclass(frozen=True)
class SeedSummary:
    tasks: int
    classification: int
    with_input: int
    lang: str

    def line(self) -> str:
        return f"tasks={self.tasks} classification={self.classification} with_input={self.with_input} lang={self.lang}"


def summarize(tasks: list[SeedTask]) -> SeedSummary:
    return SeedSummary(
        tasks=len(tasks),
        classification=sum(t.is_classification for t in tasks),
        with_input=sum(any(i.input.strip() for i in t.instances) for t in tasks),
        lang=detect_lang(tasks),
    )
