"""Which of a topic's messages belong to a queue: AMQP's routing, without subscription filters.

A message is published to its exchange's topic with ``exchange`` and ``routing_key``
attributes; every queue bound to that exchange has a subscription on the topic and so gets a
copy, and keeps it only if one of its bindings matches (the others ack and drop theirs):

* the default exchange ``""``: the routing key is the queue's name;
* direct: the routing key equals the binding key;
* topic: AMQP's patterns, words split on ``.``, ``*`` one word, ``#`` zero or more;
* fanout: everything, or, as with Kombu's Redis transport (``fanout_patterns``), a binding key
  that is a pattern (``""`` and ``#`` all, ``worker.#`` only worker events).

A durable queue's bindings are shared state (``bindings.py``): the route knows the ones this
process made and the ones recorded by any process, read when the queue is first used here and
again before a message would be dropped that was published after the last read (less a
clock margin), so a binding made elsewhere is never missed. A queue with no binding known
anywhere (made before bindings were recorded) keeps every message of its topic, as it did.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache

from vividly_tasks.transport.bindings import Binding, BindingRecords
from vividly_tasks.transport.naming import short_name
from vividly_tasks.transport.provisioning import SubscriptionSpec

#: How far Pub/Sub's clock (a message's publish time) may be ahead of ours when deciding
#: whether the bindings read here are newer than a message.
CLOCK_MARGIN_SECONDS = 1.0


@dataclass
class QueueRoute:
    """A queue's subscription, its bindings, and which messages of its topic are its own."""

    queue: str
    spec: SubscriptionSpec
    #: The exchange's type as bound here: direct, fanout or topic.
    kind: str = "direct"
    #: Binding keys made by this process; None: none made here.
    routing_keys: set[str] | None = None
    #: Whether the queue's bindings are shared (durable queues; a temporary queue's are
    #: known only to its process), the ones recorded by any process, and when
    #: (``time.time()``) they were last read (0.0: not yet).
    shares: bool = False
    shared: frozenset[Binding] = frozenset()
    read_at: float = 0.0
    _refresh: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def fanout(self) -> bool:
        return self.kind == "fanout" or any(kind == "fanout" for kind, _ in self.shared)

    def accepts(self, exchange: str, routing_key: str) -> bool:
        """Whether a binding made here or recorded anywhere matches; with none known
        anywhere, every message is the queue's."""
        if not exchange:  # AMQP's default exchange: routed by queue name
            return routing_key == self.queue
        if self.routing_keys is None and not self.shared:
            return True
        # Runs for every received message: no set of all bindings is built for it.
        return any(key_matches(self.kind, key, routing_key)
                   for key in self.routing_keys or ()) or any(
            key_matches(kind, key, routing_key) for kind, key in self.shared)

    def accepts_now(self, exchange: str, routing_key: str, published_at: float,
                    records: BindingRecords) -> bool:
        """``accepts``, after reading the shared bindings again if they may predate the
        message (one read at a time; a read that finished meanwhile is enough)."""
        if self.accepts(exchange, routing_key):
            return True
        if not self.shares or published_at < self.read_at - CLOCK_MARGIN_SECONDS:
            return False
        with self._refresh:
            if published_at >= self.read_at - CLOCK_MARGIN_SECONDS:
                self.read_shared(records)
        return self.accepts(exchange, routing_key)

    def read_shared(self, records: BindingRecords) -> None:
        started = time.time()
        self.shared = records.read(short_name(self.spec.path))
        self.read_at = started


def key_matches(kind: str, binding_key: str, routing_key: str) -> bool:
    if kind == "fanout":
        return fanout_key_matches(binding_key, routing_key)
    if kind == "topic":
        return topic_key_matches(binding_key, routing_key)
    return binding_key == routing_key


def fanout_key_matches(binding_key: str, routing_key: str) -> bool:
    """A fanout binding key as a pattern (AMQP topic syntax); ``""`` and ``#`` match all."""
    if binding_key in ("", "#"):
        return True
    return topic_key_matches(binding_key, routing_key)


def topic_key_matches(binding_key: str, routing_key: str) -> bool:
    """AMQP's topic match: words split on ``.``; ``*`` is one word, ``#`` zero or more
    (``a.#`` matches ``a``, ``a.b`` and ``a.b.c``; Kombu's own memory transport wants one)."""
    if binding_key == "#":
        return True
    return _words_match(tuple(binding_key.split(".")), tuple(routing_key.split(".")))


@lru_cache(maxsize=4096)
def _words_match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_words_match(rest, words[i:]) for i in range(len(words) + 1))
    return bool(words) and head in ("*", words[0]) and _words_match(rest, words[1:])


def published_at(message: object) -> float:
    """A Pub/Sub message's publish time as ``time.time()`` seconds (now, if it has none)."""
    stamp = getattr(message, "publish_time", None)
    seconds = getattr(stamp, "seconds", 0) + getattr(stamp, "nanos", 0) / 1e9
    return seconds or time.time()
