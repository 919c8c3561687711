"""A Cloud Text-to-Speech server on loopback for the tests: the real client, its real gRPC
transport and the library's own message types, no network.

It answers ``SynthesizeSpeech`` as the API does for LINEAR16: a WAV (RIFF header, mono,
16-bit, at the sample rate asked for) whose length follows from the text
(``seconds_per_char`` per character), so a test can check the durations; it rejects input
over 5,000 bytes as the API does, records every request, and can be scripted to fail calls in
turn (``fail``). The server runs in the test process; a worker subprocess reaches it at
``endpoint`` (``CONTENT_GOOGLE_TTS_ENDPOINT``).
"""

from __future__ import annotations

import io
import math
import struct
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from google.cloud import texttospeech

from harness.fakes.loopback_grpc import Failure, LoopbackServer, abort

SERVICE = "google.cloud.texttospeech.v1.TextToSpeech"
MAX_INPUT_BYTES = 5000
TONE_HZ = 441  # a whole number of samples per period at 22,050 Hz
AMPLITUDE = 12000


@dataclass(frozen=True)
class Received:
    """What one call asked for."""

    text: str
    language_code: str
    voice_name: str
    audio_encoding: Any
    sample_rate_hertz: int
    speaking_rate: float


class FakeTextToSpeech(LoopbackServer):
    def __init__(self, seconds_per_char: float = 0.06) -> None:
        super().__init__()
        self.seconds_per_char = seconds_per_char
        self.requests: list[Received] = []
        #: Seconds of audio of each successful answer, in order.
        self.clips: list[float] = []

    def clip_seconds(self, text: str) -> float:
        """The length of the answer to ``text``, rounded to whole frames at 22,050 Hz."""
        return round(len(text) * self.seconds_per_char * 22050) / 22050

    @property
    def total_seconds(self) -> float:
        return sum(self.clips)

    def start(self, handlers: list[Any] | None = None) -> str:
        return super().start(handlers or [grpc.method_handlers_generic_handler(SERVICE, {
            "SynthesizeSpeech": grpc.unary_unary_rpc_method_handler(
                self._synthesize,
                request_deserializer=texttospeech.SynthesizeSpeechRequest.deserialize,
                response_serializer=texttospeech.SynthesizeSpeechResponse.serialize,
            ),
        })])

    def _synthesize(
        self, request: Any, context: grpc.ServicerContext
    ) -> texttospeech.SynthesizeSpeechResponse:
        config = request.audio_config
        with self.lock:
            self.requests.append(Received(
                text=request.input.text, language_code=request.voice.language_code,
                voice_name=request.voice.name, audio_encoding=config.audio_encoding,
                sample_rate_hertz=config.sample_rate_hertz, speaking_rate=config.speaking_rate,
            ))
        self.failure_for_call(context)
        size = len(request.input.text.encode("utf-8"))
        if size > MAX_INPUT_BYTES:
            abort(context, Failure(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Either `input.text` or `input.ssml` is longer than the limit of "
                f"{MAX_INPUT_BYTES} bytes. This limit is different from quotas.",
            ))
        rate = config.sample_rate_hertz or 24000
        seconds = self.clip_seconds(request.input.text)
        with self.lock:
            self.clips.append(seconds)
        return texttospeech.SynthesizeSpeechResponse(audio_content=tone_wav(seconds, rate))


def tone_wav(seconds: float, rate: int = 22050) -> bytes:
    """A WAV of a sine tone: mono, 16-bit, ``rate`` Hz, ``seconds`` long (whole frames)."""
    frames = round(seconds * rate)
    period = [round(AMPLITUDE * math.sin(2 * math.pi * TONE_HZ * i / rate))
              for i in range(rate // TONE_HZ or 1)]
    samples = (period * (frames // len(period) + 1))[:frames]
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(struct.pack(f"<{frames}h", *samples))
    return buffer.getvalue()


@contextmanager
def running(seconds_per_char: float = 0.06) -> Iterator[FakeTextToSpeech]:
    server = FakeTextToSpeech(seconds_per_char)
    server.start()
    try:
        yield server
    finally:
        server.stop()
