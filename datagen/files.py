"""Files: reading the JSON files users hand us (seed pools, dedup inputs, training data: a JSON
array or JSON Lines, UTF-8 with or without a BOM; every problem is one line naming the file and the
line), and writing a directory whole or not at all."""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def read_text(path: Path, error: type[Exception]) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # "-sig": Windows editors start UTF-8 files with a BOM
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, expected a file") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise error(f"{path}: {e.strerror or e}") from None


def parse_json(text: str, path: Path, error: type[Exception]) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"malformed JSON in {path} line {e.lineno}: {e.msg}") from None


def read_json_lines(text: str, path: Path, error: type[Exception]) -> list[tuple[int, Any]]:
    """(line number, value) of every non-blank line."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append((n, json.loads(line)))
            except json.JSONDecodeError as e:
                raise error(f"malformed JSON in {path} line {n}: {e.msg}") from None
    return out


def read_records(path: str | Path, error: type[Exception], *, array: bool | None = None) -> list[tuple[int, Any]]:
    """(line or position, record) of a JSON array or a JSON Lines file.

    array=None: an array when the text starts with `[`; True/False: as the caller's format says."""
    path = Path(path)
    text = read_text(path, error)
    if array or (array is None and text.lstrip().startswith("[")):
        data = parse_json(text, path, error)
        if not isinstance(data, list):
            raise error(f"{path}: expected a JSON array of records, got {type(data).__name__}")
        return list(enumerate(data, 1))
    return read_json_lines(text, path, error)


def replace_dir(tmp: Path, out: Path) -> None:
    """Rename `tmp` to `out`; an existing `out` is moved aside first and removed after."""
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


@contextmanager
def atomic_dir(out: Path, *, replace: bool = True) -> Iterator[Path]:
    """A temp directory beside `out`, renamed to `out` when the block ends: never a half-written
    directory. replace=False: renaming onto an existing non-empty `out` raises OSError (another
    process finished first). On any error the temp directory is removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        replace_dir(tmp, out) if replace else tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
