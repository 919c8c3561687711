"""Benchmark: what the hosted lesson path (gemini + Cloud Text-to-Speech) adds to a lesson,
against the local servers the tests use, with the servers' own time subtracted; and what a
lesson costs in tokens per grade band and modality.

    .venv/bin/python -m bench.hosted_content [--runs 20] [--no-write]
        [--output docs/benchmarks-content-hosted.md] [--json bench/results/hosted_content.json]

Everything runs in this process: two ``ContentServices`` built from ``Settings`` in a temporary
directory (SQLite, local storage), one offline (the offline generator, espeak-ng at the default
words per minute) and one hosted (``CONTENT_GENERATOR=gemini`` through the real google-genai SDK
against ``harness/fakes/gemini.py``, ``CONTENT_NARRATOR=google`` through the real
google-cloud-texttospeech client against ``harness/fakes/tts.py`` over plain gRPC). Each lesson is
a row inserted with ``repository.insert`` and one ``runner.run(request_id)``: claim, lease,
every stage, token bookkeeping, artifacts stored, completion; the timed span is that call.

Server time is what each fake server spends answering: the HTTP handler's whole ``do_POST``
(body read and parsed, answer built, written) and the gRPC servicer's ``SynthesizeSpeech``
(the WAV built). Wrapped here, the fakes themselves are unchanged. The hosted overhead is a
lesson's wall time minus its server time: the SDKs, HTTP and gRPC on loopback, the answer's
schema validation, the WAV decoding and joining, the token bookkeeping.

Offline and hosted lessons alternate (offline, hosted, offline, ...), so drift in the load of
this shared machine falls on both. A first lesson of each kind runs before the measured ones
and is reported apart (it pays imports and first connections).
Not a test: the figures depend on the machine; they are recorded in
docs/benchmarks-content-hosted.md.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from google.cloud import texttospeech

from bench.transport import cpu_model, package_versions
from harness.fakes.gemini import CHARS_PER_TOKEN, FakeGemini, lesson_answer
from harness.fakes.tts import FakeTextToSpeech, tone_wav
from vividly_tasks.lessons.gemini import LessonDraft, lesson_from_draft
from vividly_tasks.lessons.generator import OfflineGenerator
from vividly_tasks.lessons.lesson import Lesson as LessonContent
from vividly_tasks.lessons.narration import PAUSE_AFTER_SECTION_SECONDS, Voice, narrate
from vividly_tasks.lessons.services import ContentServices
from vividly_tasks.lessons.settings import Settings
from vividly_tasks.lessons.storage import artifact_key
from vividly_tasks.lessons.validation import LessonSpec, validate

REPO_ROOT = Path(__file__).resolve().parent.parent

TOPIC, SUBJECT, GRADE = "Photosynthesis", "Biology", "7"
MODALITIES = ("text", "video")
#: One grade per band: (band, grade).
BANDS = (("early", "K"), ("elementary", "4"), ("middle", "7"), ("high", "11"))
#: Settings that would change what is measured if this shell happened to export them.
ENV_PREFIXES = ("CONTENT_", "GEMINI_", "GOOGLE_CLOUD_PROJECT", "DATABASE_URL", "STORAGE_URL",
                "VIVIDLY_DATA_DIR")
PACKAGES = ("google-genai", "google-cloud-texttospeech", "grpcio", "httpx2", "pydantic",
            "SQLAlchemy", "Pillow")


# --- timing the fake servers ---------------------------------------------------------------
class ServerClock:
    """Seconds a server spent answering, summed over its calls, since the last ``take``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds = 0.0
        self._calls = 0

    def add(self, seconds: float) -> None:
        with self._lock:
            self._seconds += seconds
            self._calls += 1

    def take(self) -> tuple[float, int]:
        with self._lock:
            taken = (self._seconds, self._calls)
            self._seconds, self._calls = 0.0, 0
            return taken


@contextlib.contextmanager
def timed_gemini(clock: ServerClock) -> Iterator[FakeGemini]:
    """``FakeGemini`` whose request handler is wrapped to time each whole ``do_POST``."""
    with FakeGemini.running() as fake:
        server = fake._server
        assert server is not None
        base = server.RequestHandlerClass

        class TimedHandler(base):  # type: ignore[misc, valid-type]
            def do_POST(self) -> None:
                started = time.perf_counter()
                try:
                    super().do_POST()
                finally:
                    clock.add(time.perf_counter() - started)

        server.RequestHandlerClass = TimedHandler
        yield fake


