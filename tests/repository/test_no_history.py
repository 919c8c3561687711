"""The product describes itself as it is: no tracked file names a tracker item, a numbered
diary section or a commit hash that tells history. What changed, and when, belongs in the
git log and CHANGELOG.md; a docstring says what a test proves, not who asked for it.

A commit hash may stand where a version would, on the "code measured" line of a benchmark's
figures (and in the stored figures' ``"code"`` field), to say which code produced them.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())

#: Files this test does not read, with the reason: CHANGELOG.md is where history goes.
EXCLUDED = {
    "CHANGELOG.md": "the changelog is where history belongs",
}

#: (what it is, pattern), matched case-insensitively. The character classes keep these lines
#: from matching themselves.
TRACKER_REFERENCES = [
    ("a tracker item by number", r"\biss[u]es?\s*#?\d+"),
    ("a tracker item in brackets", r"\(iss[u]e"),
    ("the tracker item itself", r"\bthe iss[u]e's\b|\bas the iss[u]e (?:asks|says|wants)\b"),
    ("a tracker item's acceptance number", r"\bacceptan[c]e (?:items? )?\d+"),
    ("a tracker item", r"\btick[e]ts?\b"),
    ("a tracker item by hash sign", r"(?<![\w&/])(?<!\]\()#\d{2,}\b"),
    ("a numbered diary section", r"\bsess[i]ons?\s+\d+"),
    ("a diary section", r"\bsti[n]ts?\b"),
    ("a diary", r"\bwork[- ]?l[o]gs?\b"),
]
TRACKER = [(what, re.compile(pattern, re.IGNORECASE)) for what, pattern in TRACKER_REFERENCES]

#: A short or full git hash: 7-40 lowercase hex digits with at least one digit and one letter,
#: standing alone (not a piece of a UUID, a dotted version or a longer word).
HASH = re.compile(r"(?<![-\w.])(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}(?![-\w])")
#: Where a hash names the code measured, as a version would.
HASH_ALLOWED_ON = re.compile(r"code measured:|\"code\":")


def tracked_text_files() -> dict[str, str]:
    """Every file that git tracks or would track (not ignored) and that is UTF-8 text, by path
    relative to the repository root."""
    listing = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=True, timeout=30).stdout.decode()
    texts = {}
    for relative in filter(None, listing.split("\0")):
        if relative in EXCLUDED:
            continue
        path = ROOT / relative
        try:
            texts[relative] = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
            continue  # binary (an image), a submodule, or deleted in the working tree
    return texts


def history_references(relative: str, text: str) -> list[str]:
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for what, pattern in TRACKER:
            match = pattern.search(line)
            if match:
                found.append(f"{relative}:{number}: {what} ({match.group(0)!r}): {line.strip()}")
        if not HASH_ALLOWED_ON.search(line):
            match = HASH.search(line)
            if match:
                found.append(f"{relative}:{number}: a commit hash ({match.group(0)!r}): "
                             f"{line.strip()}")
    return found


def test_no_file_names_a_tracker_item_a_diary_section_or_a_commit_hash() -> None:
    files = tracked_text_files()
    assert "pyproject.toml" in files and any(name.startswith("tests/") for name in files)
    found = [hit for relative, text in sorted(files.items())
             for hit in history_references(relative, text)]
    assert not found, ("history in the product (say what it does instead; history goes to "
                       "CHANGELOG.md):\n" + "\n".join(found[:50]))


def test_the_patterns_catch_what_they_are_for() -> None:
    """Each kind of reference is caught, and the product's ordinary words are not."""
    caught = [
        "Iss" "ue 4's accep" "tance items 1, 2",
        "acceptan" "ce 3: the README's first command",
        "a tick" "et asked for it",
        "the work-l" "og's sti" "nt 3",
        "Pipelined publishing (iss" "ue 18): publish_in_flight",
        "## Sess" "ion 12: sender threads",
        "over sess" "ions 9-10 the confirmed ratio",
        "fixed in #" "31",
        "the code of 3f1f" "a56",
        "as the iss" "ue asks",
    ]
    ordinary = [
        "the issuer is Google's, and the token names the account",
        "a DB session is closed after each request",
        "see [the endpoints](security.md#6-endpoints)",
        "request id 0e7c5d52-5c1f-4e0f-9d2a-53d1c4a7c0de",
        "- code measured: vividly-tasks 0.1.0, commit 3f1fa56 (clean)",
        "10485760 bytes; color #fff",
    ]
    assert all(history_references("x", line) for line in caught), [
        line for line in caught if not history_references("x", line)]
    assert not any(history_references("x", line) for line in ordinary), [
        history_references("x", line) for line in ordinary]
