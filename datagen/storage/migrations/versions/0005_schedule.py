"""schedule: cron lines that `datagen scheduler` fires into the job queue (issue 11, section 3).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedule",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("cron", sa.String(), nullable=False),
        sa.Column("tz", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("args", sa.Text(), nullable=False),
        sa.Column("queue", sa.String(), nullable=False),
        sa.Column("misfire", sa.String(), nullable=False),
        sa.Column("overlap", sa.String(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("next_fire_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_schedule_name", "schedule", ["name"], unique=True)
    op.create_index("ix_schedule_next_fire_at", "schedule", ["next_fire_at"])


def downgrade() -> None:
    op.drop_table("schedule")
