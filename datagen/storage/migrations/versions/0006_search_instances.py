"""search over instances: sample_fts holds the instruction and the sample's inputs and outputs.

The first layout indexed the instruction only (external content over `sample`). Reviewers search
inputs and outputs too, and that text lives in `instance`, so the table now keeps its own copy in
two columns, kept in step by triggers on both tables, and is refilled once here. SQLite only:
Postgres searches with ILIKE over both tables.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

INSTANCES_TEXT = "coalesce((SELECT group_concat(input || char(10) || output, char(10)) FROM instance WHERE sample_id = {sid}), '')"
REFRESH = "UPDATE sample_fts SET instances = " + INSTANCES_TEXT + " WHERE rowid = {sid};"

DDL = [
    "DROP TRIGGER IF EXISTS sample_fts_ai",
    "DROP TRIGGER IF EXISTS sample_fts_ad",
    "DROP TRIGGER IF EXISTS sample_fts_au",
    "DROP TABLE IF EXISTS sample_fts",
    "CREATE VIRTUAL TABLE sample_fts USING fts5(instruction, instances, tokenize='trigram')",
    """CREATE TRIGGER sample_fts_ai AFTER INSERT ON sample BEGIN
           INSERT INTO sample_fts(rowid, instruction, instances) VALUES (new.id, new.instruction, '');
       END""",
    """CREATE TRIGGER sample_fts_ad AFTER DELETE ON sample BEGIN
           DELETE FROM sample_fts WHERE rowid = old.id;
       END""",
    """CREATE TRIGGER sample_fts_au AFTER UPDATE OF instruction ON sample BEGIN
           UPDATE sample_fts SET instruction = new.instruction WHERE rowid = new.id;
       END""",
    f"""CREATE TRIGGER sample_fts_inst_ai AFTER INSERT ON instance BEGIN
           {REFRESH.format(sid="new.sample_id")}
       END""",
    f"""CREATE TRIGGER sample_fts_inst_ad AFTER DELETE ON instance BEGIN
           {REFRESH.format(sid="old.sample_id")}
       END""",
    f"""CREATE TRIGGER sample_fts_inst_au AFTER UPDATE ON instance BEGIN
           {REFRESH.format(sid="old.sample_id")}
           {REFRESH.format(sid="new.sample_id")}
       END""",
    "INSERT INTO sample_fts(rowid, instruction, instances) SELECT s.id, s.instruction, " + INSTANCES_TEXT.format(sid="s.id") + " FROM sample s",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for ddl in DDL:
            op.execute(ddl)


def downgrade() -> None:
    raise NotImplementedError("restore a backup to go back to the instruction-only index")
