"""Writing kept samples out as training files (alpaca JSON, JSONL, ShareGPT), atomically."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from datagen.config import LANGS
from datagen.errors import InputError
from datagen.records import KEPT, Status
from datagen import storage
from datagen.storage import queries

FORMATS = ("alpaca", "jsonl", "sharegpt")
# --status: which reviewed states make a training record.
STATUSES = {"accepted": KEPT, "approved": (Status.approved.value,)}

# What models and seed files write for "no input"; training files want an empty string.
NOINPUT = {"<noinput>", "<no input>", "noinput", "no input", "<无输入>", "无输入", "n/a", "none", "(none)", "null", "-"}


class ExportError(InputError):
    pass


def clean_input(text: str) -> str:
    t = text.strip()
    return "" if t.lower() in NOINPUT else t


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
        raise ExportError(f"output directory does not exist: {path.parent}")
    if path.is_dir():
        raise ExportError(f"{path} is a directory: give a file name")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise ExportError(f"cannot write in {path.parent}: {exc.strerror}") from None
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


def selection(engine, *, run: str | None = None, status: str = "accepted", lang: str | None = None,
              chosen: str | None = None, min_scores: tuple[str, ...] = ()) -> queries.SampleFilter:
    """The CLI's options as the filter the API uses; every value checked before anything is written."""
    if status not in STATUSES:
        raise ExportError(f"unknown status {status!r}: use {', '.join(STATUSES)}")
    if lang is not None and lang not in LANGS:
        raise ExportError(f"unknown language {lang!r}: use {', '.join(LANGS)}")
    run_id = None
    if run is not None:
        found = storage.get_run(engine, run)
        if found is None:
            raise ExportError(f"no run named {run!r}")
        run_id = found.id
    f = queries.SampleFilter(run_id=run_id, lang=lang, status=list(STATUSES[status]))
    if chosen is not None or min_scores:  # --selection NAME, --min-score KEY=VALUE (datagen/scores/)
        from datagen.scores.keys import score_filter

        score_filter(engine, f, chosen, min_scores)
    return f


def _sharegpt(rec: dict) -> dict:
    prompt = rec["instruction"] + (f"\n\n{rec['input']}" if rec["input"] else "")
    return {"conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": rec["output"]}]}


def lines(engine, f: queries.SampleFilter, fmt: str = "alpaca") -> Iterator[str]:
    """One JSON text per record: a record per instance of each matching sample, in id order."""
    for sample, instances in queries.iter_samples(engine, f):
        for inst in instances:
            rec = {"instruction": sample["instruction"].strip(), "input": clean_input(inst.input), "output": inst.output.strip()}
            yield json.dumps(_sharegpt(rec) if fmt == "sharegpt" else rec, ensure_ascii=False)


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


def export(engine, out: str | Path, *, fmt: str = "alpaca", run=None, status="accepted", lang=None, chosen=None, min_scores=()) -> int:
    """Write the selection to `out` atomically; returns the number of records."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: use {', '.join(FORMATS)}")
    f = selection(engine, run=run, status=status, lang=lang, chosen=chosen, min_scores=tuple(min_scores))
    count = 0

    def counted() -> Iterator[str]:
        nonlocal count
        for r in lines(engine, f, fmt):
            count += 1
            yield r

    atomic_write(Path(out), lambda fh: fh.writelines(render(counted(), fmt)))
    return count
