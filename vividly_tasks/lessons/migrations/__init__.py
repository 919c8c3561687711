"""Alembic migrations of the content database, applied by
``vividly_tasks.lessons.database.migrate()``."""
