"""Fixtures of the transport's tests against the emulator: a ``pubsub://`` URL and a Kombu
connection whose resources carry the test module's ``PREFIX`` (none without one)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kombu import Connection

from vividly_tasks.transport import register


@pytest.fixture
def broker_url(pubsub_project: str) -> str:
    register()
    return f"pubsub://{pubsub_project}"


@pytest.fixture
def connection(broker_url: str, request: pytest.FixtureRequest) -> Iterator[Connection]:
    prefix = getattr(request.module, "PREFIX", "")
    with Connection(broker_url, transport_options={"prefix": prefix}) as conn:
        yield conn
