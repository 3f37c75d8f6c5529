"""Writing kept samples out as training files (alpaca JSON, JSONL, ShareGPT), atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from datagen import storage
from datagen.errors import InputError

FORMATS = ("alpaca", "jsonl", "sharegpt")
STATUSES = {"accepted": ("accepted", "approved"), "approved": ("approved",), "all": ("accepted", "approved")}

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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
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


def records(engine, *, run=None, status="accepted", lang=None, sample_ids=None):
    """Yield one alpaca record per instance, plus the sample it came from."""
    if status not in STATUSES:
        raise ExportError(f"unknown status {status!r}: use {', '.join(STATUSES)}")
    for sample, instances in storage.iter_samples(engine, run=run, statuses=STATUSES[status], lang=lang, sample_ids=sample_ids):
        for inst in instances:
            yield sample, {"instruction": sample.instruction.strip(), "input": clean_input(inst.input), "output": inst.output.strip()}


def _sharegpt(rec: dict) -> dict:
    prompt = rec["instruction"] + (f"\n\n{rec['input']}" if rec["input"] else "")
    return {"conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": rec["output"]}]}


def export(engine, out: str | Path, *, fmt: str = "alpaca", run=None, status="accepted", lang=None, sample_ids=None) -> int:
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: use {', '.join(FORMATS)}")
    if run is not None and storage.get_run(engine, run) is None:
        raise ExportError(f"no run named {run!r}")
    count = 0

    def write(f) -> None:
        nonlocal count
        if fmt == "alpaca":
            f.write("[")
        for _, rec in records(engine, run=run, status=status, lang=lang, sample_ids=sample_ids):
            if fmt == "sharegpt":
                rec = _sharegpt(rec)
            line = json.dumps(rec, ensure_ascii=False)
            if fmt == "alpaca":
                f.write(("\n  " if count == 0 else ",\n  ") + line)
            else:
                f.write(line + "\n")
            count += 1
        if fmt == "alpaca":
            f.write("\n]\n")

    atomic_write(Path(out), write)
    return count
