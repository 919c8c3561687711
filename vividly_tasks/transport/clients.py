"""Everything Pub/Sub of one process: gRPC clients, the background-call thread, the leases.

gRPC channels are expensive and do not survive ``fork()``: a prefork child that inherits its
parent's channel must not use it, so every lookup checks the process id. The background thread
and the lease book are per process too, not per connection: a message received on a connection
that Celery then replaces (a reconnect) keeps its lease and can still be acked when its task
ends, instead of being handed to another worker while it runs.
"""

from __future__ import annotations

import atexit
import os
import threading
from dataclasses import dataclass, field
from functools import cached_property

import grpc
from google.pubsub_v1 import PublisherClient, SubscriberClient
from google.pubsub_v1.services.publisher.transports.grpc import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports.grpc import SubscriberGrpcTransport

from vividly_tasks.transport.background import BackgroundCalls
from vividly_tasks.transport.confirms import PublishPipeline
from vividly_tasks.transport.leases import LeaseBook
from vividly_tasks.transport.pull_starter import PullStarter
from vividly_tasks.transport.stubs import DataPlane

# Pub/Sub accepts messages up to 10 MB; gRPC's default receive limit is 4 MiB, and Google's
# client opens an emulator channel without raising it, so large tasks would never arrive.
#: At interpreter exit, how long to wait for acks and background publishes still queued.
EXIT_FLUSH_TIMEOUT_SECONDS = 5.0
#: At interpreter exit, how long to wait for pipelined publishes to be confirmed.
EXIT_PIPELINE_TIMEOUT_SECONDS = 30.0
UNLIMITED_MESSAGE_SIZE = (
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
)


@dataclass
class PubSubClients:
    publisher: PublisherClient
    subscriber: SubscriberClient
    _pipelines: dict[int, PublishPipeline] = field(default_factory=dict, init=False, repr=False)

    @cached_property
    def background(self) -> BackgroundCalls:
        calls = BackgroundCalls(lambda: self.data_plane)
        atexit.register(calls.flush, EXIT_FLUSH_TIMEOUT_SECONDS)
        return calls

    def publish_pipeline(self, max_in_flight: int) -> PublishPipeline:
        """The process's pipelined publishes (confirms.py) with this bound, shared by the
        connections that ask for it; flushed at interpreter exit."""
        with _lock:
            pipeline = self._pipelines.get(max_in_flight)
            if pipeline is None:
                pipeline = self._pipelines[max_in_flight] = PublishPipeline(
                    lambda: self.data_plane, max_in_flight=max_in_flight
                )
                atexit.register(pipeline.flush_quietly, EXIT_PIPELINE_TIMEOUT_SECONDS)
            return pipeline

    @cached_property
    def pull_starter(self) -> PullStarter:
        return PullStarter()

    @cached_property
    def leases(self) -> LeaseBook:
        return LeaseBook(self.background)

    @cached_property
    def data_plane(self) -> DataPlane:
        """Pull, ack, deadline and publish calls as bare stubs (stubs.py) on the clients' own
        gRPC channels, below Google's logging interceptor (which blocks futures at DEBUG)."""
        subscriber, publisher = self.subscriber.transport, self.publisher.transport
        # We never use the REST transports.
        assert isinstance(subscriber, SubscriberGrpcTransport)
        assert isinstance(publisher, PublisherGrpcTransport)
        return DataPlane(subscriber.grpc_channel, publisher.grpc_channel)


_lock = threading.Lock()
_clients: dict[tuple[int, str | None], PubSubClients] = {}


def clients_for_this_process() -> PubSubClients:
    """Clients for the emulator when ``PUBSUB_EMULATOR_HOST`` is set, else for Google Cloud."""
    emulator_host = os.environ.get("PUBSUB_EMULATOR_HOST") or None
    key = (os.getpid(), emulator_host)
    with _lock:
        clients = _clients.get(key)
        if clients is None:
            stale = [k for k in _clients if k[0] != key[0]]
            for k in stale:  # inherited across fork: never touch, just forget
                del _clients[k]
            clients = _clients[key] = _make_clients(emulator_host)
        return clients


def _make_clients(emulator_host: str | None) -> PubSubClients:
    if emulator_host is None:
        # Application Default Credentials; Google's transports already lift the size limits.
        return PubSubClients(PublisherClient(), SubscriberClient())
    publisher_channel = grpc.insecure_channel(emulator_host, options=UNLIMITED_MESSAGE_SIZE)
    subscriber_channel = grpc.insecure_channel(emulator_host, options=UNLIMITED_MESSAGE_SIZE)
    return PubSubClients(
        PublisherClient(transport=PublisherGrpcTransport(channel=publisher_channel)),
        SubscriberClient(transport=SubscriberGrpcTransport(channel=subscriber_channel)),
    )
