"""The README is the front door: its configuration table must match the settings object."""

from __future__ import annotations

from tests.workers import REPO_ROOT
from vividly_tasks.dispatch.settings import DispatchSettings
from vividly_tasks.lessons.settings import Settings
from vividly_tasks.settings import variables


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    every = sorted({*variables(Settings), *variables(DispatchSettings)})
    missing = [name for name in every if f"| `{name}` |" not in readme]
    assert not missing, f"README configuration table lacks {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "make test" in readme
    assert "make test" in ci.splitlines()[-1]
