"""The dispatchers' arrivals and launches as rows, so a wake-up writes one row and a decision
reads counts by index instead of rewriting one JSON document; the record's row keeps only
the lock.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dispatch_arrivals",
        sa.Column("job", sa.Text(), primary_key=True),
        sa.Column("task_id", sa.Text(), primary_key=True),
        sa.Column("published_at", sa.Double(), nullable=False),
        sa.Column("due_at", sa.Double(), nullable=True),
        sa.Column("deliverable_at", sa.Double(), nullable=False),
    )
    op.create_index("ix_dispatch_arrivals_deliverable", "dispatch_arrivals",
                    ["job", "deliverable_at"])
    op.create_index("ix_dispatch_arrivals_published", "dispatch_arrivals",
                    ["job", "published_at"])
    op.create_table(
        "dispatch_launches",
        sa.Column("job", sa.Text(), primary_key=True),
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("launched_at", sa.Double(), nullable=False),
        sa.Column("task_count", sa.Integer(), nullable=False),
        sa.Column("sized_for", sa.Integer(), nullable=False),
        sa.Column("seen", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_dispatch_launches_launched", "dispatch_launches", ["job", "launched_at"])
    # What the JSON document held is an hour of arrivals and launches: the dispatcher starts
    # over from the wake-ups, the runner's executions and Monitoring, as after a lost record.
    with op.batch_alter_table("dispatch_records") as batch:
        batch.drop_column("state")


def downgrade() -> None:
    with op.batch_alter_table("dispatch_records") as batch:
        batch.add_column(sa.Column("state", sa.Text(), nullable=False, server_default="{}"))
    op.drop_table("dispatch_launches")
    op.drop_table("dispatch_arrivals")

