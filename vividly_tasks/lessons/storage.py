"""Artifact storage behind one interface: a local directory (default) or Google Cloud Storage.

Keys are relative paths derived from the request id (``<request-id>/lesson.md``), so a rerun
overwrites the same objects instead of adding a second set. A key can never leave its store's
root or prefix: absolute paths, ``..``, empty segments, backslashes and control characters are
refused (``UnsafeKey``).

Writes are atomic: a reader sees the old object, the new one, or none, never a partial file.
Locally the bytes go to a temporary file under ``.incoming/`` in the same filesystem, are
fsynced and then renamed over the final name. On GCS a single-request upload only becomes
visible once it is complete.

Backend errors become ``StorageUnavailable`` (a transient error: the task retries).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from google.api_core import exceptions as api
from google.auth.exceptions import TransportError
from google.cloud import storage as gcs

from vividly_tasks.lessons.credentials import find_default_credentials
from vividly_tasks.lessons.errors import StorageUnavailable

INCOMING_DIR = ".incoming"
#: google-cloud-storage's own setting: a local emulator, reached without credentials.
EMULATOR_VARIABLE = "STORAGE_EMULATOR_HOST"
#: A partial copy under ``.incoming/`` this old was left by a killed writer (a copy takes
#: seconds): a worker's start removes it.
STALE_TEMPORARY_SECONDS = 3600.0
#: Artifacts are for serving: readable by all, like a file written with the usual umask.
ARTIFACT_FILE_MODE = 0o644
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_KEY_CHARS = 512


class UnsafeKey(ValueError):
    """A storage key that could escape its root or prefix."""


def check_key(key: str) -> str:
    """``key`` if it is a safe relative key (segments of letters, digits, ``._-``), else
    ``UnsafeKey``."""
    if not key or len(key) > MAX_KEY_CHARS:
        raise UnsafeKey(f"storage key {key!r} is empty or too long")
    for segment in key.split("/"):
        if segment in {"", ".", ".."} or not _SEGMENT.fullmatch(segment):
            raise UnsafeKey(f"storage key {key!r} has an unsafe segment {segment!r}")
    return key


def artifact_key(request_id: str | uuid.UUID, name: str) -> str:
    """Where artifact ``name`` of a request lives: one folder per request id."""
    request = uuid.UUID(str(request_id))
    return check_key(f"{request}/{name}")


class Storage(Protocol):
    """Where artifacts go. ``put`` is atomic and overwrites; keys are checked with
    ``check_key``; backend failures raise ``StorageUnavailable``."""

    url: str

    def put_file(self, key: str, source: Path, content_type: str) -> str:
        """Store the file at ``source`` under ``key``; return the object's URI."""
        ...

    def get_bytes(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list_keys(self, prefix: str = "") -> list[str]: ...

    def delete(self, key: str) -> None:
        """Remove the object at ``key``; one that is not there is not an error."""
        ...

    def uri(self, key: str) -> str: ...


class LocalStorage:
    """A directory tree; ``file:///path`` URLs."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.url = self.root.as_uri()

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise UnsafeKey(f"storage key {key!r} resolves outside {self.root}")
        return path

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def put_file(self, key: str, source: Path, content_type: str) -> str:
        del content_type  # files carry no content type
        final = self._path(key)
        try:
            with self._temporary_copy(source) as temporary:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(temporary, final)
        except OSError as exc:
            raise StorageUnavailable(f"writing {final} failed: {exc}") from exc
        return final.as_uri()

    @contextlib.contextmanager
    def _temporary_copy(self, source: Path) -> Iterator[Path]:
        """A durable copy of ``source`` under ``.incoming/``, removed if not moved away."""
        incoming = self.root / INCOMING_DIR
        incoming.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(dir=incoming, suffix=".part")
        temporary = Path(name)
        try:
            os.fchmod(descriptor, ARTIFACT_FILE_MODE)
            with os.fdopen(descriptor, "wb") as out, source.open("rb") as data:
                while chunk := data.read(1 << 20):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            yield temporary
        finally:
            temporary.unlink(missing_ok=True)

    def sweep_temporaries(self, older_than_seconds: float = STALE_TEMPORARY_SECONDS) -> int:
        """Remove partial copies a killed writer left in ``.incoming/``; returns how many
        (only old ones: a live worker may be writing the new ones)."""
        incoming = self.root / INCOMING_DIR
        if not incoming.is_dir():
            return 0
        cutoff = time.time() - older_than_seconds
        removed = 0
        for leftover in incoming.glob("*.part"):
            with contextlib.suppress(FileNotFoundError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
                    removed += 1
        return removed

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StorageUnavailable(f"reading {key} failed: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str = "") -> list[str]:
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        if not base.is_dir():
            return []
        return sorted(
            path.relative_to(self.root).as_posix()
            for path in base.rglob("*")
            if path.is_file() and INCOMING_DIR not in path.relative_to(self.root).parts
        )


    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
            # Folders are implied by keys, as on GCS: drop the ones this leaves empty.
            for parent in path.parents:
                if parent == self.root or not parent.is_relative_to(self.root):
                    break
                with contextlib.suppress(OSError):  # not empty: stop there
                    parent.rmdir()
                if parent.exists():
                    break
        except OSError as exc:
            raise StorageUnavailable(f"removing {path} failed: {exc}") from exc


class GCSStorage:
    """Google Cloud Storage; ``gs://bucket/prefix`` URLs. The client follows Google's own
    configuration (Application Default Credentials, ``STORAGE_EMULATOR_HOST``). Opening it
    (a worker's start) may probe the metadata server for credentials: bounded to
    ``CREDENTIALS_CHECK_TIMEOUT_SECONDS`` (``credentials``); an emulator needs none."""

    def __init__(self, bucket: str, prefix: str = "") -> None:
        if prefix:
            check_key(prefix)
        self.bucket_name = bucket
        self.prefix = prefix
        self.url = f"gs://{bucket}/{prefix}".rstrip("/")
        if os.environ.get(EMULATOR_VARIABLE):  # the client then uses anonymous credentials
            self._client = gcs.Client()
        else:
            credentials, project = find_default_credentials()
            self._client = gcs.Client(credentials=credentials, project=project)
        self._bucket = self._client.bucket(bucket)

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"gs://{self.bucket_name}/{self._name(key)}"

    def put_file(self, key: str, source: Path, content_type: str) -> str:
        blob = self._bucket.blob(self._name(key))
        with _gcs_errors(f"uploading {self.uri(key)}"):
            blob.upload_from_filename(str(source), content_type=content_type)
        return self.uri(key)

    def get_bytes(self, key: str) -> bytes:
        with _gcs_errors(f"reading {self.uri(key)}"):
            try:
                data: bytes = self._bucket.blob(self._name(key)).download_as_bytes()
            except api.NotFound as exc:
                raise FileNotFoundError(self.uri(key)) from exc
        return data

    def exists(self, key: str) -> bool:
        with _gcs_errors(f"checking {self.uri(key)}"):
            return bool(self._bucket.blob(self._name(key)).exists())

    def list_keys(self, prefix: str = "") -> list[str]:
        base = self._name(prefix.rstrip("/")) + "/" if prefix else (
            f"{self.prefix}/" if self.prefix else ""
        )
        strip = len(self.prefix) + 1 if self.prefix else 0
        with _gcs_errors(f"listing {self.url}"):
            names = [blob.name for blob in self._client.list_blobs(self.bucket_name, prefix=base)]
        return sorted(name[strip:] for name in names)

    def delete(self, key: str) -> None:
        with _gcs_errors(f"removing {self.uri(key)}"), contextlib.suppress(api.NotFound):
            self._bucket.blob(self._name(key)).delete()


@contextlib.contextmanager
def _gcs_errors(action: str) -> Iterator[None]:
    """Transport failures, server errors and throttling become ``StorageUnavailable``;
    client errors (permission, bad request) stay what they are: retrying would not help.
    (requests' exceptions are ``OSError`` subclasses.)"""
    try:
        yield
    except FileNotFoundError:
        raise
    except (api.ServerError, api.TooManyRequests, api.RetryError, TransportError, OSError) as exc:
        raise StorageUnavailable(f"{action} failed: {exc}") from exc


StorageFactory = Callable[[str], Storage]
#: URL scheme -> factory. ``register_backend`` adds one (the tests add a fault-injecting one).
BACKENDS: dict[str, StorageFactory] = {}


def register_backend(scheme: str, factory: StorageFactory) -> None:
    BACKENDS[scheme] = factory


def _open_file(url: str) -> Storage:
    parts = urlsplit(url)
    if parts.netloc not in {"", "localhost"}:
        raise ValueError(f"file storage URL {url!r} must be file:///absolute/path")
    return LocalStorage(Path(unquote(parts.path)))


def _open_gcs(url: str) -> Storage:
    parts = urlsplit(url)
    if not parts.netloc:
        raise ValueError(f"GCS storage URL {url!r} must be gs://bucket[/prefix]")
    return GCSStorage(parts.netloc, parts.path.strip("/"))


register_backend("file", _open_file)
register_backend("gs", _open_gcs)


def open_storage(url: str) -> Storage:
    """The storage for ``url`` (``file:///path``, ``gs://bucket/prefix``, or a registered
    scheme)."""
    scheme = urlsplit(url).scheme
    factory = BACKENDS.get(scheme)
    if factory is None:
        raise ValueError(f"no storage backend for {url!r}; known schemes: {sorted(BACKENDS)}")
    return factory(url)
