"""`datagen export`, `dedup`, `seeds ...`: thin shells over datagen.export, datagen.dedup, datagen.seeds."""

from __future__ import annotations

from pathlib import Path

import typer

from datagen.cli.options import declared
from datagen.config import DEDUP_PARAMS, EXPORT_PARAMS
from datagen.errors import InputError

seeds_app = typer.Typer(no_args_is_help=True, help="Inspect seed task pools.")


@declared(*EXPORT_PARAMS)
def export(out, fmt, kind, layout, name, push_to_hub, run, status, lang, chosen, min_score, db) -> None:
    """Write kept samples as training data (one record per instance), or reviewers' decisions as preference data, atomically."""
    from datagen import storage
    from datagen.export import DEFAULT_STATUS, Selection, hub, write

    if push_to_hub is not None:
        hub.check_repo_id(push_to_hub)
        if fmt != "hf":
            raise InputError("--push-to-hub needs --format hf")
    sel = Selection(run=run, status=status or DEFAULT_STATUS.get(kind, "accepted"), lang=lang, chosen=chosen, min_scores=tuple(min_score))
    res = write(storage.connect(db, create=False), out, sel, fmt=fmt, kind=kind, layout=layout, name=name)
    print(f"wrote {res.rows} records to {out}")
    if res.train_line:
        print(f"train with: {res.train_line}")
    if push_to_hub is not None:
        print(f"pushed to {hub.push(out, push_to_hub)}")


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
