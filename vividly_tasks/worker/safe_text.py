"""Text from outside (a publisher's attributes, an upstream's error) made safe to show people.

A terminal obeys the control characters in what it prints: ``ESC ] 0 ; ... BEL`` retitles the
window, ``ESC [ 2 J`` clears it, the C1 ``CSI`` (U+009B) starts a sequence on its own in many
terminals, and a bidi override (U+202E) shows ``txt.exe`` for ``exe.txt``. ``printable`` writes
every character that is not printable (Python's ``str.isprintable``: categories Cc, Cf, Cs, Co,
Cn, Zl, Zp and every space but ASCII's) as the escape Python would write in a string literal,
so an operator sees ``\\x1b]0;pwned\\x07`` instead of obeying it. JSON output needs none of this
as long as it escapes non-ASCII (``json.dumps``'s default ``ensure_ascii=True``).
"""

from __future__ import annotations

#: The escapes people know, for the characters that have one.
NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_char(char: str) -> str:
    code = ord(char)
    if char in NAMED_ESCAPES:
        return NAMED_ESCAPES[char]
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def printable(text: object, *, keep: str = "") -> str:
    """``text`` with each character that is not printable escaped (those in ``keep`` stay,
    e.g. the line breaks of a traceback)."""
    text = str(text)
    if text.isprintable():  # nearly always: no copy
        return text
    return "".join(c if c.isprintable() or c in keep else escape_char(c) for c in text)
