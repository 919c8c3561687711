"""The dispatcher's errors: Google API errors converted once, here, naming what failed.

A refusal (permission, not found, credentials) is the deployment's fault and a retry repeats
it: ``DispatchConfigError`` names the API, the resource and the role that is missing, and the
command exits ``RET_CONFIG``. An outage (unavailable, deadline, internal) is retried by the
caller and then surfaces as ``DispatchUnavailable`` with the reason (``RET_UNAVAILABLE``).
"""

from __future__ import annotations

from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions


class DispatchError(Exception):
    """Base of the dispatcher's errors."""


class DispatchConfigError(DispatchError):
    """The deployment is wrong: a role, a name, credentials. Retrying will not help."""


class DispatchUnavailable(DispatchError):
    """An API could not be reached or failed after the configured attempts."""


#: Failures that a later call may not repeat.
TRANSIENT = (
    api_exceptions.ServiceUnavailable,
    api_exceptions.DeadlineExceeded,
    api_exceptions.InternalServerError,
    api_exceptions.ResourceExhausted,
    api_exceptions.Aborted,
    api_exceptions.Unknown,
)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT)


def dispatch_error(exc: Exception, *, api: str, resource: str, role: str) -> DispatchError:
    """The dispatcher's error for a failed call of ``api`` on ``resource``; ``role`` is the
    predefined role that allows the call."""
    if isinstance(exc, api_exceptions.PermissionDenied):
        return DispatchConfigError(
            f"{api}: permission denied on {resource}: {exc.message}; grant {role} to the "
            "dispatcher's service account"
        )
    if isinstance(exc, api_exceptions.NotFound):
        return DispatchConfigError(
            f"{api}: {resource} not found: {exc.message} (check GOOGLE_CLOUD_PROJECT, "
            "DISPATCH_JOB, DISPATCH_REGION and DISPATCH_SUBSCRIPTION)"
        )
    if isinstance(exc, api_exceptions.Unauthenticated | auth_exceptions.GoogleAuthError):
        return DispatchConfigError(
            f"{api}: the dispatcher's credentials were refused or are missing ({exc}); on "
            "Google Cloud, the service account's; elsewhere GOOGLE_APPLICATION_CREDENTIALS"
        )
    if isinstance(exc, api_exceptions.GoogleAPICallError) and not is_transient(exc):
        return DispatchConfigError(f"{api}: {resource}: {_status(exc)}: {exc.message}")
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        return DispatchUnavailable(f"{api}: {_status(exc)}: {exc.message}")
    return DispatchUnavailable(f"{api}: {type(exc).__name__}: {exc}")


def _status(exc: api_exceptions.GoogleAPICallError) -> str:
    code = exc.grpc_status_code
    return code.name if code is not None else str(exc.code)
