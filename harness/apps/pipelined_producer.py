"""Short-lived producers with pipelined publishing
(tests/integration/transport/test_publish_pipeline.py):

    python -m harness.apps.pipelined_producer PROJECT PREFIX TAG COUNT IN_FLIGHT CONFIRMED_FILE \
        [FORKS]

sends COUNT tasks (ids ``TAG-0`` ...) through Celery, appends each task Pub/Sub confirmed to
CONFIRMED_FILE (one label a line, written as the confirmations arrive), and returns at once:
no flush of its own, so interpreter exit must confirm what is still in flight. With FORKS, as
many producers (tags ``TAG0``, ``TAG1``, ...) are forked from this one after its imports (no
gRPC channel exists before the fork), each ending with a normal interpreter exit; the parent
exits non-zero if any of them did.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from celery import Celery

import vividly_tasks.transport  # noqa: F401 - registers pubsub://

TASK = "pipelined.noop"


def main(project: str, prefix: str, tag: str, count: int, in_flight: int, path: str) -> None:
    lock = threading.Lock()
    confirmed = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open until exit

    def record(labels: list[str]) -> None:
        with lock:
            confirmed.write("".join(f"{label}\n" for label in labels))
            confirmed.flush()

    app = Celery("producer", broker=f"pubsub://{project}", set_as_current=False)
    app.conf.broker_transport_options = {
        "prefix": prefix, "publish_in_flight": in_flight, "on_publish_confirmed": record,
    }
    for number in range(count):
        app.send_task(TASK, args=[number], task_id=f"{tag}-{number}")


def fork_producers(forks: int, *args: Any) -> int:
    children = []
    for number in range(forks):
        pid = os.fork()
        if pid == 0:  # the child: publish, then leave through a normal interpreter exit
            project, prefix, tag, *rest = args
            main(project, prefix, f"{tag}{number}", *rest)
            sys.exit(0)
        children.append(pid)
    failed = [pid for pid in children if os.waitpid(pid, 0)[1] != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    project, prefix, tag, count, in_flight, path = sys.argv[1:7]
    arguments = (project, prefix, tag, int(count), int(in_flight), path)
    if len(sys.argv) > 7:
        sys.exit(fork_producers(int(sys.argv[7]), *arguments))
    main(*arguments)
