"""Full-text search over instructions and their instances (inputs and outputs).

SQLite: an FTS5 table with the trigram tokenizer, so substring search works for Chinese
(which has no spaces for a word tokenizer to split on) as well as English. One row per
sample (rowid = sample id) with two columns, the instruction and the sample's instances
joined, kept in step by triggers on both tables; a term matches in either column.
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
# Fills sample_fts from the tables: after a bulk load without triggers, or from the old layout.
POPULATE = (
    "INSERT INTO sample_fts(rowid, instruction, instances) SELECT s.id, s.instruction, "
    + _INSTANCES_TEXT.format(sid="s.id")
    + " FROM sample s"
)
_REFRESH_INSTANCES = "UPDATE sample_fts SET instances = " + _INSTANCES_TEXT + " WHERE rowid = {sid};"
_SQLITE_DDL = [
    # Its own copy of the text (not external content): instance text lives in another table.
    "CREATE VIRTUAL TABLE IF NOT EXISTS sample_fts USING fts5(instruction, instances, tokenize='trigram')",
    """CREATE TRIGGER IF NOT EXISTS sample_fts_ai AFTER INSERT ON sample BEGIN
           INSERT INTO sample_fts(rowid, instruction, instances) VALUES (new.id, new.instruction, '');
       END""",
    """CREATE TRIGGER IF NOT EXISTS sample_fts_ad AFTER DELETE ON sample BEGIN
           DELETE FROM sample_fts WHERE rowid = old.id;
       END""",
    """CREATE TRIGGER IF NOT EXISTS sample_fts_au AFTER UPDATE OF instruction ON sample BEGIN
           UPDATE sample_fts SET instruction = new.instruction WHERE rowid = new.id;
       END""",
    f"""CREATE TRIGGER IF NOT EXISTS sample_fts_inst_ai AFTER INSERT ON instance BEGIN
           {_REFRESH_INSTANCES.format(sid="new.sample_id")}
       END""",
    f"""CREATE TRIGGER IF NOT EXISTS sample_fts_inst_ad AFTER DELETE ON instance BEGIN
           {_REFRESH_INSTANCES.format(sid="old.sample_id")}
       END""",
    f"""CREATE TRIGGER IF NOT EXISTS sample_fts_inst_au AFTER UPDATE ON instance BEGIN
           {_REFRESH_INSTANCES.format(sid="old.sample_id")}
           {_REFRESH_INSTANCES.format(sid="new.sample_id")}
       END""",
]
_OLD_TRIGGERS = ("sample_fts_ai", "sample_fts_ad", "sample_fts_au")


def install(engine: Engine) -> None:
    if engine.dialect.name != "sqlite":
        return
    with engine.begin() as conn:
        old = conn.execute(text("SELECT sql FROM sqlite_master WHERE type='table' AND name='sample_fts'")).scalar()
        rebuild = old is None or "instances" not in old
        if old is not None and rebuild:
            # The instruction-only index of earlier versions: replace it (one pass over the data).
            for name in _OLD_TRIGGERS:
                conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
            conn.execute(text("DROP TABLE sample_fts"))
        for ddl in _SQLITE_DDL:
            conn.execute(text(ddl))
        if rebuild:
            conn.execute(text(POPULATE))


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
