"""Full-text search over instructions and instances.

SQLite: an FTS5 table with the trigram tokenizer, so substring search works for Chinese
(which has no spaces for a word tokenizer to split on) as well as English. It is an
external-content table kept in step by triggers, so the text is stored once (created by the
first migration, datagen/storage/migrations/versions/0001_initial.py).
Other databases: a case-insensitive LIKE, which Postgres serves from a pg_trgm index when present.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Engine

# --- Queries -----------------------------------------------------------------------------------

MAX_TERMS = 8
_TRIGRAM = 3  # the trigram tokenizer cannot match a term shorter than this; those use LIKE


def terms(q: str | None) -> list[str]:
    """Whitespace-separated search terms, each matched as a case-insensitive substring (AND)."""
    return [t for t in (q or "").split() if t][:MAX_TERMS]


def fts_expression(words: list[str]) -> str:
    """An FTS5 query: every term a quoted phrase, so user text never reaches FTS5's syntax."""
    return " ".join('"' + w.replace('"', '""') + '"' for w in words)


def _like_pattern(word: str) -> str:
    return "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def use_fts(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def search_split(engine: Engine, q: str | None) -> tuple[str | None, list[str]]:
    """(FTS5 expression for the terms the index can answer, the terms that need a LIKE)."""
    words = terms(q)
    if not use_fts(engine):
        return None, words
    long = [w for w in words if len(w) >= _TRIGRAM]
    short = [w for w in words if len(w) < _TRIGRAM]
    return (fts_expression(long) if long else None), short


def fts_table():
    from sqlalchemy import column, table

    return table("sample_fts", column("rowid"))


def fts_match(expr: str):
    """The MATCH condition, for a query that joins sample_fts."""
    return text("sample_fts MATCH :fts_expr").bindparams(fts_expr=expr)


def fts_rowids(expr: str):
    """SELECT rowid FROM sample_fts WHERE sample_fts MATCH :expr, as a selectable."""
    from sqlalchemy import select

    return select(fts_table().c.rowid).where(fts_match(expr))


def like_clauses(column_, words: list[str], dialect: str):
    """Case-insensitive substring conditions: ILIKE on Postgres, LIKE elsewhere (ASCII case-folded in SQLite)."""
    out = []
    for w in words:
        pat = _like_pattern(w)
        out.append(column_.ilike(pat, escape="\\") if dialect == "postgresql" else column_.like(pat, escape="\\"))
    return out
