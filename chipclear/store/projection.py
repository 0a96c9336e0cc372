"""Inline projections: read models the store keeps in the same transaction as the events behind them.

The store knows no aggregate. Whoever opens it hands it the projections to keep (chipclear.projections
holds the request projection, and `open_event_store` there wires it in for the worker and the CLI).
A projection keeps one row per stream in a table of the store's schema. On each append the store reads
that stream's row, asks the projection for the state it holds, evolves it by the new events and writes
the new row, all inside the append's transaction; `rebuild` replays the whole log the same way into
fresh rows, which must equal the ones kept inline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar

from chipclear.domain.events import Event
from chipclear.row_query import RowQuery

__all__ = ["Projection", "RowQuery"]

S = TypeVar("S")


class Projection(Protocol[S]):
    """One row per stream, computed from its events: `row(evolve(load(row), events))`."""

    @property
    def table(self) -> str:
        """Its table in the store's schema (made by the store's migrations)."""
        ...

    @property
    def columns(self) -> Sequence[str]:
        """Every column of the table, the key (the stream id) first."""
        ...

    def wants(self, event: Event) -> bool:
        """Whether this projection folds `event` (an event of a stream it keeps a row for)."""
        ...

    def load(self, row: Mapping[str, Any]) -> S:
        """The state a stored row holds."""
        ...

    def evolve(self, state: S | None, events: Sequence[Event]) -> S:
        """The state after `events` (None: the stream's first events). Pure, and never refuses an event."""
        ...

    def row(self, state: S) -> dict[str, Any]:
        """The row for `state`: a value for every column."""
        ...
