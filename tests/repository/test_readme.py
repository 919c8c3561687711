"""The README is the front door and docs/ the reference: the README stays short and starts with
its two commands, every relative link in them resolves, and the configuration page matches the
settings classes both ways."""

from __future__ import annotations

import re
from pathlib import Path

from harness.workers import REPO_ROOT
from vividly_tasks.dispatch.settings import DispatchSettings
from vividly_tasks.lessons.settings import Settings
from vividly_tasks.settings import variables

CONFIGURATION = REPO_ROOT / "docs" / "configuration.md"
#: A row of a settings table: its first cell is a variable name in backticks.
SETTING_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \|", re.MULTILINE)
#: A Markdown link or image: [text](target) or ![alt](target).
LINK = re.compile(r"!?\[[^\]]*\]\(([^()\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def documents() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings: lower case, punctuation dropped, spaces to
    hyphens, a repeated one suffixed -1, -2..."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", FENCE.sub("", markdown), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def test_every_setting_is_on_the_configuration_page_and_nothing_else() -> None:
    page = CONFIGURATION.read_text()
    every = {*variables(Settings), *variables(DispatchSettings)}
    documented = SETTING_ROW.findall(page)
    missing = sorted(every - set(documented))
    assert not missing, f"docs/configuration.md lacks a row for {missing}"
    unknown = sorted(set(documented) - every)
    assert not unknown, f"docs/configuration.md lists {unknown}, which no settings class reads"
    twice = sorted({name for name in documented if documented.count(name) > 1})
    assert not twice, f"docs/configuration.md lists {twice} more than once"


def test_every_relative_link_resolves() -> None:
    broken = []
    for document in documents():
        text = FENCE.sub("", document.read_text())
        for target in LINK.findall(text):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = (document.parent / path).resolve() if path else document
            where = f"{document.relative_to(REPO_ROOT)}: {target}"
            if not resolved.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(
                    resolved.read_text()):
                broken.append(f"{where} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_readme_is_a_front_door() -> None:
    """About 250 lines (never over 300), and its first section is the two commands."""
    readme = (REPO_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    first_section = readme.split("\n## ", 2)[1]
    assert "make demo" in first_section and "make test" in first_section


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "make test" in readme
    assert "make test" in ci.splitlines()[-1]
