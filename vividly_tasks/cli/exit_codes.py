"""Named exit codes of ``vividly``: distinct per kind of bad input, so scripts can branch.

The values follow ``sysexits.h``, as the worker's do (``worker_entry/exit_codes.py``).
"""

from __future__ import annotations

#: Done as asked.
RET_OK = 0
#: A followed request ended ``failed``, a demo request did not complete, or an unexpected error.
RET_FAILED = 1
#: The command line was wrong: an unknown option, a malformed argument (click's own code).
RET_USAGE = 2
#: The request is invalid (empty or oversize topic, bad grade ...): nothing was written.
RET_INVALID = 65
#: No such request id, or no dead-lettered message with that id.
RET_NOT_FOUND = 66
#: The broker or the database could not be reached.
RET_UNAVAILABLE = 69
#: Pub/Sub refused a permission, or resources are missing (or differ from the settings)
#: where provisioning may only verify (``PUBSUB_AUTO_CREATE=false``).
RET_NO_PERMISSION = 77
#: Invalid settings, or a Pub/Sub command on another broker.
RET_CONFIG = 78
