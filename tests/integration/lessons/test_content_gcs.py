"""Cloud Storage artifacts against a real GCS emulator (gcp-storage-emulator from PyPI)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from google.cloud import storage as gcs

from harness.content import (
    ARTIFACTS_VIDEO,
    WORKER_INCLUDE,
    ContentEnv,
    broker_params,
    check_video,
    configure_broker,
)
from harness.waiting import wait_for
from harness.workers import WorkerProcess
from vividly_tasks import create_app
from vividly_tasks.lessons.requests import submit
from vividly_tasks.lessons.services import ContentServices
from vividly_tasks.lessons.settings import Settings
from vividly_tasks.lessons.storage import GCSStorage, UnsafeKey, artifact_key, open_storage
from vividly_tasks.lessons.tasks import send_generate_content


def test_gcs_storage_writes_lists_and_overwrites_under_its_prefix(
    gcs_storage_url: str, tmp_path: Path
) -> None:
    storage = open_storage(gcs_storage_url)
    assert isinstance(storage, GCSStorage)
    bucket = gcs_storage_url.removeprefix("gs://").split("/")[0]
    source = tmp_path / "lesson.md"
    source.write_text("# first\n")
    uri = storage.put_file("req-1/lesson.md", source, "text/markdown")
    assert uri == f"gs://{bucket}/lessons/req-1/lesson.md"
    source.write_text("# second\n")
    storage.put_file("req-1/lesson.md", source, "text/markdown")  # a rerun overwrites
    storage.put_file("req-2/lesson.md", source, "text/markdown")

    assert storage.get_bytes("req-1/lesson.md") == b"# second\n"
    assert storage.exists("req-1/lesson.md") and not storage.exists("req-1/nothing.md")
    assert storage.list_keys("req-1") == ["req-1/lesson.md"]
    assert storage.list_keys() == ["req-1/lesson.md", "req-2/lesson.md"]
    client = gcs.Client()
    blob = client.bucket(bucket).get_blob("lessons/req-1/lesson.md")
    assert blob is not None and blob.content_type == "text/markdown"
    assert [b.name for b in client.list_blobs(bucket)] == [
        "lessons/req-1/lesson.md", "lessons/req-2/lesson.md"]
    client.close()
    for key in ("../escape.md", "/abs.md", "req-1/../../x"):
        with pytest.raises(UnsafeKey):
            storage.put_file(key, source, "text/markdown")
    with pytest.raises(FileNotFoundError):
        storage.get_bytes("req-3/lesson.md")


@pytest.fixture(params=broker_params())
def gcs_env(
    request: pytest.FixtureRequest, gcs_storage_url: str, redis_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ContentEnv]:
    probe = configure_broker(str(request.param), request, redis_url, monkeypatch)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'content.sqlite'}")
    monkeypatch.setenv("STORAGE_URL", gcs_storage_url)
    monkeypatch.setenv("CONTENT_TTS_WORDS_PER_MINUTE", "300")
    services = ContentServices.from_settings(Settings())
    yield ContentEnv(probe, "sqlite", services)
    services.close()


def test_a_video_request_completes_into_gcs(
    gcs_env: ContentEnv, gcs_storage_url: str, start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    start_worker(extra_args=WORKER_INCLUDE, concurrency=1).wait_ready()
    app = create_app()
    try:
        row = submit(
            gcs_env.services.repository, functools.partial(send_generate_content, app),
            topic="The solar system", modality="video", grade_level="6",
        )
    finally:
        app.close()
    request_id = str(row.id)
    wait_for(lambda: gcs_env.row(request_id).status in {"completed", "failed"}, 90,
             "the request to finish")
    final = gcs_env.row(request_id)
    assert (final.status, final.error) == ("completed", None)
    assert final.artifacts == {
        name: f"{gcs_storage_url}/{request_id}/{name}" for name in ARTIFACTS_VIDEO
    }
    storage = gcs_env.services.storage
    assert storage.list_keys(request_id) == sorted(
        artifact_key(request_id, name) for name in ARTIFACTS_VIDEO)
    manifest = json.loads(storage.get_bytes(artifact_key(request_id, "manifest.json")))
    video = tmp_path / "downloaded.mp4"
    video.write_bytes(storage.get_bytes(artifact_key(request_id, "lesson.mp4")))
    check_video(video, manifest)
