"""The content domain wired from the settings: database, repository, storage, generator,
runner. One per process (engines and clients must be created after a worker forks)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from vividly_tasks.lessons.credentials import default_credentials_problem
from vividly_tasks.lessons.database import ContentDatabase
from vividly_tasks.lessons.gemini import GeminiConfig, GeminiGenerator
from vividly_tasks.lessons.generator import LessonGenerator, OfflineGenerator
from vividly_tasks.lessons.narration import NARRATOR_ESPEAK, Voice
from vividly_tasks.lessons.pipeline import PipelineConfig
from vividly_tasks.lessons.repository import ContentRepository
from vividly_tasks.lessons.runner import ContentRunner
from vividly_tasks.lessons.settings import Settings, secret_values
from vividly_tasks.lessons.storage import Storage, open_storage
from vividly_tasks.worker.redaction import Redactor


def pipeline_config(settings: Settings) -> PipelineConfig:
    return PipelineConfig(
        max_topic_chars=settings.content_max_topic_chars,
        max_field_chars=settings.content_max_field_chars,
        voice=Voice(
            narrator=settings.content_narrator,
            command=settings.content_tts_command,
            voice=settings.content_tts_voice,
            words_per_minute=settings.content_tts_words_per_minute,
            google_voice=settings.content_google_tts_voice,
            google_language=settings.content_google_tts_language,
            google_speaking_rate=settings.content_google_tts_speaking_rate,
            google_endpoint=settings.content_google_tts_endpoint,
        ),
        text_time_limit_seconds=settings.content_text_time_limit_seconds,
        video_time_limit_seconds=settings.content_video_time_limit_seconds,
    )


def missing_tools(settings: Settings) -> list[str]:
    """The programs this configuration needs that are not on PATH, each with what needs it.
    Every worker takes video requests (one queue serves both modalities), so ffmpeg always."""
    needed = {"ffmpeg": "video encoding; Debian package ffmpeg"}
    if settings.content_narrator == NARRATOR_ESPEAK:
        needed[settings.content_tts_command] = (
            "narration; Debian package espeak-ng, or choose CONTENT_NARRATOR=silent"
        )
    return [f"{program} ({why})" for program, why in needed.items() if not shutil.which(program)]


def make_generator(settings: Settings) -> LessonGenerator:
    """The generator CONTENT_GENERATOR chooses."""
    if settings.content_generator == "gemini":
        key = settings.gemini_api_key
        return GeminiGenerator(GeminiConfig(
            model=settings.content_model,
            api_key=key.get_secret_value() if key is not None else None,
            project=settings.effective_project, location=settings.content_model_location,
            base_url=settings.content_model_base_url,
            temperature=settings.content_model_temperature,
            max_output_tokens=settings.content_model_max_output_tokens,
            timeout_seconds=settings.content_model_timeout_seconds,
            attempts=settings.content_model_attempts,
        ))
    return OfflineGenerator()


def missing_configuration(settings: Settings) -> list[str]:
    """What the hosted services this configuration chose need and the worker lacks: a
    project, or Application Default Credentials. Looking for the credentials may probe the
    metadata server (an HTTP GET of 169.254.169.254), bounded to
    ``CREDENTIALS_CHECK_TIMEOUT_SECONDS`` (``credentials``); nothing else here touches the
    network."""
    needs_credentials = []
    missing = []
    if settings.content_generator == "gemini" and settings.gemini_api_key is None:
        if not settings.effective_project:
            missing.append(
                "GOOGLE_CLOUD_PROJECT (the Vertex AI project of CONTENT_GENERATOR=gemini; "
                "or set GEMINI_API_KEY)"
            )
        needs_credentials.append("Vertex AI (CONTENT_GENERATOR=gemini)")
    endpoint = settings.content_google_tts_endpoint or ""
    if settings.content_narrator == "google" and not endpoint.startswith("http://"):
        needs_credentials.append("Cloud Text-to-Speech (CONTENT_NARRATOR=google)")
    if needs_credentials:
        problem = default_credentials_problem()
        if problem:
            missing.append(
                f"Application Default Credentials for {' and '.join(needs_credentials)}: "
                f"{problem}"
            )
    return missing


@dataclass
class ContentServices:
    settings: Settings
    database: ContentDatabase
    repository: ContentRepository
    storage: Storage
    generator: LessonGenerator
    runner: ContentRunner

    @classmethod
    def from_settings(cls, settings: Settings, *, migrate: bool = True) -> ContentServices:
        """Wire everything; ``migrate`` first brings the schema up to date (cheap when it is)."""
        settings.ensure_local_dirs()
        database = ContentDatabase(settings.effective_database_url)
        if migrate:
            database.migrate()
        repository = ContentRepository(database, Redactor(secret_values(settings)))
        storage = open_storage(settings.effective_storage_url)
        generator = make_generator(settings)
        runner = ContentRunner(
            repository=repository, storage=storage, generator=generator,
            config=pipeline_config(settings), work_root=settings.resolved_data_dir / "work",
            lease_seconds=settings.content_claim_lease_seconds,
        )
        return cls(settings, database, repository, storage, generator, runner)

    def close(self) -> None:
        self.database.dispose()


def migrate(settings: Settings) -> None:
    """Bring the content database of ``settings`` to the newest schema (workers at start, the
    CLI, deployment jobs); leaves no connection open, so it is safe before a fork."""
    database = ContentDatabase(settings.effective_database_url)
    try:
        database.migrate()
    finally:
        database.dispose()
