"""Pulling: one unary Pull in flight per consumed subscription, never more than prefetch allows.

Each Pull is a gRPC future: the server holds it until messages arrive (no poll-and-sleep), its
callback hands the messages to the channel and starts the next Pull while there is capacity.

A Pull is never cancelled while it may still be handed messages: Pub/Sub (and its emulator) can
deliver into a Pull whose client already gave up, and such messages stay leased to nobody until
their ack deadline. So Pulls are short (``pull_timeout_seconds``; the server answers an empty
Pull just before its deadline) and ``stop()`` lets the one in flight finish, releasing anything
it still brings. Only consumers that ack on receipt (broadcasts, events) are cancelled at once.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import grpc
from google.api_core.gapic_v1 import routing_header
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


def pull_metadata(subscription: str) -> tuple[tuple[str, str], ...]:
    """The routing header Google's client sends with every Pull (we call the stub directly)."""
    return (routing_header.to_grpc_metadata((("subscription", subscription),)),)


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
        self._idle = threading.Event()
        self._idle.set()

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
                    request, timeout=self.channel.pull_timeout_seconds,
                    metadata=pull_metadata(self.route.spec.path),
                )
            except Exception as exc:
                self._unreserve(count)
                self.channel.report_pull_error(self.route, exc)
                return
            self._future, self._reserved = future, count
            self._idle.clear()
        future.add_done_callback(self._on_done)

    def stop(self) -> None:
        """No more Pulls; an ack-on-receipt consumer's Pull in flight is cancelled at once."""
        with self._lock:
            self._stopped = True
            future = self._future
        if future is not None and self.no_ack:
            future.cancel()

    def wait_idle(self, timeout: float) -> bool:
        """Wait for the Pull in flight (if any) to finish; False if ``timeout`` ran out."""
        return self._idle.wait(timeout)

    def _unreserve(self, count: int) -> None:
        if not self.no_ack:
            self.channel.unreserve(count)

    def _on_done(self, future: Any) -> None:
        with self._lock:
            self._future = None
            reserved, self._reserved = self._reserved, 0
            stopped = self._stopped
        try:
            self._handle(future, reserved, stopped=stopped)
        finally:
            self._idle.set()
        # The room this Pull reserved is free again, for this consumer or a sibling on the
        # same channel (which may have found no room while this Pull was in flight).
        self.channel.kick_pullers()

    def _handle(self, future: Any, reserved: int, *, stopped: bool) -> None:
        if future.cancelled():
            self._unreserve(reserved)
            return
        error = future.exception()
        if error is not None:
            self._unreserve(reserved)
            code = error.code() if isinstance(error, grpc.Call) else None
            if code not in QUIET_CODES:
                self.channel.report_pull_error(self.route, error)
            return
        try:
            self.channel.on_pulled(self, list(future.result().received_messages), stopped=stopped)
        except Exception:
            logger.exception("handling pulled messages of %s failed", self.route.queue)
        finally:
            self._unreserve(reserved)
