"""Running the external programs of the pipeline (espeak-ng, ffmpeg) with one error mapping."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from vividly_tasks.lessons.errors import PermanentFailure, TimeLimitExceeded, ToolMissing

#: How much of a failing program's stderr goes into the recorded error.
STDERR_TAIL_CHARS = 2000


def run_tool(command: Sequence[str], *, what: str, timeout_seconds: float) -> None:
    """Run ``command``; a missing program, a failure or the time limit become domain errors."""
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=timeout_seconds)
    except FileNotFoundError as exc:
        raise ToolMissing(f"{what}: {command[0]} is not installed on this worker") from exc
    except subprocess.TimeoutExpired as exc:
        raise TimeLimitExceeded(f"{what} ran past the time limit: {exc}") from exc
    except subprocess.CalledProcessError as exc:
        stderr = exc.stderr.decode(errors="replace").strip()[-STDERR_TAIL_CHARS:]
        raise PermanentFailure(f"{what} failed with exit {exc.returncode}: {stderr}") from exc
