"""Command line: a thin shell over the library. Each command parses options and calls one function."""

from __future__ import annotations

import sys
from typing import Optional

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Self-instruct data: generate, curate, export.")


def main() -> None:
    app()


# ---- dedup: exact ROUGE-L near-duplicate filter (branch: similarity) -------------------
@app.callback()
def _commands() -> None:
    """Self-instruct data: generate, curate, export."""
    # Keeps `datagen dedup ...` a subcommand even while it is the only command (Typer
    # otherwise promotes a lone command to the top level); harmless next to others.


@app.command()
def dedup(
    input: str = typer.Argument(..., help="Candidates: .txt (a line each), .jsonl or .json (records with --field)."),  # noqa: A002
    lang: str = typer.Option("auto", "--lang", help="en | zh | auto (zh for texts with Han characters)"),
    threshold: float = typer.Option(0.7, "--threshold", help="Reject when ROUGE-L F against anything kept is above this."),
    against: Optional[str] = typer.Option(None, "--against", help="Existing instructions (same formats) to dedup against."),
    field: str = typer.Option("instruction", "--field", help="Record field holding the text (json/jsonl)."),
    out: Optional[str] = typer.Option(None, "--out", help="Kept records [default: INPUT stem + .kept.jsonl]"),
    rejected: Optional[str] = typer.Option(None, "--rejected", help="Write rejected records with nearest text and score (JSONL)."),
) -> None:
    """Drop ROUGE-L near-duplicates, exactly as Alpaca's filter decides, in input order."""
    from datagen.dedup import DedupError, dedup_file

    try:
        stats = dedup_file(input, lang=lang, threshold=threshold, against=against, field=field, out=out, rejected=rejected)
    except (DedupError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(1) from None
    print(stats.line())
# ---- end dedup --------------------------------------------------------------------------
