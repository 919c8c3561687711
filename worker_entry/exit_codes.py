"""Named exit codes: 0 for every normal stop, non-zero only when the worker could not work.

Cloud Run retries a task that exits non-zero, so a non-zero code must mean "this execution
could not do its job" (a retry may help), never "the queue happened to be empty".
The values follow ``sysexits.h`` where one fits, as Celery's own ``EX_*`` codes do.
"""

from __future__ import annotations

#: Idle, max tasks, max runtime, SIGTERM/SIGINT: the worker did what it was asked.
RET_OK = 0
#: The worker stopped on an error it could not recover from (Celery's own EX_FAILURE).
RET_ERROR = 1
#: The command line was wrong (click's own usage-error code).
RET_USAGE = 2
#: The broker could not be reached within the bounded connection retry, or the content
#: database or storage could not be used at start (EX_UNAVAILABLE).
RET_CONNECT = 69
#: The configuration is invalid, e.g. an environment variable that does not parse (EX_CONFIG).
RET_CONFIG = 78
