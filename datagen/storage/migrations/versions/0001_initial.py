"""The schema as it was before migrations: runs, the request ledger, samples, instances, audit, FTS.

Every statement is IF NOT EXISTS, so the same revision both creates a new database and brings a
pre-Alembic one (created by `create_all`, maybe by an older release lacking an index) to this
revision before it is stamped. The DDL is a frozen copy: later schema changes are new revisions.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

KEPT = "status IN ('pending','accepted','approved')"

FTS = [
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


def upgrade() -> None:
    op.create_table(
        "run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("lang", sa.String(), nullable=False),
        sa.Column("api", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("target", sa.Integer(), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        if_not_exists=True,
    )
    op.create_index("ix_run_name", "run", ["name"], unique=True, if_not_exists=True)

    op.create_table(
        "request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("prompt_hash", sa.String(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("tokens_in", sa.Integer(), nullable=False),
        sa.Column("tokens_out", sa.Integer(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("finish_reason", sa.String(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"]),
        sa.PrimaryKeyConstraint("id"),
        if_not_exists=True,
    )
    op.create_index("ix_request_run_id", "request", ["run_id"], if_not_exists=True)

    op.create_table(
        "sample",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("lang", sa.String(), nullable=False),
        sa.Column("instruction", sa.Text(), nullable=False),
        sa.Column("instruction_hash", sa.String(), nullable=False),
        sa.Column("is_classification", sa.Boolean(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("detail", sa.String(), nullable=True),
        sa.Column("nearest", sa.Text(), nullable=True),
        sa.Column("nearest_score", sa.Float(), nullable=True),
        sa.Column("indexed", sa.Boolean(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("review_note", sa.String(), nullable=True),
        sa.Column("reviewed_by", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["request_id"], ["request.id"]),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"]),
        sa.PrimaryKeyConstraint("id"),
        if_not_exists=True,
    )
    for name, cols in (
        ("ix_sample_run_id", ["run_id"]),
        ("ix_sample_status", ["status"]),
        ("ix_sample_reason", ["reason"]),
        ("ix_sample_nearest_score", ["nearest_score"]),
        ("ix_sample_run_status", ["run_id", "status"]),
        ("ix_sample_run_lang_status", ["run_id", "lang", "status"]),
        ("ix_sample_status_score", ["status", "nearest_score"]),
        ("ix_sample_reason_score", ["reason", "nearest_score"]),
        ("ix_sample_status_length", ["status", sa.text("length(instruction)")]),
    ):
        op.create_index(name, "sample", cols, if_not_exists=True)
    op.create_index(
        "ux_sample_kept", "sample", ["run_id", "instruction_hash"], unique=True, if_not_exists=True,
        sqlite_where=sa.text(KEPT), postgresql_where=sa.text(KEPT),
    )

    op.create_table(
        "instance",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["sample_id"], ["sample.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sample_id", "idx"),
        if_not_exists=True,
    )
    op.create_index("ix_instance_sample_id", "instance", ["sample_id"], if_not_exists=True)

    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("note", sa.String(), nullable=True),
        sa.Column("before", sa.Text(), nullable=True),
        sa.Column("after", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["sample_id"], ["sample.id"]),
        sa.PrimaryKeyConstraint("id"),
        if_not_exists=True,
    )
    op.create_index("ix_audit_sample_id", "audit", ["sample_id"], if_not_exists=True)

    if op.get_bind().dialect.name == "sqlite":
        for ddl in FTS:
            op.execute(ddl)


def downgrade() -> None:
    raise NotImplementedError("the first revision is not undone; restore a backup instead")
