"""Bounds on what one received message may cost to read: memory and time, whatever its bytes.

Anyone who may publish to a topic chooses a message's bytes, so the receive path decodes only
within limits and refuses the rest with a reason (``wire.PoisonMessage``), before Kombu or
Celery touch the message. The target: no single message grows a worker's RSS by more than
64 MB or holds its receiving thread for more than a second.

* **Size.** Pub/Sub refuses messages over 10 MB, attributes beyond 100 per message, keys over
  256 bytes and values over 1,024 bytes; the emulator checks none of it, and neither may a
  future broker path, so the same limits are checked on receipt.
* **Compression.** Kombu decompresses a body named by its ``compression`` header in
  ``Message.__init__``, whole and unbounded: 2.6 KB of bzip2 became 4.3 GB. Here a compressed
  body is decoded only when the consumer listed its method (``accept_compression``), by a
  streaming decoder that stops at ``max_decoded_bytes`` (the 10 MB an uncompressed message
  could have), and the message goes on decompressed, so nothing decompresses it again.
  xz/lzma streams also declare their dictionary size: the decoder's memory is capped too.
* **JSON.** ``json.loads`` builds up to ~100 bytes of objects per structural character
  (``{ [ , :``), so 10 MB of ``[{},{},...]`` is 240 MB: a JSON text with more than
  ``max_json_items`` of them is refused before it is parsed (500,000: at most ~50 MB of
  objects; a string full of commas counts too, so the bound errs on the side of refusing).
  Nesting beyond ``max_json_depth`` (128, serde_json's default) is refused, and one that
  overflows the parser's recursion is a reason, never a ``RecursionError`` in the worker.
"""

from __future__ import annotations

import bz2
import json
import lzma
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from vividly_tasks.transport.poison import PoisonMessage

#: Pub/Sub's own limits of a message (https://cloud.google.com/pubsub/quotas#resource_limits).
MAX_MESSAGE_BYTES = 10 * 1024 * 1024
MAX_ATTRIBUTES = 100
MAX_ATTRIBUTE_KEY_BYTES = 256
MAX_ATTRIBUTE_VALUE_BYTES = 1024
#: Memory an xz/lzma decoder may take for the dictionary its stream declares (the default
#: preset needs 9 MB; a stream can ask for 1.5 GB).
LZMA_MEMORY_LIMIT_BYTES = 32 * 1024 * 1024
#: JSON's structural characters: each may make one object (a container, a member, an item).
STRUCTURAL = ("{", "[", ",", ":")


class Decompressor(Protocol):
    """zlib's, bz2's and lzma's streaming decompressors, as far as they are used here."""

    @property
    def eof(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int = ...) -> bytes: ...


def _zlib_decompressor() -> Decompressor:
    return _ZlibDecompressor()


class _ZlibDecompressor:
    """zlib's decompressobj with the ``max_length`` keyword its siblings take."""

    def __init__(self) -> None:
        self._inner = zlib.decompressobj()

    @property
    def eof(self) -> bool:
        return self._inner.eof

    @property
    def unused_data(self) -> bytes:
        return b""  # Kombu's zlib.decompress ignores bytes after the stream, so do we

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        return self._inner.decompress(data, max_length)


def _lzma_decompressor() -> Decompressor:
    return lzma.LZMADecompressor(memlimit=LZMA_MEMORY_LIMIT_BYTES)


#: Kombu's compression content types (and aliases, as ``kombu.compression`` registers them)
#: that have a streaming decoder here, which stops at a given output size.
DECOMPRESSORS: dict[str, Callable[[], Decompressor]] = {
    "application/x-gzip": _zlib_decompressor,
    "application/x-bz2": bz2.BZ2Decompressor,
    "application/x-lzma": _lzma_decompressor,
}
COMPRESSION_ALIASES = {
    "gzip": "application/x-gzip", "zlib": "application/x-gzip",
    "bzip2": "application/x-bz2", "bzip": "application/x-bz2",
    "lzma": "application/x-lzma", "xz": "application/x-lzma",
}


def compression_type(name: str) -> str:
    """A compression method's content type, from any of Kombu's names for it."""
    return COMPRESSION_ALIASES.get(name, name)


def accepted_compressions(names: Iterable[str]) -> frozenset[str]:
    """The ``accept_compression`` option as content types; ``ValueError`` for a method that
    has no bounded decoder here (it would have to be decompressed whole)."""
    types = frozenset(compression_type(name) for name in names)
    unknown = sorted(types - DECOMPRESSORS.keys())
    if unknown:
        raise ValueError(
            f"accept_compression: no bounded decoder for {', '.join(unknown)} (supported: "
            f"{', '.join(sorted(COMPRESSION_ALIASES))})"
        )
    return types


