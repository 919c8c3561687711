"""Pub/Sub resource names for Kombu exchanges and queues.

Pub/Sub ids are 3-255 characters of letters, digits and ``-_.~+%``, start with a letter and
never with ``goog``. Kombu names are freer (``celery@host.celery.pidbox``), so every other
character is percent-encoded: the mapping is exact and reversible, and two Kombu names never
share a Pub/Sub id. Overlong ids keep a readable head and end in a hash of the whole name.
"""

from __future__ import annotations

import functools
import hashlib
import string

MAX_ID_LENGTH = 255
ALLOWED_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-_.~+")
DEAD_LETTER_SUFFIX = "-dead-letter"
HASH_LENGTH = 16


@functools.lru_cache(maxsize=4096)  # every publish names its topic; the names are few
def resource_id(prefix: str, name: str) -> str:
    """The Pub/Sub id for a Kombu name: ``prefix`` + the name, percent-encoded as needed."""
    encoded = "".join(c if c in ALLOWED_CHARACTERS else f"%{ord(c):02X}" for c in name)
    full = f"{prefix}{encoded}"
    if not full[:1].isalpha() or full.lower().startswith("goog"):
        full = f"k{full}"
    if len(full) < 3:
        full = full.ljust(3, "_")
    if len(full) > MAX_ID_LENGTH:
        digest = hashlib.sha256(full.encode()).hexdigest()[:HASH_LENGTH]
        full = f"{full[: MAX_ID_LENGTH - HASH_LENGTH - 1]}~{digest}"
    return full


def dead_letter_id(subscription_id: str) -> str:
    """Topic (and its retaining subscription) that a queue's rejected messages go to."""
    if len(subscription_id) + len(DEAD_LETTER_SUFFIX) > MAX_ID_LENGTH:
        digest = hashlib.sha256(subscription_id.encode()).hexdigest()[:HASH_LENGTH]
        cut = MAX_ID_LENGTH - len(DEAD_LETTER_SUFFIX) - HASH_LENGTH - 1
        subscription_id = f"{subscription_id[:cut]}~{digest}"
    return f"{subscription_id}{DEAD_LETTER_SUFFIX}"


def topic_path(project: str, topic_id: str) -> str:
    return f"projects/{project}/topics/{topic_id}"


def subscription_path(project: str, subscription_id: str) -> str:
    return f"projects/{project}/subscriptions/{subscription_id}"


def short_name(path: str) -> str:
    """``projects/p/topics/t`` -> ``t`` (for messages meant for people)."""
    return path.rsplit("/", 1)[-1]
