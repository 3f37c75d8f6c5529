"""Engine set-up: SQLite (WAL) by default, any SQLAlchemy URL otherwise."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, SQLAlchemyError
from sqlmodel import Session, create_engine

from datagen.config import env
from datagen.errors import Unavailable
from datagen.storage import models  # noqa: F401  (registers the tables)

DEFAULT_URL = "sqlite:///datagen.db"


class StorageError(Unavailable):
    """A database problem worth one clear line to the user."""


def resolve_url(url: str | None) -> str:
    url = url or env("database_url") or DEFAULT_URL
    if "://" not in url:  # a bare path means a SQLite file
        url = f"sqlite:///{url}"
    return url


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the dashboard read while a run writes; NORMAL sync is durable across process crashes.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


_engines: dict[str, Engine] = {}


def open_engine(url: str | None = None, create: bool = True) -> Engine:
    """An engine for the URL, checked but not migrated (`datagen db` works on it)."""
    url = resolve_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StorageError(f"bad database URL: {url!r}") from None
    kwargs: dict = {}
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:":
            parent = Path(db).expanduser().resolve().parent
            if not parent.is_dir():
                raise StorageError(f"database directory does not exist: {parent}")
            if not create and not Path(db).exists():
                raise StorageError(f"no database at {db}")
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    try:
        engine = create_engine(url, **kwargs)
    except (ArgumentError, ImportError, SQLAlchemyError) as exc:
        raise StorageError(f"cannot use database URL {parsed.render_as_string(hide_password=True)}: {exc}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    shown = parsed.render_as_string(hide_password=True)

    def _user_facing(ctx) -> None:
        # A database that is down, locked, read-only or full is the user's to fix: one line with
        # the URL. Integrity errors stay as they are (callers turn them into duplicates/conflicts).
        if isinstance(ctx.sqlalchemy_exception, OperationalError):
            orig = ctx.original_exception
            raise StorageError(f"database {shown}: {(str(orig).strip().splitlines() or [type(orig).__name__])[0]}") from orig

    event.listen(engine, "handle_error", _user_facing)
    return engine


def connect(url: str | None = None, create: bool = True) -> Engine:
    """Open (and on first use create) the database, upgraded to the newest schema; raise StorageError with one line on failure."""
    url = resolve_url(url)
    if url in _engines:
        return _engines[url]
    engine = open_engine(url, create)
    try:
        from datagen.storage import migrate

        migrate.ensure_current(engine)
    except OperationalError as exc:
        msg = str(exc.orig).splitlines()[0] if exc.orig else str(exc)
        raise StorageError(f"cannot open database {engine.url.render_as_string(hide_password=True)}: {msg}") from None
    _engines[url] = engine
    return engine


def added(s: Session, row, *, commit: bool = False) -> bool:
    """Add one row and flush (or commit) it; False, rolled back, when a unique constraint refuses it."""
    s.add(row)
    try:
        s.commit() if commit else s.flush()
    except IntegrityError:
        s.rollback()
        return False
    return True


def dispose_all() -> None:
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()
