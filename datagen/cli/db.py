"""`datagen db ...`: schema migrations by hand (every other command upgrades on open as well)."""

from __future__ import annotations

from typing import Optional

import typer

from datagen.cli.options import DB

db_app = typer.Typer(no_args_is_help=True, help="Database schema: upgrade, current revision.")


@db_app.command("upgrade")
def upgrade(db: Optional[str] = DB, revision: str = typer.Option("head", "--revision", help="Target revision.")) -> None:
    """Create the database or bring it to the newest schema (a pre-migration database is stamped)."""
    from datagen.storage import migrate
    from datagen.storage.db import open_engine

    before, after = migrate.upgrade(open_engine(db), revision)
    print(f"database at {after} (was {before or 'empty or pre-migration'})")


@db_app.command("current")
def current(db: Optional[str] = DB) -> None:
    """Print the database's revision and the newest this datagen knows."""
    from datagen.storage import migrate
    from datagen.storage.db import open_engine

    rev = migrate.current(open_engine(db, create=False))
    head = migrate.head()
    print(f"current={rev or 'none'} head={head}" + ("" if rev == head else "  (datagen db upgrade brings it to head)"))
