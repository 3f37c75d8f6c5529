"""Full-text search over instructions and their instances (inputs and outputs).

SQLite: an FTS5 table with the trigram tokenizer, so substring search works for Chinese
(which has no spaces for a word tokenizer to split on) as well as English. One row per
sample (rowid = sample id) with two columns, the instruction and the sample's instances
joined, kept in step by triggers on both tables; a term matches in either column. The table
and triggers are made by the migrations (0001, then 0006 for the instances column).
Other databases: a case-insensitive LIKE on the instruction or any instance, which Postgres
serves from pg_trgm indexes when present.
"""

from __future__ import annotations

from sqlalchemy import exists, or_, select, text
from sqlalchemy.engine import Engine

from datagen.storage.models import InstanceRow, Sample

_INSTANCES_TEXT = (
    "coalesce((SELECT group_concat(input || char(10) || output, char(10)) FROM instance WHERE sample_id = {sid}), '')"
)
# Fills sample_fts from the tables after a bulk load without triggers (bench/api.py). The table
# itself and its triggers are revision 0006's.
POPULATE = (
    "INSERT INTO sample_fts(rowid, instruction, instances) SELECT s.id, s.instruction, "
    + _INSTANCES_TEXT.format(sid="s.id")
    + " FROM sample s"
)

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
    return select(fts_table().c.rowid).where(fts_match(expr))


def like_clauses(words: list[str], dialect: str):
    """Per word: the instruction or one of the sample's instances contains it, case-insensitively
    (ILIKE on Postgres, LIKE elsewhere: ASCII case-folded in SQLite)."""

    def like(col, pat):
        return col.ilike(pat, escape="\\") if dialect == "postgresql" else col.like(pat, escape="\\")

    out = []
    for w in words:
        pat = _like_pattern(w)
        in_instances = exists().where(InstanceRow.sample_id == Sample.id, or_(like(InstanceRow.input, pat), like(InstanceRow.output, pat)))
        out.append(or_(like(Sample.instruction, pat), in_instances))
    return out
