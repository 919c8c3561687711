"""Fault injection for the content tests; workers load it with ``--include``.

Registers the storage scheme ``flaky+file``: ``flaky+file:///root?failures=N`` is the local
storage at ``/root`` whose first N writes (counted across processes, in a file under the root)
raise ``StorageUnavailable``, as an unreachable bucket would.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from vividly_tasks.lessons.errors import StorageUnavailable
from vividly_tasks.lessons.storage import LocalStorage, Storage, register_backend

SCHEME = "flaky+file"
COUNTER_NAME = ".write-attempts"


class FlakyStorage(LocalStorage):
    def __init__(self, root: Path, failures: int) -> None:
        super().__init__(root)
        self.failures = failures
        self.url = f"{SCHEME}://{self.root}?failures={failures}"

    def write_attempts(self) -> int:
        path = self.root / COUNTER_NAME
        return int(path.read_text() or 0) if path.exists() else 0

    def _count_write(self) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / COUNTER_NAME).open("a+") as counter:
            fcntl.flock(counter, fcntl.LOCK_EX)
            counter.seek(0)
            count = int(counter.read() or 0) + 1
            counter.seek(0)
            counter.truncate()
            counter.write(str(count))
            return count

    def put_file(self, key: str, source: Path, content_type: str) -> str:
        count = self._count_write()
        if count <= self.failures:
            raise StorageUnavailable(f"injected storage failure {count} of {self.failures}")
        return super().put_file(key, source, content_type)


def open_flaky(url: str) -> Storage:
    parts = urlsplit(url)
    failures = int(parse_qs(parts.query).get("failures", ["0"])[0])
    return FlakyStorage(Path(parts.path), failures)


register_backend(SCHEME, open_flaky)
