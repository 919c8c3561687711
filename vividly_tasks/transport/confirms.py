"""Pipelined publishing: confirmations collected in the background (RabbitMQ's publisher confirms
in streaming mode), opted into with the transport option ``publish_in_flight`` (N > 0).

``submit`` returns as soon as the message is queued; sender threads send what is queued in
batches (one Publish request per topic and turn, up to ``MAX_REQUESTS_IN_FLIGHT`` requests in
flight, each waiting up to ``LINGER_SECONDS`` for company) and count each message confirmed
when Pub/Sub answers with its id. The contract:

- **Bounded.** At most N messages are unconfirmed; a publisher that outruns Pub/Sub blocks in
  ``submit`` until confirmations free room, so memory does not grow without limit.
- **Nothing dropped silently.** A transient error (unavailable, deadline, rate limit) is retried
  until the message's own publish timeout; a publish that finally fails is logged with its task
  name and id, and raised (``PublishFailed``, naming the tasks) by the next ``submit`` or by
  ``flush``.
- **Flushed before the end.** ``flush`` waits until every queued message is confirmed or failed;
  a channel's close (a producer pool's, ``app.close()``'s) and interpreter exit call it, so a
  script or a ``celery call`` that publishes and returns has its messages on Pub/Sub first.

A process killed outright (SIGKILL) loses what was queued or in flight and not yet confirmed;
``confirmed`` (a counter) and the ``on_confirmed`` hook report only what Pub/Sub acknowledged.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from google.api_core import exceptions as google_errors

from vividly_tasks.transport import tracing
from vividly_tasks.transport.errors import TRANSIENT_ERRORS, PubSubChannelError, translate
from vividly_tasks.transport.naming import short_name

if TYPE_CHECKING:
    from vividly_tasks.transport.stubs import DataPlane

logger = logging.getLogger(__name__)

#: Publish requests in flight at once; while they are, newly queued messages gather into the
#: next, larger batch (as Nagle's algorithm does), which is where the throughput comes from.
MAX_REQUESTS_IN_FLIGHT = 4
MESSAGES_PER_REQUEST = 1000
#: A request waits up to this long after its first message for more to join it, unless this
#: many are queued, a flush waits or a publisher is blocked: Google's publisher client's
#: defaults (``max_latency``, ``max_messages``). Fewer, larger requests cost the publishing
#: process and Pub/Sub less per message.
LINGER_SECONDS = 0.01
LINGER_MESSAGES = 100
#: Pub/Sub takes 10 MB per request; leave room for the request's own framing.
BYTES_PER_REQUEST = 9_000_000
RETRY_DELAY_SECONDS = 0.1
MAX_RETRY_DELAY_SECONDS = 2.0


class PublishFailed(PubSubChannelError):
    """Pipelined publishes that Pub/Sub never confirmed; ``labels`` names them."""

    def __init__(self, message: str, labels: list[str]) -> None:
        super().__init__(message)
        self.labels = labels


@dataclass
class Pending:
    """One queued message: where it goes, what it is (for errors), until when it may try."""

    topic: str
    message: Any  # protobuf PubsubMessage
    label: str
    deadline: float
    size: int
    #: The publishing connection's: recreate a topic found missing (auto-creation on), or None.
    recreate_topic: Callable[[str], None] | None = None
    #: The publishing connection's ``on_publish_confirmed`` hook, told the labels confirmed.
    on_confirmed: Callable[[list[str]], None] | None = None
    recreated: bool = False
    #: Its ``create`` span when tracing is on (tracing.py), ended when it is settled.
    span: Any = None


@dataclass
class _Retry:
    due: float
    items: list[Pending] = field(default_factory=list)


def label_of(attributes: Any, topic: str) -> str:
    """``task.name[task-id]`` for a Celery task, else the topic's short name."""
    task, task_id = attributes.get("task"), attributes.get("task_id")
    if task or task_id:
        return f"{task or 'task'}[{task_id or '?'}]"
    return f"message to {short_name(topic)}"


