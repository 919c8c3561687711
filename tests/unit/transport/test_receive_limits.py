"""The receive limits (vividly_tasks/transport/limits.py): what one message may cost to read.

Each hostile shape is refused with a reason before Kombu or Celery decode it, and friendly
messages of the same shapes still arrive, decoded exactly as Kombu would have decoded them.
The same shapes through the emulator into a real worker: test_hostile_messages.py.
"""

from __future__ import annotations

import base64
import bz2
import json
import lzma
import zlib
from typing import Any

import pytest
from kombu import Connection
from kombu.compression import compress
from kombu.transport.virtual import Message as VirtualMessage

from vividly_tasks.transport import wire
from vividly_tasks.transport.limits import (
    MAX_MESSAGE_BYTES,
    ReceiveLimits,
    accepted_compressions,
    nested_deeper,
)
from vividly_tasks.transport.poison import PoisonMessage

ALL_COMPRESSIONS = ReceiveLimits(accept_compression=accepted_compressions(["gzip", "bzip2", "xz"]))
MiB = 1024 * 1024


def envelope(body: str | bytes, *, compression: str | None = None,
             content_type: str = "application/json", headers: dict[str, Any] | None = None
             ) -> bytes:
    """A Kombu envelope as a producer lays it on Pub/Sub; a bytes body travels as base64."""
    binary = isinstance(body, bytes)
    return json.dumps({
        "body": base64.b64encode(body).decode() if binary else body,
        "content-type": content_type, "content-encoding": "utf-8",
        "headers": {**(headers or {}), **({"compression": compression} if compression else {})},
        "properties": {"body_encoding": "base64" if binary else None,
                       "delivery_info": {"exchange": "", "routing_key": "q"}},
    }).encode()


def as_kombu_message(payload: dict[str, Any]) -> VirtualMessage:
    payload["properties"]["delivery_tag"] = "1"
    with Connection("memory://") as connection:
        return VirtualMessage(payload, channel=connection.default_channel)


# --- compression ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gzip", "zlib", "bzip2", "application/x-bz2", "xz", "lzma"])
def test_an_accepted_compression_arrives_decompressed_as_kombu_would_decode_it(name: str) -> None:
    original = json.dumps([[1, 2], {"text": "fractions " * 1000}, {}])
    compressed, content_type = compress(original, name)  # Kombu's own encoder
    payload = wire.decode(envelope(compressed, compression=content_type), {},
                          limits=ALL_COMPRESSIONS)
    assert "compression" not in payload["headers"]  # nothing left for Kombu to decompress
    message = as_kombu_message(payload)
    assert message.decode() == json.loads(original)


@pytest.mark.parametrize("compression", ["application/x-gzip", "gzip", "application/x-bz2"])
def test_compression_is_refused_unread_unless_the_consumer_opted_in(compression: str) -> None:
    data = envelope(zlib.compress(b"[]"), compression=compression)
    with pytest.raises(PoisonMessage, match=r"does not accept.*accept_compression: none"):
        wire.decode(data, {})


@pytest.mark.parametrize(("name", "bomb"), [
    ("gzip", lambda raw: zlib.compress(raw, 9)),
    ("bzip2", lambda raw: bz2.compress(raw, 9)),
    ("xz", lzma.compress),
])
def test_a_compression_bomb_stops_at_the_decoded_size_limit(name: str, bomb: Any) -> None:
    compressed = bomb(b"\0" * (64 * MiB))
    assert 64 * MiB / len(compressed) >= 1000  # a bomb, not just a large message
    with pytest.raises(PoisonMessage, match=f"decodes to more than {4 * MiB} bytes"):
        wire.decode(envelope(compressed, compression=name), {},
                    limits=ReceiveLimits(accept_compression=ALL_COMPRESSIONS.accept_compression,
                                         max_decoded_bytes=4 * MiB))


def test_concatenated_bzip2_streams_count_together() -> None:
    # bz2.decompress (Kombu's decoder) reads every stream: so does the bounded one.
    stream = bz2.compress(b"\0" * MiB)
    assert bz2.decompress(stream * 3) == b"\0" * (3 * MiB)
    limits = ReceiveLimits(accept_compression=ALL_COMPRESSIONS.accept_compression,
                           max_decoded_bytes=2 * MiB)
    with pytest.raises(PoisonMessage, match="decodes to more than"):
        wire.decode(envelope(stream * 3, compression="bzip2"), {}, limits=limits)


