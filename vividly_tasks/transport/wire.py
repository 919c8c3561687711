"""How a Kombu message lies on a Pub/Sub message, and back (see docs/wire-format.md).

``data`` is the Kombu envelope as UTF-8 JSON: ``body`` (text as is, or base64 when it is
binary), ``content-type``, ``content-encoding``, ``headers`` and ``properties``. Attributes
carry what routing and people need without parsing ``data``: ``exchange``, ``routing_key``,
``kombu-envelope`` (the format version) and, for Celery tasks, ``task`` and ``task_id``.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vividly_tasks.transport.limits import (
    DEFAULT_LIMITS,
    MAX_ATTRIBUTE_VALUE_BYTES,
    MAX_ATTRIBUTES,
    ReceiveLimits,
)
from vividly_tasks.transport.poison import PoisonMessage

ENVELOPE_ATTRIBUTE = "kombu-envelope"
#: On a renewed copy (channel.py): the one queue it is for, how often it was released
#: unstarted, and the id of the message it renews.
QUEUE_ATTRIBUTE = "kombu-queue"
RELEASES_ATTRIBUTE = "kombu-releases"
RENEWS_ATTRIBUTE = "kombu-renews"
#: Remote-control commands published just before this message (command_fence.py).
AFTER_ATTRIBUTE = "kombu-after"
ENVELOPE_VERSION = "1"
logger = logging.getLogger(__name__)
#: Keys of ``delivery_info`` that carry Pub/Sub's metadata of a received message.
DELIVERY_ATTEMPT = "delivery_attempt"
MESSAGE_ID = "pubsub_message_id"
PUBLISH_TIME = "pubsub_publish_time"
SUBSCRIPTION = "pubsub_subscription"
PUBSUB_DELIVERY_INFO = (DELIVERY_ATTEMPT, MESSAGE_ID, PUBLISH_TIME, SUBSCRIPTION)


@dataclass(frozen=True)
class Envelope:
    """A message as it is published: the bytes and the attributes."""

    data: bytes
    attributes: dict[str, str]


def text_body(body: bytes | str, content_encoding: str | None) -> tuple[str, str | None]:
    """The body as JSON-safe text and its ``body_encoding`` (None: as is; base64: binary)."""
    if isinstance(body, str):
        return body, None
    if (content_encoding or "utf-8").lower() in ("utf-8", "utf8"):
        try:
            return body.decode("utf-8"), None
        except UnicodeDecodeError:
            pass
    return base64.b64encode(body).decode("ascii"), "base64"


def encode(message: dict[str, Any]) -> Envelope:
    """Lay an augmented Kombu message (as the virtual channel builds it) onto Pub/Sub."""
    properties = dict(message.get("properties") or {})
    properties.pop("delivery_tag", None)
    delivery_info = dict(properties.get("delivery_info") or {})
    properties["delivery_info"] = {
        "exchange": delivery_info.get("exchange", ""),
        "routing_key": delivery_info.get("routing_key", ""),
    }
    envelope = {
        "body": message.get("body", ""),
        "content-type": message.get("content-type"),
        "content-encoding": message.get("content-encoding"),
        "headers": message.get("headers") or {},
        "properties": properties,
    }
    headers = envelope["headers"]
    attributes = {
        ENVELOPE_ATTRIBUTE: ENVELOPE_VERSION,
        "exchange": str(delivery_info.get("exchange", "")),
        "routing_key": str(delivery_info.get("routing_key", "")),
    }
    for key in ("task", "id"):
        value = headers.get(key)
        if isinstance(value, str) and len(value.encode()) <= MAX_ATTRIBUTE_VALUE_BYTES:
            attributes["task" if key == "task" else "task_id"] = value
    try:
        data = _json_bytes(envelope)
    except TypeError:
        envelope["properties"] = _representable_properties(properties)
        try:
            data = _json_bytes(envelope)
        except TypeError as exc:
            raise TypeError(f"cannot publish: message headers or body are not JSON: {exc}") from exc
    return Envelope(data, attributes)


#: One encoder for every publish: ``json.dumps`` with options builds a new one per call.
_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _json_bytes(envelope: dict[str, Any]) -> bytes:
    return _JSON_ENCODER.encode(envelope).encode("utf-8")


def _representable_properties(properties: dict[str, Any]) -> dict[str, Any]:
    """The properties JSON can carry. As on AMQP, whose wire has room for its basic
    properties only, a property no broker can carry (an object passed through
    ``Producer.publish(**kwargs)``, such as Celery's ``signal``) is left out, not an error."""
    kept: dict[str, Any] = {}
    for key, value in properties.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            logger.debug("left out message property %r: %s is not JSON", key, type(value).__name__)
            continue
        kept[key] = value
    return kept


def decode(
    data: bytes,
    attributes: dict[str, str],
    *,
    accepted_content_types: frozenset[str] | None = None,
    limits: ReceiveLimits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """A received message as a Kombu payload, or ``PoisonMessage`` saying why it is not one.

    Any content type passes unless ``accepted_content_types`` lists the ones that may (the
    consumer's accept list decides what is deserialized; this is an opt-in second fence).
    Decoding stays within ``limits`` (limits.py): a compressed body arrives decompressed,
    without its ``compression`` header, so that Kombu never decompresses it unbounded.
    """
    limits.check_message(data, attributes)
    envelope = parse_envelope(data, limits)
    check_content_type(envelope["content-type"], accepted_content_types)
    decode_body(envelope, limits)
    properties = envelope["properties"]
    delivery_info = properties.get("delivery_info") or {}
    if not isinstance(delivery_info, dict):
        raise PoisonMessage("Kombu envelope has non-object delivery_info")
    delivery_info.setdefault("exchange", attributes.get("exchange", ""))
    delivery_info.setdefault("routing_key", attributes.get("routing_key", ""))
    if not all(isinstance(delivery_info[key], str) for key in ("exchange", "routing_key")):
        raise PoisonMessage("Kombu envelope's exchange and routing_key are not both text")
    properties["delivery_info"] = delivery_info
    return envelope


def parse_envelope(data: bytes, limits: ReceiveLimits) -> dict[str, Any]:
    """The envelope's JSON object, its properties and headers objects (headers ``{}`` when
    absent), or ``PoisonMessage``."""
    try:
        # UTF-8 by this format: json.loads(bytes) would guess UTF-16/32 from leading zero bytes.
        envelope = limits.load_json(data, "data")
    except UnicodeDecodeError:
        raise PoisonMessage("data is not UTF-8 text, so not a Kombu envelope") from None
    except PoisonMessage:
        raise
    except json.JSONDecodeError as exc:
        raise PoisonMessage(f"data is not JSON ({exc.msg} at byte {exc.pos})") from None
    if not isinstance(envelope, dict):
        raise PoisonMessage(f"data is JSON {type(envelope).__name__}, not a Kombu envelope object")
    missing = [key for key in ("body", "content-type", "properties") if key not in envelope]
    if missing:
        raise PoisonMessage(f"JSON is not a Kombu envelope: missing {', '.join(missing)}")
    if not isinstance(envelope["properties"], dict):
        raise PoisonMessage("Kombu envelope has non-object properties")
    headers = envelope.get("headers") or {}
    if not isinstance(headers, dict):
        raise PoisonMessage("Kombu envelope has non-object headers")
    envelope["headers"] = headers
    return envelope


def decode_body(envelope: dict[str, Any], limits: ReceiveLimits) -> None:
    """Check the body's encoding; decompress a compressed body in place (within ``limits``,
    and without the ``compression`` header after); check JSON that Kombu will parse."""
    body, properties = envelope["body"], envelope["properties"]
    body_encoding = properties.get("body_encoding")
    binary: bytes | None = None
    if body_encoding == "base64":
        try:
            binary = base64.b64decode(body, validate=True)
        except (ValueError, TypeError):  # binascii.Error, or text that is not ASCII
            raise PoisonMessage("body_encoding is base64 but the body is not") from None
    elif body_encoding is not None or not isinstance(body, str):
        raise PoisonMessage(f"unsupported body encoding {body_encoding!r}")
    headers = envelope["headers"]
    compression = headers.get("compression")
    if compression:
        if not isinstance(compression, str):
            raise PoisonMessage(f"compression header {compression!r} is not text")
        binary = limits.decompress(binary if binary is not None else body.encode(), compression)
        encoding = envelope.get("content-encoding")
        body, body_encoding = text_body(binary, encoding if isinstance(encoding, str) else None)
        envelope["body"], properties["body_encoding"] = body, body_encoding
        envelope["headers"] = {key: value for key, value in headers.items()
                               if key != "compression"}
        if body_encoding is None:
            binary = None
    if envelope["content-type"] == "application/json" and body:  # what Kombu will parse
        limits.check_json(body if binary is None else binary, "body")


def check_content_type(content_type: Any, accepted: frozenset[str] | None) -> None:
    """``PoisonMessage`` if the content type is not text, or not among ``accepted`` (if set)."""
    if content_type is not None and not isinstance(content_type, str):
        raise PoisonMessage(f"content type {content_type!r} is not text")
    if accepted is not None and content_type not in accepted:
        listed = ", ".join(sorted(accepted))
        raise PoisonMessage(f"content type {content_type!r} refused (accepted: {listed})")


def attribute_text(value: str) -> str:
    """``value`` cut to Pub/Sub's limit of an attribute value (bytes of UTF-8, not characters)."""
    return value.encode()[:MAX_ATTRIBUTE_VALUE_BYTES].decode("utf-8", errors="ignore")


def copy_attributes(original: Mapping[str, str], ours: Mapping[str, str]) -> dict[str, str]:
    """A copy's attributes (a dead letter, a renewed message): ``ours`` (cut to the value
    limit) and as many of the original's as Pub/Sub's attribute count allows, so the copy is
    never refused for them."""
    kept = [(key, value) for key, value in original.items() if key not in ours]
    attributes = dict(kept[: MAX_ATTRIBUTES - len(ours)])
    attributes.update({key: attribute_text(value) for key, value in ours.items()})
    return attributes
