"""One background thread per process for the calls that must not block the event loop.

Acks, deadline changes, moves (a copy published, then the original acked: dead letters and
renewed messages) and fire-and-forget publishes (Celery's events) are
queued here and sent in batches: under load many acks share one request, and the worker's
event loop never waits on a round trip. Batches are at least ``BATCH_INTERVAL_SECONDS`` apart:
a draining worker sends three events and one ack per task, and sent one by one they were three
round trips per task, costing the worker and Pub/Sub more CPU than the task itself; nothing
queued here is waited for by a task (an ack only ends a lease that runs for minutes), and an
idle worker's first call still goes out at once. ``flush()`` sends at once and waits until
everything queued so far is sent, which a channel's ``close()`` and interpreter exit use so
that nothing is left behind.
The thread lives as long as its process (it is shared by every connection of the process).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from google.api_core import exceptions as google_errors

from vividly_tasks.transport.naming import short_name

if TYPE_CHECKING:
    from vividly_tasks.transport.stubs import DataPlane

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Pub/Sub rejects acknowledge/modifyAckDeadline requests over 512 KiB; ack ids run to a few
# hundred bytes, so 1,000 of them stay well under it.
ACK_IDS_PER_REQUEST = 1000
MESSAGES_PER_PUBLISH = 1000
CALL_TIMEOUT_SECONDS = 30.0
TRANSIENT_RETRIES = 5
#: Least time from one batch to the next (see the module docstring).
BATCH_INTERVAL_SECONDS = 0.01


@dataclass
class Batch:
    acks: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    deadlines: dict[tuple[str, int], list[str]] = field(default_factory=lambda: defaultdict(list))
    #: Messages are protobuf ``PubsubMessage``s (stubs.py).
    publishes: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    moves: list[tuple[str, Any, str, str]] = field(default_factory=list)
    calls: list[Callable[[], None]] = field(default_factory=list)


class BackgroundCalls:
    """Queue of Pub/Sub calls, sent by one daemon thread in batches."""

    def __init__(
        self, data_plane: Callable[[], DataPlane], *, name: str = "pubsub-background"
    ) -> None:
        #: The process's message calls (clients.py), looked up when the first batch goes out.
        self.data_plane = data_plane
        self._pending: deque[Callable[[Batch], None]] = deque()
        self._condition = threading.Condition()
        self._queued = 0
        self._done = 0
        self._urgent = False  # a flush() waits: send without the batch interval
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # --- what callers queue -------------------------------------------------------------
    def ack(self, subscription: str, ack_id: str) -> None:
        self._queue(lambda batch: batch.acks[subscription].append(ack_id))

    def set_deadline(self, subscription: str, ack_id: str, seconds: int) -> None:
        self._queue(lambda batch: batch.deadlines[(subscription, seconds)].append(ack_id))

    def publish(self, topic: str, message: Any) -> None:
        self._queue(lambda batch: batch.publishes[topic].append(message))

    def move(self, topic: str, message: Any, subscription: str, ack_id: str) -> None:
        """Publish ``message`` (a copy of the original) to ``topic``, then ack the original:
        a dead letter, or a renewed message (channel.py).

        If the copy cannot be published the original is released instead, so Pub/Sub
        redelivers it (and its own dead-letter policy applies): never acked without a copy.
        """
        self._queue(lambda batch: batch.moves.append((topic, message, subscription, ack_id)))

    def call(self, function: Callable[[], None]) -> None:
        """Run ``function`` on the background thread, before the batch it joins is sent."""
        self._queue(lambda batch: batch.calls.append(function))

    def _queue(self, operation: Callable[[Batch], None]) -> None:
        with self._condition:
            self._pending.append(operation)
            self._queued += 1
            # Only the first call of a batch wakes the thread; it then waits out the batch
            # interval by itself, and a wake-up per call would cost the caller the GIL.
            if len(self._pending) == 1:
                self._condition.notify_all()

    # --- control -------------------------------------------------------------------------
    def flush(self, timeout: float = CALL_TIMEOUT_SECONDS) -> bool:
        """Wait until all calls queued so far were sent; False if ``timeout`` ran out first."""
        deadline = time.monotonic() + timeout
        with self._condition:
            target = self._queued
            self._urgent = True
            self._condition.notify_all()
            while self._done < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._condition.wait(remaining)
        return True

    # --- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        next_batch = 0.0
        while True:
            with self._condition:
                while not self._pending:
                    self._condition.wait()
                while not self._urgent and (wait := next_batch - time.monotonic()) > 0:
                    self._condition.wait(wait)
                operations = list(self._pending)
                self._pending.clear()
                self._urgent = False
            next_batch = time.monotonic() + BATCH_INTERVAL_SECONDS
            batch = Batch()
            for operation in operations:
                operation(batch)
            try:
                self._send(batch)
            except Exception:  # a bug here must not kill the thread that acks
                logger.exception("background Pub/Sub calls failed")
            with self._condition:
                self._done += len(operations)
                self._condition.notify_all()

    def _send(self, batch: Batch) -> None:
        for function in batch.calls:
            function()
        calls = self.data_plane()
        logger.debug(
            "sending %d ack(s), %d deadline change(s), %d publish(es), %d move(s)",
            sum(map(len, batch.acks.values())), sum(map(len, batch.deadlines.values())),
            sum(map(len, batch.publishes.values())), len(batch.moves),
        )
        for topic, messages in batch.publishes.items():
            for chunk in chunks(messages, MESSAGES_PER_PUBLISH):
                self._retrying(
                    partial(calls.publish, topic, chunk, timeout=CALL_TIMEOUT_SECONDS),
                    f"publish {len(chunk)} message(s) to {short_name(topic)}",
                )
        for topic, message, subscription, ack_id in batch.moves:
            copied = self._retrying(
                partial(calls.publish, topic, [message], timeout=CALL_TIMEOUT_SECONDS),
                f"move a message of {short_name(subscription)} to {short_name(topic)}",
            )
            if copied:
                batch.acks[subscription].append(ack_id)
            else:
                batch.deadlines[(subscription, 0)].append(ack_id)
        for subscription, ack_ids in batch.acks.items():
            for ids in chunks(ack_ids, ACK_IDS_PER_REQUEST):
                self._retrying(
                    partial(calls.acknowledge, subscription, ids, timeout=CALL_TIMEOUT_SECONDS),
                    f"acknowledge {len(ids)} message(s) on {short_name(subscription)}",
                )
        for (subscription, seconds), ack_ids in batch.deadlines.items():
            for ids in chunks(ack_ids, ACK_IDS_PER_REQUEST):
                self._retrying(
                    partial(calls.modify_ack_deadline, subscription, ids, seconds,
                            timeout=CALL_TIMEOUT_SECONDS),
                    f"set a {seconds} s deadline on {len(ids)} message(s) "
                    f"of {short_name(subscription)}",
                )

    @staticmethod
    def _retrying(send: Callable[[], object], what: str) -> bool:
        delay = 0.1
        for attempt in range(1, TRANSIENT_RETRIES + 1):
            try:
                send()
                return True
            except (google_errors.ServiceUnavailable, google_errors.DeadlineExceeded) as exc:
                if attempt == TRANSIENT_RETRIES:
                    logger.error("could not %s after %d attempts: %s", what, attempt, exc)
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            except google_errors.GoogleAPICallError as exc:
                # e.g. an ack id whose lease already ended: Pub/Sub redelivers that message,
                # which the tasks' idempotency absorbs; nothing to retry here.
                logger.warning("could not %s: %s", what, exc)
                return False
        return False


def chunks(items: list[T], size: int) -> list[list[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