class TimedTextToSpeech(FakeTextToSpeech):
    """``FakeTextToSpeech`` whose ``SynthesizeSpeech`` servicer is timed. With ``speech_dir``
    it answers with espeak-ng's speech of the text (a WAV at the rate espeak-ng speaks, the
    pipeline's) instead of the fake's tone of ``seconds_per_char`` a character: an AAC encoder
    takes about twice as long over a steady tone as over speech, which would be charged to
    the hosted path."""

    def __init__(self, seconds_per_char: float, clock: ServerClock,
                 speech_dir: Path | None = None) -> None:
        super().__init__(seconds_per_char)
        self.clock = clock
        self.speech_dir = speech_dir

    def _synthesize(self, request: Any, context: Any) -> Any:
        started = time.perf_counter()
        try:
            if self.speech_dir is None:
                return super()._synthesize(request, context)
            return texttospeech.SynthesizeSpeechResponse(
                audio_content=self._speak(request.input.text))
        finally:
            self.clock.add(time.perf_counter() - started)

    def _speak(self, text: str) -> bytes:
        assert self.speech_dir is not None
        voice = Voice()
        with tempfile.TemporaryDirectory(dir=self.speech_dir) as tmp:
            text_path, wav_path = Path(tmp) / "in.txt", Path(tmp) / "out.wav"
            text_path.write_text(text, encoding="utf-8")
            subprocess.run([voice.command, "-v", voice.voice, "-s", str(voice.words_per_minute),
                            "-f", str(text_path), "-w", str(wav_path)], check=True, timeout=60)
            return wav_path.read_bytes()


class SameLessonGenerator:
    """The control: the lesson the hosted path builds from the fake's answer, made locally
    (no SDK, no HTTP, no JSON validation), for espeak-ng to narrate and ffmpeg to encode, so
    a video with the hosted one's slides and narration goes through the offline path."""

    name = "offline"

    def generate(self, spec: LessonSpec) -> LessonContent:
        return lesson_from_draft(LessonDraft.model_validate(lesson_answer(spec.topic)), spec)


# --- one lesson ----------------------------------------------------------------------------
@dataclass
class Lesson:
    config: str  # offline | control (offline, the hosted lesson's content) | hosted
    modality: str
    grade: str
    wall_seconds: float
    gemini_seconds: float = 0.0
    gemini_calls: int = 0
    tts_seconds: float = 0.0
    tts_calls: int = 0
    #: Each stage's seconds (from its start to the next one's), and ``claim`` before them.
    stages: dict[str, float] = field(default_factory=dict)
    sections: int = 0
    narrated_seconds: float | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None

    @property
    def server_seconds(self) -> float:
        return self.gemini_seconds + self.tts_seconds

    @property
    def overhead_seconds(self) -> float:
        return self.wall_seconds - self.server_seconds


@dataclass
class Bench:
    services: dict[str, ContentServices]
    gemini_clock: ServerClock
    tts_clock: ServerClock

    def lesson(self, config: str, modality: str, grade: str = GRADE) -> Lesson:
        services = self.services[config]
        row = services.repository.insert(
            topic=TOPIC, modality=modality, subject=SUBJECT, grade_level=grade
        )
        marks: list[tuple[str, float]] = []

        def progress(_request_id: str, stage: Any, _percent: int) -> None:
            marks.append((stage.value, time.perf_counter()))

        self.gemini_clock.take()
        self.tts_clock.take()
        started = time.perf_counter()
        outcome = services.runner.run(str(row.id), progress=progress)
        wall = time.perf_counter() - started
        gemini_seconds, gemini_calls = self.gemini_clock.take()
        tts_seconds, tts_calls = self.tts_clock.take()
        if outcome.kind != "completed":
            raise SystemExit(f"{config} {modality} lesson {row.id}: {outcome}")
        stages = {"claim": marks[0][1] - started} if marks else {}
        stages |= {name: end - start for (name, start), (_, end) in itertools.pairwise(marks)}
        stages.pop("complete", None)
        done = services.repository.get(row.id)
        assert done is not None
        manifest = json.loads(services.storage.get_bytes(artifact_key(row.id, "manifest.json")))
        narrated = manifest.get("narration", {}).get("seconds")
        return Lesson(
            config=config, modality=modality, grade=grade, wall_seconds=wall,
            gemini_seconds=gemini_seconds, gemini_calls=gemini_calls, tts_seconds=tts_seconds,
            tts_calls=tts_calls, stages=stages, sections=len(manifest["sections"]),
            narrated_seconds=narrated, model=done.model_name, prompt_tokens=done.prompt_tokens,
            output_tokens=done.output_tokens,
        )


