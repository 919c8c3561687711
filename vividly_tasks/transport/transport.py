"""The Kombu transport: declares what it implements and delivers what the channels pull.

Delivery is event-driven: Pull callbacks (on gRPC threads) queue received messages and write a
byte to a pipe; the worker's event loop watches the pipe's read end like any socket and hands
the messages to Celery on its own thread. Without an event loop (``celery inspect``, plain
Kombu consumers) ``drain_events`` waits on the same queue with a timeout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections import deque
from functools import cached_property
from typing import Any, TypeVar

from google.api_core import exceptions as google_errors
from google.pubsub_v1 import gapic_version
from kombu.transport import virtual

from vividly_tasks.transport import wire
from vividly_tasks.transport.bindings import BindingRecords
from vividly_tasks.transport.channel import Channel as PubSubChannel
from vividly_tasks.transport.clients import PubSubClients, clients_for_this_process
from vividly_tasks.transport.command_fence import CommandFence
from vividly_tasks.transport.errors import (
    PubSubChannelError,
    PubSubConnectionError,
    translate,
)
from vividly_tasks.transport.provisioning import Provisioner

logger = logging.getLogger(__name__)
T = TypeVar("T")
#: A pulled message on its way to the consuming thread: its channel, queue, Kombu payload,
#: the ``kombu-after`` marker it carries (command_fence.py), and whether it is a broadcast.
Delivery = tuple[PubSubChannel, str, dict[str, Any], str | None, bool]


def _no_signal_wakeup_in_child() -> None:
    # A forked pool child inherits the wakeup fd; its signals must not write to our pipe.
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)


os.register_at_fork(after_in_child=_no_signal_wakeup_in_child)

DEFAULT_CONNECT_TIMEOUT_SECONDS = 10.0
TRUE_STRINGS = frozenset({"1", "true", "yes", "on"})


def parse_option(value: Any, kind: type[T]) -> T:
    """Options often arrive as strings from the environment: convert them once, here."""
    if kind is bool and isinstance(value, str):
        return value.strip().lower() in TRUE_STRINGS  # type: ignore[return-value]
    return kind(value)  # type: ignore[call-arg]


class Transport(virtual.Transport):
    """Google Cloud Pub/Sub transport (``pubsub://PROJECT_ID``)."""

    Channel = PubSubChannel

    #: Celery treats ``gcpubsub`` as Pub/Sub: fanout events, Mingle on. Honest: this is Pub/Sub.
    driver_type = "gcpubsub"
    driver_name = "google-cloud-pubsub"
    can_parse_url = False
    polling_interval = None  # type: ignore[assignment]

    implements = virtual.Transport.implements.extend(
        asynchronous=True,
        exchange_type=frozenset(["direct", "fanout", "topic"]),
        heartbeats=False,
    )

    connection_errors = (  # type: ignore[assignment]
        *virtual.Transport.connection_errors, PubSubConnectionError
    )
    channel_errors = (*virtual.Transport.channel_errors, PubSubChannelError)  # type: ignore[assignment]

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self._ready: deque[Delivery] = deque()
        self._ready_condition = threading.Condition()
        self._error: Exception | None = None
        self._wake_read, self._wake_write = -1, -1
        self._registered_loop: Any = None
        self._wakes_on_signals = False
        #: Set once Pub/Sub became unreachable: Celery will replace this connection, and the
        #: messages its channels hold stay leased (see Channel.close).
        self.lost = False

    # --- per-connection machinery, created on first use ---------------------------------
    @cached_property
    def clients(self) -> PubSubClients:
        return clients_for_this_process()

    @property
    def options(self) -> dict[str, Any]:
        """The connection's transport options, as given (often strings from the environment)."""
        assert self.client is not None
        options: dict[str, Any] = self.client.transport_options
        return options

    def option(self, name: str, kind: type[T]) -> T:
        """A transport option converted to ``kind``, or the channel's ``default_<name>``."""
        return parse_option(self.options.get(name, getattr(PubSubChannel, f"default_{name}")),
                            kind)

    @cached_property
    def project(self) -> str:
        assert self.client is not None
        project = self.client.hostname or os.environ.get("GOOGLE_CLOUD_PROJECT")
        if not project or project == "localhost":
            raise PubSubChannelError(
                "no Google Cloud project: use pubsub://PROJECT_ID or set GOOGLE_CLOUD_PROJECT"
            )
        return str(project)

    @cached_property
    def binding_records(self) -> BindingRecords:
        return BindingRecords(self.clients, self.project)

    @cached_property
    def command_fence(self) -> CommandFence:
        return CommandFence(self.option("command_fence_seconds", float))

    @cached_property
    def provisioner(self) -> Provisioner:
        return Provisioner(self.clients, auto_create=self.option("auto_create", bool))

    # --- connecting ------------------------------------------------------------------------
    def establish_connection(self) -> Transport:
        """Prove Pub/Sub answers within the connect timeout, or raise a connection error."""
        assert self.client is not None
        timeout = float(self.client.connect_timeout or DEFAULT_CONNECT_TIMEOUT_SECONDS)
        project = self.project
        try:
            self.clients.publisher.list_topics(
                request={"project": f"projects/{project}", "page_size": 1},
                timeout=timeout, retry=None,  # one attempt: Celery owns reconnect policy
            )
        except google_errors.PermissionDenied:
            pass  # reachable; least-privilege identities may not list topics
        except Exception as exc:
            error = translate(exc, "list topics of", f"projects/{project}")
            if isinstance(error, PubSubConnectionError):
                raise error from exc
            if isinstance(exc, google_errors.GoogleAPICallError):
                raise PubSubConnectionError(str(error)) from exc
            raise
        super().establish_connection()
        return self

    def ensure_receiving(self) -> None:
        """Open the wake-up pipe the first time a channel consumes."""
        if self._wake_read < 0:
            self._wake_read, self._wake_write = os.pipe()
            os.set_blocking(self._wake_read, False)
            os.set_blocking(self._wake_write, False)

    def close_connection(self, connection: Any) -> None:
        try:
            super().close_connection(connection)  # closes channels: releases their leases
        finally:
            if self._wakes_on_signals:
                with contextlib.suppress(ValueError):
                    signal.set_wakeup_fd(-1)
                self._wakes_on_signals = False
            if self._registered_loop is not None and self._wake_read >= 0:
                with contextlib.suppress(Exception):
                    self._registered_loop.remove(self._wake_read)
            for fd in (self._wake_read, self._wake_write):
                if fd >= 0:
                    os.close(fd)
            self._wake_read = self._wake_write = -1

    # --- delivery ----------------------------------------------------------------------------
    def enqueue_delivery(
        self, channel: PubSubChannel, queue: str, payload: dict[str, Any], *,
        after: str | None = None, broadcast: bool = False,
    ) -> None:
        """Runs on a gRPC thread: queue a message for the consuming thread and wake it."""
        with self._ready_condition:
            self._ready.append((channel, queue, payload, after, broadcast))
            self._ready_condition.notify_all()
        self._wake()

    def fail(self, error: Exception) -> None:
        """Runs on a gRPC thread: the consuming thread raises ``error`` at its next turn."""
        with self._ready_condition:
            if isinstance(error, PubSubConnectionError):
                self.lost = True
            if self._error is None:
                self._error = error
            self._ready_condition.notify_all()
        self._wake()

    def _wake(self) -> None:
        if self._wake_write >= 0:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._wake_write, b"\0")

    def _deliver_ready(self) -> int:
        fence = self.command_fence
        delivered = 0
        while True:
            with self._ready_condition:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                if not self._ready:
                    break
                item = self._ready.popleft()
            waits_for = fence.waits_for(item[3])
            if waits_for:
                self._wake_at(fence.hold(item, waits_for))
                continue
            delivered += self._deliver_one(item)
        # Last, so that a command that did arrive is delivered before what it was held for.
        for item in fence.due():
            delivered += self._deliver_one(item)
        return delivered

    def _deliver_one(self, item: Delivery) -> int:
        channel, queue, payload, _, broadcast = item
        if channel.closed:
            return 0  # its close() released the lease already
        self._deliver(payload, queue)
        if not broadcast:
            return 1
        # A command delivered: what was held for it follows it.
        message_id = payload["properties"]["delivery_info"].get(wire.MESSAGE_ID, "")
        return 1 + sum(self._deliver_one(held)
                       for held in self.command_fence.note_delivered(message_id))

    def _wake_at(self, deadline: float) -> None:
        """Deliver what is held when its hold ends, even if nothing else arrives."""
        timer = threading.Timer(max(0.0, deadline - time.monotonic()) + 0.001, self._wake_ready)
        timer.daemon = True
        timer.start()

    def _wake_ready(self) -> None:
        with self._ready_condition:
            self._ready_condition.notify_all()
        self._wake()

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        self.ensure_receiving()
        self._registered_loop = loop
        loop.add_reader(self._wake_read, self.on_readable, connection, loop)
        self._wake_on_signals()

    def _wake_on_signals(self) -> None:
        """Let a signal wake the event loop at once (``signal.set_wakeup_fd``).

        Celery's SIGTERM handler only sets a flag that the loop checks between polls, and the
        poll resumes after a signal: without this a warm shutdown starts up to a second late.
        Only in the main thread, and never over a wakeup fd someone else (asyncio) installed.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.set_wakeup_fd(self._wake_write, warn_on_full_buffer=False)
        if previous not in (-1, self._wake_write):
            signal.set_wakeup_fd(previous, warn_on_full_buffer=False)
            return
        self._wakes_on_signals = True

    def on_readable(self, connection: Any, loop: Any) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._wake_read, 4096):
                pass
        self._deliver_ready()

    def drain_events(  # type: ignore[override]  # Kombu's two bases disagree on it
        self, connection: Any, timeout: Any = None
    ) -> None:
        """Deliver what has arrived, waiting up to ``timeout``; socket.timeout if nothing."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._ready_condition:
                if not self._ready and self._error is None:
                    self._ready_condition.wait(
                        None if deadline is None else max(0.0, deadline - time.monotonic())
                    )
            if self._deliver_ready():
                return
            # Woken for a message that is held (command_fence.py): wait on, up to timeout.
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError()

    def driver_version(self) -> str:
        return str(gapic_version.__version__)
