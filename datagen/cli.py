"""Command line: a thin shell over the library. Each command parses options and calls one function."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Self-instruct data: generate, curate, export.")


def main() -> None:
    app()
