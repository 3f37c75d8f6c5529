"""request.state and request.prompts: the ledger row is written before the request is sent.

`state` is `sent` until the answer arrives (`done`) or the run stops it (`cancelled`), so a run
killed with -9 still shows every attempt it made; `prompts` counts the prompts one HTTP request
carried (a multi-prompt Completion request is one row). Existing rows were all answered: `done`, 1.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("request") as batch:
        batch.add_column(sa.Column("state", sa.String(), nullable=False, server_default="done"))
        batch.add_column(sa.Column("prompts", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("request") as batch:
        batch.drop_column("prompts")
        batch.drop_column("state")
