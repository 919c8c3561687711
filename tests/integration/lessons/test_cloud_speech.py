"""Cloud narration: the real ``google-cloud-texttospeech`` client, over its
real gRPC transport, against a loopback server (harness/fakes/tts.py), no network.

Text over the API's 5,000-byte limit is split at sentence ends and the audio joined; the
voice, language, rate and encoding are the settings'; the section timings are the length of
the audio returned; a rate limit or an outage is transient, a rejected request permanent. End
to end: a video request completes through a real ``vividly-worker job`` narrated by the fake
server, and the MP4's audio lasts as long as the audio it synthesized.
"""

from __future__ import annotations

import json
import re
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from harness.content import ContentEnv, check_video, ffprobe, pubsub_sqlite_env
from harness.fakes.tts import Failure, FakeTextToSpeech, running, tone_wav
from harness.waiting import wait_for
from harness.workers import WorkerProcess
from vividly_tasks import create_app
from vividly_tasks.lessons.cloud_speech import MAX_REQUEST_BYTES, pcm_frames
from vividly_tasks.lessons.errors import (
    PermanentFailure,
    ServiceUnavailable,
    TimeLimitExceeded,
    TransientError,
)
from vividly_tasks.lessons.narration import PAUSE_AFTER_SECTION_SECONDS, Voice, narrate
from vividly_tasks.lessons.product import VividlyCelery
from vividly_tasks.lessons.storage import artifact_key
from vividly_tasks.lessons.tasks import submit_content_request
from worker_entry.exit_codes import RET_OK

SENTENCE_END = re.compile(r"[.!?]$")


@pytest.fixture
def fake_tts() -> Iterator[FakeTextToSpeech]:
    # Short clips (1 ms of audio per character) keep the long texts' audio small.
    with running(seconds_per_char=0.001) as server:
        yield server


def google_voice(server: FakeTextToSpeech, **overrides: Any) -> Voice:
    return Voice(narrator="google", google_endpoint=server.endpoint, **overrides)


def utf8_size(text: str) -> int:
    return len(text.encode("utf-8"))


def wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as clip:
        return float(clip.getnframes() / clip.getframerate())


# --- splitting at the API's limit ----------------------------------------------------------
def test_a_long_section_is_split_at_sentence_ends_and_timed_by_the_audio_returned(
    fake_tts: FakeTextToSpeech, tmp_path: Path,
) -> None:
    # Multi-byte text: 300 sentences of ~60 characters, ~70 bytes each (é, è, ü are 2 bytes):
    # under 5,000 characters per request would still be over 5,000 bytes.
    sentences = [f"Les élèves étudient la géologie des volcans, leçon numéro {i}; süß."
                 for i in range(300)]
    long_text = " ".join(sentences)
    assert utf8_size(long_text) > 4 * MAX_REQUEST_BYTES
    texts = [long_text, "A short second section."]

    narration = narrate(texts, tmp_path, google_voice(fake_tts), timeout_seconds=60)

    first = [r.text for r in fake_tts.requests[:-1]]
    assert len(first) >= 5  # no more than the limit forces, give or take one
    assert len(first) <= utf8_size(long_text) // MAX_REQUEST_BYTES + 2
    assert all(utf8_size(text) <= MAX_REQUEST_BYTES for text in first)
    assert all(SENTENCE_END.search(text) for text in first), "cut inside a sentence"
    assert " ".join(first) == long_text  # every sentence once, in order
    assert fake_tts.requests[-1].text == texts[1]

    clips = fake_tts.clips
    assert len(clips) == len(fake_tts.requests)
    assert narration.section_seconds[0] == pytest.approx(
        sum(clips[:-1]) + PAUSE_AFTER_SECTION_SECONDS, abs=1e-4)
    assert narration.section_seconds[1] == pytest.approx(
        clips[-1] + PAUSE_AFTER_SECTION_SECONDS, abs=1e-4)
    assert wav_seconds(narration.path) == pytest.approx(narration.total_seconds, abs=1e-4)
    assert wav_seconds(narration.path) == pytest.approx(
        fake_tts.total_seconds + 2 * PAUSE_AFTER_SECTION_SECONDS, abs=1e-4)


