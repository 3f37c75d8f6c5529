"""Engine set-up: SQLite (WAL) by default, any SQLAlchemy URL otherwise."""

from __future__ import annotations

import functools
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, SQLAlchemyError
from sqlmodel import Session, create_engine

from datagen.config import IDLE_TX_TIMEOUT, db_wait
from datagen.errors import DatabaseGone, StorageError
from datagen.storage import models  # noqa: F401  (registers the tables)
from datagen.storage.url import resolve_url

# Postgres SQLSTATEs of a server that is away for now: connection exceptions (class 08), shut down
# by an administrator or a crash, starting up or shutting down.
_AWAY = ("57P01", "57P02", "57P03")


def _gone(ctx) -> bool:
    if ctx.is_disconnect:
        return True
    if ctx.engine is not None and ctx.engine.dialect.name == "sqlite":
        return False
    state = getattr(ctx.original_exception, "sqlstate", "")
    return state is None or str(state).startswith("08") or state in _AWAY  # None: no server answered at all


class _Outage:
    """When the database went away, shared by every waiting call so they give up together."""

    lock = threading.Lock()
    since: float | None = None


def outlasting(fn):
    """A run's database call that waits out a restart: DatabaseGone is retried with backoff until the
    database is back or DB_WAIT (DATAGEN_DB_WAIT) seconds have passed since it went away, then raised."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        delay = 0.25
        while True:
            try:
                result = fn(*args, **kwargs)
            except DatabaseGone as exc:
                now = time.monotonic()
                with _Outage.lock:
                    if _Outage.since is None:
                        _Outage.since = now
                        print(f"database unavailable ({exc}); waiting up to {db_wait():g} s for it to come back",
                              file=sys.stderr, flush=True)
                    since = _Outage.since
                if now - since >= db_wait():
                    raise DatabaseGone(f"{exc} (waited {now - since:.0f} s for it)") from exc
                time.sleep(min(delay, max(0.05, since + db_wait() - now)))
                delay = min(delay * 2, 2.0)
                continue
            if _Outage.since is not None:
                with _Outage.lock:
                    if _Outage.since is not None:
                        print(f"database back after {time.monotonic() - _Outage.since:.0f} s", file=sys.stderr, flush=True)
                        _Outage.since = None
            return result

    return call


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the dashboard read while a run writes; NORMAL sync is durable across process crashes.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def _pg_session(dbapi_conn, _record) -> None:
    with dbapi_conn.cursor() as cur:
        cur.execute(f"SET idle_in_transaction_session_timeout = {int(IDLE_TX_TIMEOUT * 1000)}")
    dbapi_conn.commit()


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
    else:  # a pooled connection left from before a server restart is replaced, not used and failed
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(url, **kwargs)
    except (ArgumentError, ImportError, SQLAlchemyError) as exc:
        raise StorageError(f"cannot use database URL {parsed.render_as_string(hide_password=True)}: {exc}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    elif engine.dialect.name == "postgresql":
        event.listen(engine, "connect", _pg_session)
    shown = parsed.render_as_string(hide_password=True)

    def _user_facing(ctx) -> None:
        # A database that is down, locked, read-only or full is the user's to fix: one line with
        # the URL. Integrity errors stay as they are (callers turn them into duplicates/conflicts).
        if ctx.is_pre_ping:  # the pool's own check of a pooled connection: it reconnects by itself
            return
        if isinstance(ctx.sqlalchemy_exception, OperationalError) or ctx.is_disconnect:
            orig = ctx.original_exception
            kind = DatabaseGone if _gone(ctx) else StorageError
            raise kind(f"database {shown}: {(str(orig).strip().splitlines() or [type(orig).__name__])[0]}") from orig

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


def ping(engine: Engine) -> None:
    """A cheap round trip (SELECT 1); StorageError with one line when the database cannot answer."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except StorageError:
        raise
    except SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None) or exc
        shown = engine.url.render_as_string(hide_password=True)
        raise StorageError(f"database {shown}: {(str(orig).strip().splitlines() or [type(orig).__name__])[0]}") from None
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
