"""The dispatchers' record: one row per job (its lock), arrivals and launches as rows.

A database where the lesson workload's migrations created these tables (when the record lived
in its schema) keeps them: they are the same, so only missing ones are created.

Revision ID: d0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "d0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "dispatch_records" not in existing:
        op.create_table(
            "dispatch_records",
            sa.Column("key", sa.Text(), primary_key=True),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        )
    if "dispatch_arrivals" not in existing:
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
    if "dispatch_launches" not in existing:
        op.create_table(
            "dispatch_launches",
            sa.Column("job", sa.Text(), primary_key=True),
            sa.Column("name", sa.Text(), primary_key=True),
            sa.Column("launched_at", sa.Double(), nullable=False),
            sa.Column("task_count", sa.Integer(), nullable=False),
            sa.Column("sized_for", sa.Integer(), nullable=False),
            sa.Column("seen", sa.Boolean(), nullable=False),
        )
        op.create_index("ix_dispatch_launches_launched", "dispatch_launches",
                        ["job", "launched_at"])


def downgrade() -> None:
    op.drop_table("dispatch_launches")
    op.drop_table("dispatch_arrivals")
    op.drop_table("dispatch_records")
