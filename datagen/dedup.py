"""File-level ROUGE-L dedup: ``datagen dedup INPUT`` without the command line.

Input formats (by extension):
  .txt    one instruction per line; blank lines are ignored (not candidates)
  .jsonl  one JSON object per line (blank lines ignored); the text is ``record[field]``
  .json   a JSON array of objects (Alpaca records, seed tasks); the text is ``record[field]``

Kept records are written in input order, each exactly as read: the output format follows
the output file's extension (``.txt``: the text, one per line; ``.json``: a JSON array;
anything else, including the default ``<input stem>.kept.jsonl``: one JSON value per
line, the object for json/jsonl inputs and ``{field: line}`` for txt inputs).
Rejected records (only when a path is given) are JSONL: the record as above plus a
``"dedup"`` object ``{"reason", "score", "nearest", "nearest_from"}``.

``against`` texts (same formats) seed the index, so candidates near them are rejected;
they are never written out. All writes are atomic (temp file in the target directory,
then ``os.replace``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datagen.config import THRESHOLD
from datagen.errors import InputError
from datagen import files
from datagen.export import atomic_write
from datagen.similarity import LANGS, SimilarityIndex

__all__ = ["DedupStats", "dedup_file", "read_records"]




@dataclass(frozen=True)
class DedupStats:
    candidates: int
    kept: int
    rejected: int
    empty: int  # rejected because no tokens were left
    against: int
    seconds: float
    out: Path
    rejected_path: Path | None

    def line(self) -> str:
        return f"candidates={self.candidates} kept={self.kept} rejected={self.rejected} seconds={self.seconds:.2f}"


def _fmt(path: Path) -> str:
    ext = path.suffix.lower()
    if ext not in (".txt", ".jsonl", ".json"):
        raise InputError(f"{path}: unsupported input format {ext or '(none)'!r}; use .txt, .jsonl or .json")
    return ext[1:]


def _text_of(path: Path, where: str, record: Any, field: str) -> str:
    if not isinstance(record, dict):
        raise InputError(f"{path}: {where}: expected a JSON object, got {type(record).__name__}")
    if field not in record:
        raise InputError(f"{path}: {where}: missing field {field!r}")
    text = record[field]
    if not isinstance(text, str):
        raise InputError(f"{path}: {where}: field {field!r} is {type(text).__name__}, expected a string")
    return text


def read_records(path: str | os.PathLike, field: str = "instruction") -> tuple[str, list[Any], list[str]]:
    """(format, records, texts) of an input file; raises InputError with a one-line message."""
    path = Path(path)
    fmt = _fmt(path)
    if fmt == "txt":
        records = [line for line in files.read_text(path, InputError).splitlines() if line.strip()]
        return fmt, records, list(records)
    numbered = files.read_records(path, InputError, array=fmt == "json")
    where = "line" if fmt == "jsonl" else "record"
    records = [rec for _, rec in numbered]
    texts = [_text_of(path, f"{where} {n}", rec, field) for n, rec in numbered]
    return fmt, records, texts


def _write_atomic(path: Path, chunks) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.writelines(chunks))


def _kept_chunks(out: Path, in_fmt: str, records: list[Any], field: str):
    ext = out.suffix.lower()
    as_obj = (lambda r: {field: r}) if in_fmt == "txt" else (lambda r: r)
    if ext == ".txt":
        for r in records:
            # A line per text; embedded newlines would split a record, so escape them.
            text = r if in_fmt == "txt" else r[field]
            yield text.replace("\r", "\\r").replace("\n", "\\n") + "\n"
    elif ext == ".json":
        yield "[\n"
        for i, r in enumerate(records):
            yield ("" if i == 0 else ",\n") + json.dumps(as_obj(r), ensure_ascii=False)
        yield "\n]\n"
    else:
        for r in records:
            yield json.dumps(as_obj(r), ensure_ascii=False) + "\n"


def dedup_file(
    input: str | os.PathLike,  # noqa: A002 - the name the CLI uses
    lang: str = "auto",
    threshold: float = THRESHOLD,
    against: str | os.PathLike | None = None,
    field: str = "instruction",
    out: str | os.PathLike | None = None,
    rejected: str | os.PathLike | None = None,
) -> DedupStats:
    """Keep each record whose ROUGE-L against ``against`` and earlier kept records is <= threshold."""
    t0 = time.perf_counter()
    if lang not in LANGS:
        raise InputError(f"--lang must be one of {', '.join(LANGS)}, got {lang!r}")
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"--threshold must be within [0, 1], got {threshold}")
    src = Path(input)
    fmt, records, texts = read_records(src, field)
    out_path = Path(out) if out is not None else src.with_name(src.stem + ".kept.jsonl")
    rej_path = Path(rejected) if rejected is not None else None
    index = SimilarityIndex(lang=lang, threshold=threshold)
    n_against = 0
    if against is not None:
        _, _, seed_texts = read_records(Path(against), field)
        for t in seed_texts:
            index.add(t)
        n_against = len(seed_texts)

    kept: list[Any] = []
    rejects: list[tuple[Any, Any]] = []
    empty = 0
    for rec, text in zip(records, texts):
        v = index.offer(text)
        if v.keep:
            kept.append(rec)
            continue
        empty += v.reason == "empty"
        if rej_path is not None:
            info = {
                "reason": v.reason,
                "score": v.score,
                "nearest": v.nearest,
                "nearest_from": None if v.nearest_id is None else ("against" if v.nearest_id < n_against else "input"),
            }
            rejects.append((rec, info))

    _write_atomic(out_path, _kept_chunks(out_path, fmt, kept, field))
    if rej_path is not None:
        def rows():
            for rec, info in rejects:
                obj = {field: rec} if fmt == "txt" else dict(rec)
                obj["dedup"] = info
                yield json.dumps(obj, ensure_ascii=False) + "\n"

        _write_atomic(rej_path, rows())
    return DedupStats(
        candidates=len(records),
        kept=len(kept),
        rejected=len(records) - len(kept),
        empty=empty,
        against=n_against,
        seconds=time.perf_counter() - t0,
        out=out_path,
        rejected_path=rej_path,
    )
