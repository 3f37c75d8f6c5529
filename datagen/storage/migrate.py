"""Schema migrations (Alembic; scripts in datagen/storage/migrations/, shipped in the package).

Every command that opens a database upgrades it to the newest revision (`ensure_current`), once
per process, serialised across processes: on Postgres by an advisory lock held for the upgrade
transaction, on SQLite by BEGIN IMMEDIATE (the database's one write lock). A database from before
migrations (tables, no `alembic_version`) goes through the first revision, whose statements are
all IF NOT EXISTS, and is stamped: nothing is recreated.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine

from datagen.errors import StorageError

MIGRATIONS = Path(__file__).parent / "migrations"
_PG_LOCK = 0x64617467  # "datg": the advisory lock key every datagen migrator takes


def _config(conn: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def head() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current(engine: Engine) -> str | None:
    """The revision the database is at; None for an empty or pre-migration database.

    A revision this datagen does not know (a newer datagen migrated the database) is a StorageError.
    """
    with engine.connect() as conn:
        return _known(MigrationContext.configure(conn).get_current_revision())


def _known(rev: str | None) -> str | None:
    if rev is not None and rev not in {r.revision for r in ScriptDirectory.from_config(_config()).walk_revisions()}:
        raise StorageError(f"database is at revision {rev}, newer than this datagen (head {head()}): upgrade datagen")
    return rev


@contextmanager
def _locked(engine: Engine):
    """A connection inside a transaction that no other migrator can share."""
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
    with _locked(engine) as conn:
        before = _known(MigrationContext.configure(conn).get_current_revision())
        command.upgrade(_config(conn), revision)
        after = MigrationContext.configure(conn).get_current_revision()
    return before, after


def ensure_current(engine: Engine) -> None:
    """Upgrade to head unless already there (a read, no lock, in the common case)."""
    if current(engine) != head():
        upgrade(engine)
