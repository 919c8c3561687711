"""Alembic migrations of the content database, applied by
``vividly_tasks.content.database.migrate()``."""