def test_a_sentence_over_the_limit_is_split_between_words(
    fake_tts: FakeTextToSpeech, tmp_path: Path,
) -> None:
    words = [f"wörter{i}" for i in range(1500)]  # one ~17 kB "sentence" without a full stop
    text = " ".join(words)
    narration = narrate([text], tmp_path, google_voice(fake_tts), timeout_seconds=60)

    sent = [r.text for r in fake_tts.requests]
    assert len(sent) == 4
    assert all(utf8_size(piece) <= MAX_REQUEST_BYTES for piece in sent)
    assert [word for piece in sent for word in piece.split()] == words  # no word cut
    assert narration.section_seconds[0] == pytest.approx(
        fake_tts.total_seconds + PAUSE_AFTER_SECTION_SECONDS, abs=1e-4)


def test_the_server_rejects_what_the_narrator_never_sends(fake_tts: FakeTextToSpeech) -> None:
    """The fake holds the real API's limit, so the tests above would catch an unsplit call."""
    from google.api_core.exceptions import InvalidArgument
    from google.cloud import texttospeech
    from google.cloud.texttospeech_v1.services.text_to_speech.transports import (
        TextToSpeechGrpcTransport,
    )

    channel = grpc.insecure_channel(fake_tts.endpoint.removeprefix("http://"))
    client = texttospeech.TextToSpeechClient(transport=TextToSpeechGrpcTransport(channel=channel))
    request = texttospeech.SynthesizeSpeechRequest(
        input=texttospeech.SynthesisInput(text="é" * 2501),
        voice=texttospeech.VoiceSelectionParams(language_code="en-US"),
        audio_config=texttospeech.AudioConfig(
            audio_encoding=texttospeech.AudioEncoding.LINEAR16),
    )
    with pytest.raises(InvalidArgument, match="5000 bytes"):
        client.synthesize_speech(request=request, timeout=10)


# --- what is asked for ---------------------------------------------------------------------
def test_voice_language_rate_and_encoding_are_sent_as_configured(
    fake_tts: FakeTextToSpeech, tmp_path: Path,
) -> None:
    from google.cloud import texttospeech

    voice = google_voice(fake_tts, google_voice="en-GB-Neural2-B", google_language="en-GB",
                         google_speaking_rate=1.25)
    narration = narrate(["Hello there.", "Goodbye."], tmp_path, voice, timeout_seconds=30)

    assert narration.engine == "google:en-GB-Neural2-B"
    assert [r.text for r in fake_tts.requests] == ["Hello there.", "Goodbye."]
    for received in fake_tts.requests:
        assert (received.voice_name, received.language_code) == ("en-GB-Neural2-B", "en-GB")
        assert received.speaking_rate == pytest.approx(1.25)
        assert received.audio_encoding == texttospeech.AudioEncoding.LINEAR16
        assert received.sample_rate_hertz == 22050


# --- failures ------------------------------------------------------------------------------
@pytest.mark.parametrize(("code", "retry_after"), [
    (grpc.StatusCode.UNAVAILABLE, None),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, 7.0),
    (grpc.StatusCode.INTERNAL, None),
])
def test_a_rate_limit_or_an_outage_is_transient(
    code: grpc.StatusCode, retry_after: float | None, fake_tts: FakeTextToSpeech,
    tmp_path: Path,
) -> None:
    fake_tts.fail(Failure(code, "try again later", retry_after=retry_after))
    with pytest.raises(ServiceUnavailable, match="Cloud Text-to-Speech") as caught:
        narrate(["Hello."], tmp_path, google_voice(fake_tts), timeout_seconds=30)
    assert code.name in str(caught.value) and "try again later" in str(caught.value)
    assert caught.value.retry_after_seconds == retry_after
    # The next delivery's attempt succeeds.
    narration = narrate(["Hello."], tmp_path, google_voice(fake_tts), timeout_seconds=30)
    assert narration.total_seconds > PAUSE_AFTER_SECTION_SECONDS


def test_refused_credentials_are_transient_and_name_what_is_needed(
    fake_tts: FakeTextToSpeech, tmp_path: Path,
) -> None:
    fake_tts.fail(Failure(grpc.StatusCode.PERMISSION_DENIED, "Cloud Text-to-Speech API has "
                                                               "not been used in project 42"))
    with pytest.raises(ServiceUnavailable) as caught:
        narrate(["Hello."], tmp_path, google_voice(fake_tts), timeout_seconds=30)
    message = str(caught.value)
    assert "project 42" in message and "texttospeech.googleapis.com" in message
    assert "roles/serviceusage.serviceUsageConsumer" in message


