"""Schema migrations (Alembic; scripts in datagen/storage/migrations/, shipped in the package).

Every command that opens a database upgrades it to the newest revision (`ensure_current`), once
per process, serialised across processes: on Postgres by an advisory lock held for the upgrade
transaction, on SQLite by BEGIN IMMEDIATE (the database's one write lock). A database from before
migrations (tables, no `alembic_version`) goes through the first revision, whose statements are
all IF NOT EXISTS, and is stamped: nothing is recreated.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from datagen.errors import StorageError

MIGRATIONS = Path(__file__).parent / "migrations"
_PG_LOCK = 0x64617467  # "datg": the advisory lock key every datagen migrator takes


if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection, Engine

# Alembic is imported only when a database is not at the head already: a command that finds its
# database current (the common case) starts without it. SQLAlchemy is imported by the functions
# that use it, so quick_head serves `datagen runs`, which reads SQLite without SQLAlchemy.


def _config(conn: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def head() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def quick_head() -> str | None:
    """The head read from the revision scripts' own `revision`/`down_revision` lines, without alembic;
    None when that is not one plain chain (alembic decides then)."""
    revs, downs = set(), set()
    for script in (MIGRATIONS / "versions").glob("[!_]*.py"):
        src = script.read_text()
        rev = re.search(r'^revision\s*=\s*"([^"]+)"', src, re.M)
        down = re.search(r'^down_revision\s*=\s*(None|"([^"]+)")\s*$', src, re.M)
        if not rev or not down:
            return None
        revs.add(rev.group(1))
        downs.add(down.group(2))
    heads = revs - downs
    return heads.pop() if len(heads) == 1 else None


def current(engine: Engine) -> str | None:
    """The revision the database is at; None for an empty or pre-migration database.

    A revision this datagen does not know (a newer datagen migrated the database) is a StorageError.
    """
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return _known(MigrationContext.configure(conn).get_current_revision())


def _known(rev: str | None) -> str | None:
    from alembic.script import ScriptDirectory

    if rev is not None and rev not in {r.revision for r in ScriptDirectory.from_config(_config()).walk_revisions()}:
        raise StorageError(f"database is at revision {rev}, newer than this datagen (head {head()}): upgrade datagen")
    return rev


def _stored_revision(engine: Engine) -> str | None:
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    except (SQLAlchemyError, StorageError):  # no alembic_version table yet: alembic decides
        return None
    return rows[0][0] if len(rows) == 1 else None


@contextmanager
def _locked(engine: Engine):
    """A connection inside a transaction that no other migrator can share."""
    from sqlalchemy import create_engine, event, text

    if engine.dialect.name == "sqlite":
        # pysqlite opens transactions lazily and never before DDL; take the write lock up front.
        mig = create_engine(engine.url, connect_args={"timeout": 60})

        @event.listens_for(mig, "connect")
        def _autocommit_driver(dbapi_conn, _rec):
            dbapi_conn.isolation_level = None

        @event.listens_for(mig, "begin")
        def _begin_immediate(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        try:
            with mig.begin() as conn:
                yield conn
        finally:
            mig.dispose()
    else:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
            yield conn


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade in one transaction; return (revision before, revision after)."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    with _locked(engine) as conn:
        before = _known(MigrationContext.configure(conn).get_current_revision())
        command.upgrade(_config(conn), revision)
        after = MigrationContext.configure(conn).get_current_revision()
    return before, after


def ensure_current(engine: Engine) -> None:
    """Upgrade to head unless already there (a read, no lock, in the common case)."""
    quick = quick_head()
    if quick is not None and _stored_revision(engine) == quick:
        return
    if current(engine) != head():  # current() refuses a revision newer than this datagen knows
        upgrade(engine)
