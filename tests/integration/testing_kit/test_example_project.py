"""The example app's own test (harness/example_project/billing.py), written with the testing kit
alone (pyproject names the app)."""


def test_add_runs_over_pubsub(pubsub_celery_app, pubsub_celery_worker):  # type: ignore[no-untyped-def]
    assert pubsub_celery_app.send_task("billing.add", (2, 3)).get(timeout=10) == 5
