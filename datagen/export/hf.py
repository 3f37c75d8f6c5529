"""Hugging Face dataset folders: data/train.jsonl and a README.md dataset card whose YAML front
matter names the data files, so `datasets.load_dataset(DIR)` reads it with no arguments."""

from __future__ import annotations

import json
from pathlib import Path

from datagen.export.files import plain_record, write_text

DATA_FILE = "data/train.jsonl"


def write(folder: Path, rows, *, kind: str, layout: str) -> list[str]:
    """Fill `folder` with the data; returns the data files the card must name."""
    write_text(folder / DATA_FILE, (json.dumps(plain_record(r, kind, layout), ensure_ascii=False) + "\n" for r in rows))
    return [DATA_FILE]
