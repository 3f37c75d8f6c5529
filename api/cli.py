"""The `datagen` command: the core's commands plus `serve`. It lives here, not in datagen/, so the
dependency points from the API to the core (`python -m datagen.cli` has every command but serve)."""

from __future__ import annotations

import typer

from datagen.cli import app
from datagen.cli.options import DB
from datagen.config import SERVE_HOST, SERVE_PORT


@app.command()
def serve(
    host: str = typer.Option(SERVE_HOST, help="address to listen on; anything but loopback needs DATAGEN_API_TOKEN"),
    port: int = typer.Option(SERVE_PORT, help="TCP port"),
    db: str = DB,
    allowed_host: list[str] = typer.Option([], "--allowed-host", help="a host name browsers may use besides localhost (repeatable; also DATAGEN_ALLOWED_HOSTS)"),
) -> None:
    """Serve the review dashboard and REST API over an existing project database."""
    from api.main import serve as run_server

    run_server(host=host, port=port, db=db, allowed_hosts=tuple(allowed_host))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
