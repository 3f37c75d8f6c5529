"""`datagen report`: the report card of a run, or of two runs side by side."""

from __future__ import annotations

from typing import Optional

import typer

from datagen.cli.options import DB
from datagen.errors import InputError


def report(
    run: str = typer.Option(..., "--run", help="The run to report on."),
    vs: Optional[str] = typer.Option(None, "--vs", help="Another run of the same language to compare against."),
    out: Optional[str] = typer.Option(None, "--out", help="Write the report as one self-contained HTML file."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Write the figures as JSON (for scripts and CI)."),
    db: Optional[str] = DB,
) -> None:
    """Funnel, diversity, similarity, lengths and scores of a run as HTML and/or JSON."""
    if out is None and json_out is None:
        raise InputError("nothing to write: give --out FILE.html and/or --json FILE.json")
    from datagen import storage
    from datagen.report import write_report

    engine = storage.connect(db, create=False)
    rep = write_report(engine, run, out=out, json_out=json_out, vs=vs)
    f = rep["run"]["funnel"]
    print(f"report: run {run!r}: {f['kept']:,} kept of {f['generated']:,} generated" + (f" vs {vs!r}" if vs else "")
          + "".join(f"; wrote {p}" for p in (out, json_out) if p))
