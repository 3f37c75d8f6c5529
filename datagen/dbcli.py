"""`datagen db ...`: schema migrations by hand (every other command upgrades on open as well)."""

from __future__ import annotations

from typing import Optional

import typer

db_app = typer.Typer(no_args_is_help=True, help="Database schema: upgrade, current revision.")
DB = typer.Option(None, "--db", envvar="DATAGEN_DATABASE_URL", help="SQLAlchemy URL or SQLite path [default: sqlite:///datagen.db]")


def _fail(msg: str) -> None:
    from datagen.cli import fail

    fail(msg)


@db_app.command("upgrade")
def upgrade(db: Optional[str] = DB, revision: str = typer.Option("head", "--revision", help="Target revision.")) -> None:
    """Create the database or bring it to the newest schema (a pre-migration database is stamped)."""
    from sqlalchemy.exc import SQLAlchemyError

    from datagen.storage import StorageError, migrate
    from datagen.storage.db import open_engine

    try:
        engine = open_engine(db)
        before, after = migrate.upgrade(engine, revision)
    except (StorageError, SQLAlchemyError, OSError) as exc:
        _fail(str(exc).splitlines()[0])
    print(f"database at {after} (was {before or 'empty or pre-migration'})")


@db_app.command("current")
def current(db: Optional[str] = DB) -> None:
    """Print the database's revision and the newest this datagen knows."""
    from sqlalchemy.exc import SQLAlchemyError

    from datagen.storage import StorageError, migrate
    from datagen.storage.db import open_engine

    try:
        rev = migrate.current(open_engine(db, create=False))
    except (StorageError, SQLAlchemyError, OSError) as exc:
        _fail(str(exc).splitlines()[0])
    head = migrate.head()
    print(f"current={rev or 'none'} head={head}" + ("" if rev == head else "  (datagen db upgrade brings it to head)"))
