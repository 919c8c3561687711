"""Courses: many lessons from one file, in order, and what their index was built from.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vividly_tasks.lessons.models import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "courses",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("lesson_count", sa.Integer(), nullable=False),
        sa.Column("chord_id", sa.Text(), nullable=True),
        sa.Column("build_task_id", sa.Text(), nullable=True),
        sa.Column("index_artifacts", sa.JSON(), nullable=True),
        sa.Column("index_fingerprint", sa.Text(), nullable=True),
        sa.Column("indexed_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "course_lessons",
        sa.Column("course_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("replaced", sa.JSON(), nullable=True),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("video_seconds", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("course_id", "position"),
        sa.ForeignKeyConstraint(["course_id"], ["courses.id"],
                                name="fk_course_lessons_course_id"),
        sa.ForeignKeyConstraint(["request_id"], ["content_requests.id"],
                                name="fk_course_lessons_request_id"),
    )
    op.create_index("ix_course_lessons_request_id", "course_lessons", ["request_id"],
                    unique=True)


def downgrade() -> None:
    op.drop_index("ix_course_lessons_request_id", table_name="course_lessons")
    op.drop_table("course_lessons")
    op.drop_table("courses")