def settings_for(root: Path, **values: Any) -> Settings:
    return Settings(data_dir=root, database_url=f"sqlite:///{root / 'content.sqlite'}",
                    storage_url=(root / "artifacts").as_uri(), **values)


def spec(modality: str, grade: str = GRADE) -> LessonSpec:
    return validate(topic=TOPIC, modality=modality, subject=SUBJECT, grade_level=grade,
                    max_topic_chars=200, max_field_chars=100)


def espeak_seconds_per_char(offline_video: Lesson, root: Path) -> tuple[float, int]:
    """espeak-ng's seconds of speech per character of narration, from the offline lesson just
    made: its sections' clip lengths (from the manifest, less the pause after each) over the
    characters the offline generator gave them. Also the characters."""
    lesson = OfflineGenerator().generate(spec("video"))
    texts = [section.narration for section in lesson.sections]
    workdir = root / "calibrate"
    workdir.mkdir()
    narration = narrate(texts, workdir, Voice(), timeout_seconds=120)
    assert abs(narration.total_seconds - (offline_video.narrated_seconds or 0)) < 0.01, (
        "the offline lesson's narration is not the one measured")
    speech = narration.total_seconds - PAUSE_AFTER_SECTION_SECONDS * len(texts)
    characters = sum(len(text) for text in texts)
    return speech / characters, characters


def hosted_narration_texts() -> list[str]:
    """The narration of the lesson the hosted path builds from the fake's answer."""
    draft = LessonDraft.model_validate(lesson_answer(TOPIC))
    return [section.narration for section in lesson_from_draft(draft, spec("video")).sections]


def espeak_seconds(texts: list[str], root: Path) -> float:
    """How long espeak-ng takes to say ``texts`` (with the pipeline's pauses)."""
    workdir = root / "espeak-check"
    workdir.mkdir()
    return narrate(texts, workdir, Voice(), timeout_seconds=120).total_seconds


def import_seconds(module: str, repeats: int = 3) -> float:
    """Median seconds a fresh interpreter takes to import ``module`` (beyond starting)."""
    code = ("import time; t = time.perf_counter(); import " + module +
            "; print(time.perf_counter() - t)")
    times = []
    for _ in range(repeats):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True, cwd=REPO_ROOT, timeout=120)
        times.append(float(result.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def aac_tone_vs_speech(speech: Path, root: Path, repeats: int = 3) -> dict[str, float]:
    """Median seconds ffmpeg takes to encode ``speech`` (espeak-ng's) and a tone of the same
    length to AAC at the pipeline's 96 kb/s, audio only."""
    with wave.open(str(speech), "rb") as clip:
        seconds = clip.getnframes() / clip.getframerate()
    tone = root / "tone.wav"
    tone.write_bytes(tone_wav(seconds))
    result = {"audio_seconds": seconds}
    for name, path in (("speech", speech), ("tone", tone)):
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                            "-i", str(path), "-c:a", "aac", "-b:a", "96k",
                            str(root / "aac-check.m4a")], check=True, timeout=120)
            times.append(time.perf_counter() - started)
        result[name] = statistics.median(times)
    return result


