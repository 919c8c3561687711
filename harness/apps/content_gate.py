"""A storage that holds a content task at its store stage; workers load it with ``--include``.

Registers the storage scheme ``gated+file``: ``gated+file:///root?gate=/path`` is the local
storage at ``/root`` whose writes of artifacts wait until the file ``/path`` exists, so a test
can look at a task while it runs (its progress in Flower) for as long as it needs, and then let
it finish. What the earlier stages keep for a retry (``stages/...``) is written at once: those
writes belong to their own stages, not to the store stage.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from vividly_tasks.lessons.errors import StorageUnavailable
from vividly_tasks.lessons.stages import STAGES_PREFIX
from vividly_tasks.lessons.storage import LocalStorage, Storage, register_backend

SCHEME = "gated+file"
#: A test that never opens the gate fails its task rather than hang the worker.
GATE_TIMEOUT_SECONDS = 120.0


class GatedStorage(LocalStorage):
    def __init__(self, root: Path, gate: Path) -> None:
        super().__init__(root)
        self.gate = gate
        self.url = f"{SCHEME}://{self.root}?gate={gate}"

    def put_file(self, key: str, source: Path, content_type: str) -> str:
        if key.startswith(f"{STAGES_PREFIX}/"):
            return super().put_file(key, source, content_type)
        deadline = time.monotonic() + GATE_TIMEOUT_SECONDS
        while not self.gate.exists():
            if time.monotonic() > deadline:
                raise StorageUnavailable(f"gate {self.gate} not opened in time")
            time.sleep(0.05)
        return super().put_file(key, source, content_type)


def open_gated(url: str) -> Storage:
    parts = urlsplit(url)
    gate = parse_qs(parts.query).get("gate")
    if not gate:
        raise ValueError(f"gated storage URL {url!r} needs ?gate=/path")
    return GatedStorage(Path(parts.path), Path(gate[0]))


register_backend(SCHEME, open_gated)
