"""What a request's finished stages made, kept so that a retry resumes at the first unfinished
stage instead of paying for the finished ones again.

The lesson (the model's answer, validated), each section's narration and the slides are
stored as each is made, and the next attempt reads them back: a Text-to-Speech outage or a
failed encode never calls the model a second time, and sections already spoken are not
synthesized again.

Where: in the artifact storage, under ``stages/<request-id>/``. Not in the row: narration is
megabytes of audio per video, and the row is read by every ``vividly status`` poll; the
storage is already shared by every worker (a retry may run on another machine), written
atomically, and on GCS in production. Not in the request's artifact folder: that folder holds
only the finished set (``manifest.json`` last), so a reader never sees work in progress.

Keys:

- ``lesson.json``: the lesson and the generator that wrote it;
- ``narration-NN-DIGEST.pcm``: section NN's audio frames; DIGEST covers the narrator's engine
  and the text, so a worker with another voice, or another text, speaks it again;
- ``slide-NN.png``: the slides, in order.

They are removed once the request is completed or failed (``clear``); a failure to remove
them is logged, never the request's failure.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from pathlib import Path
from typing import Any

from vividly_tasks.lessons.errors import StorageUnavailable
from vividly_tasks.lessons.lesson import Lesson
from vividly_tasks.lessons.storage import Storage, check_key

logger = logging.getLogger(__name__)

STAGES_PREFIX = "stages"
LESSON_NAME = "lesson.json"
#: Enough of the SHA-256 to tell an engine's or a text's change apart.
DIGEST_CHARS = 16


def stage_prefix(request_id: uuid.UUID) -> str:
    return check_key(f"{STAGES_PREFIX}/{uuid.UUID(str(request_id))}")


class StageStore:
    """The kept stages of one request; files pass through ``workdir`` on their way."""

    def __init__(self, storage: Storage, request_id: uuid.UUID, workdir: Path) -> None:
        self.storage = storage
        self.prefix = stage_prefix(request_id)
        self.workdir = workdir

    def _key(self, name: str) -> str:
        return check_key(f"{self.prefix}/{name}")

    def _read(self, name: str) -> bytes | None:
        try:
            return self.storage.get_bytes(self._key(name))
        except FileNotFoundError:
            return None

    def _keep(self, name: str, data: bytes, content_type: str) -> None:
        path = self.workdir / f"kept-{name}"
        path.write_bytes(data)
        try:
            self.storage.put_file(self._key(name), path, content_type)
        finally:
            path.unlink(missing_ok=True)

    # The lesson.
    def lesson(self) -> tuple[Lesson, str] | None:
        """The kept lesson and its generator's name, or None if none was kept (or it cannot
        be read back: then it is written again)."""
        data = self._read(LESSON_NAME)
        if data is None:
            return None
        try:
            kept: dict[str, Any] = json.loads(data)
            return Lesson.from_dict(kept["lesson"]), str(kept["generator"])
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("%s/%s is unreadable (%s); the lesson is written again",
                           self.prefix, LESSON_NAME, exc)
            return None

    def keep_lesson(self, lesson: Lesson, generator: str) -> None:
        text = json.dumps({"generator": generator, "lesson": lesson.as_dict()})
        self._keep(LESSON_NAME, text.encode("utf-8"), "application/json")

    # Narration, one section at a time (narration.ClipStore).
    @staticmethod
    def _clip_name(index: int, text: str, engine: str) -> str:
        digest = hashlib.sha256(f"{engine}\n{text}".encode()).hexdigest()[:DIGEST_CHARS]
        return f"narration-{index:02d}-{digest}.pcm"

    def load_clip(self, index: int, text: str, engine: str) -> bytes | None:
        return self._read(self._clip_name(index, text, engine))

    def keep_clip(self, index: int, text: str, engine: str, frames: bytes) -> None:
        self._keep(self._clip_name(index, text, engine), frames, "application/octet-stream")

    # Slides.
    @staticmethod
    def _slide_name(number: int) -> str:
        return f"slide-{number:02d}.png"

    def slides(self, count: int) -> list[Path] | None:
        """The ``count`` kept slides, written into the work directory, or None unless all of
        them were kept."""
        paths = []
        for number in range(1, count + 1):
            data = self._read(self._slide_name(number))
            if data is None:
                return None
            path = self.workdir / self._slide_name(number)
            path.write_bytes(data)
            paths.append(path)
        return paths

    def keep_slides(self, paths: list[Path]) -> None:
        for number, path in enumerate(paths, start=1):
            self.storage.put_file(self._key(self._slide_name(number)), path, "image/png")

    def clear(self) -> None:
        """Remove every kept stage (the request is finished); failures are only logged."""
        try:
            for key in self.storage.list_keys(self.prefix):
                self.storage.delete(key)
        except (StorageUnavailable, OSError) as exc:
            logger.warning("could not remove the kept stages under %s: %s", self.prefix, exc)
