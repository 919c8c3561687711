"""The pull loop (vividly_tasks/transport/receiver.py) on its own: the real Puller against a
host that records what it is asked and Pull futures the test completes. No emulator."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from vividly_tasks.transport.provisioning import SubscriptionSpec
from vividly_tasks.transport.receiver import Puller, status_code
from vividly_tasks.transport.routing import QueueRoute

SPEC = SubscriptionSpec(project="p", subscription_id="q", topic_id="q", ack_deadline_seconds=30,
                        max_delivery_attempts=5, retry_min_backoff_seconds=1.0,
                        retry_max_backoff_seconds=600.0)


class RpcError(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """A failed call with a status code, as gRPC raises it."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._code.name

    def initial_metadata(self) -> Any:
        return ()

    def trailing_metadata(self) -> Any:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False


class PullFuture:
    """One Pull in flight, finished by the test."""

    def __init__(self, request: Any, timeout: float) -> None:
        self.request, self.timeout = request, timeout
        self._callbacks: list[Callable[[Any], None]] = []
        self._cancelled = False
        self._error: BaseException | None = None
        self._messages: list[Any] = []

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self._callbacks.append(callback)

    def cancel(self) -> bool:
        self._cancelled = True
        return True

    def cancelled(self) -> bool:
        return self._cancelled

    def exception(self) -> BaseException | None:
        return self._error

    def result(self) -> Any:
        return SimpleNamespace(received_messages=self._messages)

    def finish(self, messages: list[Any] | None = None,
               error: BaseException | None = None) -> None:
        self._messages, self._error = messages or [], error
        for callback in self._callbacks:
            callback(self)


class Host:
    """The channel as a Puller sees it (``PullHost``), with the room it grants scripted."""

    pull_timeout_seconds = 2.0
    broadcast_pull_timeout_seconds = 30.0

    def __init__(self, room: int = 2) -> None:
        self.room = room
        self.reserved: list[tuple[bool, int]] = []  # (no_ack, holding) of each reserve
        self.unreserved: list[int] = []
        self.pulls: list[PullFuture] = []
        self.noted: list[tuple[int, int]] = []
        self.kicks: list[Any] = []
        self.pulled: list[tuple[list[Any], bool]] = []
        self.errors: list[BaseException] = []
        self.fail_issue: Exception | None = None
        self.fail_handling = False
        self.pull_rpc = SimpleNamespace(future=self._future)

    def _future(self, request: Any, *, timeout: float, metadata: Any) -> PullFuture:
        if self.fail_issue is not None:
            raise self.fail_issue
        future = PullFuture(request, timeout)
        self.pulls.append(future)
        return future

    def reserve(self, no_ack: bool, holding: int = 0) -> int:
        self.reserved.append((no_ack, holding))
        return self.room

    def unreserve(self, count: int) -> None:
        self.unreserved.append(count)

    def note_pull(self, asked: int, got: int, seconds: float) -> None:
        self.noted.append((asked, got))

    def kick_pullers(self, skip: Any = None) -> None:
        self.kicks.append(skip)

    def on_pulled(self, puller: Any, received: list[Any], *, stopped: bool) -> None:
        self.pulled.append((received, stopped))
        if self.fail_handling:
            raise RuntimeError("a bug in handling")

    def report_pull_error(self, route: QueueRoute, exc: BaseException) -> None:
        self.errors.append(exc)


def puller(host: Host, *, no_ack: bool = False) -> Puller:
    return Puller(host, QueueRoute("q", SPEC), no_ack=no_ack)  # type: ignore[arg-type]


def test_a_kick_pulls_as_many_messages_as_the_room_it_reserved() -> None:
    host = Host(room=2)
    loop = puller(host)
    loop.kick()
    assert len(host.pulls) == 1
    assert host.pulls[0].request.max_messages == 2
    assert host.pulls[0].request.subscription == SPEC.path
    assert host.pulls[0].timeout == 2.0  # a task queue's Pull is short: it is never cancelled


def test_without_room_nothing_is_pulled() -> None:
    host = Host(room=0)
    puller(host).kick()
    assert host.pulls == [] and host.reserved == [(False, 0)]


