"""The lesson workload's settings (``CONTENT_*``, ``RESULT_BACKEND``, ``STORAGE_URL``, the
model"s and Flower"s secrets), with the adapter's parts the product app reads: the deployment
(``DeploymentSettings``), the transport's options (``PubSubSettings``) and the worker's
(``WorkerSettings``).

Every default runs the whole product on one machine with no server: SQLite, local files and
Kombu's filesystem broker under ``VIVIDLY_DATA_DIR``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import click

from vividly_tasks.settings import (
    SECRET,
    DeploymentSettings,
    PubSubSettings,
    Secret,
    choice,
    redacted,
    setting,
)
from vividly_tasks.settings import (
    secret_values as settings_secrets,
)
from vividly_tasks.worker.redaction import mask_url_password, url_secrets
from worker_entry.settings import WorkerSettings


@dataclasses.dataclass(frozen=True, init=False)
class Settings(WorkerSettings, PubSubSettings, DeploymentSettings):
    """Configuration of the product app, its workers and the lesson pipeline."""

    result_backend: str | None = setting(
        None,
        "Celery result backend; unset means SQLite under VIVIDLY_DATA_DIR.",
        kind=click.STRING)
    storage_url: str | None = setting(
        None,
        "file:///path or gs://bucket/prefix; unset means VIVIDLY_DATA_DIR/artifacts.",
        kind=click.STRING)
    content_max_topic_chars: int = setting(
        200,
        "Longest topic accepted; longer requests fail validation.",
        kind=click.IntRange(min=1))
    content_max_field_chars: int = setting(
        100,
        "Longest subject or grade level accepted; longer requests fail validation.",
        kind=click.IntRange(min=1))
    content_generator: Literal["offline", "gemini"] = setting(
        "offline",
        "Who writes lessons: offline (templates, no network) or gemini (a hosted model "
        "through the google-genai SDK; see the CONTENT_MODEL_* settings).",
        kind=choice(Literal["offline", "gemini"]))
    content_model: str = setting(
        'gemini-2.5-flash',
        "The gemini generator's model.")
    content_model_temperature: float = setting(
        0.4,
        "Sampling temperature of the gemini generator.",
        kind=click.FloatRange(min=0, max=2))
    content_model_max_output_tokens: int = setting(
        8192,
        "Longest answer the gemini generator accepts, tokens.",
        kind=click.IntRange(min=256))
    content_model_timeout_seconds: float = setting(
        90.0,
        "Time limit of one call to the model (then retried).",
        kind=click.FloatRange(min=0, min_open=True))
    content_model_attempts: int = setting(
        2,
        "Calls per delivery when the model's answer is malformed or breaks the lesson schema;"
        " then the request fails with the reason.",
        kind=click.IntRange(1, 5))
    content_model_location: str = setting(
        "global",
        "Vertex AI location of the model (global or a region).")
    content_model_base_url: str | None = setting(
        None,
        "Endpoint of the model API instead of Google's (a private endpoint, or a local test "
        "server).",
        kind=click.STRING)
    content_narrator: Literal["espeak", "google", "silent"] = setting(
        "espeak",
        "Narration of videos: espeak (speech from CONTENT_TTS_COMMAND), google (Cloud Text-"
        "to-Speech; see CONTENT_GOOGLE_TTS_*) or silent (silence of the reading length; only "
        "when chosen, never a fallback).",
        kind=choice(Literal["espeak", "google", "silent"]))
    content_google_tts_voice: str = setting(
        "en-US-Standard-C",
        "Cloud Text-to-Speech voice name.")
    content_google_tts_language: str = setting(
        "en-US",
        "Cloud Text-to-Speech language code.")
    content_google_tts_speaking_rate: float = setting(
        1.0,
        "Cloud Text-to-Speech speaking rate (1 = normal).",
        kind=click.FloatRange(min=0.25, max=4.0))
    content_google_tts_endpoint: str | None = setting(
        None,
        "Cloud Text-to-Speech endpoint instead of Google's: host[:port] (a regional endpoint,"
        " over TLS with Application Default Credentials) or http://host:port (plain gRPC "
        "without credentials, for a local test server).",
        kind=click.STRING)
    content_tts_command: str = setting(
        "espeak-ng",
        "Text-to-speech program of the espeak narrator; a worker without it refuses to start.")
    content_tts_voice: str = setting(
        "en-us",
        "Voice of the narration.")
    content_tts_words_per_minute: int = setting(
        165,
        "Speaking rate of the narration, words per minute.",
        kind=click.IntRange(80, 450))
    content_text_time_limit_seconds: float = setting(
        120.0,
        "Time limit of one attempt at a text request.",
        kind=click.FloatRange(min=0, min_open=True))
    content_video_time_limit_seconds: float = setting(
        1800.0,
        "Time limit of one attempt at a video request.",
        kind=click.FloatRange(min=0, min_open=True))
    content_max_retries: int = setting(
        5,
        "Retries of a request after a transient error (storage or database unavailable); then"
        " it is failed and dead-lettered.",
        kind=click.IntRange(min=0))
    content_retry_backoff_seconds: int = setting(
        2,
        "Base of the exponential retry backoff (base * 2**retry, full jitter).",
        kind=click.IntRange(min=1))
    content_retry_backoff_max_seconds: int = setting(
        600,
        "Longest wait between two retries of a request.",
        kind=click.IntRange(min=1))
    content_claim_lease_seconds: float = setting(
        60.0,
        "A worker's claim on a request lasts this long unless renewed (it renews while it "
        "works); a claim left by a dead worker is taken over after it.",
        kind=click.FloatRange(min=1))
    gemini_api_key: Secret | None = setting(
        None,
        "Gemini API key; unset means Vertex AI with Application Default Credentials, in "
        "GOOGLE_CLOUD_PROJECT and CONTENT_MODEL_LOCATION.",
        kind=SECRET, env="GEMINI_API_KEY")
    flower_basic_auth: Secret | None = setting(
        None,
        "Flower's user:password (Flower reads it); masked in logs if set here.",
        kind=SECRET, env="FLOWER_BASIC_AUTH")

    @property
    def effective_result_backend(self) -> str:
        return self.result_backend or f"db+sqlite:///{self.resolved_data_dir / 'results.sqlite'}"

    @property
    def effective_storage_url(self) -> str:
        return self.storage_url or (self.resolved_data_dir / "artifacts").as_uri()

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
            # Celery's messages are JSON; anything else is dead-lettered unread.
            return {**self.transport_options(), "accept_content": "application/json"}
        return {}

    def ensure_local_dirs(self) -> None:
        """Create the directories that the embedded defaults write to."""
        if self.uses_embedded_broker:
            for name in ("broker", "broker-control"):
                (self.resolved_data_dir / name).mkdir(parents=True, exist_ok=True)
        if self.result_backend is None or self.database_url is None:
            self.resolved_data_dir.mkdir(parents=True, exist_ok=True)

    def effective_urls(self) -> dict[str, str]:
        return {
            "broker_url": self.effective_broker_url,
            "result_backend": self.effective_result_backend,
            "database_url": self.effective_database_url,
            "storage_url": self.effective_storage_url,
        }

    def redacted(self) -> dict[str, Any]:
        """Every setting with the effective URLs, passwords masked: safe to print or log."""
        urls = {key: mask_url_password(url) for key, url in self.effective_urls().items()}
        return redacted(self) | urls


def secret_values(settings: Settings) -> list[str]:
    """Every secret this configuration holds, effective URLs' passwords included, to be masked
    wherever text leaves a process (``vividly_tasks.worker.redaction``)."""
    values = settings_secrets(settings)
    for url in settings.effective_urls().values():
        values += url_secrets(url)
    return [value for value in values if value]


def mask_urls_in(text: str, settings: Settings) -> str:
    """``text`` (say an exception's message) with this configuration's URLs masked."""
    for url in settings.effective_urls().values():
        if url:
            text = text.replace(url, str(mask_url_password(url)))
    return text
