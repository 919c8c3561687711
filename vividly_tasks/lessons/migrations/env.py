"""Alembic environment: runs on the connection that ``migrate()`` hands over (online only)."""

from __future__ import annotations

from alembic import context

from vividly_tasks.lessons.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations with vividly_tasks.lessons.database.migrate(), which passes a connection"
    )
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=context.config.attributes.get("version_table", "alembic_version"),
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