def test_a_freed_slot_gets_a_pull_of_its_own_and_reserves_knowing_what_the_first_holds() -> None:
    host = Host(room=2)
    loop = puller(host)
    loop.kick()
    host.room = 1
    loop.kick()
    assert len(host.pulls) == 2
    assert host.reserved == [(False, 0), (False, 2)]


def test_an_ack_on_receipt_consumer_has_one_long_pull_at_a_time() -> None:
    host = Host(room=100)
    loop = puller(host, no_ack=True)
    loop.kick()
    loop.kick()
    assert len(host.pulls) == 1 and host.pulls[0].timeout == 30.0
    host.pulls[0].finish([])
    assert host.unreserved == []  # its room is not the channel's prefetch room
    loop.kick()
    assert len(host.pulls) == 2


def test_pulled_messages_are_noted_handed_over_and_their_room_given_back() -> None:
    host = Host(room=2)
    loop = puller(host)
    loop.kick()
    host.pulls[0].finish(["m1"])
    assert host.noted == [(2, 1)]
    assert host.pulled == [(["m1"], False)]
    assert host.unreserved == [2]
    assert host.kicks == [None]  # every consumer may pull again
    assert loop.wait_idle(0)


def test_an_empty_pull_is_not_replaced_while_another_of_the_consumer_waits() -> None:
    host = Host(room=1)
    loop = puller(host)
    loop.kick()
    loop.kick()
    host.pulls[0].finish([])
    assert host.kicks == [loop]  # the others may pull, this consumer waits on its other Pull
    assert not loop.wait_idle(0)
    host.pulls[1].finish([])
    assert host.kicks == [loop, None]
    assert loop.wait_idle(0)


@pytest.mark.parametrize(("code", "reported"), [
    (grpc.StatusCode.DEADLINE_EXCEEDED, False),  # an idle Pull timed out: reissued quietly
    (grpc.StatusCode.UNAVAILABLE, True),  # the broker is gone: the consuming thread reconnects
    (grpc.StatusCode.NOT_FOUND, True),
])
def test_a_failed_pull_gives_its_room_back_and_only_a_real_error_is_reported(
    code: grpc.StatusCode, reported: bool
) -> None:
    host = Host(room=2)
    loop = puller(host)
    loop.kick()
    error = RpcError(code)
    host.pulls[0].finish(error=error)
    assert host.unreserved == [2]
    assert host.errors == ([error] if reported else [])
    assert host.pulled == [] and host.noted == []


def test_a_pull_that_cannot_be_issued_gives_its_room_back_and_is_reported() -> None:
    host = Host(room=2)
    host.fail_issue = RpcError(grpc.StatusCode.UNAVAILABLE)
    puller(host).kick()
    assert host.unreserved == [2] and host.errors == [host.fail_issue]


def test_a_bug_in_handling_messages_still_gives_the_room_back() -> None:
    host = Host(room=2)
    host.fail_handling = True
    loop = puller(host)
    loop.kick()
    host.pulls[0].finish(["m1"])
    assert host.unreserved == [2] and host.kicks == [None]


def test_a_stopped_task_queue_consumer_lets_its_pull_finish_and_its_messages_go_back() -> None:
    host = Host(room=2)
    loop = puller(host)
    loop.kick()
    loop.stop()
    assert not host.pulls[0].cancelled()  # cancelling could strand messages leased to nobody
    loop.kick()
    assert len(host.pulls) == 1  # no more Pulls
    host.pulls[0].finish(["late"])
    assert host.pulled == [(["late"], True)]  # the channel releases what arrives stopped


def test_a_stopped_ack_on_receipt_consumer_cancels_its_pull_at_once() -> None:
    host = Host(room=100)
    loop = puller(host, no_ack=True)
    loop.kick()
    loop.stop()
    assert host.pulls[0].cancelled()
    host.pulls[0].finish()
    assert host.pulled == [] and host.errors == []


def test_status_code_reads_grpc_calls_only() -> None:
    assert status_code(RpcError(grpc.StatusCode.UNAVAILABLE)) is grpc.StatusCode.UNAVAILABLE
    assert status_code(RuntimeError("no")) is None
