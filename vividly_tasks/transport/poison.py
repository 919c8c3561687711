"""The one error of the receive path: a message that cannot become a Kombu message."""

from __future__ import annotations


class PoisonMessage(ValueError):
    """A received message that cannot become a Kombu message; ``str()`` is the reason."""
