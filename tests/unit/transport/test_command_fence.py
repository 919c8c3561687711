"""command_fence.py's rules, without a broker: which messages wait, and for how long."""

from __future__ import annotations

import time

import pytest

from vividly_tasks.transport import command_fence
from vividly_tasks.transport.command_fence import CommandFence, RecentCommands, parse_marker


def marker_at(published: float, message_id: str = "7") -> str:
    return f"{message_id}@{int(published * 1000)}"


def test_a_process_marks_what_it_publishes_only_shortly_after_a_command(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    recent = RecentCommands()
    assert recent.marker() is None
    for message_id in range(10):
        recent.note(str(message_id))
    marked = parse_marker(recent.marker() or "")
    # The latest commands only, each with its publish time.
    assert [mid for mid, _ in marked] == [str(i) for i in range(2, 10)]
    assert all(abs(published - time.time()) < 5 for _, published in marked)
    later = time.monotonic() + command_fence.FENCE_WINDOW_SECONDS + 1
    monkeypatch.setattr(command_fence.time, "monotonic", lambda: later)
    assert recent.marker() is None


def test_a_message_waits_for_a_command_published_while_the_worker_listened() -> None:
    fence = CommandFence(hold_seconds=2.0)
    assert fence.waits_for(marker_at(time.time())) == set()  # no broadcast consumer: no wait
    fence.note_listening()
    published = time.time() + 1
    assert fence.waits_for(marker_at(published)) == {"7"}
    fence.hold("task", {"7"})
    assert fence.due() == []
    assert fence.note_delivered("8") == []
    assert fence.note_delivered("7") == ["task"]  # released right after its command
    assert fence.waits_for(marker_at(published)) == set()  # delivered already


def test_a_command_from_well_before_the_worker_listened_is_not_waited_for() -> None:
    fence = CommandFence(hold_seconds=2.0)
    fence.note_listening()
    assert fence.waits_for(marker_at(time.time() - 5)) == set()
    assert fence.waits_for("garbage 9@x @12") == set()


def test_in_doubt_a_command_just_before_listening_is_waited_for_unless_it_is_our_own(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    recent = RecentCommands()
    monkeypatch.setattr(command_fence, "RECENT_COMMANDS", recent)
    recent.note("own-hello")  # Celery's hello at a worker's start, before it listens
    fence = CommandFence(hold_seconds=2.0)
    fence.note_listening()
    just_before = time.time() - command_fence.CLOCK_MARGIN_SECONDS / 2
    assert fence.waits_for(marker_at(just_before, "theirs")) == {"theirs"}
    assert fence.waits_for(marker_at(just_before, "own-hello")) == set()


def test_a_command_that_never_comes_holds_the_message_for_hold_seconds_only(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    fence = CommandFence(hold_seconds=2.0)
    fence.note_listening()
    until = fence.hold("task", {"7"})
    assert fence.due() == []
    monkeypatch.setattr(command_fence.time, "monotonic", lambda: until + 0.01)
    assert fence.due() == ["task"] and fence.due() == []


def test_a_fence_of_zero_seconds_holds_nothing() -> None:
    fence = CommandFence(hold_seconds=0)
    fence.note_listening()
    assert fence.waits_for(marker_at(time.time() + 1)) == set()
