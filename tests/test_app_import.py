"""Importing the app: what every `celery -A vividly_tasks ...` command and every worker pays."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.workers import REPO_ROOT

# Run in a fresh interpreter: the test process has imported the app long ago.
PROBE = """
import gc, json
import vividly_tasks
frozen = gc.get_freeze_count()
gc.unfreeze()
print(json.dumps({"frozen": frozen, "unreachable": gc.collect()}))
"""


def test_import_freezes_its_objects_and_leaves_almost_no_garbage_behind() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=60, check=True,
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    # Everything import built is out of the collector's reach (tens of thousands of objects)...
    assert figures["frozen"] > 10_000, figures
    # ...and what was frozen is worth keeping: import leaves only a few dozen cycles unclaimed.
    assert figures["unreachable"] < 500, figures
