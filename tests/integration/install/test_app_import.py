"""Building the product app: what every `celery -A vividly_tasks ...` command pays."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from harness.workers import REPO_ROOT

# Run in a fresh interpreter: the test process has imported the app long ago.
PROBE = """
import gc, json
import vividly_tasks
vividly_tasks.app  # built on first use (celery -A vividly_tasks reads it)
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
