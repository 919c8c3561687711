"""Modules that worker processes load (``-A``/``--include harness.apps.NAME``) or run
(``python -m harness.apps.NAME``)."""
