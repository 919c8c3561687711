"""The tasks: thin verbs with explicit names; the work itself lives in the domain modules."""

from __future__ import annotations

import socket
import time
from typing import Any

from celery import shared_task


@shared_task(name="vividly.health_check")
def health_check() -> dict[str, Any]:
    """Round trip through broker, worker and result backend; for smoke tests of a deployment."""
    return {"hostname": socket.gethostname(), "time": time.time()}
