"""Narration by Cloud Text-to-Speech (``CONTENT_NARRATOR=google``) through the official
``google-cloud-texttospeech`` client: voice, language and speaking rate from the settings,
LINEAR16 audio at the pipeline's rate, whose length is what times the slides.

The API takes at most 5,000 bytes of text (UTF-8) per request: a longer section is split at
sentence ends (at word boundaries within a monstrous sentence) and the audio of the pieces is
joined. Library errors become the domain's here: a rate limit, an outage, a slow call, or
credentials the service refuses are ``ServiceUnavailable`` (the worker's or the service's
fault, retried with backoff); a request the service rejects is a ``PermanentFailure`` with
the server's message.
"""

from __future__ import annotations

import functools
import io
import os
import re
import time
import wave
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import grpc
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.rpc import error_details_pb2  # type: ignore[import-untyped]

from vividly_tasks.lessons.errors import (
    ContentError,
    PermanentFailure,
    ServiceUnavailable,
    TimeLimitExceeded,
)
from vividly_tasks.lessons.narration import CHANNELS, SAMPLE_RATE_HZ, SAMPLE_WIDTH_BYTES, Voice

if TYPE_CHECKING:
    # The client is Any to mypy, as the other google.cloud libraries are (pyproject): letting
    # mypy into this one typed google.cloud package breaks its view of the untyped ones
    # ('Module "google.cloud" has no attribute "storage"').
    texttospeech: Any
    TextToSpeechGrpcTransport: Any
else:
    from google.cloud import texttospeech
    from google.cloud.texttospeech_v1.services.text_to_speech.transports import (
        TextToSpeechGrpcTransport,
    )

SERVICE = "Cloud Text-to-Speech"
#: The API's limit on one request's input text, in bytes of UTF-8.
MAX_REQUEST_BYTES = 5000
#: Longest wait for one request even when the attempt has longer left: a hung call is retried
#: as transient instead of holding a video attempt for its whole limit.
CALL_TIMEOUT_SECONDS = 120.0
#: ``http://host:port``: a plain gRPC channel without credentials (a local test server).
INSECURE_SCHEME = "http://"
#: What a refused call needs; SynthesizeSpeech has no Text-to-Speech IAM role of its own
#: (the predefined ones cover long-audio synthesis), only the API enabled and quota access.
PERMISSION_HINT = (
    "enable texttospeech.googleapis.com in the project of the worker's credentials; "
    "credentials billed to another quota project need roles/serviceusage.serviceUsageConsumer "
    "there"
)

# Sentence ends: after . ! ? … followed by space, or right after a CJK full stop.
_SENTENCE_END = re.compile(r"(?<=[.!?\u2026])\s+|(?<=[\u3002\uff01\uff1f])\s*")
_TRANSIENT = (
    api_exceptions.ResourceExhausted,
    api_exceptions.ServerError,  # 500 Internal, 503 Unavailable, 504 DeadlineExceeded, ...
    api_exceptions.Unknown,
    api_exceptions.Aborted,
    api_exceptions.Cancelled,
)


def synthesize(text: str, voice: Voice, *, deadline: float) -> bytes:
    """Speak ``text`` with ``voice``'s Cloud settings before ``deadline`` (``time.monotonic``);
    returns PCM frames (mono, 16-bit, ``SAMPLE_RATE_HZ``) of all its pieces, joined."""
    return b"".join(
        _synthesize_piece(piece, voice, deadline) for piece in split_text(text)
    )


def split_text(text: str, limit: int = MAX_REQUEST_BYTES) -> list[str]:
    """``text`` in pieces of at most ``limit`` bytes of UTF-8, cut at sentence ends, within a
    sentence longer than that at spaces, and within a word longer than that between
    characters; as few pieces as the greedy fill allows."""
    text = text.strip()
    if _size(text) <= limit:
        return [text] if text else []
    chunks: list[str] = []
    current = ""
    for piece in _pieces(text, limit):
        candidate = f"{current} {piece}" if current else piece
        if _size(candidate) <= limit:
            current = candidate
        else:
            chunks.append(current)
            current = piece
    if current:
        chunks.append(current)
    return chunks


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def _pieces(text: str, limit: int) -> Iterator[str]:
    """Sentences; a sentence over ``limit`` as its words; a word over it as byte slices."""
    for sentence in _SENTENCE_END.split(text):
        if not sentence:
            continue
        if _size(sentence) <= limit:
            yield sentence
            continue
        for word in sentence.split():
            if _size(word) <= limit:
                yield word
            else:
                yield from _slices(word, limit)


def _slices(word: str, limit: int) -> Iterator[str]:
    current = ""
    for char in word:
        if _size(current + char) > limit:
            yield current
            current = ""
        current += char
    if current:
        yield current


