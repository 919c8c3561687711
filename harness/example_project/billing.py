"""A team's own Celery app on Pub/Sub: the README's "Use it in your own Celery app", verbatim.

tests/integration/testing_kit/test_own_app.py runs it with `celery -A ... worker` and
`vividly-worker job -A ...`, and checks that the README shows this file's code line by line.
"""

# --- README: begin ---
from celery import Celery

import vividly_tasks.transport  # registers pubsub:// with Kombu, and does nothing else
from vividly_tasks.worker import attach

# CELERY_BROKER_URL / CELERY_RESULT_BACKEND in the environment take precedence (Celery's own).
app = Celery("billing", broker="pubsub://my-project", backend="redis://localhost:6379/0")
app.conf.update(
    task_default_queue="billing",  # the topic and subscription vividly-billing
    task_acks_late=True,  # a task that dies with its worker runs again elsewhere
    task_reject_on_worker_lost=True,
)
# Optional: bad messages dead-lettered with a reason, fast idle stops, JSON logs.
attach(app)


@app.task(name="billing.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="billing.total")
def total(amounts: list[int]) -> int:
    return sum(amounts)


@app.task(name="billing.charge", bind=True, max_retries=3)
def charge(self, invoice: str, fail_times: int = 0) -> dict[str, object]:
    if self.request.retries < fail_times:  # the payment provider is down: try again
        raise self.retry(countdown=1)
    return {"invoice": invoice, "attempts": self.request.retries + 1}
# --- README: end ---
