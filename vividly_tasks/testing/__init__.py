"""A testing kit for Celery apps on ``pubsub://``: a pytest plugin (``pytest_plugin.py``) and
the Pub/Sub emulator it starts (``emulator.py``). Importing it starts nothing."""
