"""A team's app with queues on a direct, a topic and a fanout exchange, for the operator
commands (`vividly provision -A`, `vividly dlq -A`) and its workers (test_operator_commands.py).

Its broker and result backend come from Celery's own variables; ``SHOP_EMAIL_KEY`` changes the
emails queue's binding, as a deployment of a new version would.
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Exchange, Queue

import harness.apps.worker_tasks  # tests.record, which the routes below send
import vividly_tasks.transport  # registers pubsub://

orders = Exchange("shop", type="direct")
events = Exchange("shop-events", type="topic")
broadcast = Exchange("shop-broadcast", type="fanout")

app = Celery("shop", set_as_current=False)
app.conf.update(
    task_default_queue="orders",
    task_queues=[
        Queue("orders", orders, routing_key="orders"),
        Queue("emails", events, routing_key=os.environ.get("SHOP_EMAIL_KEY", "email.#")),
        Queue("audit", broadcast),
    ],
    task_acks_late=True,
)
