"""The Node.js producer of the interop tests (harness/interop_node, installed by `make install`)."""

from __future__ import annotations

import shutil
from pathlib import Path

from harness.services import ServiceUnavailable
from harness.workers import REPO_ROOT

NODE_PRODUCER = REPO_ROOT / "harness" / "interop_node" / "publish.js"


def find_node_producer() -> Path:
    if shutil.which("node") is None:
        raise ServiceUnavailable("node is not installed (Debian package nodejs)")
    if not (NODE_PRODUCER.parent / "node_modules" / "@google-cloud" / "pubsub").is_dir():
        raise ServiceUnavailable(
            "@google-cloud/pubsub is not installed in harness/interop_node "
            "(make install runs npm ci)"
        )
    return NODE_PRODUCER
