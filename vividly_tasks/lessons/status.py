"""The status machine of a content request: the one place that says which moves are allowed.

    pending -> queued -> generating -> completed
                           |    ^
                           v    |
                          retrying

    (and from each of the four non-terminal statuses: -> failed)

``pending``: the row exists, its message is not known to be enqueued (an enqueue that failed
leaves it here, with the error, for a resubmit). ``queued``: the message was accepted by the
broker. ``generating``: a worker holds (or held) the claim. ``retrying``: an attempt failed with a
transient error and gave its claim up; the row says why (``error``) and when the retry is due
(``retry_at``); the retry's claim makes it ``generating`` again. ``completed`` and ``failed`` are
terminal. A worker may claim a ``pending`` request (its message raced ahead of the row update) and
a ``generating`` one (a takeover of a dead worker's claim): ``generating -> generating`` is a
new claim, not a step back, and so is ``retrying -> generating``. Nothing else moves backwards.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    GENERATING = "generating"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"


class Stage(StrEnum):
    """Pipeline stages, in order; ``percent`` is the progress reached when the stage starts."""

    VALIDATE = "validate"
    SCRIPT = "script"
    NARRATE = "narrate"
    SLIDES = "slides"
    ENCODE = "encode"
    STORE = "store"
    COMPLETE = "complete"


ALLOWED_TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.QUEUED, Status.GENERATING, Status.FAILED}),
    Status.QUEUED: frozenset({Status.GENERATING, Status.FAILED}),
    Status.GENERATING: frozenset(
        {Status.GENERATING, Status.RETRYING, Status.COMPLETED, Status.FAILED}
    ),
    Status.RETRYING: frozenset({Status.GENERATING, Status.FAILED}),
    Status.COMPLETED: frozenset(),
    Status.FAILED: frozenset(),
}
TERMINAL = frozenset(status for status, targets in ALLOWED_TRANSITIONS.items() if not targets)


class TransitionError(ValueError):
    """A status change that the machine does not allow."""


def can_transition(current: Status | str, target: Status | str) -> bool:
    return Status(target) in ALLOWED_TRANSITIONS[Status(current)]


def check_transition(current: Status | str, target: Status | str) -> None:
    if not can_transition(current, target):
        raise TransitionError(f"a request cannot move from {current} to {target}")


def sources(target: Status | str) -> frozenset[Status]:
    """The statuses a request may be in to move to ``target``: the WHERE of a guarded UPDATE."""
    target = Status(target)
    return frozenset(s for s, targets in ALLOWED_TRANSITIONS.items() if target in targets)


def is_terminal(status: Status | str) -> bool:
    return Status(status) in TERMINAL
