"""The transport's errors, converted once from Google's at the edge.

Two families, because Kombu and Celery act on the difference: a ``PubSubConnectionError`` is in
``Transport.connection_errors`` (Celery reconnects and retries), a ``PubSubChannelError`` is in
``channel_errors`` (the operation failed for a reason that retrying will not fix).
"""

from __future__ import annotations

from google.api_core import exceptions as google_errors
from kombu.exceptions import OperationalError

PUBSUB_MAX_MESSAGE_BYTES = 10_000_000


class PubSubConnectionError(ConnectionError):
    """Pub/Sub could not be reached or did not answer in time; worth reconnecting."""


class PubSubChannelError(OperationalError):
    """A Pub/Sub operation failed for a reason that reconnecting does not fix."""


class ResourceNotFound(PubSubChannelError):
    """A topic or subscription that must exist does not."""


class PermissionDenied(PubSubChannelError):
    """The caller's identity lacks an IAM permission on a topic or subscription."""


class MessageTooLarge(PubSubChannelError):
    """A message is over Pub/Sub's size limit; it was not published."""


TRANSIENT_ERRORS = (
    google_errors.ServiceUnavailable,
    google_errors.DeadlineExceeded,
    google_errors.RetryError,
    google_errors.InternalServerError,
    google_errors.Aborted,
    google_errors.TooManyRequests,
    google_errors.ResourceExhausted,
    google_errors.Unknown,
)

# The IAM permission each kind of call needs, named in PermissionDenied errors.
PERMISSION_FOR_ACTION = {
    "publish to": "pubsub.topics.publish",
    "create topic": "pubsub.topics.create",
    "get topic": "pubsub.topics.get",
    "create subscription": "pubsub.subscriptions.create",
    "get subscription": "pubsub.subscriptions.get",
    "delete subscription": "pubsub.subscriptions.delete",
    "pull from": "pubsub.subscriptions.consume",
    "acknowledge on": "pubsub.subscriptions.consume",
    "seek": "pubsub.subscriptions.consume",
}


def translate(exc: Exception, action: str, resource: str) -> Exception:
    """Google's exception for ``action`` on ``resource`` as one of ours (or ``exc`` itself)."""
    if isinstance(exc, TRANSIENT_ERRORS):
        return PubSubConnectionError(f"Pub/Sub unavailable ({action} {resource}): {exc}")
    if isinstance(exc, google_errors.NotFound):
        return ResourceNotFound(
            f"{resource} does not exist ({action}); create it with `vividly provision` "
            "or set PUBSUB_AUTO_CREATE=true"
        )
    if isinstance(exc, google_errors.PermissionDenied | google_errors.Forbidden):
        permission = PERMISSION_FOR_ACTION.get(action, "a Pub/Sub permission")
        return PermissionDenied(f"permission {permission} denied on {resource} ({action}): {exc}")
    if isinstance(exc, google_errors.GoogleAPICallError):
        return PubSubChannelError(f"Pub/Sub refused to {action} {resource}: {exc}")
    return exc
