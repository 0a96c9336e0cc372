"""The failures chipclear.client raises, in a module of their own: the CLI names and catches them (and
raises NotFound for a missing store) without importing Temporal. chipclear.client re-exports them."""

from __future__ import annotations


class NotAnswered(RuntimeError):
    pass


class NotFound(LookupError):
    pass


class Rejected(RuntimeError):
    """A rule refused the command (validator or decider); nothing was recorded."""


class Conflict(RuntimeError):
    """The request id is taken by a request with different content."""
