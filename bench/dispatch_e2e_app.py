"""The product app with one more task, for bench/dispatch_e2e.py's job workers
(``WORKER_APP=bench.dispatch_e2e_app:app``): ``bench.dispatch_stamp`` appends when it started,
in which execution, to a ledger file (``DISPATCH_E2E_LEDGER``), so the bench counts every
run across processes."""

from __future__ import annotations

import json
import os
import time

from vividly_tasks.lessons.product import create_app
from vividly_tasks.lessons.settings import Settings

LEDGER_ENV = "DISPATCH_E2E_LEDGER"

app = create_app(Settings())


@app.task(name="bench.dispatch_stamp")
def stamp(token: str, work_seconds: float = 0.0) -> None:
    """Record the start (one line, appended: lines of concurrent processes do not mix)."""
    started = time.time()
    line = json.dumps({"token": token, "started_at": started, "pid": os.getpid(),
                       "execution": os.environ.get("CLOUD_RUN_EXECUTION")}) + "\n"
    with open(os.environ[LEDGER_ENV], "a") as ledger:
        ledger.write(line)
    time.sleep(work_seconds)
