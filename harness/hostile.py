"""What a hostile or careless producer could send: content types that must never be
deserialized, any JSON value (a Hypothesis strategy), a payload that shows it was unpickled."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

UNSAFE_CONTENT_TYPES = (
    "application/x-python-serialize", "application/x-yaml", "application/x-msgpack",
    "pickle", "yaml",
)

json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=12,
)


class MarkerWhenUnpickled:
    """Unpickling this creates a file: proof that a pickle was (or was not) loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))
