"""What ``vividly provision`` creates or verifies: the plan, compared with what exists.

A task queue needs its topic, its subscription (with the dead-letter and retry policies and
the ack deadline of the settings), its dead-letter topic and the dead-letter topic's retaining
subscription, and the records of its bindings (``bindings.py``: a topic, and a subscription
per binding), so that workers that may not create anything still share them. Celery's
broadcast exchanges (events, remote control and its replies) need their topics; their
subscriptions are per process and made by the processes themselves. The plan reads each
resource (``get``) and says per resource: present as wanted, to create, or to update
(a subscription whose policies differ from the settings). Applying it goes through the
transport's own ``Provisioner`` (race-safe creation), then updates what differs.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

from google.api_core import exceptions as google_errors
from google.pubsub_v1 import Subscription

from vividly_tasks.transport.bindings import Binding, record_subscription, records_topic
from vividly_tasks.transport.clients import PubSubClients
from vividly_tasks.transport.errors import PubSubChannelError, translate
from vividly_tasks.transport.naming import short_name
from vividly_tasks.transport.provisioning import (
    ADMIN_TIMEOUT_SECONDS,
    Provisioner,
    SubscriptionSpec,
    call,
    concurrently,
)

Action = Literal["ok", "create", "update"]
#: Subscription fields that provisioning owns, compared and updated as one.
POLICY_FIELDS = ("ack_deadline_seconds", "dead_letter_policy", "retry_policy")


@dataclass(frozen=True)
class Resource:
    """A topic or subscription that the settings call for, and what it is for."""

    kind: Literal["topic", "subscription"]
    path: str
    purpose: str
    #: For subscriptions: the subscription as it should be (its topic and policies).
    wanted: Subscription | None = None
    #: Whether its ack deadline and policies are ours to compare and update.
    owns_policies: bool = True


@dataclass(frozen=True)
class Step:
    resource: Resource
    action: Action
    #: For an update: what differs, ``field: now -> wanted``.
    differences: tuple[str, ...] = ()


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)

    @property
    def changes(self) -> list[Step]:
        return [step for step in self.steps if step.action != "ok"]

    @property
    def missing(self) -> list[Step]:
        return [step for step in self.steps if step.action == "create"]


def queue_resources(queue: str, spec: SubscriptionSpec,
                    bindings: Iterable[Binding] = ()) -> list[Resource]:
    """A task queue's resources, in the order they must be created."""
    assert spec.dead_letter_topic and spec.dead_letter_subscription, "a durable queue"
    subscription_id = short_name(spec.path)
    records = [
        Resource("subscription", record.name,
                 f"records binding {binding[0]} {binding[1]!r} of queue {queue}", record,
                 owns_policies=False)
        for binding in bindings
        for record in [record_subscription(spec.project, subscription_id, binding)]
    ]
    if records:
        records.insert(0, Resource("topic", records_topic(spec.project, subscription_id),
                                   f"binding records of queue {queue}"))
    return [
        Resource("topic", spec.dead_letter_topic, f"dead letters of queue {queue}"),
        Resource("subscription", spec.dead_letter_subscription,
                 f"keeps the dead letters of queue {queue}",
                 Subscription(name=spec.dead_letter_subscription, topic=spec.dead_letter_topic),
                 owns_policies=False),
        Resource("topic", spec.topic, f"exchange of queue {queue}"),
        Resource("subscription", spec.path, f"queue {queue}", spec.to_subscription()),
        *records,
    ]


def broadcast_topic(path: str, purpose: str) -> Resource:
    return Resource("topic", path, purpose)


def make_plan(clients: PubSubClients, resources: Iterable[Resource]) -> Plan:
    """Compare each resource with what Pub/Sub has (read-only). The reads are independent:
    they go out side by side, so a plan costs one round trip to Pub/Sub, not one per
    resource; its steps keep the resources' order."""
    return Plan(concurrently([partial(_compare, clients, resource) for resource in resources]))


def _compare(clients: PubSubClients, resource: Resource) -> Step:
    try:
        if resource.kind == "topic":
            clients.publisher.get_topic(topic=resource.path, timeout=ADMIN_TIMEOUT_SECONDS)
            return Step(resource, "ok")
        existing = clients.subscriber.get_subscription(
            subscription=resource.path, timeout=ADMIN_TIMEOUT_SECONDS
        )
    except google_errors.NotFound:
        return Step(resource, "create")
    except Exception as exc:
        raise translate(exc, f"get {resource.kind}", resource.path) from exc
    assert resource.wanted is not None
    if existing.topic != resource.wanted.topic:
        raise PubSubChannelError(
            f"{resource.path} reads {existing.topic}, not {resource.wanted.topic}: a "
            "subscription cannot change its topic; delete it and provision again"
        )
    if not resource.owns_policies:
        return Step(resource, "ok")
    differences = tuple(subscription_differences(existing, resource.wanted))
    return Step(resource, "update" if differences else "ok", differences)


def subscription_differences(existing: Subscription, wanted: Subscription) -> list[str]:
    """``field: now -> wanted`` for each policy that provisioning owns and that differs."""
    def described(subscription: Subscription) -> dict[str, str]:
        policy = subscription.dead_letter_policy
        retry = subscription.retry_policy
        return {
            "ack_deadline_seconds": str(subscription.ack_deadline_seconds),
            "dead_letter_policy": (
                f"{policy.dead_letter_topic} after {policy.max_delivery_attempts} deliveries"
                if policy.dead_letter_topic else "none"
            ),
            "retry_policy": (
                f"backoff {seconds(retry.minimum_backoff)}-{seconds(retry.maximum_backoff)} s"
                if "retry_policy" in subscription else "none"
            ),
        }

    now, target = described(existing), described(wanted)
    return [f"{name}: {now[name]} -> {target[name]}" for name in POLICY_FIELDS
            if now[name] != target[name]]


def seconds(value: datetime.timedelta | None) -> str:
    return f"{(value or datetime.timedelta()).total_seconds():g}"


def apply_plan(clients: PubSubClients, plan: Plan) -> None:
    """Create what is missing (race-safe: AlreadyExists is success), update what differs."""
    provisioner = Provisioner(clients, auto_create=True)
    for step in plan.changes:
        resource = step.resource
        if step.action == "create" and resource.kind == "topic":
            provisioner.ensure_topic(resource.path)
        elif step.action == "create":
            assert resource.wanted is not None
            _create_subscription(clients, resource)
        else:
            assert resource.wanted is not None
            call(lambda r=resource: clients.subscriber.update_subscription(  # type: ignore[misc]
                request={"subscription": r.wanted,
                         "update_mask": {"paths": list(POLICY_FIELDS)}},
                timeout=ADMIN_TIMEOUT_SECONDS,
            ), "update subscription", resource.path)


def _create_subscription(clients: PubSubClients, resource: Resource) -> None:
    try:
        clients.subscriber.create_subscription(
            request=resource.wanted, timeout=ADMIN_TIMEOUT_SECONDS
        )
    except google_errors.AlreadyExists:
        pass  # another process won the race: what it created is checked at the next run
    except Exception as exc:
        raise translate(exc, "create subscription", resource.path) from exc
