"""The model that wrote a lesson and the tokens it spent.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("content_requests", sa.Column("model_name", sa.Text(), nullable=True))
    for column in ("prompt_tokens", "output_tokens"):
        op.add_column(
            "content_requests",
            sa.Column(column, sa.Integer(), nullable=False, server_default="0"),
        )


def downgrade() -> None:
    with op.batch_alter_table("content_requests") as batch:
        for column in ("output_tokens", "prompt_tokens", "model_name"):
            batch.drop_column(column)
