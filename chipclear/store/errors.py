"""What the store raises for a caller to act on: each message names the stream, the event or the table."""

from __future__ import annotations


class ConcurrencyError(Exception):
    """Another writer got to the stream first, or an event id is reused with different content."""


class StoreUnavailable(RuntimeError):
    """The event store cannot be reached; the message names it (never its password)."""


class StoreNotEmpty(RuntimeError):
    """An import into a store that already holds a log: logs are moved, never merged."""


class CannotSeal(RuntimeError):
    """An append through a store handle without the recorder key: every stored event is sealed."""
