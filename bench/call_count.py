"""Pub/Sub calls of one path, counted from the lines bench/call_log/sitecustomize.py writes.

``total`` is every call that started inside the window; ``sequential`` is the longest chain of
those calls in which each starts after the previous one ended: the round trips the path waits
for one after another, whatever ran beside them (calls that overlap cost one round trip
together). A call still running at the window's end counts as ending there.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

#: The directory to put first on a measured process's PYTHONPATH.
SITE_DIR = Path(__file__).resolve().parent / "call_log"
VARIABLE = "VIVIDLY_CALL_LOG"


@dataclass(frozen=True)
class Call:
    pid: int
    method: str  # e.g. /google.pubsub.v1.Publisher/GetTopic
    start: float
    end: float

    @property
    def short(self) -> str:
        return self.method.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Count:
    total: int
    sequential: int
    methods: dict[str, int]

    def describe(self) -> str:
        parts = ", ".join(f"{name} {n}" for name, n in sorted(self.methods.items()))
        return f"{self.total} calls, {self.sequential} sequential ({parts})"


def recording_env(env: dict[str, str], log: Path) -> dict[str, str]:
    """``env`` with the recorder on, its lines going to ``log`` (emptied first)."""
    log.write_text("")
    return with_recorder_path({**env, VARIABLE: str(log)})


def with_recorder_path(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the recorder's directory first on PYTHONPATH, if it records."""
    if VARIABLE not in env:
        return env
    path = env.get("PYTHONPATH", "")
    if path.split(os.pathsep)[0] == str(SITE_DIR):
        return env
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in (str(SITE_DIR), path) if p)}



def read(log: Path) -> list[Call]:
    calls = []
    for line in log.read_text().splitlines():
        pid, method, start, end = line.split()
        calls.append(Call(int(pid), method, float(start), float(end)))
    return sorted(calls, key=lambda c: c.start)


def count(calls: list[Call], since: float = 0.0, until: float | None = None) -> Count:
    """The calls started in [since, until), and their longest sequential chain."""
    inside = [c for c in calls if c.start >= since and (until is None or c.start < until)]
    return Count(len(inside), longest_chain(inside, until),
                 dict(Counter(c.short for c in inside)))


def longest_chain(calls: list[Call], until: float | None = None) -> int:
    """Most calls that ran one after another with no two overlapping (earliest end first)."""
    ends = sorted((c.start, c.end if until is None else min(c.end, until)) for c in calls)
    chain, free_at = 0, float("-inf")
    for start, end in sorted(ends, key=lambda pair: pair[1]):
        if start >= free_at:
            chain, free_at = chain + 1, end
    return chain
