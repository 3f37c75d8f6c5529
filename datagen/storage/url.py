"""Which database a command means: the --db value, else DATAGEN_DATABASE_URL, else datagen.db here.

Free of SQLAlchemy, like migrate.quick_head, so `datagen runs` can find and read a SQLite file without it.
"""

from __future__ import annotations

from datagen.config import env
from datagen.errors import InputError

DEFAULT_URL = "sqlite:///datagen.db"
_SQLITE = "sqlite:///"


def resolve_url(url: str | None) -> str:
    """None means the environment's URL or the default; an empty or blank one is a mistake, never the default."""
    if url is not None and not url.strip():
        raise InputError("empty database URL (--db ''): give a SQLite path or a SQLAlchemy URL")
    url = url or env("database_url") or DEFAULT_URL
    if "://" not in url:  # a bare path means a SQLite file
        url = f"{_SQLITE}{url}"
    return url


def sqlite_file(url: str) -> str | None:
    """The file of a plain SQLite URL (no driver, no query string); None for anything else."""
    if not url.startswith(_SQLITE) or "?" in url:
        return None
    path = url[len(_SQLITE):]
    return path if path and path != ":memory:" else None
