"""Remote-control commands reach a worker before the work published after them.

Pub/Sub delivers each subscription on its own. A ``revoke`` broadcast to the workers' pidbox
subscriptions and the task published right after it to a task queue reach a worker in either
order: on the emulator the task came first in 10 of 20 tries, the broadcast arriving 10-55 ms
after it was published. Celery checks revocation when a task arrives, so a task received
before its revoke runs (Celery's own ``test_revoked_by_headers_*`` failed this way). Redis and
RabbitMQ deliver in publish order in practice, and Celery relies on it.

The fence, in two halves:

* **publisher** (``RecentCommands``, one per process, since Celery sends commands and tasks
  over different connections): a command (a confirmed publish to a fanout ``*.pidbox``
  exchange) is remembered with its message id; every message the process publishes in the
  next ``FENCE_WINDOW_SECONDS`` carries the ids (attribute ``kombu-after``, with each
  command's publish time);
* **consumer** (``CommandFence``, one per connection): a message that carries ids of commands
  this connection's broadcast consumer has not delivered yet, and could have received (it
  listened since before they were published), is held until it has, at most
  ``hold_seconds`` (transport option ``command_fence_seconds``); then it is delivered anyway.

In doubt the consumer waits: a command published up to ``CLOCK_MARGIN_SECONDS`` before its
broadcast consumer started (clocks of two machines differ; its subscription may predate the
consumer) is waited for, unless this very process published it (Celery's own ``hello`` at a
worker's start, sent before the worker listens). Failure modes, by design: a worker that
started listening just after another process's command never receives it and holds the
messages marked with it for ``hold_seconds``; a command lost by Pub/Sub delays its marked
messages by ``hold_seconds`` and no more; a publisher whose clock runs more than the margin
behind the worker's can see its command not waited for. Messages not published shortly after
a command carry nothing and are never held: the fence costs nothing on a queue no one is
revoking on.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

#: How long after a command a process marks what it publishes.
FENCE_WINDOW_SECONDS = 10.0
#: At most this many commands named on one message (the latest ones).
MAX_MARKED_COMMANDS = 8
#: How far apart a publisher's clock and a worker's may be.
CLOCK_MARGIN_SECONDS = 1.0
#: Delivered command ids a connection remembers.
REMEMBERED_COMMANDS = 10_000


class RecentCommands:
    """The commands this process published in the last ``FENCE_WINDOW_SECONDS``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._commands: deque[tuple[float, str]] = deque()
        self._last = float("-inf")
        #: When (``time.time()``) this process published each of its recent commands.
        self._published: OrderedDict[str, float] = OrderedDict()

    def note(self, message_id: str) -> None:
        """A command was confirmed by Pub/Sub as ``message_id``."""
        now, wall = time.monotonic(), time.time()
        with self._lock:
            self._commands.append((now, f"{message_id}@{int(wall * 1000)}"))
            self._published[message_id] = wall
            if len(self._published) > REMEMBERED_COMMANDS:
                self._published.popitem(last=False)
            while len(self._commands) > MAX_MARKED_COMMANDS:
                self._commands.popleft()
            self._last = now

    def marker(self) -> str | None:
        """The value of the ``kombu-after`` attribute for a message published now, or None."""
        now = time.monotonic()
        if now - self._last > FENCE_WINDOW_SECONDS:  # the common case: no lock taken
            return None
        with self._lock:
            while self._commands and now - self._commands[0][0] > FENCE_WINDOW_SECONDS:
                self._commands.popleft()
            return " ".join(mark for _, mark in self._commands) or None

    def published_here_before(self, message_id: str, when: float) -> bool:
        """Whether this process published the command before ``when`` (``time.time()``)."""
        published = self._published.get(message_id)
        return published is not None and published < when


#: This process's commands (Celery sends a revoke and the next task on different connections).
RECENT_COMMANDS = RecentCommands()


def parse_marker(marker: str) -> list[tuple[str, float]]:
    """``kombu-after``'s (message id, publish time) pairs; malformed parts are ignored."""
    commands = []
    for part in marker.split():
        message_id, _, millis = part.partition("@")
        if message_id and millis.isdigit():
            commands.append((message_id, int(millis) / 1000))
    return commands


@dataclass
class Held:
    """A message waiting for commands published before it."""

    item: Any
    waits_for: set[str]
    until: float = field(default=0.0)


class CommandFence:
    """One connection's half: the commands its broadcast consumers delivered, and the
    messages held until they have. Used from the consuming thread only."""

    def __init__(self, hold_seconds: float) -> None:
        self.hold_seconds = hold_seconds
        #: When (``time.time()``) a broadcast consumer of this connection started listening.
        self.listening_since: float | None = None
        self._delivered: OrderedDict[str, None] = OrderedDict()
        self._held: list[Held] = []

    def note_listening(self) -> None:
        if self.listening_since is None:
            self.listening_since = time.time()

    def waits_for(self, marker: str | None) -> set[str]:
        """The commands of ``marker`` to deliver before the message that carries it."""
        if not marker or self.listening_since is None or self.hold_seconds <= 0:
            return set()
        listening = self.listening_since
        return {message_id for message_id, published in parse_marker(marker)
                if published >= listening - CLOCK_MARGIN_SECONDS
                and message_id not in self._delivered
                and not RECENT_COMMANDS.published_here_before(message_id, listening)}

    def hold(self, item: Any, waits_for: set[str]) -> float:
        """Hold ``item``; returns the deadline (``time.monotonic()``) of its hold."""
        until = time.monotonic() + self.hold_seconds
        self._held.append(Held(item, waits_for, until))
        return until

    def note_delivered(self, message_id: str) -> list[Any]:
        """A broadcast was delivered: the held items that no longer wait, in arrival order."""
        self._delivered[message_id] = None
        if len(self._delivered) > REMEMBERED_COMMANDS:
            self._delivered.popitem(last=False)
        if not self._held:
            return []
        for held in self._held:
            held.waits_for.discard(message_id)
        return self._release(lambda held: not held.waits_for)

    def due(self) -> list[Any]:
        """Held items whose hold is over, command delivered or not."""
        if not self._held:
            return []
        now = time.monotonic()
        return self._release(lambda held: held.until <= now)

    def _release(self, done: Any) -> list[Any]:
        released = [held.item for held in self._held if done(held)]
        if released:
            self._held = [held for held in self._held if not done(held)]
        return released
