"""The README's first command (``make demo``) runs the main job on the
embedded defaults (no server: SQLite, local files, the filesystem broker) and every lesson and
MP4 it prints exists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness.content import ffprobe
from harness.workers import REPO_ROOT


def test_make_demo_prints_lessons_and_a_video_that_exist(tmp_path: Path) -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert "make demo" in readme.split("## ", 2)[1], "the first command of the README"
    data_dir = tmp_path / "demo-data"
    env = {
        **os.environ,
        "VIVIDLY_DATA_DIR": str(data_dir),
        "CONTENT_TTS_WORDS_PER_MINUTE": "450",  # a short narration keeps the video quick
        "WORKER_IDLE_TIMEOUT": "1",  # every request is queued before the job starts
    }
    result = subprocess.run(
        ["make", "--no-print-directory", "demo"], check=False, cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    output = result.stdout
    assert "broker:   filesystem://" in output
    assert "job exited 0 (idle): 3 succeeded, 0 failed" in output
    printed = {line.split()[0] for line in output.splitlines() if line.startswith("  lesson.")}
    paths = [Path(line.split()[-1]) for line in output.splitlines()
             if line.startswith("  lesson.")]
    assert len(paths) == 7 and set(printed) == {"lesson.md", "lesson.html", "lesson.mp4"}
    for path in paths:
        assert path.is_relative_to(data_dir) and path.stat().st_size > 0, path
    assert any("The water cycle" in p.read_text() for p in paths if p.suffix == ".md")
    (video,) = [p for p in paths if p.suffix == ".mp4"]
    streams = {s["codec_type"]: s for s in ffprobe(video)["streams"]}
    assert streams["video"]["codec_name"] == "h264" and "audio" in streams


def test_the_same_demo_runs_over_pubsub(pubsub_project: str, tmp_path: Path) -> None:
    """``BROKER_URL=pubsub://...`` (emulator) with the same command: text lessons only, to
    stay quick (the video path is the one above)."""
    vividly = Path(sys.executable).with_name("vividly")
    env = {**os.environ, "BROKER_URL": f"pubsub://{pubsub_project}", "WORKER_IDLE_TIMEOUT": "1"}
    result = subprocess.run(
        [str(vividly), "demo", "--no-video"], check=False, cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert f"broker:   pubsub://{pubsub_project}" in result.stdout
    assert "job exited 0 (idle): 2 succeeded, 0 failed" in result.stdout
    lessons = [Path(line.split()[-1]) for line in result.stdout.splitlines()
               if line.startswith("  lesson.md")]
    assert len(lessons) == 2 and all(path.stat().st_size > 0 for path in lessons)
