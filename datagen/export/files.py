"""Files and folders written whole or not at all, and the one-file formats (alpaca JSON, JSONL, ShareGPT)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from datagen.export.rows import Row, sft_rows
from datagen.errors import InputError
from datagen.storage import queries

FILE_FORMATS = ("alpaca", "jsonl", "sharegpt")


def _umask() -> int:
    # Read it where the kernel reports it: setting and restoring it would change it for every
    # thread of the API server for a moment.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """Write through a temp file in the same directory, then rename: never a half-written file."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"output directory does not exist: {path.parent}")
    if path.is_dir():
        raise InputError(f"{path} is a directory: give a file name")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise InputError(f"cannot write in {path.parent}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; the file should read like any other the user writes
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


MARKER = "provenance.json"  # every datagen export folder has one: an earlier export may be replaced, nothing else


def atomic_folder(target: Path, fill) -> None:
    """Fill a new folder beside `target`, then rename it into place: never a half-written export.

    An earlier export there is swapped out (renamed away, then removed); a non-empty folder that
    is not one is refused, never overwritten.
    """
    target = Path(target)
    parent = target.absolute().parent
    if not parent.is_dir():
        raise InputError(f"output directory does not exist: {parent}")
    if target.exists() and not target.is_dir():
        raise InputError(f"{target} is a file: give a folder for this format")
    replace = target.is_dir() and any(target.iterdir())
    if replace and not (target / MARKER).is_file():
        raise InputError(f"{target} is not empty and holds no datagen export: give a new or empty folder")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=parent))
    except OSError as exc:
        raise InputError(f"cannot write in {parent}: {exc.strerror}") from None
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        fill(tmp)
        if replace:
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=parent))
            os.replace(target, old)  # onto the empty placeholder
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)  # an empty folder there is replaced too
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(path: Path, pieces) -> None:
    """A file inside a folder being filled (the folder's rename is the atomic step)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(pieces)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o666 & ~_umask())


def plain_record(row: Row, kind: str, layout: str = "alpaca") -> dict:
    """A row as JSONL and HF folders lay it out: alpaca or sharegpt for sft; TRL's columns for
    preference (prompt, chosen, rejected) and kto (prompt, completion, label)."""
    if kind == "preference":
        return {"prompt": row.prompt, "chosen": row.chosen, "rejected": row.rejected}
    if kind == "kto":
        return {"prompt": row.prompt, "completion": row.output, "label": row.label}
    if layout == "sharegpt":
        return {"conversations": [{"from": "human", "value": row.prompt}, {"from": "gpt", "value": row.output}]}
    return {"instruction": row.instruction, "input": row.input, "output": row.output}


def lines(engine, f: queries.SampleFilter, fmt: str = "alpaca") -> Iterator[str]:
    """One JSON text per record: a record per instance of each matching sample, in id order."""
    for row in sft_rows(engine, f):
        yield json.dumps(plain_record(row, "sft", fmt), ensure_ascii=False)


def render(records: Iterator[str], fmt: str = "alpaca") -> Iterator[str]:
    """The file's text around the records: a JSON array for alpaca, a record a line otherwise.

    `datagen export` writes it to a file and the API streams it, so both give the same bytes.
    """
    if fmt != "alpaca":
        yield from (r + "\n" for r in records)
        return
    yield "["
    sep = "\n  "
    for r in records:
        yield sep + r
        sep = ",\n  "
    yield "\n]\n"