# --- the run -------------------------------------------------------------------------------
@dataclass
class Figures:
    runs: int
    started_at: str
    command: str
    machine: list[str]
    load_before: str
    load_after: str = ""
    espeak_seconds_per_char: float = 0.0
    espeak_calibration_chars: int = 0
    hosted_narration_chars: int = 0
    espeak_seconds_for_hosted_lesson: float = 0.0
    first: list[Lesson] = field(default_factory=list)
    measured: list[Lesson] = field(default_factory=list)
    tokens: list[Lesson] = field(default_factory=list)
    import_seconds: dict[str, float] = field(default_factory=dict)
    tts_audio: str = "speech"
    #: Seconds ffmpeg takes to encode the same length of tone and of speech to AAC 96 kb/s.
    aac_seconds: dict[str, float] = field(default_factory=dict)
    request_chars: dict[str, dict[str, int]] = field(default_factory=dict)
    answer_chars: int = 0


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> list[str]:
    memory = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"

    def first_line(command: list[str]) -> str:
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=10,
                                 check=False).stdout
        except (OSError, subprocess.SubprocessError):
            return "not installed"
        return out.strip().splitlines()[0] if out.strip() else "?"

    return [
        f"CPU: {cpu_model()}, {os.cpu_count()} cores (nproc); memory {memory}",
        f"OS: {platform.platform()}",
        f"Python {platform.python_version()}; {', '.join(package_versions(PACKAGES))}",
        f"tools: {first_line(['ffmpeg', '-version']).split(' Copyright')[0]}; "
        f"{first_line(['espeak-ng', '--version']).split('  Data at')[0]}",
    ]


def request_breakdown(call_body: dict[str, Any]) -> dict[str, int]:
    """Characters of one generateContent request: the whole JSON body (what the fake counts
    as prompt), the response schema, the system instruction, the user prompt."""
    config = call_body.get("generationConfig", {})
    schema = config.get("responseJsonSchema", config.get("responseSchema", {}))
    system = "".join(part.get("text", "") for part in
                     call_body.get("systemInstruction", {}).get("parts", []))
    prompt = "".join(part.get("text", "") for content in call_body.get("contents", [])
                     for part in content.get("parts", []))
    return {"body": len(json.dumps(call_body)), "schema": len(json.dumps(schema)),
            "system_instruction": len(system), "prompt": len(prompt)}


def run(args: argparse.Namespace) -> Figures:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIXES):
            del os.environ[name]
    figures = Figures(
        runs=args.runs, started_at=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        command=shlex.join([".venv/bin/python", "-m", "bench.hosted_content", *sys.argv[1:]]),
        machine=machine(), load_before=load_average(),
    )
    gemini_clock, tts_clock = ServerClock(), ServerClock()
    with tempfile.TemporaryDirectory(prefix="vividly-hosted-bench-") as tmp, \
            timed_gemini(gemini_clock) as gemini:
        root = Path(tmp)
        offline = ContentServices.from_settings(settings_for(root / "offline"))
        control = ContentServices.from_settings(settings_for(root / "control"))
        control.generator = control.runner.generator = SameLessonGenerator()
        # First lessons: imports, the SQLite files, espeak-ng and ffmpeg from the page cache.
        bench = Bench({"offline": offline, "control": control}, gemini_clock, tts_clock)
        figures.first += [bench.lesson("offline", "text"), bench.lesson("offline", "video"),
                          bench.lesson("control", "video")]
        spc, chars = espeak_seconds_per_char(figures.first[1], root)
        figures.espeak_seconds_per_char, figures.espeak_calibration_chars = spc, chars
        hosted_texts = hosted_narration_texts()
        figures.hosted_narration_chars = sum(len(text) for text in hosted_texts)
        figures.espeak_seconds_for_hosted_lesson = espeak_seconds(hosted_texts, root)

        figures.tts_audio = args.tts_audio
        figures.aac_seconds = aac_tone_vs_speech(root / "calibrate" / "narration.wav", root)
        speech_dir = root / "tts-speech" if args.tts_audio == "speech" else None
        if speech_dir is not None:
            speech_dir.mkdir()
        tts = TimedTextToSpeech(spc, tts_clock, speech_dir)
        tts.start()
        hosted = ContentServices.from_settings(settings_for(
            root / "hosted", content_generator="gemini", gemini_api_key="bench-key",
            content_model_base_url=gemini.base_url, content_narrator="google",
            content_google_tts_endpoint=tts.endpoint,
        ))
        bench.services["hosted"] = hosted
        try:
            figures.first += [bench.lesson("hosted", "text"), bench.lesson("hosted", "video")]
            for modality in MODALITIES:
                for index in range(args.runs):
                    configs = ("offline", "control", "hosted") if modality == "video" else (
                        "offline", "hosted")
                    for config in configs:
                        figures.measured.append(bench.lesson(config, modality))
                    print(f"  {modality} {index + 1}/{args.runs}", file=sys.stderr, flush=True)
            for _band, grade in BANDS:
                for modality in MODALITIES:
                    before = len(gemini.calls)
                    figures.tokens.append(bench.lesson("hosted", modality, grade))
                    body = gemini.calls[-1].body
                    assert len(gemini.calls) == before + 1, "a lesson took more than one call"
                    figures.request_chars[f"{grade}/{modality}"] = request_breakdown(body)
            figures.answer_chars = len(json.dumps(lesson_answer(TOPIC)))
        finally:
            tts.stop()
            for services in bench.services.values():
                services.close()
    figures.import_seconds = {
        module: import_seconds(module)
        for module in ("google.genai", "vividly_tasks.lessons.cloud_speech")
    }
    figures.load_after = load_average()
    return figures