class PublishPipeline:
    """One process's pipelined publishes (thread-safe; the sender thread starts on first use)."""

    def __init__(self, data_plane: Callable[[], DataPlane], *, max_in_flight: int) -> None:
        if max_in_flight < 1:
            raise ValueError("publish_in_flight must be at least 1")
        self.data_plane = data_plane
        self.max_in_flight = max_in_flight
        #: Unconfirmed messages (queued, being sent, or waiting to retry), and the most seen.
        self.in_flight = 0
        self.peak_in_flight = 0
        self.confirmed = 0
        self._queue: deque[Pending] = deque()
        self._retries: list[_Retry] = []
        self._failures: list[tuple[str, str]] = []  # (label, reason), not yet raised
        self._lock = threading.Lock()
        #: Signalled when ``in_flight`` falls (a blocked ``submit``, ``flush``).
        self._condition = threading.Condition(self._lock)
        #: Signalled when there is something to send (the sender threads wait on it).
        self._work = threading.Condition(self._lock)
        self._senders: list[threading.Thread] = []
        self._sending = 0  # sender threads with a request out
        self._first_queued = 0.0
        self._urgent = False

    # --- the publishing side --------------------------------------------------------------
    def submit(
        self, topic: str, message: Any, *, timeout_seconds: float,
        recreate_topic: Callable[[str], None] | None = None,
        on_confirmed: Callable[[list[str]], None] | None = None, span: Any = None,
    ) -> None:
        """Queue ``message``; blocks while ``max_in_flight`` are unconfirmed. Raises the
        failures of earlier publishes first."""
        self.raise_failures()
        item = Pending(topic, message, label_of(message.attributes, topic),
                       time.monotonic() + timeout_seconds, message.ByteSize(),
                       recreate_topic, on_confirmed, span=span)
        with self._condition:
            while self.in_flight >= self.max_in_flight:
                self._condition.wait()
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            was_empty = not self._queue
            if was_empty:
                self._first_queued = time.monotonic()
            self._queue.append(item)
            self._start()
            if self.in_flight == self.max_in_flight or len(self._queue) == LINGER_MESSAGES:
                # The next publisher waits for room, or a request is full: send without lingering.
                self._urgent = True
                self._work.notify()
            elif was_empty and self._sending < MAX_REQUESTS_IN_FLIGHT:
                # Wake a sender only if one waits for this: with messages already queued one
                # is lingering or about to send them, and with every sender's request out the
                # first to return takes them. A wake-up per message costs the publishing thread
                # the GIL (~4 % of the rate).
                self._work.notify()

    def flush(self, timeout: float) -> None:
        """Wait until everything submitted so far is confirmed or failed; raise the failures
        (``PublishFailed``), or ``PublishFailed`` for what is still unconfirmed at ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._condition:
            self._urgent = True
            self._work.notify()
            while self.in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    count = self.in_flight
                    raise PublishFailed(
                        f"{count} pipelined publish(es) not confirmed within {timeout:g} s", []
                    )
                self._condition.wait(remaining)
        self.raise_failures()

    def flush_quietly(self, timeout: float) -> None:
        """``flush``, logging instead of raising (a channel's close, interpreter exit)."""
        try:
            self.flush(timeout)
        except PublishFailed as exc:
            logger.error("%s", exc)

    def raise_failures(self) -> None:
        with self._condition:
            failures, self._failures = self._failures, []
        if failures:
            shown = "; ".join(f"{label}: {reason}" for label, reason in failures[:5])
            more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
            raise PublishFailed(
                f"{len(failures)} pipelined publish(es) failed: {shown}{more}",
                [label for label, _ in failures],
            )

    # --- the sender threads ---------------------------------------------------------------
    def _start(self) -> None:
        # Threads of our own making blocking calls, not gRPC futures: a future's completion
        # is polled by a thread gRPC starts whenever none of its calls is in flight, which
        # a pipeline keeping up with its publisher meets after every request (~10 % of its
        # CPU went to starting and running those threads).
        if not self._senders:
            self._senders = [
                threading.Thread(target=self._run, name=f"pubsub-publish-pipeline-{n}",
                                 daemon=True)
                for n in range(MAX_REQUESTS_IN_FLIGHT)
            ]
            for sender in self._senders:
                sender.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._ready_to_send():
                    self._work.wait(self._next_retry_in())
                while (self._queue and not self._urgent and len(self._queue) < LINGER_MESSAGES
                       and (wait := self._first_queued + LINGER_SECONDS - time.monotonic()) > 0):
                    self._work.wait(wait)
                self._urgent = False
                batch = self._take()
                self._sending += 1
            try:
                for topic, items in _requests(batch):
                    self._send(topic, items)
            finally:
                with self._lock:
                    self._sending -= 1

    def _ready_to_send(self) -> bool:
        now = time.monotonic()
        return bool(self._queue) or any(retry.due <= now for retry in self._retries)

    def _next_retry_in(self) -> float | None:
        if not self._retries:
            return None
        return max(0.0, min(retry.due for retry in self._retries) - time.monotonic())

    def _take(self) -> list[Pending]:
        now = time.monotonic()
        due = [retry for retry in self._retries if retry.due <= now]
        self._retries = [retry for retry in self._retries if retry.due > now]
        batch = [item for retry in due for item in retry.items]
        batch.extend(self._queue)
        self._queue.clear()
        return batch

    def _send(self, topic: str, items: list[Pending]) -> None:
        recreate = next((item.recreate_topic for item in items
                         if item.recreated and item.recreate_topic is not None), None)
        if recreate is not None:
            try:
                recreate(topic)
            except Exception as exc:  # reported with the messages it stops
                self._finish_failed(items, f"the topic could not be recreated: {exc}")
                return
        spans = tracing.hooks
        traced = [item.span for item in items if item.span is not None] if spans else []
        with spans.batch(topic, traced) if spans and traced else contextlib.nullcontext():
            try:
                message_ids = self.data_plane().publish(
                    topic, [item.message for item in items],
                    timeout=max(1.0, max(item.deadline for item in items) - time.monotonic()),
                )
            except Exception as exc:
                self._after_error(topic, items, exc)
            else:
                self._finish_confirmed(items, message_ids)

    def _after_error(self, topic: str, items: list[Pending], error: Exception) -> None:
        now = time.monotonic()
        if isinstance(error, google_errors.NotFound):
            # Declared once, gone now (an emulator restart): recreate it, once, where the
            # publishing connection creates what it needs.
            again = [item for item in items
                     if item.recreate_topic is not None and not item.recreated]
            for item in again:
                item.recreated = True
            self._finish_failed([i for i in items if i not in again],
                                str(translate(error, "publish to", topic)))
            self._retry(again, now)
            return
        if isinstance(error, TRANSIENT_ERRORS):
            alive = [item for item in items if item.deadline > now]
            self._finish_failed([i for i in items if i not in alive],
                                f"{translate(error, 'publish to', topic)}")
            self._retry(alive, now + RETRY_DELAY_SECONDS)
            return
        self._finish_failed(items, str(translate(error, "publish to", topic)))

    def _retry(self, items: list[Pending], due: float) -> None:
        if items:
            with self._condition:
                self._retries.append(_Retry(due, items))
                self._work.notify()

    def _finish_confirmed(self, items: list[Pending], message_ids: Any = ()) -> None:
        spans = tracing.hooks
        if spans is not None:
            ids = list(message_ids or ())
            ids = ids if len(ids) == len(items) else [None] * len(items)
            for item, message_id in zip(items, ids, strict=True):
                if item.span is not None:
                    spans.confirmed(item.span, message_id)
        with self._condition:
            self.in_flight -= len(items)
            self.confirmed += len(items)
            self._condition.notify_all()
        hooks: dict[Callable[[list[str]], None], list[str]] = defaultdict(list)
        for item in items:
            if item.on_confirmed is not None:
                hooks[item.on_confirmed].append(item.label)
        for hook, labels in hooks.items():
            try:
                hook(labels)
            except Exception:  # a caller's hook must not stop the confirmations
                logger.exception("the publish-confirmed hook failed")

    def _finish_failed(self, items: list[Pending], reason: str) -> None:
        if not items:
            return
        spans = tracing.hooks
        for item in items:
            logger.error("publish of %s failed, not sent: %s", item.label, reason,
                         extra={"task": item.label})
            if spans is not None and item.span is not None:
                spans.failed(item.span, reason)
        with self._condition:
            self.in_flight -= len(items)
            self._failures.extend((item.label, reason) for item in items)
            self._condition.notify_all()


def _requests(batch: list[Pending]) -> list[tuple[str, list[Pending]]]:
    """The batch as Publish requests: per topic, within Pub/Sub's per-request limits."""
    by_topic: dict[str, list[Pending]] = defaultdict(list)
    for item in batch:
        by_topic[item.topic].append(item)
    requests = []
    for topic, items in by_topic.items():
        current: list[Pending] = []
        size = 0
        for item in items:
            if current and (len(current) >= MESSAGES_PER_REQUEST
                            or size + item.size > BYTES_PER_REQUEST):
                requests.append((topic, current))
                current, size = [], 0
            current.append(item)
            size += item.size
        if current:
            requests.append((topic, current))
    return requests
