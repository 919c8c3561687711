"""The start-up check for Application Default Credentials, bounded in time.

``google.auth.default()`` looks, in order, at ``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's
application default credentials file, and last at the Compute Engine metadata server: an HTTP
GET of ``http://169.254.169.254/`` (``GCE_METADATA_IP`` overrides the address). Off Google
Cloud, where that address drops packets, google-auth tries 3 times with a 3 s timeout each
and a backoff between them: a worker took 13.1 s to refuse to start.

So the check runs in a thread and is given ``CREDENTIALS_CHECK_TIMEOUT_SECONDS``. On Google
Cloud the metadata server is a local service that answers in milliseconds, so 3 s (one of
google-auth's own attempts) is ample there; anywhere else the answer is "no credentials" a
few seconds sooner. A check that ran out of time leaves its thread (a daemon) to finish on its
own: the worker that asked is about to exit.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import google.auth
import google.auth.exceptions

logger = logging.getLogger(__name__)

#: The longest the credentials check may take (above).
CREDENTIALS_CHECK_TIMEOUT_SECONDS = 3.0
#: Where google-auth probes the metadata server unless ``GCE_METADATA_IP`` says otherwise.
DEFAULT_METADATA_ADDRESS = "169.254.169.254"


def metadata_address() -> str:
    return os.environ.get("GCE_METADATA_IP") or DEFAULT_METADATA_ADDRESS


class CredentialsNotFound(Exception):
    """No Application Default Credentials (the reason says where it looked, or that the
    metadata server did not answer in time)."""


def find_default_credentials(
    timeout_seconds: float = CREDENTIALS_CHECK_TIMEOUT_SECONDS,
) -> tuple[Any, str | None]:
    """``google.auth.default()``'s credentials and project, within ``timeout_seconds``
    (network: at most the metadata server probe, see above); else ``CredentialsNotFound``."""
    outcome: list[tuple[Any, str | None] | str] = []

    def look() -> None:
        try:
            outcome.append(google.auth.default())
        except google.auth.exceptions.DefaultCredentialsError as exc:
            outcome.append(str(exc).splitlines()[0])
        except Exception as exc:  # a thread cannot raise to its caller: the reason is the answer
            outcome.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=look, name="credentials-check", daemon=True)
    thread.start()
    thread.join(timeout_seconds)
    if not outcome:
        logger.warning("the credentials check gave up after %g s", timeout_seconds)
        raise CredentialsNotFound(
            f"none found, and the metadata server at {metadata_address()} did not answer "
            f"within {timeout_seconds:g} s (off Google Cloud: set "
            "GOOGLE_APPLICATION_CREDENTIALS)"
        )
    found = outcome[0]
    if isinstance(found, str):
        raise CredentialsNotFound(found)
    return found


def default_credentials_problem(
    timeout_seconds: float = CREDENTIALS_CHECK_TIMEOUT_SECONDS,
) -> str | None:
    """Why Application Default Credentials cannot be had, or None if they can (bounded as
    ``find_default_credentials``)."""
    try:
        find_default_credentials(timeout_seconds)
    except CredentialsNotFound as exc:
        return str(exc)
    return None
