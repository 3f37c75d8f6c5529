"""Exports: one exporter, a writer per format over the same selection.

    selection.py    which samples (run, status, language): a Selection, turned into the review API's filter
    rows.py         the rows a kind makes of them: sft (instances), preference (reviewers' edits), kto (approve/reject)
    files.py        one file (alpaca JSON, JSONL, ShareGPT) and the atomic file/folder writes
    llamafactory.py a LLaMA-Factory folder (data + dataset_info.json + the training line)
    hf.py, card.py  a Hugging Face dataset folder (data + README.md card + provenance.json); hub.py pushes it

`write()` is the entry: it checks every option, then writes the file, or fills a folder beside
the target and renames it into place.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from datagen.errors import InputError
from datagen.export import card, hf, llamafactory
from datagen.export.files import FILE_FORMATS, MARKER, atomic_folder, atomic_write, lines, plain_record, render, write_text
from datagen.export.rows import KINDS, NOINPUT, ROWS, Row, clean_input
from datagen.export.selection import DEFAULT_STATUS, STATUSES, Selection, selection

FOLDER_FORMATS = ("llama-factory", "hf")
FORMATS = FILE_FORMATS + FOLDER_FORMATS
LAYOUTS = ("alpaca", "sharegpt")

__all__ = ["DEFAULT_STATUS", "FORMATS", "KINDS", "LAYOUTS", "NOINPUT", "STATUSES", "Exported", "Selection",
           "atomic_write", "clean_input", "export", "lines", "render", "selection", "write"]


@dataclass
class Exported:
    path: Path
    rows: int
    fmt: str
    kind: str
    train_line: str | None = None  # llama-factory: the command that trains on the folder
    provenance: dict | None = None  # folders: what the card says


def _check(fmt: str, kind: str, layout: str | None) -> str:
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}: use {', '.join(FORMATS)}")
    if kind not in KINDS:
        raise InputError(f"unknown kind {kind!r}: use {', '.join(KINDS)}")
    if layout is not None and layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}: use {', '.join(LAYOUTS)}")
    if layout is not None and fmt not in FOLDER_FORMATS:
        raise InputError(f"--layout is for the llama-factory and hf formats; --format {fmt} is its own layout")
    if kind != "sft" and fmt in ("alpaca", "sharegpt"):
        raise InputError(f"--kind {kind} is written as jsonl, hf or llama-factory, not {fmt}")
    if kind != "sft" and fmt == "hf" and layout == "sharegpt":
        raise InputError(f"--kind {kind} --format hf has TRL's columns; --layout sharegpt is for sft")
    return layout or "alpaca"


def folder_name(out: Path) -> str:
    """The dataset's name: the folder's, as LLaMA-Factory's --dataset and a card title can take it."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(out).absolute().name).strip("._") or "datagen"


def write(engine, out: str | Path, sel: Selection | None = None, *, fmt: str = "alpaca", kind: str = "sft",
          layout: str | None = None, name: str | None = None) -> Exported:
    """Write the selection's rows of `kind` to `out` in `fmt`, atomically."""
    layout = _check(fmt, kind, layout)
    sel = sel or Selection(status=DEFAULT_STATUS[kind])
    f = sel.to_filter(engine)
    out = Path(out)
    counts: dict = {"rows": 0, "samples": set(), "by_lang": Counter(), "run_ids": set(), "labels": {"true": 0, "false": 0}}

    def counted():
        for row in ROWS[kind](engine, f):
            counts["rows"] += 1
            counts["samples"].add(row.sample_id)
            counts["run_ids"].add(row.run_id)
            counts["by_lang"][row.lang] += 1
            if row.label is not None:
                counts["labels"]["true" if row.label else "false"] += 1
            yield row

    if fmt in FILE_FORMATS:
        records = (json.dumps(plain_record(r, kind, fmt), ensure_ascii=False) for r in counted())
        atomic_write(out, lambda fh: fh.writelines(render(records, fmt)))
        return Exported(out, counts["rows"], fmt, kind)

    name = name or folder_name(out)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise InputError(f"--name {name!r}: use letters, digits, '_', '.', '-'")
    result = Exported(out, 0, fmt, kind)

    def fill(folder: Path) -> None:
        if fmt == "hf":
            data_files = hf.write(folder, counted(), kind=kind, layout=layout)
        else:
            result.train_line = llamafactory.write(folder, counted(), name=name, kind=kind, layout=layout, final=out)
        if counts["rows"] == 0:
            raise InputError(f"nothing to export: the selection ({', '.join(f'{k}={v}' for k, v in sel.describe().items())}) has no {kind} rows")
        prov = card.provenance(engine, name=name, kind=kind, fmt=fmt, layout=layout, selection=sel, f=f, counts=counts)
        write_text(folder / MARKER, [json.dumps(prov, indent=2, ensure_ascii=False) + "\n"])
        if fmt == "hf":
            write_text(folder / "README.md", [card.dataset_card(prov, data_files)])
        else:
            write_text(folder / "README.md", [llamafactory.readme(name, kind, layout, result.train_line, counts["rows"])])
        result.rows, result.provenance = counts["rows"], prov

    atomic_folder(out, fill)
    return result


def export(engine, out: str | Path, *, fmt: str = "alpaca", run=None, status=None, lang=None, kind: str = "sft", layout=None, name=None,
           chosen=None, min_scores=()) -> int:
    """write() with the selection as keywords; returns the number of rows."""
    sel = Selection(run=run, status=status or DEFAULT_STATUS.get(kind, "accepted"), lang=lang, chosen=chosen, min_scores=tuple(min_scores))
    return write(engine, out, sel, fmt=fmt, kind=kind, layout=layout, name=name).rows
