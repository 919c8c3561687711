"""The dispatchers' record's migrations (Alembic; ``vividly_tasks.dispatch.schema.migrate``)."""
