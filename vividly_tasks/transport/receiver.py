"""Pulling: unary Pulls per consumed subscription, never more messages than prefetch allows.

Each Pull is a gRPC future: the server holds it until messages arrive (no poll-and-sleep), its
callback hands the messages to the channel and starts the next Pull while there is capacity.
A freed prefetch slot may get a Pull of its own while another waits (see ``Puller``); an empty
Pull is not replaced while another of the consumer's Pulls still waits.

A task-queue Pull is never cancelled while it may still be handed messages: Pub/Sub (and its
emulator) can deliver into a Pull whose client already gave up, and such messages stay leased
to nobody until their ack deadline. So those Pulls are short (``pull_timeout_seconds``; the
emulator answers an empty Pull about 0.9 s before its deadline) and ``stop()`` lets the ones in
flight finish, releasing anything they still bring. Consumers that ack on receipt (broadcasts,
events) lose nothing that matters to a cancel, so they pull long and are cancelled at once.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

import grpc

from vividly_tasks.transport.routing import QueueRoute
from vividly_tasks.transport.stubs import PullRequest, routing_metadata

logger = logging.getLogger(__name__)

#: A Pull that times out is simply reissued.
QUIET_CODES = frozenset({grpc.StatusCode.DEADLINE_EXCEEDED})
def status_code(error: BaseException) -> grpc.StatusCode | None:
    """The gRPC status of a failed call (None for any other error)."""
    return error.code() if isinstance(error, grpc.Call) else None


#: Codes that mean the broker is unreachable: Celery should reconnect.
CONNECTION_CODES = frozenset({
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
})


def pull_metadata(subscription: str) -> tuple[tuple[str, str], ...]:
    return routing_metadata("subscription", subscription)


class PullHost(Protocol):
    """What a Puller needs of the channel it pulls for (channel.py), and nothing more."""

    @property
    def pull_timeout_seconds(self) -> float: ...
    @property
    def broadcast_pull_timeout_seconds(self) -> float: ...
    @property
    def pull_rpc(self) -> Any: ...

    def reserve(self, no_ack: bool, holding: int = 0) -> int:
        """Room for up to N messages in the next Pull (0: do not pull)."""

    def unreserve(self, count: int) -> None:
        """Give back room a Pull reserved and did not fill."""

    def note_pull(self, asked: int, got: int, seconds: float) -> None:
        """A task-queue Pull for ``asked`` messages brought ``got``, ``seconds`` after it was
        issued."""

    def kick_pullers(self, skip: Any = None) -> None:
        """Let every consumer of the channel pull again (there may be room)."""

    def on_pulled(self, puller: Any, received: list[Any], *, stopped: bool) -> None:
        """Runs on a gRPC thread: the messages a Pull returned."""

    def report_pull_error(self, route: QueueRoute, exc: BaseException) -> None:
        """Runs on a gRPC thread: a Pull failed."""


class Puller:
    """The pull loop of one consumer on one subscription.

    Several Pulls may be in flight, each holding its own share of the channel's room: when a
    task is acked while a Pull waits, the freed slot gets a Pull of its own instead of waiting
    behind the first one, and the total never exceeds the prefetch count.
    """

    def __init__(self, channel: PullHost, route: QueueRoute, *, no_ack: bool) -> None:
        self.channel = channel
        self.route = route
        self.no_ack = no_ack
        self._lock = threading.Lock()
        self._in_flight: dict[Any, int] = {}  # Pull future -> room it reserved
        self._issued: dict[Any, float] = {}  # Pull future -> time.monotonic() it was issued
        self._stopped = False
        self._idle = threading.Event()
        self._idle.set()

    @property
    def timeout_seconds(self) -> float:
        # Ack-on-receipt consumers are cancelled at once on stop, so they can wait long.
        if self.no_ack:
            return self.channel.broadcast_pull_timeout_seconds
        return self.channel.pull_timeout_seconds

    def kick(self) -> None:
        """Start a Pull if the channel has room for more messages (and this consumer is on)."""
        with self._lock:
            if self._stopped or (self.no_ack and self._in_flight):
                return
            count = self.channel.reserve(self.no_ack, holding=sum(self._in_flight.values()))
            if count == 0:
                return
            request = PullRequest(subscription=self.route.spec.path, max_messages=count)
            try:
                future = self.channel.pull_rpc.future(
                    request, timeout=self.timeout_seconds,
                    metadata=pull_metadata(self.route.spec.path),
                )
            except Exception as exc:
                self._unreserve(count)
                self.channel.report_pull_error(self.route, exc)
                return
            self._in_flight[future] = count
            self._issued[future] = time.monotonic()
            self._idle.clear()
        future.add_done_callback(self._on_done)

    def stop(self) -> None:
        """No more Pulls; an ack-on-receipt consumer's Pulls in flight are cancelled at once."""
        with self._lock:
            self._stopped = True
            futures = list(self._in_flight)
        if self.no_ack:
            for future in futures:
                future.cancel()

    def wait_idle(self, timeout: float) -> bool:
        """Wait for the Pulls in flight (if any) to finish; False if ``timeout`` ran out."""
        return self._idle.wait(timeout)

    def _unreserve(self, count: int) -> None:
        if not self.no_ack:
            self.channel.unreserve(count)

    def _on_done(self, future: Any) -> None:
        with self._lock:
            reserved = self._in_flight.pop(future, 0)
            issued = self._issued.pop(future, None)
            stopped = self._stopped
        try:
            received = self._handle(future, reserved, stopped=stopped, issued=issued)
        finally:
            with self._lock:
                others_in_flight = bool(self._in_flight)
                if not others_in_flight:
                    self._idle.set()
        # The room this Pull reserved is free again, for this consumer or a sibling on the
        # same channel (which may have found no room while this Pull was in flight). An empty
        # Pull is not replaced while another of ours still waits: after a drain, an idle
        # worker would otherwise keep one Pull per prefetch slot going round instead of one.
        quiet = received == 0 and others_in_flight
        self.channel.kick_pullers(skip=self if quiet else None)

    def _handle(self, future: Any, reserved: int, *, stopped: bool,
                issued: float | None = None) -> int:
        """Settle a finished Pull; the number of messages it brought."""
        if future.cancelled():
            self._unreserve(reserved)
            return 0
        error = future.exception()
        if error is not None:
            self._unreserve(reserved)
            code = status_code(error)
            if code not in QUIET_CODES:
                self.channel.report_pull_error(self.route, error)
            return 0
        received = list(future.result().received_messages)
        if not self.no_ack and issued is not None:
            self.channel.note_pull(reserved, len(received), time.monotonic() - issued)
        try:
            self.channel.on_pulled(self, received, stopped=stopped)
        except Exception:
            logger.exception("handling pulled messages of %s failed", self.route.queue)
        finally:
            self._unreserve(reserved)
        return len(received)
