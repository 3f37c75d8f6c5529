"""score, selection, selection_member, embedding: curation by quality (issue 20).

`score` holds every scorer's verdict on a sample (IFD, a judge's rubric score...), failures
included (value NULL, error set); the partial unique index `ux_score_done` admits one success per
(sample, scorer, rubric, model), which is what makes scoring resumable without scoring twice.
`selection` + `selection_member` are named subsets chosen by `datagen select`; `embedding` caches
one vector per (sample, model) for its diversity rule.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

SCORED_WHERE = sa.text("value IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "score",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("scorer", sa.String(), nullable=False),
        sa.Column("rubric", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("extra", sa.Text(), nullable=True),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["sample_id"], ["sample.id"]),
        sa.ForeignKeyConstraint(["request_id"], ["request.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_score_sample_id", "score", ["sample_id"])
    op.create_index("ix_score_key", "score", ["scorer", "rubric", "model", "value"])
    op.create_index(
        "ux_score_done", "score", ["sample_id", "scorer", "rubric", "model"], unique=True,
        sqlite_where=SCORED_WHERE, postgresql_where=SCORED_WHERE,
    )
    op.create_table(
        "selection",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_selection_name", "selection", ["name"], unique=True)
    op.create_table(
        "selection_member",
        sa.Column("selection_id", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["selection_id"], ["selection.id"]),
        sa.ForeignKeyConstraint(["sample_id"], ["sample.id"]),
        sa.PrimaryKeyConstraint("selection_id", "rank"),
        sa.UniqueConstraint("selection_id", "sample_id"),
    )
    op.create_index("ix_selection_member_sample_id", "selection_member", ["sample_id"])
    op.create_table(
        "embedding",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["sample_id"], ["sample.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sample_id", "model"),
    )
    op.create_index("ix_embedding_sample_id", "embedding", ["sample_id"])


def downgrade() -> None:
    op.drop_table("embedding")
    op.drop_table("selection_member")
    op.drop_table("selection")
    op.drop_table("score")