# --- the report ----------------------------------------------------------------------------
def median(values: list[float]) -> float:
    return statistics.median(values)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if abs(seconds) >= 0.0995 else f"{seconds * 1000:.1f} ms"


def signed_ms(seconds: float) -> str:
    return ("+" if seconds >= 0 else "-") + ms(abs(seconds))


def of(figures: Figures, config: str, modality: str) -> list[Lesson]:
    return [m for m in figures.measured if m.config == config and m.modality == modality]


def summary_table(figures: Figures) -> list[str]:
    lines = [
        "| lesson | baseline | baseline wall | hosted wall | server time "
        "| hosted overhead (wall - server) | overhead - baseline (median of triples/pairs) "
        "| overhead / baseline |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for modality in MODALITIES:
        hosted = of(figures, "hosted", modality)
        overhead = median([m.overhead_seconds for m in hosted])
        for baseline, label in (("offline", "offline generator"),
                                ("control", "the hosted lesson, offline (control)")):
            base = of(figures, baseline, modality)
            if not base:
                continue
            base_wall = median([m.wall_seconds for m in base])
            paired = median([h.overhead_seconds - b.wall_seconds
                             for b, h in zip(base, hosted, strict=True)])
            lines.append(
                f"| {modality} | {label} | {ms(base_wall)} | "
                f"{ms(median([m.wall_seconds for m in hosted]))} | "
                f"{ms(median([m.server_seconds for m in hosted]))} | {ms(overhead)} | "
                f"**{signed_ms(paired)}** | {overhead / base_wall:.2f}x |"
            )
    return lines


def stage_table(figures: Figures, modality: str) -> list[str]:
    hosted = of(figures, "hosted", modality)
    bases = [c for c in ("offline", "control") if of(figures, c, modality)]
    base = of(figures, bases[-1], modality)  # the closest: the control where there is one
    names = list(dict.fromkeys(
        name for m in hosted + of(figures, "offline", modality) for name in m.stages))
    lines = [
        f"| {modality}: stage | {' | '.join(bases)} | hosted | of which server "
        f"| hosted - server - {bases[-1]} |",
        "|---" * (len(bases) + 4) + "|",
    ]
    server_of = {"script": lambda m: m.gemini_seconds, "narrate": lambda m: m.tts_seconds}
    for name in names:
        cells = [ms(median([m.stages.get(name, 0.0) for m in of(figures, c, modality)]))
                 for c in bases]
        host = median([m.stages.get(name, 0.0) for m in hosted])
        server: Callable[[Lesson], float] | None = server_of.get(name)
        served = median([server(m) for m in hosted]) if server else 0.0
        extra = median([h.stages.get(name, 0.0) - (server(h) if server else 0.0)
                        - b.stages.get(name, 0.0) for b, h in zip(base, hosted, strict=True)])
        lines.append(f"| {name} | {' | '.join(cells)} | {ms(host)} | "
                     f"{ms(served) if server else '-'} | {signed_ms(extra)} |")
    return lines


def first_table(figures: Figures) -> list[str]:
    lines = ["| first lesson in the process | wall | server time |", "|---|---|---|"]
    for m in figures.first:
        lines.append(f"| {m.config} {m.modality} | {ms(m.wall_seconds)} | "
                     f"{ms(m.server_seconds) if m.config == 'hosted' else '-'} |")
    return lines


def token_table(figures: Figures) -> list[str]:
    lines = [
        "| grade band | grade | modality | prompt tokens | output tokens | total | "
        "request body (characters) | model |",
        "|---|---|---|---|---|---|---|---|",
    ]
    bands = dict((grade, band) for band, grade in BANDS)
    for m in figures.tokens:
        prompt, output = m.prompt_tokens or 0, m.output_tokens or 0
        body = figures.request_chars[f"{m.grade}/{m.modality}"]["body"]
        lines.append(f"| {bands[m.grade]} | {m.grade} | {m.modality} | {prompt:,} | {output:,} | "
                     f"{prompt + output:,} | {body:,} | {m.model} |")
    return lines


def tts_audio_note(figures: Figures) -> list[str]:
    aac = figures.aac_seconds
    pace = (
        f"espeak-ng's pace, measured on this run's first offline video: "
        f"{figures.espeak_seconds_per_char * 1000:.2f} ms of speech a character over "
        f"{figures.espeak_calibration_chars:,} characters of narration, the pauses between "
        "sections left out"
    )
    encode = (
        f"ffmpeg's AAC encoder takes {aac['tone'] / aac['speech']:.1f} times as long over a "
        "steady tone as over speech (measured here: "
        f"{aac['audio_seconds']:.1f} s of espeak-ng speech in {ms(aac['speech'])}, the same "
        f"length of the fake's tone in {ms(aac['tone'])}, median of 3)"
    )
    if figures.tts_audio == "speech":
        return [
            "The fake narrator speaks like espeak-ng: the fake's tone is a character-count "
            f"stand-in (`seconds_per_char`, here set to {pace}), but {encode}, a cost the "
            "hosted path would be charged for a test artefact. So for this run the fake "
            "Text-to-Speech server answers each SynthesizeSpeech with espeak-ng's WAV of "
            "the text (`--tts-audio speech`, the default; the time espeak-ng takes is "
            "server time, subtracted like the rest): the audio is a real speech signal of "
            "exactly espeak-ng's length, as a real voice's would be. ",
        ]
    return [
        f"The fake narrator answers with its tone at `seconds_per_char` = {pace} "
        f"(`--tts-audio tone`), so the narration is as long as espeak-ng's; but {encode}, "
        "and that difference lands in the hosted video's encode stage. ",
    ]


def load_warning(figures: Figures) -> list[str]:
    loads = [float(x) for x in (figures.load_before + " " + figures.load_after).split()]
    if max(loads) <= (os.cpu_count() or 1):
        return []
    return [
        f"**The machine was loaded** (load average up to {max(loads):.1f} on {os.cpu_count()} "
        "cores, other work running): the text figures (milliseconds, no subprocess) hold, but "
        "a video's seconds are mostly ffmpeg competing for the CPU, so its medians and its "
        "median of side-by-side differences can disagree by a second; read the video rows "
        "with the stage table below, whose non-encode rows are what the hosted path changes.",
        "",
    ]


def report(figures: Figures) -> str:
    video_off = of(figures, "offline", "video")
    video_host = of(figures, "hosted", "video")
    video_control = of(figures, "control", "video")

    def narrated(lessons: list[Lesson]) -> float:
        return median([m.narrated_seconds or 0.0 for m in lessons])

    def encode(lessons: list[Lesson]) -> float:
        return median([m.stages.get("encode", 0.0) for m in lessons])

    no_encode = median([
        (h.overhead_seconds - h.stages.get("encode", 0.0))
        - (o.wall_seconds - o.stages.get("encode", 0.0))
        for o, h in zip(video_off, video_host, strict=True)
    ])
    breakdown = figures.request_chars[f"{GRADE}/text"]
    video_breakdown = figures.request_chars[f"{GRADE}/video"]
    text_tokens = [m for m in figures.tokens if m.modality == "text"]
    output_tokens = text_tokens[0].output_tokens or 0
    out = [
        "# Content pipeline: the hosted path's overhead and a lesson's tokens",
        "",
        "<!-- Generated by bench/hosted_content.py; rerun it to refresh this page. -->",
        "",
        "What the hosted lesson path (`CONTENT_GENERATOR=gemini`, `CONTENT_NARRATOR=google`) "
        "adds to a lesson beyond the time its services take to answer, measured against the "
        "loopback servers the tests use (`harness/fakes/gemini.py`, `harness/fakes/tts.py`); and "
        "what a lesson costs in tokens per grade band and modality, as those servers count them.",
        "",
        "```sh",
        figures.command,
        "```",
        "",
        f"Measured {figures.started_at}; load average (1/5/15 min) {figures.load_before} "
        f"before, {figures.load_after} after.",
        "",
        *(f"- {line}" for line in figures.machine),
        "",
        "## Per-lesson overhead (median of "
        f"{figures.runs} of each)",
        "",
        "In one process: `ContentServices` from `Settings` in a temporary directory (SQLite, "
        "local storage), a row inserted with `repository.insert`, then one timed "
        "`runner.run(request_id)`: claim and lease, every stage, the tokens recorded on the "
        "row, the artifacts stored, completion. No broker: the Celery task around `run` is "
        "the same on both paths. Offline is the offline generator and espeak-ng at the "
        "default 165 words a minute; hosted is the real google-genai SDK (Gemini API mode, "
        "`CONTENT_MODEL_BASE_URL` at the fake) and the real google-cloud-texttospeech client "
        "(plain gRPC, `CONTENT_GOOGLE_TTS_ENDPOINT=http://127.0.0.1:PORT`). Topic "
        f"\"{TOPIC}\", {SUBJECT}, grade {GRADE}. Offline and hosted lessons alternate, so the "
        "machine's load drifts over both.",
        "",
        "Server time is what the fakes spend answering, timed around their own handlers "
        "(the HTTP server's whole `do_POST`: body read and parsed, answer built and written; the "
        "gRPC servicer's `SynthesizeSpeech`: the WAV built). Hosted overhead = a lesson's wall "
        "time - its server time: the SDKs and their HTTP and gRPC on loopback, the request "
        "built with its JSON schema, the answer validated into a lesson, the WAV answers decoded "
        "and joined, the tokens recorded on the row. (The HTTP request line and headers, and "
        "gRPC's (de)serialisation, fall outside the timed handlers and count as overhead.)",
        "",
        *summary_table(figures),
        "",
        *load_warning(figures),
        "\"overhead - baseline\" is the median, over the lessons run side by side, of (hosted "
        "wall - server time) - baseline wall: what choosing the hosted path costs this worker "
        "per lesson beyond the services' own time. For video the control (below) is the fair "
        "baseline: the same slides and narration, so the same encode. The ratio is the median "
        "overhead over the median baseline wall.",
        "",
        "Where it goes (median per stage; a stage runs from its start to the next one's; "
        "`claim` is before the first stage):",
        "",
        *stage_table(figures, "text"),
        "",
        *stage_table(figures, "video"),
        "",
        "### Comparable videos: espeak-ng's pace, and a control with the hosted lesson",
        "",
        "A video's encode time grows with its narrated length, its slides and what its audio "
        "sounds like, so three things keep the comparison fair. ",
        *(tts_audio_note(figures)),
        "And the fake's answer is a different lesson from the offline "
        f"generator's ({video_host[0].sections} slides, {figures.hosted_narration_chars:,} "
        f"characters of narration, against {video_off[0].sections} and "
        f"{figures.espeak_calibration_chars:,}), so a third kind of lesson runs alongside: the "
        "control, the offline path (espeak-ng, no SDK, no HTTP, no validation) given the very "
        "lesson the hosted path builds from the fake's answer. Against the control the "
        "slides, the narration text and its length are the hosted video's; that row is the "
        "hosted path's own overhead for a video.",
        "",
        "| video | slides | narrated (median) | encode (median) | encode per narrated second |",
        "|---|---|---|---|---|",
        *(
            f"| {label} | {lessons[0].sections} | {narrated(lessons):.1f} s | "
            f"{ms(encode(lessons))} | {encode(lessons) / narrated(lessons) * 1000:.0f} ms |"
            for label, lessons in (("offline generator", video_off),
                                   ("control (hosted lesson, espeak-ng)", video_control),
                                   ("hosted", video_host))
        ),
        "",
        "espeak-ng says the hosted lesson in "
        f"{figures.espeak_seconds_for_hosted_lesson:.1f} s (the control's narration); the fake "
        f"narrator, {narrated(video_host):.1f} s. Against the offline "
        "generator's video, most of the difference is the longer video, not the hosted path: "
        "leaving the encode stage out, hosted overhead - offline is "
        f"{signed_ms(no_encode)} a lesson (median of pairs). The narrator made "
        f"{median([m.tts_calls for m in video_host]):.0f} SynthesizeSpeech calls a video (one "
        "a section; none over 5,000 bytes, so nothing split).",
        "",
        "### The first lesson in a process",
        "",
        "Before the measured lessons, one of each kind ran first (the order below) and is not "
        "in the medians: the hosted text lesson imports google-genai and builds its client, the "
        "hosted video opens the gRPC channel. A `vividly-worker job` execution pays this once. "
        "In this process the fake TTS server had already imported google-cloud-texttospeech, so "
        "the first hosted video does not show that import; in a fresh interpreter, importing "
        + " and ".join(f"`{module}` takes {ms(seconds)}"
                       for module, seconds in figures.import_seconds.items())
        + " (median of 3).",
        "",
        *first_table(figures),
        "",
        "## Tokens per lesson, per grade band and modality",
        "",
        "One hosted lesson each, topic \"Photosynthesis\", Biology; the tokens are the ones "
        "recorded on the request row (`prompt_tokens`, `output_tokens`, what `vividly status` "
        "shows), one model call per lesson.",
        "",
        *token_table(figures),
        "",
        "**These are the local server's counts, not a real model's.** `harness/fakes/gemini.py` "
        f"counts {CHARS_PER_TOKEN} characters a token. Prompt: it counts the whole request "
        "body the SDK sends, so our prompt is measured exactly, in characters: for grade "
        f"{GRADE} text, {breakdown['body']:,} characters of JSON, of which the lesson's JSON "
        f"schema (structured output) is {breakdown['schema']:,}, the system instruction "
        f"{breakdown['system_instruction']:,} and the prompt itself {breakdown['prompt']:,} "
        f"(video: {video_breakdown['prompt']:,}, one more line asking for short narrations). "
        "The schema dominates; the grade band changes only the audience line. Output: the "
        f"fake's answer is a fixed lesson-sized JSON ({figures.answer_chars:,} characters, "
        "three sections with two paragraphs each), the same for every band and modality, so "
        f"the output column ({output_tokens:,} tokens) is the fake's size, not a forecast.",
        "",
        "What a real model changes:",
        "",
        "- Prompt tokens are close: the same request is sent; a real tokenizer counts JSON "
        "and English somewhat differently from 4 characters a token (JSON punctuation and "
        "schema keywords usually cost more tokens per character).",
        "- Output tokens are the real unknown: the model decides the lesson's length within "
        "the prompt's bounds (one to four sections, three to five quiz questions, narrations "
        "under 120 words for video), and a high-school lesson is likely longer than an "
        "early-years one, where here they are equal. `CONTENT_MODEL_MAX_OUTPUT_TOKENS` (8,192) "
        "caps it.",
        "- Thinking tokens: a thinking model (the default `gemini-2.5-flash` thinks unless told "
        "not to) bills its thoughts as output; the generator adds `thoughtsTokenCount` to "
        "`output_tokens`, so the row shows them, but the fake reports none.",
        "- An answer refused as invalid is asked again (`CONTENT_MODEL_ATTEMPTS`, 2): a "
        "retried lesson pays its prompt twice; a rate-limited call answered 429 is not billed "
        "output.",
        "",
        "To price a lesson, multiply these by the model's current per-token prices; measure "
        "the output side on the real model (the row records each request's tokens).",
        "",
    ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="measured lessons of each kind")
    parser.add_argument("--output", type=Path,
                        default=REPO_ROOT / "docs" / "benchmarks-content-hosted.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--tts-audio", choices=("speech", "tone"), default="speech",
        help="what the fake TTS answers: espeak-ng's speech of the text (default), or the "
        "fake's own tone at espeak-ng's measured seconds per character")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    figures = run(args)
    text = report(figures)
    print(text)
    if args.json:
        payload = asdict(figures)
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    if not args.no_write:
        args.output.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
