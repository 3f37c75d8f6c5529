"""batch, and the request columns batch mode needs (issue 12).

A `batch` row is written (`submitting`, with a fresh `key`) before the provider's batch exists, so
a crash between creating it and recording it is reconciled by the key in the batch's metadata.
Requests gain `batch_id` (the batch carrying the line; the line's custom_id is the request id),
`sample_id` (the candidate a classify or instances request works for) and `body` (the request
body, kept so a retry or a re-upload sends the same bytes). Existing rows are online requests.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("provider_id", sa.String(), nullable=True),
        sa.Column("endpoint", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("stage", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("ingested", sa.Boolean(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("completed", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("input_file_id", sa.String(), nullable=True),
        sa.Column("output_file_id", sa.String(), nullable=True),
        sa.Column("error_file_id", sa.String(), nullable=True),
        sa.Column("tokens_est", sa.Integer(), nullable=False),
        sa.Column("cost_est", sa.Float(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("errors", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_batch_run_id", "batch", ["run_id"])
    op.create_index("ix_batch_key", "batch", ["key"], unique=True)
    op.create_index("ix_batch_ingested", "batch", ["ingested"])
    with op.batch_alter_table("request") as batch:
        batch.add_column(sa.Column("batch_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("sample_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("body", sa.Text(), nullable=True))
        batch.create_index("ix_request_batch_id", ["batch_id"])


def downgrade() -> None:
    with op.batch_alter_table("request") as batch:
        batch.drop_index("ix_request_batch_id")
        batch.drop_column("body")
        batch.drop_column("sample_id")
        batch.drop_column("batch_id")
    op.drop_index("ix_batch_ingested", "batch")
    op.drop_index("ix_batch_key", "batch")
    op.drop_index("ix_batch_run_id", "batch")
    op.drop_table("batch")
