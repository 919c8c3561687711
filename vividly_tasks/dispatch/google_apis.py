"""Building the Google API clients and calling them with bounded retries.

An endpoint setting of the form ``http://host:port`` selects a plain gRPC channel without
credentials (a local test server), ``host[:port]`` a regional or private endpoint over TLS,
and none Google's default, as ``CONTENT_GOOGLE_TTS_ENDPOINT`` does for narration. The calls
pass ``retry=None``: the GAPIC defaults retry some methods for up to a minute by themselves,
and ``call_with_retries`` is the one bounded policy (``DISPATCH_API_ATTEMPTS``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from vividly_tasks.dispatch.errors import DispatchError, dispatch_error, is_transient

logger = logging.getLogger(__name__)

INSECURE_SCHEME = "http://"
#: Time limit of one call; a hung call is an outage, retried like one.
CALL_TIMEOUT_SECONDS = 20.0
#: First wait between attempts, doubled after each.
RETRY_BACKOFF_SECONDS = 0.5

T = TypeVar("T")


def build_client(client_class: Any, transport_class: Any, endpoint: str | None) -> Any:
    """A GAPIC client on ``endpoint`` (see the module docstring)."""
    try:
        if endpoint and endpoint.startswith(INSECURE_SCHEME):
            channel = grpc.insecure_channel(endpoint.removeprefix(INSECURE_SCHEME))
            return client_class(transport=transport_class(channel=channel))
        if endpoint:
            return client_class(
                client_options={"api_endpoint": endpoint.removeprefix("https://")}
            )
        return client_class()
    except Exception as exc:  # credentials missing: the same conversion as a refused call
        raise dispatch_error(exc, api="Google Cloud", resource="(client)", role="") from exc


def call_with_retries(
    call: Callable[[], T], *, attempts: int, api: str, resource: str, role: str,
    retry: Callable[[BaseException], bool] = is_transient,
) -> T:
    """``call()``; a transient failure is tried again (``attempts`` in all, backing off),
    every failure ends as a ``DispatchError`` naming ``api``, ``resource`` and ``role``."""
    delay = RETRY_BACKOFF_SECONDS
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except DispatchError:
            raise
        except Exception as exc:
            if attempt < attempts and retry(exc):
                logger.warning("%s: attempt %d of %d failed (%s); retrying in %.1f s",
                               api, attempt, attempts, exc, delay)
                time.sleep(delay)
                delay *= 2
                continue
            error = dispatch_error(exc, api=api, resource=resource, role=role)
            if attempt > 1:
                error = type(error)(f"{error} (after {attempt} attempts)")
            raise error from exc
    raise AssertionError("unreachable")  # attempts >= 1
