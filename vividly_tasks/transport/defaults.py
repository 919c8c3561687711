"""The transport's option defaults that apps also read from the environment
(``vividly_tasks.settings.PubSubSettings``): one place for both, importable without the
transport's client libraries."""

from __future__ import annotations

#: Prefix of every topic and subscription id, when neither the ``prefix`` option nor
#: ``PUBSUB_PREFIX`` sets one: the product's own default, so every app, worker and command of
#: the product names the same topics.
PREFIX = "vividly-"
#: Create topics and subscriptions on declare; False only verifies that they exist.
AUTO_CREATE = True
#: Ack deadline of created subscriptions, and the extension step of held leases.
ACK_DEADLINE_SECONDS = 60
#: How long after receipt an unacked message keeps its lease by extension.
MAX_LEASE_SECONDS = 7200
#: Pub/Sub dead-letters a message after this many deliveries (5-100).
MAX_DELIVERY_ATTEMPTS = 5
#: Messages per prefetch slot that a channel may lease and hold beyond its prefetch count
#: while a backlog exists, so that a freed slot's next task does not wait for a Pull's round
#: trip (the transport's ``pull_ahead.py``); 0 turns it off.
PULL_AHEAD = 8