def _synthesize_piece(text: str, voice: Voice, deadline: float) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeLimitExceeded(f"{SERVICE}: the attempt ran past its time limit")
    timeout = min(left, CALL_TIMEOUT_SECONDS)
    request = texttospeech.SynthesizeSpeechRequest(
        input=texttospeech.SynthesisInput(text=text),
        voice=texttospeech.VoiceSelectionParams(
            language_code=voice.google_language, name=voice.google_voice
        ),
        audio_config=texttospeech.AudioConfig(
            audio_encoding=texttospeech.AudioEncoding.LINEAR16,
            sample_rate_hertz=SAMPLE_RATE_HZ,
            speaking_rate=voice.google_speaking_rate,
        ),
    )
    try:
        # No client-side retry (the client has none by default): the task's retry policy,
        # bounded and with backoff, is the only one.
        response = _client(voice.google_endpoint, os.getpid()).synthesize_speech(
            request=request, timeout=timeout
        )
    except (api_exceptions.GoogleAPICallError, auth_exceptions.GoogleAuthError) as exc:
        if isinstance(exc, api_exceptions.DeadlineExceeded) and timeout >= left:
            raise TimeLimitExceeded(
                f"{SERVICE}: the attempt ran past its time limit ({exc.message})"
            ) from exc
        raise domain_error(exc) from exc
    return pcm_frames(response.audio_content)


def domain_error(exc: Exception) -> ContentError:
    """The content error for a failed call (or a client that could not be built)."""
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        return _call_error(exc)
    if isinstance(exc, auth_exceptions.DefaultCredentialsError):
        return ServiceUnavailable(
            f"{SERVICE}: no Application Default Credentials on this worker ({exc}); on Google "
            "Cloud, the service account's; elsewhere GOOGLE_APPLICATION_CREDENTIALS"
        )
    return ServiceUnavailable(f"{SERVICE}: the credentials failed: {exc}")


def _call_error(exc: api_exceptions.GoogleAPICallError) -> ContentError:
    if isinstance(exc, api_exceptions.PermissionDenied):
        return ServiceUnavailable(
            f"{SERVICE}: permission denied: {exc.message} ({PERMISSION_HINT})"
        )
    if isinstance(exc, api_exceptions.Unauthenticated):
        return ServiceUnavailable(
            f"{SERVICE}: the worker's credentials were refused: {exc.message}"
        )
    if isinstance(exc, _TRANSIENT):
        return ServiceUnavailable(
            f"{SERVICE}: {_status(exc)}: {exc.message}", retry_after_seconds=_retry_after(exc)
        )
    # InvalidArgument and the other refusals of the request itself: a retry repeats them.
    return PermanentFailure(f"{SERVICE} rejected the request: {_status(exc)}: {exc.message}")


def _status(exc: api_exceptions.GoogleAPICallError) -> str:
    code = exc.grpc_status_code
    return code.name if code is not None else str(exc.code)


def _retry_after(exc: api_exceptions.GoogleAPICallError) -> float | None:
    """The wait the server asked for (google.rpc.RetryInfo in the status details), if any."""
    for detail in exc.details:
        if isinstance(detail, error_details_pb2.RetryInfo):
            return float(detail.retry_delay.ToTimedelta().total_seconds())
    return None


def pcm_frames(audio: bytes) -> bytes:
    """The frames of a LINEAR16 answer: a WAV (what the API sends) must be mono 16-bit at
    ``SAMPLE_RATE_HZ``; bare samples are taken as such, at the rate asked for."""
    if audio[:4] != b"RIFF":
        if len(audio) % (SAMPLE_WIDTH_BYTES * CHANNELS):
            raise PermanentFailure(f"{SERVICE} returned {len(audio)} bytes, not 16-bit samples")
        return audio
    try:
        with wave.open(io.BytesIO(audio), "rb") as clip:
            channels, width, rate = clip.getnchannels(), clip.getsampwidth(), clip.getframerate()
            if (channels, width, rate) != (CHANNELS, SAMPLE_WIDTH_BYTES, SAMPLE_RATE_HZ):
                raise PermanentFailure(
                    f"{SERVICE} returned {channels}-channel {8 * width}-bit {rate} Hz audio; "
                    f"expected mono 16-bit {SAMPLE_RATE_HZ} Hz"
                )
            return clip.readframes(clip.getnframes())
    except (wave.Error, EOFError) as exc:
        raise PermanentFailure(f"{SERVICE} returned a malformed WAV: {exc}") from exc


@functools.cache
def _client(endpoint: str | None, pid: int) -> Any:
    """One client per endpoint and process (``pid``: a gRPC channel does not survive a fork,
    so a forked worker builds its own), built on first use."""
    del pid  # only a cache key
    try:
        if endpoint and endpoint.startswith(INSECURE_SCHEME):
            channel = grpc.insecure_channel(endpoint.removeprefix(INSECURE_SCHEME))
            return texttospeech.TextToSpeechClient(
                transport=TextToSpeechGrpcTransport(channel=channel)
            )
        if endpoint:
            return texttospeech.TextToSpeechClient(
                client_options={"api_endpoint": endpoint.removeprefix("https://")}
            )
        return texttospeech.TextToSpeechClient()
    except auth_exceptions.GoogleAuthError as exc:
        raise domain_error(exc) from exc
