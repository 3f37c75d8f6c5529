"""A schedule's jobs run one at a time, enforced by the database; a skipped row may stand for a gap (issue 19).

`ux_job_schedule_running` is a unique partial index on job.schedule_id over running jobs: the
claim's "no sibling running" check could not see another worker's uncommitted claim, so two
workers claiming at once both won. A database that already holds such overlaps hands all but the
earliest-started running job of each schedule back to the queue (their attempts `lost`); their
workers see the job taken and stop the child, and the job runs again after its sibling.

`job.slots` and `job.scheduled_until`: one skipped row stands for consecutive slots not run for
one reason (a week without a scheduler was 10,088 rows).

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None

WHERE = sa.text("state = 'running' AND schedule_id IS NOT NULL")


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.text(
        "SELECT id, schedule_id, attempt_id FROM job WHERE state = 'running' AND schedule_id IS NOT NULL "
        "ORDER BY schedule_id, started_at, id")).all()
    seen: set[int] = set()
    for job_id, schedule_id, attempt_id in rows:
        if schedule_id not in seen:
            seen.add(schedule_id)
            continue
        conn.execute(sa.text("UPDATE job SET state = 'queued', claimed_by = NULL, lease_expires_at = NULL, "
                             "exit_message = 'handed back: another job of its schedule was running' WHERE id = :id"),
                     {"id": job_id})
        if attempt_id is not None:
            conn.execute(sa.text("UPDATE job_attempt SET state = 'lost', exit_message = 'handed back: another job "
                                 "of its schedule was running' WHERE id = :id AND state = 'running'"), {"id": attempt_id})
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("slots", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("scheduled_until", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ux_job_schedule_running", "job", ["schedule_id"], unique=True,
                    sqlite_where=WHERE, postgresql_where=WHERE)


def downgrade() -> None:
    op.drop_index("ux_job_schedule_running", table_name="job")
    with op.batch_alter_table("job") as batch:
        batch.drop_column("scheduled_until")
        batch.drop_column("slots")
