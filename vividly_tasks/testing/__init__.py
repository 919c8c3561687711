"""A testing kit for Celery apps on ``pubsub://``: a pytest plugin (``pytest_plugin.py``, no
Docker: the Pub/Sub emulator on loopback, ``emulator.py``) and a broker vendor for
pytest-celery's ``celery_setup`` (``celery_setup.py``, the emulator's container, for CI with
Docker). Importing it starts nothing."""
