"""Narration: one spoken clip per section, joined into one WAV with the section timings.

The narrator is a setting (``CONTENT_NARRATOR``): ``espeak``, speech from espeak-ng
(``CONTENT_TTS_COMMAND``); ``google``, speech from Cloud Text-to-Speech (``cloud_speech``;
voice, language, speaking rate and endpoint from ``CONTENT_GOOGLE_TTS_*``); or ``silent``,
silence of the estimated reading length (a video complete and correctly timed, just silent).
Every section's timing is the length of the audio actually produced, plus a pause. Silence is
only ever chosen, never a fallback: a worker without its speech program refuses to start
(tasks.py), and one whose program vanished mid-run fails the attempt as transient
(``ToolMissing``), to be retried; so does an unavailable speech service
(``ServiceUnavailable``).

Each section's audio can be kept as it is made (``ClipStore``, the pipeline's
``stages.StageStore``): a retry after a failure in section 5 speaks sections 5 on, not 1 on.
"""

from __future__ import annotations

import shutil
import time
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vividly_tasks.lessons.errors import PermanentFailure, ToolMissing
from vividly_tasks.lessons.tools import run_tool

SAMPLE_RATE_HZ = 22050  # espeak-ng's native rate
SAMPLE_WIDTH_BYTES = 2
CHANNELS = 1
PAUSE_AFTER_SECTION_SECONDS = 0.4
MIN_SECTION_SECONDS = 1.5
ENGINE_SILENCE = "silence"
NARRATOR_ESPEAK = "espeak"
NARRATOR_GOOGLE = "google"
NARRATOR_SILENT = "silent"
NARRATORS = (NARRATOR_ESPEAK, NARRATOR_GOOGLE, NARRATOR_SILENT)
#: ``Narration.engine`` of the google narrator: this prefix and the voice's name.
ENGINE_GOOGLE_PREFIX = "google:"

#: Speaks one section (its index, its text): the clip's PCM frames.
Speaker = Callable[[int, str], bytes]


class ClipStore(Protocol):
    """Keeps each section's audio (PCM frames) by section, text and engine."""

    def load_clip(self, index: int, text: str, engine: str) -> bytes | None: ...

    def keep_clip(self, index: int, text: str, engine: str, frames: bytes) -> None: ...


@dataclass(frozen=True)
class Narration:
    path: Path
    #: Length of each section's clip including the pause after it; they add up to the total.
    section_seconds: tuple[float, ...]
    engine: str

    @property
    def total_seconds(self) -> float:
        return sum(self.section_seconds)


@dataclass(frozen=True)
class Voice:
    narrator: str = NARRATOR_ESPEAK
    command: str = "espeak-ng"
    voice: str = "en-us"
    words_per_minute: int = 165
    # The google narrator's (Cloud Text-to-Speech); defaults as the settings'.
    google_voice: str = "en-US-Standard-C"
    google_language: str = "en-US"
    google_speaking_rate: float = 1.0
    #: None: Google's endpoint; "host[:port]": another, over TLS; "http://host:port": plain.
    google_endpoint: str | None = None


def estimated_seconds(text: str, words_per_minute: int) -> float:
    return max(MIN_SECTION_SECONDS, len(text.split()) * 60.0 / words_per_minute)


def narrate(
    texts: Sequence[str], workdir: Path, voice: Voice, *, timeout_seconds: float,
    kept: ClipStore | None = None,
) -> Narration:
    """Speak each text (or, with the silent narrator, time it); write ``narration.wav``.
    With ``kept``, a section already spoken by this engine is read back rather than spoken,
    and each newly spoken one is kept before the next is asked for."""
    speak, engine = _speaker(voice, workdir, timeout_seconds)
    clips = []
    for index, text in enumerate(texts):
        frames = kept.load_clip(index, text, engine) if kept is not None else None
        if frames is None:
            frames = speak(index, text)
            if kept is not None:
                kept.keep_clip(index, text, engine, frames)
        clips.append(frames + _silence(PAUSE_AFTER_SECTION_SECONDS))
    path = workdir / "narration.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(CHANNELS)
        out.setsampwidth(SAMPLE_WIDTH_BYTES)
        out.setframerate(SAMPLE_RATE_HZ)
        for clip in clips:
            out.writeframes(clip)
    frame_bytes = SAMPLE_WIDTH_BYTES * CHANNELS
    seconds = tuple(len(clip) / frame_bytes / SAMPLE_RATE_HZ for clip in clips)
    return Narration(path, seconds, engine)


def _speaker(voice: Voice, workdir: Path, timeout_seconds: float) -> tuple[Speaker, str]:
    """The narrator's speaker and engine name; an espeak narrator without its program fails
    here, before any section."""
    if voice.narrator == NARRATOR_SILENT:
        def silence(_index: int, text: str) -> bytes:
            return _silence(estimated_seconds(text, voice.words_per_minute))
        return silence, ENGINE_SILENCE
    if voice.narrator == NARRATOR_GOOGLE:
        # Lazily: the client library is heavy, and only this narrator needs it.
        from vividly_tasks.lessons import cloud_speech  # noqa: PLC0415

        deadline = time.monotonic() + timeout_seconds  # one budget for every section

        def google(_index: int, text: str) -> bytes:
            return cloud_speech.synthesize(text, voice, deadline=deadline)
        return google, ENGINE_GOOGLE_PREFIX + voice.google_voice
    program = shutil.which(voice.command)
    if program is None:
        raise ToolMissing(
            f"text-to-speech: {voice.command} is not installed on this worker "
            "(Debian package espeak-ng; or choose CONTENT_NARRATOR=silent)"
        )

    def espeak(index: int, text: str) -> bytes:
        return _speak(program, text, workdir / f"section-{index}", voice, timeout_seconds)
    return espeak, voice.command


def _silence(seconds: float) -> bytes:
    return b"\x00" * (round(seconds * SAMPLE_RATE_HZ) * SAMPLE_WIDTH_BYTES * CHANNELS)


def _speak(program: str, text: str, stem: Path, voice: Voice, timeout_seconds: float) -> bytes:
    text_path, wav_path = stem.with_suffix(".txt"), stem.with_suffix(".wav")
    text_path.write_text(text, encoding="utf-8")
    command = [
        program, "-v", voice.voice, "-s", str(voice.words_per_minute),
        "-f", str(text_path), "-w", str(wav_path),
    ]
    run_tool(command, what="text-to-speech", timeout_seconds=timeout_seconds)
    with wave.open(str(wav_path), "rb") as clip:
        params = (clip.getnchannels(), clip.getsampwidth(), clip.getframerate())
        if params != (CHANNELS, SAMPLE_WIDTH_BYTES, SAMPLE_RATE_HZ):
            raise PermanentFailure(f"text-to-speech wrote an unexpected WAV format {params}")
        return clip.readframes(clip.getnframes())
