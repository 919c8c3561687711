"""The testing kit (vividly_tasks/testing) as a user outside this repository meets it: their
app module, five lines of test and one line of pytest configuration, nothing else of ours.
(tests/integration/testing_kit/test_example_project.py is the same inside this suite, where the
kit starts an emulator of its own.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.services import ServiceProcess
from harness.workers import REPO_ROOT

USER_TEST = '''\
def test_add(pubsub_celery_app, pubsub_celery_worker):
    assert pubsub_celery_app.send_task("billing.add", (2, 3)).get(timeout=10) == 5


def test_total(pubsub_celery_app, pubsub_celery_worker):
    assert pubsub_celery_app.send_task("billing.total", ([1, 2, 3],)).get(timeout=10) == 6
'''


def test_a_users_five_line_test_runs_their_tasks_over_pubsub_with_the_plugin_alone(
    pubsub_emulator: ServiceProcess, tmp_path: Path
) -> None:
    project = tmp_path / "their-project"
    project.mkdir()
    source = (REPO_ROOT / "harness" / "example_project" / "billing.py").read_text()
    (project / "billing.py").write_text(source)
    (project / "test_billing.py").write_text(USER_TEST)
    (project / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\npubsub_celery_app = "billing:app"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"],
        cwd=project, capture_output=True, text=True, timeout=180, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
             "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{pubsub_emulator.port}"},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "2 passed" in result.stdout


def test_without_an_app_the_kit_says_how_to_name_one(tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text("def test_x(pubsub_celery_app):\n    pass\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PUBSUB_EMULATOR_HOST": "x:1"},
    )
    assert result.returncode != 0
    assert "pubsub_celery_app = module:app" in result.stdout + result.stderr


def test_the_celery_setup_vendor_runs_the_emulator_its_container_runs(tmp_path: Path) -> None:
    """pytest-celery's broker vendor: the container's command, ready prompt and broker URL,
    run here without Docker (on loopback), carry a message over ``pubsub://``; its image is
    the one compose.yaml runs."""
    import os
    import re
    import signal
    import time

    from kombu import Connection

    import vividly_tasks.transport  # noqa: F401 - registers pubsub://
    from harness.services import free_port
    from vividly_tasks.testing.celery_setup import (
        PUBSUB_PORT,
        PUBSUB_READY_PROMPT,
        PubSubContainer,
    )

    compose = (REPO_ROOT / "compose.yaml").read_text()
    assert re.search(r"PUBSUB_EMULATOR_IMAGE:-([^}]+)}", compose)[1] == PubSubContainer.image()

    port = free_port()
    command = [part.replace(f"0.0.0.0:{PUBSUB_PORT}", f"127.0.0.1:{port}")
               for part in PubSubContainer.command()]
    assert command != PubSubContainer.command()
    env = {**os.environ, "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
           "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
    log = tmp_path / "emulator.log"
    with log.open("wb") as output:
        emulator = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while PUBSUB_READY_PROMPT not in log.read_text():
            assert emulator.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        url = f"{PubSubContainer.prefix()}celery-setup"
        os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{port}"
        with Connection(url) as connection:
            queue = connection.SimpleQueue("celery-setup")
            queue.put({"hello": "vendor"})
            message = queue.get(timeout=30)
            message.ack()
            assert message.payload == {"hello": "vendor"}
            queue.close()
    finally:
        os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        os.killpg(emulator.pid, signal.SIGKILL)
        emulator.wait(10)
