"""Full-text search over instructions and instances.

SQLite: an FTS5 table with the trigram tokenizer, so substring search works for Chinese
(which has no spaces for a word tokenizer to split on) as well as English. It is an
external-content table kept in step by triggers, so the text is stored once.
Other databases: a case-insensitive LIKE, which Postgres serves from a pg_trgm index when present.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Engine

_SQLITE_DDL = [
    """CREATE VIRTUAL TABLE IF NOT EXISTS sample_fts USING fts5(
           instruction, content='sample', content_rowid='id', tokenize='trigram')""",
    """CREATE TRIGGER IF NOT EXISTS sample_fts_ai AFTER INSERT ON sample BEGIN
           INSERT INTO sample_fts(rowid, instruction) VALUES (new.id, new.instruction);
       END""",
    """CREATE TRIGGER IF NOT EXISTS sample_fts_ad AFTER DELETE ON sample BEGIN
           INSERT INTO sample_fts(sample_fts, rowid, instruction) VALUES ('delete', old.id, old.instruction);
       END""",
    """CREATE TRIGGER IF NOT EXISTS sample_fts_au AFTER UPDATE OF instruction ON sample BEGIN
           INSERT INTO sample_fts(sample_fts, rowid, instruction) VALUES ('delete', old.id, old.instruction);
           INSERT INTO sample_fts(rowid, instruction) VALUES (new.id, new.instruction);
       END""",
]


def install(engine: Engine) -> None:
    if engine.dialect.name != "sqlite":
        return
    with engine.begin() as conn:
        for ddl in _SQLITE_DDL:
            conn.execute(text(ddl))
