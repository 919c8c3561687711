"""A Pub/Sub broker for pytest-celery's ``celery_setup``, for test suites whose CI has Docker.

pytest-celery runs brokers, backends and workers as containers (its "vendors"); this is a
broker vendor in the same shape as its own (Redis, RabbitMQ, Localstack): a container class,
a test-broker class and fixtures, with the Pub/Sub emulator image that compose.yaml runs. Use
it from a ``conftest.py``::

    from pytest_celery import CeleryBrokerCluster
    from vividly_tasks.testing.celery_setup import *  # noqa: F403 - the vendor's fixtures

    @pytest.fixture
    def celery_broker_cluster(celery_pubsub_broker):
        cluster = CeleryBrokerCluster(celery_pubsub_broker)
        yield cluster
        cluster.teardown()

The worker container must have vividly-tasks installed (its ``pubsub://`` transport) and
``PUBSUB_EMULATOR_HOST`` set to ``celery_pubsub_broker.config()["emulator_host"]``; the
``pubsub_*`` fixtures of ``vividly_tasks.testing.pytest_plugin`` need no Docker at all.
Importing this module needs pytest-celery (``pip install pytest-celery``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pytest_celery.api.broker import CeleryTestBroker
from pytest_celery.api.container import CeleryTestContainer
from pytest_docker_tools import container, fxtr

#: The Google Cloud CLI's emulators image, as compose.yaml runs it.
PUBSUB_IMAGE = "gcr.io/google.com/cloudsdktool/google-cloud-cli:emulators"
PUBSUB_PORT = 8085
PUBSUB_PORTS: dict[str, int | None] = {f"{PUBSUB_PORT}/tcp": None}
PUBSUB_PROJECT = "celery-setup"
PUBSUB_COMMAND = ("gcloud", "beta", "emulators", "pubsub", "start",
                  f"--project={PUBSUB_PROJECT}", f"--host-port=0.0.0.0:{PUBSUB_PORT}")
PUBSUB_CONTAINER_TIMEOUT = 60
PUBSUB_PREFIX = "pubsub://"
#: What the emulator prints once it serves.
PUBSUB_READY_PROMPT = "Server started"


class PubSubContainer(CeleryTestContainer):  # type: ignore[misc]
    """The lifecycle of a Pub/Sub emulator container."""

    @property
    def client(self) -> None:
        return None  # Kombu connects through the worker's own transport

    @property
    def celeryconfig(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "host_url": self.host_url,
            "hostname": self.hostname,
            "port": self.port,
            # PUBSUB_EMULATOR_HOST inside the Docker network, and from the host.
            "emulator_host": f"{self.hostname}:{PUBSUB_PORT}",
            "host_emulator_host": f"localhost:{self.port}",
        }

    @property
    def url(self) -> str:
        return f"{self.prefix()}{PUBSUB_PROJECT}"

    @property
    def host_url(self) -> str:
        return self.url  # the project is the same from anywhere: the emulator host differs

    @property
    def hostname(self) -> str:
        return str(self.attrs["Config"]["Hostname"])

    @property
    def port(self) -> int:
        return int(self._wait_port(f"{PUBSUB_PORT}/tcp"))

    @classmethod
    def version(cls) -> str:
        return cls.image().split(":")[-1]

    @classmethod
    def initial_env(cls) -> dict[str, str]:
        return {}

    @classmethod
    def image(cls) -> str:
        return PUBSUB_IMAGE

    @classmethod
    def ports(cls) -> dict[str, int | None]:
        return PUBSUB_PORTS

    @classmethod
    def command(cls, *args: str, debugpy: bool = False, wait_for_client: bool = True,
                **kwargs: Any) -> list[str]:
        return [*PUBSUB_COMMAND, *args]

    @classmethod
    def prefix(cls) -> str:
        return PUBSUB_PREFIX

    @property
    def ready_prompt(self) -> str | None:
        return PUBSUB_READY_PROMPT


class PubSubTestBroker(CeleryTestBroker):  # type: ignore[misc]
    """The Pub/Sub emulator as a broker node of ``celery_setup``."""


@pytest.fixture
def celery_pubsub_broker(default_pubsub_broker: PubSubContainer) -> Iterator[PubSubTestBroker]:
    """A PubSubTestBroker on the emulator container, torn down after the test."""
    broker = PubSubTestBroker(default_pubsub_broker)
    yield broker
    broker.teardown()


@pytest.fixture
def default_pubsub_broker_cls() -> type[PubSubContainer]:
    """The container class; override to configure it globally."""
    return PubSubContainer


default_pubsub_broker = container(
    image="{default_pubsub_broker_image}",
    ports=fxtr("default_pubsub_broker_ports"),
    environment=fxtr("default_pubsub_broker_env"),
    command=fxtr("default_pubsub_broker_command"),
    network="{default_pytest_celery_network.name}",
    wrapper_class=PubSubContainer,
    timeout=PUBSUB_CONTAINER_TIMEOUT,
)


@pytest.fixture
def default_pubsub_broker_env(default_pubsub_broker_cls: type[PubSubContainer]) -> dict[str, str]:
    return default_pubsub_broker_cls.initial_env()


@pytest.fixture
def default_pubsub_broker_image(default_pubsub_broker_cls: type[PubSubContainer]) -> str:
    return default_pubsub_broker_cls.image()


@pytest.fixture
def default_pubsub_broker_ports(
    default_pubsub_broker_cls: type[PubSubContainer],
) -> dict[str, int | None]:
    return default_pubsub_broker_cls.ports()


@pytest.fixture
def default_pubsub_broker_command(default_pubsub_broker_cls: type[PubSubContainer]) -> list[str]:
    return default_pubsub_broker_cls.command()


__all__ = [
    "PubSubContainer",
    "PubSubTestBroker",
    "celery_pubsub_broker",
    "default_pubsub_broker",
    "default_pubsub_broker_cls",
    "default_pubsub_broker_command",
    "default_pubsub_broker_env",
    "default_pubsub_broker_image",
    "default_pubsub_broker_ports",
]
