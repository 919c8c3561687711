"""The video: one 1280x720 slide per section (Pillow), shown for the length of its narration,
encoded with the narration into an H.264/AAC MP4 by ffmpeg, with one chapter per section.

ffmpeg reads the slides through its concat demuxer (each image with its duration) and the
narration WAV; ``-t`` cuts the output at the narration's length, so picture and sound end
together.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from vividly_tasks.lessons.lesson import Lesson, Section
from vividly_tasks.lessons.narration import Narration
from vividly_tasks.lessons.tools import run_tool

WIDTH_PX, HEIGHT_PX = 1280, 720
#: Slides are stills: 12 frames a second look the same as 24 and encode twice as fast.
FRAME_RATE_FPS = 12
BACKGROUND = (248, 250, 253)
TEXT = (29, 36, 51)
MUTED = (91, 100, 120)
#: One accent per slide, so consecutive slides are easy to tell apart (and to count in tests).
ACCENTS = ((35, 64, 142), (0, 128, 96), (196, 92, 0), (140, 40, 140), (170, 30, 50), (0, 110, 160))


def render_slides(lesson: Lesson, workdir: Path) -> list[Path]:
    """One PNG per section; returns their paths in order."""
    paths = []
    total = len(lesson.sections)
    for index, section in enumerate(lesson.sections):
        path = workdir / f"slide-{index + 1:02d}.png"
        _render_slide(lesson, section, index, total).save(path, optimize=False)
        paths.append(path)
    return paths


def _render_slide(lesson: Lesson, section: Section, index: int, total: int) -> Image.Image:
    accent = ACCENTS[index % len(ACCENTS)]
    image = Image.new("RGB", (WIDTH_PX, HEIGHT_PX), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, WIDTH_PX, 120), fill=accent)
    draw.rectangle((0, HEIGHT_PX - 12, WIDTH_PX * (index + 1) // total, HEIGHT_PX), fill=accent)
    small, heading, body = (ImageFont.load_default(size) for size in (24, 52, 32))
    draw.text((60, 22), _clip(lesson.title, 80), font=small, fill=(255, 255, 255))
    draw.text((60, 56), section.heading, font=heading, fill=(255, 255, 255))
    draw.text(
        (WIDTH_PX - 60, 22), f"{index + 1} / {total}", font=small, fill=(255, 255, 255),
        anchor="ra",
    )
    lines: list[tuple[str, tuple[int, int, int]]] = []
    for paragraph in section.paragraphs[:2]:
        lines += [(line, MUTED) for line in textwrap.wrap(paragraph, 62)] + [("", MUTED)]
    for number, item in enumerate(section.items, start=1):
        marker = f"{number}." if section.ordered else "•"
        wrapped = textwrap.wrap(item, 58) or [""]
        lines.append((f"{marker} {wrapped[0]}", TEXT))
        lines += [(f"    {rest}", TEXT) for rest in wrapped[1:]]
    y = 160
    for line, colour in lines:
        if y > HEIGHT_PX - 70:
            break
        draw.text((60, y), line, font=body, fill=colour)
        y += 44
    return image


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ffmetadata_escape(value: str) -> str:
    for char in ("\\", "=", ";", "#", "\n"):
        value = value.replace(char, "\\" + char)
    return value


def write_chapters(lesson: Lesson, narration: Narration, path: Path) -> Path:
    lines = [";FFMETADATA1", f"title={_ffmetadata_escape(lesson.title)}"]
    start_ms = 0
    for section, seconds in zip(lesson.sections, narration.section_seconds, strict=True):
        end_ms = start_ms + round(seconds * 1000)
        lines += [
            "[CHAPTER]", "TIMEBASE=1/1000", f"START={start_ms}", f"END={end_ms}",
            f"title={_ffmetadata_escape(section.heading)}",
        ]
        start_ms = end_ms
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_concat_list(slides: Sequence[Path], durations: Sequence[float], path: Path) -> Path:
    lines = ["ffconcat version 1.0"]
    for slide, seconds in zip(slides, durations, strict=True):
        lines += [f"file '{slide.name}'", f"duration {seconds:.3f}"]
    # The concat demuxer ignores the last entry's duration unless the file is listed again.
    lines.append(f"file '{slides[-1].name}'")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def encode(
    lesson: Lesson, slides: Sequence[Path], narration: Narration, output: Path, *,
    timeout_seconds: float, ffmpeg: str = "ffmpeg",
) -> Path:
    """Encode ``slides`` + ``narration`` into ``output`` (MP4, H.264 + AAC, chapters)."""
    workdir = output.parent
    concat = write_concat_list(slides, narration.section_seconds, workdir / "slides.ffconcat")
    chapters = write_chapters(lesson, narration, workdir / "chapters.ffmeta")
    command = [
        ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "concat", "-safe", "0", "-i", str(concat),
        "-i", str(narration.path),
        "-f", "ffmetadata", "-i", str(chapters),
        "-map", "0:v", "-map", "1:a", "-map_metadata", "2", "-map_chapters", "2",
        # -r (not the fps filter): duplicates are made after conversion, once per slide.
        "-r", str(FRAME_RATE_FPS), "-pix_fmt", "yuv420p",
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "stillimage",
        "-c:a", "aac", "-b:a", "96k",
        "-t", f"{narration.total_seconds:.3f}",
        "-movflags", "+faststart",
        str(output),
    ]
    run_tool(command, what="video encoding (ffmpeg)", timeout_seconds=timeout_seconds)
    return output