def test_an_xz_stream_that_asks_for_a_huge_dictionary_is_refused() -> None:
    filters = [{"id": lzma.FILTER_LZMA2, "dict_size": 1536 * MiB}]
    greedy = lzma.compress(b"[]", format=lzma.FORMAT_XZ, filters=filters)
    with pytest.raises(PoisonMessage, match="not valid xz data"):
        wire.decode(envelope(greedy, compression="xz"), {}, limits=ALL_COMPRESSIONS)


@pytest.mark.parametrize(("data", "reason"), [
    (b"not compressed at all", "not valid gzip data"),
    (zlib.compress(b"[1, 2, 3]" * 100)[:-8], "truncated gzip data"),
])
def test_a_broken_stream_is_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(PoisonMessage, match=reason):
        wire.decode(envelope(data, compression="gzip"), {}, limits=ALL_COMPRESSIONS)


def test_a_compression_without_a_bounded_decoder_cannot_be_accepted() -> None:
    with pytest.raises(ValueError, match="no bounded decoder for brotli"):
        accepted_compressions(["brotli"])


def test_a_compression_header_that_is_not_text_is_a_reason() -> None:
    data = json.dumps({"body": "[]", "content-type": "application/json",
                       "headers": {"compression": ["gzip"]}, "properties": {}}).encode()
    with pytest.raises(PoisonMessage, match=r"compression header .* is not text"):
        wire.decode(data, {}, limits=ALL_COMPRESSIONS)


# --- JSON -------------------------------------------------------------------------------------
def test_a_nesting_bomb_in_the_data_is_a_reason_not_a_recursion_error() -> None:
    with pytest.raises(PoisonMessage, match="data is JSON nested deeper than 128 levels"):
        wire.decode(b"[" * 100_000 + b"]" * 100_000, {})


def test_a_nesting_bomb_in_a_json_body_is_refused_before_kombu_parses_it() -> None:
    with pytest.raises(PoisonMessage, match="body is JSON nested deeper than 128 levels"):
        wire.decode(envelope("[" * 100_000 + "]" * 100_000), {})


@pytest.mark.parametrize("depth", [128, 129])
def test_the_nesting_limit_is_exact(depth: int) -> None:
    body = "[" * depth + "]" * depth
    if depth <= 128:
        assert wire.decode(envelope(body), {})["body"] == body
    else:
        with pytest.raises(PoisonMessage, match="nested deeper than 128"):
            wire.decode(envelope(body), {})


def test_a_body_of_other_content_is_not_parsed_as_json() -> None:
    body = "[" * 1000  # not JSON's to judge: the consumer's decoder decides
    assert wire.decode(envelope(body, content_type="text/plain"), {})["body"] == body


def test_json_with_too_many_items_is_refused_before_it_is_parsed() -> None:
    body = "[" + "{}," * 300_000 + "{}]"  # ~22 MB of dicts once parsed
    with pytest.raises(PoisonMessage, match=r"data has 6000.. JSON structural characters, over"):
        wire.decode(envelope(body), {})
    # As base64 the structure is hidden from the envelope: the body is counted on its own.
    with pytest.raises(PoisonMessage, match="body has 600002 JSON structural characters, over"):
        wire.decode(envelope(body.encode()), {})


def test_a_body_within_the_item_limit_arrives() -> None:
    body = json.dumps([[list(range(1000))], {}, {}])
    assert wire.decode(envelope(body), {})["body"] == body


def test_nested_deeper_walks_without_recursion() -> None:
    value: list[Any] = []
    for _ in range(50_000):
        value = [value]
    assert nested_deeper(value, 128)
    assert not nested_deeper([[{"a": [1]}]], 4)
    assert nested_deeper([[{"a": [1]}]], 3)
    assert not nested_deeper("text", 0)


# --- size and attributes ----------------------------------------------------------------------
def test_more_attributes_than_pubsub_allows_are_a_reason() -> None:
    attributes = {f"a{i}": "x" for i in range(10_000)}
    with pytest.raises(PoisonMessage, match="10000 attributes, over Pub/Sub's limit of 100"):
        wire.decode(envelope("[]"), attributes)


@pytest.mark.parametrize(("attributes", "reason"), [
    ({"k" * 257: "v"}, "attribute key is over"),
    ({"task": "v" * 1025}, "attribute 'task' is over"),
])
def test_attributes_beyond_pubsub_sizes_are_a_reason(attributes: dict[str, str],
                                                      reason: str) -> None:
    with pytest.raises(PoisonMessage, match=reason):
        wire.decode(envelope("[]"), attributes)


def test_data_over_pubsub_size_is_a_reason() -> None:
    with pytest.raises(PoisonMessage, match=f"over Pub/Sub's limit of {MAX_MESSAGE_BYTES}"):
        wire.decode(b" " * (MAX_MESSAGE_BYTES + 1), {})