@dataclass(frozen=True)
class ReceiveLimits:
    """What one received message may cost to decode (transport options of the same names)."""

    #: Compression content types the consumer accepts; others are refused, never decoded.
    accept_compression: frozenset[str] = frozenset()
    #: Largest body a compressed one may decode to.
    max_decoded_bytes: int = MAX_MESSAGE_BYTES
    #: Most structural characters (``{ [ , :``) in one JSON text.
    max_json_items: int = 500_000
    #: Deepest nesting of one JSON text.
    max_json_depth: int = 128

    def check_message(self, data: bytes, attributes: dict[str, str]) -> None:
        """``PoisonMessage`` if the message is beyond Pub/Sub's own limits."""
        if len(data) > MAX_MESSAGE_BYTES:
            raise PoisonMessage(
                f"data is {len(data)} bytes, over Pub/Sub's limit of {MAX_MESSAGE_BYTES}"
            )
        if len(attributes) > MAX_ATTRIBUTES:
            raise PoisonMessage(
                f"message has {len(attributes)} attributes, over Pub/Sub's limit of "
                f"{MAX_ATTRIBUTES}"
            )
        for key, value in attributes.items():
            # A character is at most 4 bytes of UTF-8: short text needs no encoding to tell.
            if 4 * (len(key) + len(value)) <= MAX_ATTRIBUTE_KEY_BYTES:
                continue
            if len(key.encode()) > MAX_ATTRIBUTE_KEY_BYTES:
                raise PoisonMessage(
                    f"an attribute key is over Pub/Sub's limit of {MAX_ATTRIBUTE_KEY_BYTES} bytes"
                )
            if len(value.encode()) > MAX_ATTRIBUTE_VALUE_BYTES:
                raise PoisonMessage(
                    f"attribute {key!r} is over Pub/Sub's limit of {MAX_ATTRIBUTE_VALUE_BYTES} "
                    "bytes"
                )

    def load_json(self, data: bytes, what: str) -> Any:
        """``json.loads`` of UTF-8 ``data`` within the limits, counted before a decoded copy
        is made; ``PoisonMessage`` naming ``what`` if it is beyond them. ``UnicodeDecodeError``
        and ``ValueError`` (a ``JSONDecodeError``) for data that is not JSON are the caller's
        to word."""
        self.check_json_items(data, what)
        text = data.decode("utf-8")
        try:
            value = json.loads(text)
        except RecursionError:
            raise self.too_deep(what) from None
        self.check_json_depth(value, text, what)
        return value

    def check_json(self, text: str | bytes, what: str) -> None:
        """``PoisonMessage`` if JSON text that Kombu will parse later is beyond the limits;
        parsed here only when it could be nested too deeply. Text that is not JSON passes:
        the consumer's own decoding reports it."""
        self.check_json_items(text, what)
        if opening_brackets(text) <= self.max_json_depth:
            return
        try:
            value = json.loads(text)
        except RecursionError:
            raise self.too_deep(what) from None
        except ValueError:
            return
        self.check_json_depth(value, text, what)

    def check_json_items(self, text: str | bytes, what: str) -> None:
        if len(text) <= self.max_json_items:  # cannot hold more than one per character
            return
        items = sum(count(text, char) for char in STRUCTURAL)
        if items > self.max_json_items:
            raise PoisonMessage(
                f"{what} has {items} JSON structural characters, over the limit of "
                f"{self.max_json_items} (transport option max_json_items)"
            )

    def check_json_depth(self, value: Any, text: str | bytes, what: str) -> None:
        # A text nests no deeper than it has opening brackets: most need no walk.
        if opening_brackets(text) <= self.max_json_depth:
            return
        if nested_deeper(value, self.max_json_depth):
            raise self.too_deep(what)

    def too_deep(self, what: str) -> PoisonMessage:
        # The parser's own recursion limit (~1,000) is above ours: the same reason for both.
        return PoisonMessage(
            f"{what} is JSON nested deeper than {self.max_json_depth} levels "
            "(transport option max_json_depth)"
        )

    def decompress(self, body: bytes, compression: str) -> bytes:
        """The body decoded by its ``compression`` header's method, at most
        ``max_decoded_bytes``; ``PoisonMessage`` if that method is not accepted, the body is
        not such a stream, or it decodes to more."""
        method = compression_type(compression)
        if method not in self.accept_compression:
            accepted = ", ".join(sorted(self.accept_compression)) or "none"
            raise PoisonMessage(
                f"body compressed with {compression!r}, which this consumer does not accept "
                f"(transport option accept_compression: {accepted})"
            )
        return bounded_decompress(DECOMPRESSORS[method], body, self.max_decoded_bytes,
                                  method=compression)


def bounded_decompress(
    make: Callable[[], Decompressor], data: bytes, limit: int, *, method: str
) -> bytes:
    """Every stream of ``data`` (bz2 and xz allow several in a row) decoded, stopping as soon
    as the output would pass ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        decompressor = make()
        try:
            chunk = decompressor.decompress(data, max_length=limit + 1 - size)
        except (OSError, ValueError, EOFError, zlib.error, lzma.LZMAError, MemoryError) as exc:
            raise PoisonMessage(f"body is not valid {method} data ({exc})") from None
        size += len(chunk)
        if size > limit:
            raise PoisonMessage(
                f"body compressed with {method!r} decodes to more than {limit} bytes "
                "(transport option max_decoded_bytes)"
            )
        if not decompressor.eof:
            raise PoisonMessage(f"body is truncated {method} data")
        chunks.append(chunk)
        data = decompressor.unused_data
        if not data:
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def nested_deeper(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and dicts deeper than ``limit`` (walked without
    recursion, so a deep value cannot overflow the stack here)."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def count(text: str | bytes, char: str) -> int:
    return text.count(char) if isinstance(text, str) else text.count(char.encode())


def opening_brackets(text: str | bytes) -> int:
    return count(text, "{") + count(text, "[")


DEFAULT_LIMITS = ReceiveLimits()
