"""Alembic environment of the dispatchers' record: runs on the connection that
``vividly_tasks.dispatch.schema.migrate()`` hands over (online only)."""

from __future__ import annotations

from alembic import context

from vividly_tasks.dispatch.schema import VERSION_TABLE, DispatchBase

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations with vividly_tasks.dispatch.schema.migrate(), which passes a connection"
    )
context.configure(
    connection=connection,
    target_metadata=DispatchBase.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