def test_a_rejected_request_is_permanent_with_the_servers_message(
    fake_tts: FakeTextToSpeech, tmp_path: Path,
) -> None:
    fake_tts.fail(Failure(grpc.StatusCode.INVALID_ARGUMENT, "Voice 'xx-XX-Nope' does not exist"))
    with pytest.raises(PermanentFailure, match="Voice 'xx-XX-Nope' does not exist") as caught:
        narrate(["Hello."], tmp_path, google_voice(fake_tts), timeout_seconds=30)
    assert not isinstance(caught.value, TransientError)
    assert "INVALID_ARGUMENT" in str(caught.value)


def test_no_call_is_made_past_the_attempts_time_limit(
    fake_tts: FakeTextToSpeech, tmp_path: Path,
) -> None:
    with pytest.raises(TimeLimitExceeded):
        narrate(["Hello."], tmp_path, google_voice(fake_tts), timeout_seconds=0)
    assert fake_tts.requests == []


def test_the_audio_must_be_mono_16_bit_at_the_pipelines_rate() -> None:
    assert len(pcm_frames(tone_wav(0.5))) == round(0.5 * 22050) * 2
    raw = b"\x01\x00" * 100  # bare LINEAR16 samples: taken at the rate asked for
    assert pcm_frames(raw) == raw
    with pytest.raises(PermanentFailure, match="24000 Hz"):
        pcm_frames(tone_wav(0.5, rate=24000))
    with pytest.raises(PermanentFailure, match="malformed WAV"):
        pcm_frames(b"RIFF\x00\x00")


# --- end to end ----------------------------------------------------------------------------
@pytest.fixture
def content_env(request: pytest.FixtureRequest, redis_url: str, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[ContentEnv]:
    yield from pubsub_sqlite_env(request, redis_url, tmp_path, monkeypatch)


@pytest.fixture
def app(content_env: ContentEnv) -> Iterator[VividlyCelery]:
    application = create_app()
    yield application
    application.close()


def test_a_video_narrated_by_cloud_speech_completes_through_a_worker(
    content_env: ContentEnv, app: VividlyCelery, monkeypatch: pytest.MonkeyPatch,
    start_entrypoint: Callable[..., WorkerProcess],
) -> None:
    with running(seconds_per_char=0.02) as server:
        monkeypatch.setenv("CONTENT_NARRATOR", "google")
        monkeypatch.setenv("CONTENT_GOOGLE_TTS_ENDPOINT", server.endpoint)
        monkeypatch.setenv("CONTENT_GOOGLE_TTS_VOICE", "en-US-Neural2-F")
        monkeypatch.setenv("CONTENT_GOOGLE_TTS_SPEAKING_RATE", "1.1")
        row = submit_content_request(app, topic="Volcanoes", modality="video",
                                     subject="Geology", grade_level="6")
        request_id = str(row.id)
        worker = start_entrypoint(extra_args=["--idle-timeout", "3"])
        assert worker.wait(timeout=180) == RET_OK, worker.logs()[-3000:]

    wait_for(lambda: content_env.row(request_id).status == "completed", 30,
             "the request to complete")
    storage = content_env.services.storage
    manifest = json.loads(storage.get_bytes(artifact_key(request_id, "manifest.json")))
    assert manifest["narration"]["engine"] == "google:en-US-Neural2-F"
    sections = manifest["sections"]
    assert len(server.requests) == len(sections) == 5  # each section under the limit
    assert all(r.voice_name == "en-US-Neural2-F" for r in server.requests)
    assert all(r.speaking_rate == pytest.approx(1.1) for r in server.requests)
    for section, clip in zip(sections, server.clips, strict=True):
        seconds = section["end_seconds"] - section["start_seconds"]
        assert seconds == pytest.approx(clip + PAUSE_AFTER_SECTION_SECONDS, abs=0.002)
    expected = server.total_seconds + len(sections) * PAUSE_AFTER_SECTION_SECONDS
    assert manifest["narration"]["seconds"] == pytest.approx(expected, abs=0.002)

    video = content_env.services.settings.resolved_data_dir / "lesson.mp4"
    video.write_bytes(storage.get_bytes(artifact_key(request_id, "lesson.mp4")))
    check_video(video, manifest)
    audio = next(s for s in ffprobe(video)["streams"] if s["codec_type"] == "audio")
    assert float(audio["duration"]) == pytest.approx(expected, abs=0.1)
