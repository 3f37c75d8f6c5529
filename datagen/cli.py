"""Command line: a thin shell over the library. Each command parses options and calls one function."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Self-instruct data: generate, curate, export.")


# --- serve: the review API and dashboard (code in api/) ----------------------------------------


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="address to listen on; anything but loopback needs DATAGEN_API_TOKEN"),
    port: int = typer.Option(8000, help="TCP port"),
    db: str = typer.Option(None, "--db", help="database URL or SQLite path (default: DATAGEN_DATABASE_URL or datagen.db)"),
) -> None:
    """Serve the review dashboard and REST API over the project database."""
    from api.main import serve as run_server

    run_server(host=host, port=port, db=db)


def main() -> None:
    app()
