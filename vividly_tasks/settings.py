"""The one settings object: read from the environment once, passed down from there.

Every field names the environment variable it comes from (the field name in upper case unless
an alias says otherwise) and has a default that runs the whole product on one machine with no
server: SQLite, local files and Kombu's filesystem broker under ``VIVIDLY_DATA_DIR``.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vividly_tasks.worker.logs import LogFormat
from vividly_tasks.worker.redaction import MASK, SECRET_QUERY_NAME, url_secrets


class Settings(BaseSettings):
    """Configuration of the app, the transport and the worker, from environment variables."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    # Where things live.
    data_dir: Path = Field(
        default=Path(".vividly"),
        alias="VIVIDLY_DATA_DIR",
        description="Directory for the embedded defaults (SQLite files, artifacts, broker).",
    )
    broker_url: str | None = Field(
        default=None,
        description="pubsub://PROJECT, redis://..., or unset for the embedded filesystem broker.",
    )
    result_backend: str | None = Field(
        default=None,
        description="Celery result backend; unset means SQLite under VIVIDLY_DATA_DIR.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the content database; unset means SQLite.",
    )
    storage_url: str | None = Field(
        default=None,
        description="file:///path or gs://bucket/prefix; unset means VIVIDLY_DATA_DIR/artifacts.",
    )
    default_queue: str = Field(
        default="vividly",
        alias="VIVIDLY_QUEUE",
        description="Queue that the vividly.* tasks are routed to and that workers consume.",
    )

    # Google Cloud Pub/Sub transport options (see vividly_tasks.transport).
    pubsub_emulator_host: str | None = Field(
        default=None, description="Read by Google's clients; set to use the emulator."
    )
    pubsub_prefix: str = Field(
        default="vividly-", description="Prefix of every topic and subscription name."
    )
    pubsub_auto_create: bool = Field(
        default=True,
        description="Create topics/subscriptions on declare; false only verifies they exist.",
    )
    pubsub_ack_deadline_seconds: int = Field(
        default=60, ge=10, le=600, description="Ack deadline of created subscriptions."
    )
    pubsub_max_lease_seconds: int = Field(
        default=7200,
        ge=10,
        description="How long a received, unacked message keeps its lease by extension.",
    )
    pubsub_max_delivery_attempts: int = Field(
        default=5, ge=5, le=100, description="Delivery attempts before Pub/Sub dead-letters."
    )
    # Pairs, not a dict: the settings are frozen and hashable (caches key on them).
    pubsub_plain_message_tasks: tuple[tuple[str, str], ...] = Field(
        default=(),
        description="JSON object queue -> task: each plain (non-Celery) message on the queue "
        "runs the task with its JSON body as keyword arguments; workers consume these queues.",
    )

    # Worker.
    worker_app: str = Field(
        default="vividly_tasks",
        description="Celery app that vividly-worker runs (module or module:attr, as -A); "
        "another app runs on its own configuration, with none of the content settings.",
    )
    worker_concurrency: int | None = Field(
        default=None, ge=1, description="Pool processes; unset means one per CPU."
    )
    worker_prefetch_multiplier: int = Field(
        default=1, ge=1, description="Messages leased per pool process."
    )
    # Job-mode defaults for Cloud Run (see the README): an empty queue costs ~10 s, not the
    # old loop's 60 s, since delivery is event-driven; the runtime budget ends a backlog run
    # cleanly before Cloud Run's default 600 s task timeout would kill and retry it.
    worker_idle_timeout: float = Field(
        default=10.0, gt=0, description="Job mode: exit after this many seconds without work."
    )
    worker_max_tasks: int | None = Field(
        default=None, ge=1, description="Job mode: exit after this many tasks; unset = no limit."
    )
    worker_max_runtime: float | None = Field(
        default=540.0, gt=0, description="Job mode: stop taking work after this many seconds."
    )
    worker_shutdown_grace: float = Field(
        default=8.0,
        ge=0,
        description="Seconds to finish running tasks at a stop (Cloud Run gives 10 s on SIGTERM).",
    )
    worker_connect_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds to reach the broker at start, then exit non-zero (Cloud Run retries).",
    )
    worker_health_host: str = Field(
        default="0.0.0.0",  # noqa: S104 - Cloud Run routes to the container's own interface
        description="Service mode: interface of the /healthz and /readyz listener.",
    )
    port: int = Field(default=8080, ge=1, le=65535, description="Service mode HTTP port.")

    # Content: the generation pipeline (vividly_tasks.lessons), its limits and retry policy.
    content_max_topic_chars: int = Field(
        default=200, ge=1, description="Longest topic accepted; longer requests fail validation."
    )
    content_max_field_chars: int = Field(
        default=100,
        ge=1,
        description="Longest subject or grade level accepted; longer requests fail validation.",
    )
    content_generator: Literal["offline", "gemini"] = Field(
        default="offline",
        description="Who writes lessons: offline (templates, no network) or gemini (a hosted "
        "model through the google-genai SDK; see the CONTENT_MODEL_* settings).",
    )
    content_model: str = Field(
        default="gemini-2.5-flash", description="The gemini generator's model."
    )
    content_model_temperature: float = Field(
        default=0.4, ge=0, le=2, description="Sampling temperature of the gemini generator."
    )
    content_model_max_output_tokens: int = Field(
        default=8192, ge=256, description="Longest answer the gemini generator accepts, tokens."
    )
    content_model_timeout_seconds: float = Field(
        default=90.0, gt=0, description="Time limit of one call to the model (then retried)."
    )
    content_model_attempts: int = Field(
        default=2,
        ge=1,
        le=5,
        description="Calls per delivery when the model's answer is malformed or breaks the "
        "lesson schema; then the request fails with the reason.",
    )
    gemini_api_key: SecretStr | None = Field(
        default=None,
        alias="GEMINI_API_KEY",
        description="Gemini API key; unset means Vertex AI with Application Default "
        "Credentials, in GOOGLE_CLOUD_PROJECT and CONTENT_MODEL_LOCATION.",
    )
    google_cloud_project: str | None = Field(
        default=None,
        alias="GOOGLE_CLOUD_PROJECT",
        description="Project of the Vertex AI calls; unset means the broker URL's project.",
    )
    content_model_location: str = Field(
        default="global", description="Vertex AI location of the model (global or a region)."
    )
    content_model_base_url: str | None = Field(
        default=None,
        description="Endpoint of the model API instead of Google's (a private endpoint, or a "
        "local test server).",
    )
    content_narrator: Literal["espeak", "google", "silent"] = Field(
        default="espeak",
        description="Narration of videos: espeak (speech from CONTENT_TTS_COMMAND), google "
        "(Cloud Text-to-Speech; see CONTENT_GOOGLE_TTS_*) or silent (silence of the reading "
        "length; only when chosen, never a fallback).",
    )
    content_google_tts_voice: str = Field(
        default="en-US-Standard-C", description="Cloud Text-to-Speech voice name."
    )
    content_google_tts_language: str = Field(
        default="en-US", description="Cloud Text-to-Speech language code."
    )
    content_google_tts_speaking_rate: float = Field(
        default=1.0, ge=0.25, le=4.0, description="Cloud Text-to-Speech speaking rate (1 = normal)."
    )
    content_google_tts_endpoint: str | None = Field(
        default=None,
        description="Cloud Text-to-Speech endpoint instead of Google's: host[:port] (a regional "
        "endpoint, over TLS with Application Default Credentials) or http://host:port (plain "
        "gRPC without credentials, for a local test server).",
    )
    content_tts_command: str = Field(
        default="espeak-ng",
        description="Text-to-speech program of the espeak narrator; a worker without it "
        "refuses to start.",
    )
    content_tts_voice: str = Field(default="en-us", description="Voice of the narration.")
    content_tts_words_per_minute: int = Field(
        default=165, ge=80, le=450, description="Speaking rate of the narration, words per minute."
    )
    content_text_time_limit_seconds: float = Field(
        default=120.0, gt=0, description="Time limit of one attempt at a text request."
    )
    content_video_time_limit_seconds: float = Field(
        default=1800.0, gt=0, description="Time limit of one attempt at a video request."
    )
    content_max_retries: int = Field(
        default=5,
        ge=0,
        description="Retries of a request after a transient error (storage or database "
        "unavailable); then it is failed and dead-lettered.",
    )
    content_retry_backoff_seconds: int = Field(
        default=2,
        ge=1,
        description="Base of the exponential retry backoff (base * 2**retry, full jitter).",
    )
    content_retry_backoff_max_seconds: int = Field(
        default=600, ge=1, description="Longest wait between two retries of a request."
    )
    content_claim_lease_seconds: float = Field(
        default=60.0,
        ge=1,
        description="A worker's claim on a request lasts this long unless renewed (it renews "
        "while it works); a claim left by a dead worker is taken over after it.",
    )

    # Logging.
    log_level: str = Field(default="INFO", description="Root log level.")
    log_format: LogFormat = Field(
        default="json", description="json: one object a line with severity; text: for humans."
    )

    # Secrets that other programs read: held only to be masked (``secret_values``).
    flower_basic_auth: SecretStr | None = Field(
        default=None,
        alias="FLOWER_BASIC_AUTH",
        description="Flower's user:password (Flower reads it); masked in logs if set here.",
    )

    # Dispatcher (vividly_tasks.dispatch): starts job executions when work arrives.
    dispatch_runner: Literal["cloud-run", "local"] = Field(
        default="cloud-run",
        description="What a launch starts: an execution of the Cloud Run job, or local "
        "vividly-worker job processes (a VM, or the emulator).",
    )
    dispatch_job: str = Field(default="vividly-job", description="The Cloud Run job to execute.")
    dispatch_region: str | None = Field(
        default=None, description="Region of the job; required with the cloud-run runner."
    )
    dispatch_subscription: str | None = Field(
        default=None,
        description="Subscription whose backlog sizes the launches; unset means the workers' "
        "one, PUBSUB_PREFIX + VIVIDLY_QUEUE.",
    )
    dispatch_messages_per_task: int = Field(
        default=20, ge=1, description="Queued messages one task is expected to drain."
    )
    dispatch_max_tasks: int = Field(
        default=10, ge=1, le=10000,
        description="Most tasks running at once across the job's executions.",
    )
    dispatch_decision_window_seconds: float = Field(
        default=5.0, gt=0,
        description="At most one launch per this many seconds while the last one has not "
        "finished; a burst grows its task count at this pace.",
    )
    dispatch_metric_settle_seconds: float = Field(
        default=180.0, ge=0,
        description="A Monitoring sample younger than a launch plus this does not show what "
        "the launch took; until then only later arrivals count.",
    )
    dispatch_launch_visibility_seconds: float = Field(
        default=60.0, ge=0,
        description="A launch the Run API does not list yet counts as running this long.",
    )
    dispatch_start_lead_seconds: float = Field(
        default=10.0, ge=0,
        description="A delayed task (eta/countdown) counts as work this long before it is due.",
    )
    dispatch_job_idle_timeout_seconds: float | None = Field(
        default=None, gt=0,
        description="How long the job's tasks wait without work before they exit (the job's "
        "WORKER_IDLE_TIMEOUT); unset means this environment's WORKER_IDLE_TIMEOUT. An idle "
        "exit proves the queue drained; the start lead must not exceed it.",
    )
    dispatch_gather_seconds: float = Field(
        default=2.0, ge=0,
        description="The deciding wake-up waits this long for the rest of a burst before "
        "deciding; other wake-ups are answered at once.",
    )
    dispatch_record: Literal["file", "database"] = Field(
        default="file",
        description="Where the dispatchers' shared record lives: file (DISPATCH_RECORD_PATH, "
        "the dispatchers of one machine) or database (tables in DATABASE_URL, shared by "
        "dispatchers on any number of machines or Cloud Run instances).",
    )
    dispatch_record_path: Path | None = Field(
        default=None,
        description="The dispatchers' shared record (arrivals, launches; a SQLite file of its "
        "own); unset means VIVIDLY_DATA_DIR/dispatch/record.sqlite.",
    )
    dispatch_api_attempts: int = Field(
        default=3, ge=1, le=10,
        description="Calls to Monitoring or the Run API when unavailable, then exit 69.",
    )
    dispatch_monitoring_endpoint: str | None = Field(
        default=None,
        description="Cloud Monitoring endpoint instead of Google's: host[:port] (TLS) or "
        "http://host:port (plain gRPC without credentials, a local test server).",
    )
    dispatch_run_endpoint: str | None = Field(
        default=None,
        description="Cloud Run Admin API endpoint instead of Google's, as "
        "DISPATCH_MONITORING_ENDPOINT.",
    )
    dispatch_host: str = Field(
        default="127.0.0.1",
        description="Interface of vividly dispatch serve: loopback unless set; 0.0.0.0 on "
        "Cloud Run (docs/cloud-run.md).",
    )
    dispatch_push_auth: Literal["verify", "cloud-run", "none"] = Field(
        default="verify",
        description="How /push and /check check the caller's OIDC token: verify (signature, "
        "issuer, audience, expiry, account), cloud-run (behind Cloud Run IAM, which verified "
        "the signature and removed it: the rest) or none (loopback listeners only).",
    )
    dispatch_push_audience: str | None = Field(
        default=None,
        description="The tokens' audience (the push subscription's --push-auth-token-audience); "
        "required unless DISPATCH_PUSH_AUTH=none.",
    )
    dispatch_push_service_account: str | None = Field(
        default=None,
        description="The only account whose tokens are accepted (the push subscription's "
        "--push-auth-service-account); required unless DISPATCH_PUSH_AUTH=none.",
    )
    dispatch_push_certs_url: str = Field(
        default="https://www.googleapis.com/oauth2/v1/certs",
        description="Google's ID token certificates (PEM by key id), fetched to verify tokens.",
    )
    dispatch_wake_up_subscription: str = Field(
        default="vividly-wake-up",
        description="The push subscription whose deliveries are wake-ups (a name in the "
        "project, or projects/P/subscriptions/S); a delivery naming another is refused.",
    )
    dispatch_max_delay_seconds: float = Field(
        default=604800.0, gt=0,
        description="Longest eta/countdown the dispatcher waits for (Pub/Sub's default "
        "retention, 7 days): a later one counts as due then, and no arrival is remembered "
        "longer than this plus an hour.",
    )
    dispatch_max_push_bytes: int = Field(
        default=1048576, ge=1024,
        description="Largest /push body accepted (413 above it); a task message is small.",
    )
    dispatch_request_timeout_seconds: float = Field(
        default=10.0, gt=0,
        description="A request to vividly dispatch serve must arrive whole within this "
        "many seconds of its first byte (408 otherwise).",
    )

    @field_validator("gemini_api_key", "google_cloud_project", "content_model_base_url",
                     "content_google_tts_endpoint", mode="before")
    @classmethod
    def _empty_means_unset(cls, value: Any) -> Any:
        # compose files and deploy scripts pass ``NAME=`` for "not set".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("pubsub_plain_message_tasks", mode="before")
    @classmethod
    def _bindings_from_json_object(cls, value: Any) -> Any:
        if isinstance(value, dict):
            empty = [f"{queue!r} -> {task!r}" for queue, task in value.items()
                     if not str(queue).strip() or not str(task).strip()]
            if empty:
                raise ValueError(f"queue and task names must not be empty: {', '.join(empty)}")
            return tuple(value.items())
        if isinstance(value, tuple):  # pairs, as the field holds them
            return value
        raise ValueError("expected a JSON object mapping queue names to task names")

    @property
    def plain_message_tasks(self) -> dict[str, str]:
        """Queue name -> the task its plain messages run (PUBSUB_PLAIN_MESSAGE_TASKS)."""
        return dict(self.pubsub_plain_message_tasks)

    @cached_property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.resolve()

    @property
    def effective_project(self) -> str | None:
        """GOOGLE_CLOUD_PROJECT, else the project of a pubsub:// broker URL."""
        if self.google_cloud_project:
            return self.google_cloud_project
        if self.effective_broker_url.startswith("pubsub://"):
            return urlsplit(self.effective_broker_url).netloc or None
        return None

    @property
    def effective_dispatch_subscription(self) -> str:
        """The subscription the dispatcher watches (its name, without the project)."""
        return self.dispatch_subscription or f"{self.pubsub_prefix}{self.default_queue}"

    @property
    def dispatch_subscriptions(self) -> tuple[str, ...]:
        """Every subscription the job's workers consume: the one the dispatcher watches and
        each PUBSUB_PLAIN_MESSAGE_TASKS queue's (their backlogs add up)."""
        from vividly_tasks.transport.naming import resource_id  # noqa: PLC0415

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

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def effective_result_backend(self) -> str:
        return self.result_backend or f"db+sqlite:///{self.resolved_data_dir / 'results.sqlite'}"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.resolved_data_dir / 'vividly.sqlite'}"

    @property
    def effective_storage_url(self) -> str:
        return self.storage_url or (self.resolved_data_dir / "artifacts").as_uri()

    @property
    def uses_embedded_broker(self) -> bool:
        return self.broker_url is None

    def broker_transport_options(self) -> dict[str, Any]:
        """Options for the broker's Kombu transport, keyed as that transport reads them."""
        if self.uses_embedded_broker:
            folder = self.resolved_data_dir / "broker"
            return {
                "data_folder_in": str(folder),
                "data_folder_out": str(folder),
                "control_folder": str(self.resolved_data_dir / "broker-control"),
            }
        if self.effective_broker_url.startswith("pubsub://"):
            return {
                "prefix": self.pubsub_prefix,
                "auto_create": self.pubsub_auto_create,
                "ack_deadline_seconds": self.pubsub_ack_deadline_seconds,
                "max_lease_seconds": self.pubsub_max_lease_seconds,
                "max_delivery_attempts": self.pubsub_max_delivery_attempts,
                # Celery's messages are JSON; anything else is dead-lettered unread.
                "accept_content": "application/json",
                "plain_message_tasks": self.plain_message_tasks,
            }
        return {}

    def ensure_local_dirs(self) -> None:
        """Create the directories that the embedded defaults write to."""
        if self.uses_embedded_broker:
            for name in ("broker", "broker-control"):
                (self.resolved_data_dir / name).mkdir(parents=True, exist_ok=True)
        if self.result_backend is None or self.database_url is None:
            self.resolved_data_dir.mkdir(parents=True, exist_ok=True)

    def redacted(self) -> dict[str, Any]:
        """Every setting with the effective URLs, passwords masked: safe to print or log."""
        values: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = MASK
            values[name] = str(value) if isinstance(value, Path) else value
        values |= {
            "broker_url": self.effective_broker_url,
            "result_backend": self.effective_result_backend,
            "database_url": self.effective_database_url,
            "storage_url": self.effective_storage_url,
        }
        return {key: mask_url_password(value) for key, value in values.items()}


