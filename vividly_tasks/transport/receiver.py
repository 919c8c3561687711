"""Pulling: one unary Pull in flight per consumed subscription, never more than prefetch allows.

Each Pull is a gRPC future: the server holds it until messages arrive (no poll-and-sleep), its
callback hands the messages to the channel and starts the next Pull while there is capacity.
``stop()`` cancels the Pull in flight, so a worker shuts down at once; messages that a Pull
returns after ``stop()`` are released straight back to Pub/Sub.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import grpc
from google.pubsub_v1 import PullRequest

if TYPE_CHECKING:
    from vividly_tasks.transport.channel import Channel, QueueRoute

logger = logging.getLogger(__name__)

#: A Pull that times out is simply reissued.
QUIET_CODES = frozenset({grpc.StatusCode.DEADLINE_EXCEEDED})
#: Codes that mean the broker is unreachable: Celery should reconnect.
CONNECTION_CODES = frozenset({
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
})


class Puller:
    """The pull loop of one consumer on one subscription."""

    def __init__(self, channel: Channel, route: QueueRoute, *, no_ack: bool) -> None:
        self.channel = channel
        self.route = route
        self.no_ack = no_ack
        self._lock = threading.Lock()
        self._future: Any = None
        self._reserved = 0
        self._stopped = False

    def kick(self) -> None:
        """Start a Pull if none is in flight and the channel has room for more messages."""
        with self._lock:
            if self._stopped or self._future is not None:
                return
            count = self.channel.reserve(self.no_ack)
            if count == 0:
                return
            request = PullRequest(subscription=self.route.spec.path, max_messages=count)
            try:
                future = self.channel.pull_rpc.future(
                    request, timeout=self.channel.pull_timeout_seconds
                )
            except Exception as exc:
                self.channel.unreserve(count)
                self.channel.report_pull_error(self.route, exc)
                return
            self._future, self._reserved = future, count
        future.add_done_callback(self._on_done)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            future = self._future
        if future is not None:
            future.cancel()

    def _on_done(self, future: Any) -> None:
        with self._lock:
            self._future = None
            reserved, self._reserved = self._reserved, 0
            stopped = self._stopped
        if future.cancelled():
            self.channel.unreserve(reserved)
            return
        error = future.exception()
        if error is not None:
            self.channel.unreserve(reserved)
            code = error.code() if isinstance(error, grpc.Call) else None
            if code in QUIET_CODES:
                self.kick()
            else:
                self.channel.report_pull_error(self.route, error)
            return
        try:
            self.channel.on_pulled(
                self, list(future.result().received_messages), reserved, stopped=stopped
            )
        except Exception:
            logger.exception("handling pulled messages of %s failed", self.route.queue)
        if not stopped:
            self.kick()
