"""`datagen export`, `dedup`, `seeds ...`: thin shells over datagen.export, datagen.dedup, datagen.seeds."""

from __future__ import annotations

from pathlib import Path

import typer

from datagen.cli.options import declared
from datagen.config import DEDUP_PARAMS, EXPORT_PARAMS

seeds_app = typer.Typer(no_args_is_help=True, help="Inspect seed task pools.")


@declared(*EXPORT_PARAMS)
def export(out, fmt, run, status, lang, db) -> None:
    """Write kept samples as training data (one record per instance), atomically."""
    from datagen import storage
    from datagen.export import export as do_export

    n = do_export(storage.connect(db, create=False), out, fmt=fmt, run=run, status=status, lang=lang)
    print(f"wrote {n} records to {out}")


@declared(*DEDUP_PARAMS)
def dedup(input, lang, threshold, against, field, out, rejected) -> None:  # noqa: A002
    """Drop ROUGE-L near-duplicates, exactly as Alpaca's filter decides, in input order."""
    from datagen.dedup import dedup_file

    print(dedup_file(input, lang=lang, threshold=threshold, against=against, field=field, out=out, rejected=rejected).line())


@seeds_app.command("validate")
def seeds_validate(path: Path = typer.Argument(..., help="Seed file: JSON Lines or a JSON array.")) -> None:
    """Check a seed file and print its counts."""
    from datagen.seeds import load_seeds, summarize

    print(summarize(load_seeds(path)).line())