def secret_values(settings: Settings) -> list[str]:
    """Every secret this configuration holds, to be masked wherever text leaves a process
    (``vividly_tasks.worker.redaction``): each ``SecretStr`` field, and the password and
    secret query values of each URL, effective URLs included."""
    values: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            # ``user:password`` (FLOWER_BASIC_AUTH): the password alone shows up too.
            values += [secret, secret.partition(":")[2]]
        else:
            values += url_secrets(value)
    for url in (settings.effective_broker_url, settings.effective_result_backend,
                settings.effective_database_url, settings.effective_storage_url):
        values += url_secrets(url)
    return [value for value in values if value]


def mask_urls_in(text: str, settings: Settings) -> str:
    """``text`` (say an exception's message) with this configuration's URLs masked."""
    for url in (settings.effective_broker_url, settings.effective_database_url,
                settings.effective_storage_url, settings.effective_result_backend):
        if isinstance(url, str) and url:
            text = text.replace(url, str(mask_url_password(url)))
    return text


def mask_url_password(value: Any) -> Any:
    """``scheme://user:secret@host?password=secret`` becomes
    ``scheme://user:****@host?password=****``; other values pass unchanged."""
    if not isinstance(value, str) or "://" not in value:
        return value
    try:
        parts = urlsplit(value)
        password = parts.password
    except ValueError:  # not a URL we can read: show none of it
        return f"{value.partition('://')[0]}://{MASK}"
    pairs = parts.query.split("&") if parts.query else []
    secret_pairs = [p for p in pairs if SECRET_QUERY_NAME.search(p.partition("=")[0])]
    if not password and not secret_pairs:
        return value
    if password:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:{MASK}@{host}")
    query = "&".join(
        f"{p.partition('=')[0]}={MASK}" if p in secret_pairs else p for p in pairs
    )
    return urlunsplit(parts._replace(query=query))


def environment_variable(field_name: str) -> str:
    """The environment variable that sets a field (for the README and error messages)."""
    field = Settings.model_fields[field_name]
    return field.alias or field_name.upper()
