"""The inline projections on SQL: kept inside each append's transaction, rebuilt from the log, read.

Which projections a store keeps is decided when it is opened (`projections=`); see `projection.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from chipclear.domain.events import Event
from chipclear.row_query import RowQuery, select_sql
from chipclear.store.projection import Projection
from chipclear.store.sql_base import SQLBackend, Tx, stored_event, streams_in_order

KEYS_AT_ONCE = 500  # keys a projection query binds at once


def project(backend: SQLBackend, tx: Tx, stream_id: str, events: Sequence[Event]) -> None:
    """Fold a just-appended batch into every projection that wants its events, in the same transaction."""
    for projection in backend.projections:
        mine = [event for event in events if projection.wants(event)]
        if not mine:
            continue
        columns, key = ", ".join(projection.columns), projection.columns[0]
        found = tx.execute(
            f"SELECT {columns} FROM {projection.table} WHERE {key} = ?{backend.FOR_UPDATE}", (stream_id,)
        )
        names = [d[0] for d in found.description]
        row = found.fetchone()
        state = projection.load(dict(zip(names, row, strict=True))) if row else None
        _upsert(tx, projection, projection.row(projection.evolve(state, mine)))


def rebuild(backend: SQLBackend, tx: Tx) -> int:
    """Replay the whole log into fresh rows of every projection; returns how many rows were written.

    Stream after stream, each in version order, read a page at a time: memory holds one stream's
    state and one page of events, however long the log is.
    """
    projections = backend.projections
    backend._lock_projections(tx, [projection.table for projection in projections])
    for projection in projections:
        tx.execute(f"DELETE FROM {projection.table}")
    if not projections:
        return 0
    written = 0
    for _, rows in streams_in_order(tx):
        states: list[Any] = [None] * len(projections)
        for row in rows:
            event = stored_event(row, backend.upcasters)
            for n, projection in enumerate(projections):
                if projection.wants(event):
                    states[n] = projection.evolve(states[n], [event])
        for projection, state in zip(projections, states, strict=True):
            if state is not None:
                _upsert(tx, projection, projection.row(state))
                written += 1
    return written


def _upsert(tx: Tx, projection: Projection[Any], row: Mapping[str, Any]) -> None:
    key, *rest = projection.columns
    marks = ", ".join("?" * len(projection.columns))
    updates = ", ".join(f"{column} = excluded.{column}" for column in rest)
    tx.execute(
        f"INSERT INTO {projection.table} ({', '.join(projection.columns)}) VALUES ({marks}) "
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}",
        tuple(row[column] for column in projection.columns),
    )


def _known(projection: Projection[Any], names: Sequence[str]) -> None:
    """Column names go into SQL text: only the projection's own are accepted."""
    unknown = sorted(set(names) - set(projection.columns))
    if unknown:
        raise ValueError(
            f"{projection.table} has no column {unknown[0]!r} (columns: {', '.join(projection.columns)})"
        )


class SQLProjections(SQLBackend):
    def rebuild_projection(self) -> int:
        with self._transaction() as tx:
            return rebuild(self, tx)

    def projection_row(self, projection: Projection[Any], key: str) -> dict[str, Any] | None:
        rows = self.projection_rows(projection, RowQuery(keys=[key]))
        return rows[0] if rows else None

    def projection_rows(
        self, projection: Projection[Any], query: RowQuery = RowQuery()
    ) -> list[dict[str, Any]]:
        key = projection.columns[0]
        _known(projection, [*query.named_columns(key), *(query.columns or ())])
        if query.keys is not None and len(query.keys) > KEYS_AT_ONCE:
            # Bound a chunk at a time, well under every driver's limit on parameters (its order and
            # limit hold within a chunk: callers that pass many keys ask for rows by key, not a page).
            return [
                row
                for start in range(0, len(query.keys), KEYS_AT_ONCE)
                for row in self.projection_rows(
                    projection, replace(query, keys=query.keys[start : start + KEYS_AT_ONCE])
                )
            ]
        built = select_sql(projection.table, key, projection.columns, query)
        if built is None:
            return []
        with self._reader() as tx:
            cursor = tx.execute(*built)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor]
