"""The dispatcher's settings (``DISPATCH_*``), with the parts of the deployment it reads: the
broker and queue it watches (``DeploymentSettings``), the topics' prefix (``PubSubSettings``)
and the job's idle exit and runtime budget (``WorkerSettings``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import click

from vividly_tasks.settings import (
    PATH,
    DeploymentSettings,
    PubSubSettings,
    choice,
    setting,
)
from vividly_tasks.transport.naming import resource_id
from worker_entry.settings import WorkerSettings


@dataclasses.dataclass(frozen=True, init=False)
class DispatchSettings(WorkerSettings, PubSubSettings, DeploymentSettings):
    """``vividly dispatch``: starts job executions when work arrives."""

    dispatch_runner: Literal["cloud-run", "local"] = setting(
        "cloud-run",
        "What a launch starts: an execution of the Cloud Run job, or local vividly-worker job"
        " processes (a VM, or the emulator).",
        kind=choice(Literal["cloud-run", "local"]))
    dispatch_job: str = setting(
        "vividly-job",
        "The Cloud Run job to execute.")
    dispatch_region: str | None = setting(
        None,
        "Region of the job; required with the cloud-run runner.",
        kind=click.STRING)
    dispatch_subscription: str | None = setting(
        None,
        "Subscription whose backlog sizes the launches; unset means the workers' one, "
        "PUBSUB_PREFIX + VIVIDLY_QUEUE.",
        kind=click.STRING)
    dispatch_messages_per_task: int = setting(
        20,
        "Queued messages one task is expected to drain.",
        kind=click.IntRange(min=1))
    dispatch_max_tasks: int = setting(
        10,
        "Most tasks running at once across the job's executions.",
        kind=click.IntRange(1, 10000))
    dispatch_decision_window_seconds: float = setting(
        5.0,
        "At most one launch per this many seconds while the last one has not finished; a "
        "burst grows its task count at this pace.",
        kind=click.FloatRange(min=0, min_open=True))
    dispatch_metric_settle_seconds: float = setting(
        180.0,
        "A Monitoring sample younger than a launch plus this does not show what the launch "
        "took; until then only later arrivals count.",
        kind=click.FloatRange(min=0))
    dispatch_launch_visibility_seconds: float = setting(
        60.0,
        "A launch the Run API does not list yet counts as running this long.",
        kind=click.FloatRange(min=0))
    dispatch_start_lead_seconds: float = setting(
        10.0,
        "A delayed task (eta/countdown) counts as work this long before it is due.",
        kind=click.FloatRange(min=0))
    dispatch_job_idle_timeout_seconds: float | None = setting(
        None,
        "How long the job's tasks wait without work before they exit (the job's "
        "WORKER_IDLE_TIMEOUT); unset means this environment's WORKER_IDLE_TIMEOUT. An idle "
        "exit proves the queue drained; the start lead must not exceed it.",
        kind=click.FloatRange(min=0, min_open=True))
    dispatch_gather_seconds: float = setting(
        2.0,
        "The deciding wake-up waits this long for the rest of a burst before deciding; other "
        "wake-ups are answered at once.",
        kind=click.FloatRange(min=0))
    dispatch_record: Literal["file", "database"] = setting(
        "file",
        "Where the dispatchers' shared record lives: file (DISPATCH_RECORD_PATH, the "
        "dispatchers of one machine) or database (tables in DATABASE_URL, shared by "
        "dispatchers on any number of machines or Cloud Run instances).",
        kind=choice(Literal["file", "database"]))
    dispatch_record_path: Path | None = setting(
        None,
        "The dispatchers' shared record (arrivals, launches; a SQLite file of its own); unset"
        " means VIVIDLY_DATA_DIR/dispatch/record.sqlite.",
        kind=PATH)
    dispatch_api_attempts: int = setting(
        3,
        "Calls to Monitoring or the Run API when unavailable, then exit 69.",
        kind=click.IntRange(1, 10))
    dispatch_monitoring_endpoint: str | None = setting(
        None,
        "Cloud Monitoring endpoint instead of Google's: host[:port] (TLS) or http://host:port"
        " (plain gRPC without credentials, a local test server).",
        kind=click.STRING)
    dispatch_run_endpoint: str | None = setting(
        None,
        "Cloud Run Admin API endpoint instead of Google's, as DISPATCH_MONITORING_ENDPOINT.",
        kind=click.STRING)
    dispatch_host: str = setting(
        '127.0.0.1',
        "Interface of vividly dispatch serve: loopback unless set; 0.0.0.0 on Cloud Run "
        "(docs/cloud-run.md).")
    dispatch_push_auth: Literal["verify", "cloud-run", "none"] = setting(
        "verify",
        "How /push and /check check the caller's OIDC token: verify (signature, issuer, "
        "audience, expiry, account), cloud-run (behind Cloud Run IAM, which verified the "
        "signature and removed it: the rest) or none (loopback listeners only).",
        kind=choice(Literal["verify", "cloud-run", "none"]))
    dispatch_push_audience: str | None = setting(
        None,
        "The tokens' audience (the push subscription's --push-auth-token-audience); required "
        "unless DISPATCH_PUSH_AUTH=none.",
        kind=click.STRING)
    dispatch_push_service_account: str | None = setting(
        None,
        "The only account whose tokens are accepted (the push subscription's --push-auth-"
        "service-account); required unless DISPATCH_PUSH_AUTH=none.",
        kind=click.STRING)
    dispatch_push_certs_url: str = setting(
        'https://www.googleapis.com/oauth2/v1/certs',
        "Google's ID token certificates (PEM by key id), fetched to verify tokens.")
    dispatch_wake_up_subscription: str = setting(
        "vividly-wake-up",
        "The push subscription whose deliveries are wake-ups (a name in the project, or "
        "projects/P/subscriptions/S); a delivery naming another is refused.")
    dispatch_max_delay_seconds: float = setting(
        604800.0,
        "Longest eta/countdown the dispatcher waits for (Pub/Sub's default retention, 7 "
        "days): a later one counts as due then, and no arrival is remembered longer than this"
        " plus an hour.",
        kind=click.FloatRange(min=0, min_open=True))
    dispatch_max_push_bytes: int = setting(
        1048576,
        "Largest /push body accepted (413 above it); a task message is small.",
        kind=click.IntRange(min=1024))
    dispatch_request_timeout_seconds: float = setting(
        10.0,
        "A request to vividly dispatch serve must arrive whole within this many seconds of "
        "its first byte (408 otherwise).",
        kind=click.FloatRange(min=0, min_open=True))

    @property
    def effective_dispatch_subscription(self) -> str:
        """The subscription the dispatcher watches (its name, without the project)."""
        return self.dispatch_subscription or f"{self.pubsub_prefix}{self.default_queue}"

    @property
    def dispatch_subscriptions(self) -> tuple[str, ...]:
        """Every subscription the job's workers consume: the one the dispatcher watches and
        each PUBSUB_PLAIN_MESSAGE_TASKS queue's (their backlogs add up)."""
        plain = (resource_id(self.pubsub_prefix, queue) for queue in self.plain_message_tasks)
        return tuple(dict.fromkeys((self.effective_dispatch_subscription, *plain)))

    @property
    def effective_wake_up_subscriptions(self) -> tuple[str, ...]:
        """The wake-up subscriptions: ``effective_wake_up_subscription`` on the queue's
        topic, and ``<it>-<subscription id>`` on each plain-message queue's topic."""
        first = self.effective_wake_up_subscription
        plain = [f"{first}-{subscription}" for subscription in self.dispatch_subscriptions[1:]]
        return (first, *plain)

    @property
    def effective_wake_up_subscription(self) -> str:
        """The wake-up subscription's full name (``projects/P/subscriptions/S``) when the
        project is known, else as configured."""
        name = self.dispatch_wake_up_subscription
        if "/" in name or not self.effective_project:
            return name
        return f"projects/{self.effective_project}/subscriptions/{name}"

    @property
    def effective_dispatch_record_path(self) -> Path:
        return self.dispatch_record_path or self.resolved_data_dir / "dispatch" / "record.sqlite"
