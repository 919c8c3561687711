"""Celery's own integration suite (its sdist's ``t/integration``) on ``pubsub://`` or Redis.

    .venv/bin/python scripts/celery_integration.py pubsub [pytest args ...]
    .venv/bin/python scripts/celery_integration.py redis t/integration/test_canvas.py -k chord

Downloads the sdist of the installed Celery (once, into .cache/), starts a Pub/Sub emulator
and a Redis of its own on loopback (the result backend in both runs), runs pytest there with
``-p vividly_tasks.transport`` so that ``pubsub://`` is registered, and stops what it started.
Without pytest args it runs test_canvas.py, test_tasks.py and test_inspect.py. Not part of
``make test``: the three files take about 25 minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from harness.services import start_pubsub_emulator, start_redis  # noqa: E402

CACHE = REPO_ROOT / ".cache" / "celery-integration"
DEFAULT_TESTS = ["t/integration/test_canvas.py", "t/integration/test_tasks.py",
                 "t/integration/test_inspect.py"]
#: The suite's own plugins beyond what the test extra installs.
PLUGINS = ["pytest-rerunfailures"]


def celery_source() -> Path:
    release = version("celery")
    source = CACHE / f"celery-{release}"
    if not (source / "t" / "integration").is_dir():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--no-binary", ":all:", f"celery=={release}", "-d", str(CACHE)],
                       check=True)
        with tarfile.open(CACHE / f"celery-{release}.tar.gz") as archive:
            archive.extractall(CACHE, filter="data")
    plugins = CACHE / "plugins"
    if not plugins.is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--target", str(plugins), *PLUGINS], check=True)
    return source


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("pubsub", "redis"):
        print(__doc__, file=sys.stderr)
        return 2
    broker, pytest_args = argv[0], argv[1:] or DEFAULT_TESTS
    source = celery_source()
    with tempfile.TemporaryDirectory(prefix="celery-integration-") as workdir:
        emulator = start_pubsub_emulator(Path(workdir))
        redis = start_redis(Path(workdir))
        try:
            redis_url = f"redis://127.0.0.1:{redis.port}"
            env = {
                **os.environ,
                "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{emulator.port}",
                "TEST_BROKER": "pubsub://celery-integration" if broker == "pubsub"
                else f"{redis_url}/1",
                "TEST_BACKEND": f"{redis_url}/0",
                "REDIS_HOST": "127.0.0.1",
                "REDIS_PORT": str(redis.port),
                "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(CACHE / "plugins")]),
            }
            command = [sys.executable, "-m", "pytest", "-p", "vividly_tasks.transport",
                       "-p", "rerunfailures", "-p", "no:cacheprovider", "-q", "-rfE",
                       "--timeout", "120", *pytest_args]
            return subprocess.run(command, check=False, cwd=source, env=env).returncode
        finally:
            redis.stop()
            emulator.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
