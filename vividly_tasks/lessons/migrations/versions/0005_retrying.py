"""Resume by stage and honest status: the ``retrying`` status with its due time, and the
number of model calls over every attempt.

Revision ID: 0005
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vividly_tasks.lessons.models import UTCDateTime

revision = "0005"
down_revision = "0002"
branch_labels = None
depends_on = None

CONSTRAINT = "ck_content_requests_status"
BEFORE = ("pending", "queued", "generating", "completed", "failed")
AFTER = (*BEFORE, "retrying")


def _status_check(statuses: tuple[str, ...]) -> str:
    return "status IN (" + ", ".join(f"'{s}'" for s in statuses) + ")"


def upgrade() -> None:
    # Batch mode: SQLite cannot alter a CHECK constraint in place, so there the table is
    # copied; PostgreSQL alters it (no copy of a large table).
    with op.batch_alter_table("content_requests", recreate="auto") as batch:
        batch.add_column(sa.Column("model_calls", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("retry_at", UTCDateTime(), nullable=True))
        batch.drop_constraint(CONSTRAINT, type_="check")
        batch.create_check_constraint(CONSTRAINT, _status_check(AFTER))


def downgrade() -> None:
    # A request waiting for its retry was, before this revision, shown as generating.
    op.execute("UPDATE content_requests SET status = 'generating' WHERE status = 'retrying'")
    with op.batch_alter_table("content_requests", recreate="auto") as batch:
        batch.drop_constraint(CONSTRAINT, type_="check")
        batch.create_check_constraint(CONSTRAINT, _status_check(BEFORE))
        batch.drop_column("retry_at")
        batch.drop_column("model_calls")
