"""Google Cloud Pub/Sub transport for Kombu and Celery (``pubsub://PROJECT_ID``).

Features
========
* Type: virtual, event-driven (the worker's event loop wakes on arrival; no poll-and-sleep)
* Supports direct: yes; fanout: yes (Celery events, remote control, Flower); topic: yes
  (AMQP's ``*`` one word, ``#`` zero or more); the default exchange ``""`` routes by queue name
* Routing is AMQP's, without subscription filters (see ``channel.py``); a fanout binding key
  is a pattern, as with Kombu's Redis transport (``#`` all, ``worker.#`` worker events only);
  a durable queue's bindings are shared by every process through records in Pub/Sub
  (``bindings.py``), so no process drops a message another process's binding matches; a
  queue bound to one exchange cannot be bound to another (a subscription has one topic):
  that is a clear error, never a silent miss
* Carries any serializer: ``body``, ``content-type``, ``content-encoding``, ``headers`` and
  ``properties`` arrive as published; the consumer's accept list decides what is decoded
* Pub/Sub's metadata is in ``delivery_info``: ``delivery_attempt``, ``pubsub_message_id``,
  ``pubsub_publish_time``, ``pubsub_subscription`` (``vividly_tasks.worker`` hands them on to
  a Celery task's ``self.request``)
* Acks, deadline changes and background publishes (events) go out in batches >= 10 ms apart;
  message calls use bare gRPC stubs (``stubs.py``)
* Leases of received, unacked messages are extended until acked, up to ``max_lease_seconds``
* Prefetch-bounded: the consumer is never handed more messages than its prefetch count.
  Pull-ahead (``pull_ahead.py``) hides a refill Pull's round trip, which on Google Cloud is
  tens of ms per freed slot: while a backlog exists a channel leases a few messages beyond its
  prefetch, sized from running averages so that each is expected to start within half a
  second, and holds them in the transport until a slot frees; one that finds no free slot
  within ``pull_ahead_hold_seconds`` goes back to Pub/Sub for another worker. A Pull kept
  open while the slots are busy is the same thing under a backlog (Pub/Sub answers it at once):
  what decides is how many are held, and for how long. StreamingPull under the same flow
  control does no better than today's Pull (0.38x of its loopback no-op rate at 20 ms: the
  server waits for an ack's round trip per slot). At a 20 ms round trip (bench/cloud_distance.py,
  concurrency 2, prefetch 2) the no-op drain went from 71 to 473 tasks/s (0.18x -> 0.84x of
  its loopback rate) and 50 ms tasks from 24.9 to 36.3/s (0.71x -> 0.99x; the pool's ceiling
  is 40/s); figures in pull_ahead.py and docs/benchmarks-cloud-distance.md
* ack -> acknowledge; requeue -> nack (the same message again, never a copy);
  reject -> a copy on the queue's dead-letter topic with the reason, then ack
* Close releases every unstarted message at once; a delayed task comes back near its ETA;
  a message that never started, one delivery short of ``max_delivery_attempts``, is renewed
  (a copy for its queue alone, then the original acked), so releases alone never
  dead-letter it, while a message that started (``Channel.note_started``) still counts
* Publishing returns once Pub/Sub accepted the message, or raises (publisher confirms); only
  Celery's events and remote-control replies go out in the background, a failure logged with
  the count of messages lost; a property JSON cannot carry is left out, as on AMQP
* A remote-control command (``revoke``) reaches a worker before the messages its process
  published after it (``command_fence.py``), although Pub/Sub orders neither
* ``basic_get(no_ack=True)`` acks at once; ``queue_purge`` refuses a queue that does not exist
  and returns how many messages were waiting (those leased by consumers are dropped, not
  counted); ``queue_delete`` stops this channel's consumers of the queue and deletes its
  subscription, dead-letter topic and dead-letter subscription, refuses ``if_unused`` while
  a consumer of this process reads it and ``if_empty`` always (Pub/Sub cannot tell);
  ``basic_recover(requeue=True)`` redelivers what the channel holds
* Poison messages (not JSON, not a Kombu envelope, a content type outside the opt-in
  ``accept_content``) are dead-lettered, each on its own: one bad message never holds up the
  rest of its Pull
* Bounded receive (``limits.py``): whatever its bytes, a message costs a bounded amount of
  memory and time to read. Compression is decoded only where listed in ``accept_compression``,
  streamed and capped at ``max_decoded_bytes`` (the body arrives decompressed, so Kombu never
  decompresses it whole); JSON beyond ``max_json_items`` structural characters or
  ``max_json_depth`` levels, and Pub/Sub's size and attribute limits, are checked on receipt.
  A refused message is dead-lettered with the reason (on a queue without a dead-letter topic,
  remote control, it is dropped with a log line); copies no binding matches are counted and
  logged (``receipts.py``, the job summary)
* Plain JSON messages on a queue bound to a task run that task (see ``plain_messages.py``)

Modules
=======
``transport.py`` the Kombu transport and the hand-over of pulled messages to the consuming
thread; ``channel.py`` the AMQP method surface, delegating to: ``routing.py`` and
``bindings.py`` (which messages are a queue's), ``publishing.py`` (confirmed or background
publishes), ``confirms.py`` (pipelined publishes), ``inbound.py`` (what a received message is:
leased, dropped, dead-lettered, renewed), ``qos.py`` (Kombu's QoS: each delivery from lease
to settle, over ``prefetch.py``'s room, ``leases.py``'s extension and ``pull_ahead.py``'s
messages held ahead of the prefetch), ``receiver.py`` (the Pull loop), ``command_fence.py``
(commands before work), ``provisioning.py`` (topics and subscriptions), ``background.py``
(batched calls), ``wire.py`` (the message format).

Registration
============
``import vividly_tasks.transport`` is the one line: it adds ``pubsub`` to Kombu's alias table
(``kombu.transport.TRANSPORT_ALIASES``) and does nothing else (no app, signal, logging or
environment; the client libraries load when a connection is made). Without the import,
Celery's ``broker_transport = "vividly_tasks.transport:Transport"`` names the class directly.

Connection String
=================
``pubsub://PROJECT_ID`` (or ``pubsub://`` with ``GOOGLE_CLOUD_PROJECT`` set). The emulator is
used when ``PUBSUB_EMULATOR_HOST`` is set; Application Default Credentials otherwise.

Transport Options
=================
* ``prefix`` (str, ``$PUBSUB_PREFIX`` or ``vividly-``): prefix of every topic and subscription
  id; the product's commands (provision, dlq, the worker) use the same default, so a message
  never sits under a name nobody consumes.
* ``auto_create`` (bool, true): create topics/subscriptions on declare; false only verifies.
* ``ack_deadline_seconds`` (int, 60): ack deadline of created subscriptions and the lease
  extension step.
* ``max_lease_seconds`` (float, 7200): how long after receipt an unacked message keeps its
  lease by extension.
* ``max_delivery_attempts`` (int, 5): Pub/Sub's dead-letter policy on created subscriptions.
* ``retry_min_backoff_seconds`` / ``retry_max_backoff_seconds`` (float, 1 / 600): Pub/Sub's
  retry policy on created subscriptions.
* ``pull_timeout_seconds`` (float, 2): gRPC deadline of one task-queue Pull; an empty Pull is
  reissued at once (messages arriving meanwhile are delivered immediately), and closing waits
  for the Pulls in flight instead of cancelling them (see receiver.py for why).
* ``broadcast_pull_timeout_seconds`` (float, 30): the same for consumers that ack on receipt
  (remote control, events); those Pulls are cancelled at once on close.
* ``max_outstanding_messages`` (int, 100): leased messages per channel when the consumer sets
  no prefetch count.
* ``pull_ahead`` (int, 8; ``$PUBSUB_PULL_AHEAD`` in the product's settings): most messages
  per prefetch slot leased and held beyond the prefetch count while a backlog exists
  (``pull_ahead.py``); 0 turns pull-ahead off (a freed slot then waits for its Pull).
* ``pull_ahead_hold_seconds`` (float, 1): a message held ahead that finds no free slot within
  this long is released (nacked) for another worker, and pulling ahead pauses for 10 s.
* ``get_timeout_seconds`` (float, 1): how long ``basic_get`` waits for a message.
* ``publish_timeout_seconds`` (float, 60): deadline of a confirmed publish, retries included.
* ``accept_content`` (list or comma-separated str, unset): opt-in fence; when set, a message
  of any other content type is dead-lettered without being decoded. Unset, every type is
  carried and the consumer's accept list decides (the product app sets JSON only).
* ``accept_compression`` (list or comma-separated str, unset): compression methods a
  consumer decodes (``gzip``/``zlib``, ``bzip2``, ``xz``/``lzma``); a compressed message of
  any other method is dead-lettered unread. Unset, none is decoded.
* ``max_decoded_bytes`` (int, 10485760): the most a compressed body may decode to (Pub/Sub's
  own limit of a message).
* ``max_json_items`` (int, 500000): the most JSON structural characters (``{ [ , :``) in a
  message's data or JSON body, about 50 MB of parsed objects at most.
* ``max_json_depth`` (int, 128): the deepest nesting of a message's data or JSON body.
* ``event_exchanges`` (list or comma-separated str, ``celeryev``): exchanges of Celery's
  events (set it to your ``event_exchange`` if you changed that), published in the
  background; every other publish returns only once Pub/Sub has it, or raises.
* ``command_fence_seconds`` (float, 2): longest hold of a message published right after a
  remote-control command (``revoke``) until the worker has delivered that command, so a
  revoke always beats the task published after it (``command_fence.py``); 0 turns it off.
* ``plain_message_tasks`` (mapping or its JSON text, empty): queue name -> task name; each
  message on the queue without the ``kombu-envelope`` attribute calls the task with its JSON
  object as keyword arguments.
* ``publish_in_flight`` (int, 0): pipelined publishing when > 0: a publish returns once queued,
  at most this many unconfirmed per process, confirmed in the background; failures raise
  ``confirms.PublishFailed`` on the next publish or ``Channel.flush_publishes()``; flushed at
  channel close and interpreter exit (``confirms.py``). 0: each publish is confirmed first.
* ``on_publish_confirmed`` (callable, unset): called from the background with the labels
  (``task.name[task-id]``) of pipelined publishes Pub/Sub confirmed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kombu.transport import TRANSPORT_ALIASES

if TYPE_CHECKING:
    from vividly_tasks.transport.transport import Transport

SCHEME = "pubsub"
#: Where Kombu finds the class (loaded only when a ``pubsub://`` connection is made).
TRANSPORT_PATH = "vividly_tasks.transport.transport:Transport"


def register() -> None:
    """Make ``pubsub://`` URLs resolve to this transport (Kombu's public alias table)."""
    TRANSPORT_ALIASES.setdefault(SCHEME, TRANSPORT_PATH)


def __getattr__(name: str) -> Any:
    """``Transport`` on first use, so registering does not load gRPC and the Pub/Sub client."""
    if name == "Transport":
        from vividly_tasks.transport.transport import Transport  # noqa: PLC0415 - lazily, on first use

        return Transport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


register()

__all__ = ["SCHEME", "TRANSPORT_PATH", "Transport", "register"]
