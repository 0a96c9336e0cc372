"""What the SQL backends share underneath every interface: the hooks a backend provides, and stored rows.

SQLite and PostgreSQL run the same statements (written with `?` placeholders; the PostgreSQL adapter
turns them into `%s`) and differ only where their concurrency differs: how a writer takes a stream
(SQLite: the database write lock, taken up front; PostgreSQL: that stream's head row, `FOR UPDATE`, so
writers on other streams never wait), how a consistent snapshot is read, and how the schema is made.
One algorithm means one set of semantics, which is what the conformance suites check. The algorithm
itself is split by interface: `sql_log`, `sql_audit`, `sql_projection`, `sql_invoices`,
`sql_screening`, `sql_transfer`, `sql_schema`; `sql.SQLEventStore` puts them together.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from itertools import groupby
from operator import itemgetter
from typing import Any, Protocol, Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chipclear.domain.events import StoredEvent
from chipclear.store.chain import CHAINED_COLUMNS, chained_columns
from chipclear.store.errors import CannotSeal
from chipclear.store.migrations import Migration
from chipclear.store.projection import Projection
from chipclear.store.protocol import PAGE
from chipclear.store.trust import EventRow, RecorderKey, Sealer, act_of
from chipclear.store.upcasting import UPCASTERS, Upcasters

EVENT_COLUMNS = ", ".join(EventRow._fields)
# chain_row hands the chained columns on by position: a reordered row would hash other bytes.
assert EventRow._fields[1:12] == CHAINED_COLUMNS, "EventRow and the chain disagree on column order"


class Cursor(Protocol):
    """The DB-API cursor surface both drivers offer (sqlite3 and psycopg 3)."""

    @property
    def description(self) -> Any: ...

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Tx(Protocol):
    """One connection inside one transaction (or in autocommit, for single reads)."""

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Cursor: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> Cursor: ...


class SQLBackend(ABC):
    """A SQL database with the hooks below; the interface mixins build on these and nothing else."""

    # Where a screening list's load order lives: SQLite's rowid, a PostgreSQL identity column.
    SCREENING_ORDER = "rowid"
    # Appended to the projection read inside an append: PostgreSQL locks the row so a concurrent
    # rebuild and an append cannot interleave; SQLite's write lock already serialises them.
    FOR_UPDATE = ""

    def __init__(
        self,
        *,
        projections: Iterable[Projection[Any]] = (),
        upcasters: Upcasters = UPCASTERS,
        recorder: RecorderKey | None = None,
    ) -> None:
        self.projections: tuple[Projection[Any], ...] = tuple(projections)
        self.upcasters = upcasters
        self._recorder: RecorderKey | None = recorder
        self._sealer: Sealer | None = None

    def seal_with(self, recorder: RecorderKey | None) -> Self:
        """Seal every event this handle appends with `recorder` (the worker's key); returns the store."""
        self._recorder, self._sealer = recorder, None
        return self

    def sealer(self) -> Sealer:
        """The recorder key, loaded once; CannotSeal, saying why, when this handle has none."""
        if self._sealer is None:
            recorder = self._recorder
            if recorder is None:
                raise CannotSeal(
                    "this event store handle holds no recorder key, and every event is sealed when "
                    "stored: a worker loads it from CHIPCLEAR_RECORDER_KEY_FILE or "
                    "$CHIPCLEAR_HOME/keys/recorder.key"
                )
            if not isinstance(recorder, Ed25519PrivateKey):
                try:
                    recorder = recorder()
                except (OSError, ValueError) as exc:  # a missing or unreadable key file says which
                    raise CannotSeal(f"cannot seal events: {exc}") from None
            self._sealer = Sealer.of(recorder)
        return self._sealer

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Tx]:
        """A read-write transaction, committed on success and rolled back on any exception."""

    @abstractmethod
    def _reader(self) -> AbstractContextManager[Tx]:
        """A connection for one-statement reads (each statement sees the latest commits)."""

    @abstractmethod
    def _snapshot(self) -> AbstractContextManager[Tx]:
        """A read-only transaction that sees one consistent state, for audits and exports."""

    @abstractmethod
    def _lock_stream(self, tx: Tx, stream_id: str) -> tuple[int, str]:
        """Take the stream for this transaction and return its head: (version, head hash)."""

    @abstractmethod
    def _lock_buyer(self, tx: Tx, buyer_key: str) -> None:
        """Take a buyer's cap for this transaction: its claims are checked and written one at a time."""

    @abstractmethod
    def _lock_projections(self, tx: Tx, tables: Sequence[str]) -> None:
        """Keep appenders off the projections' tables while they are rebuilt."""

    @abstractmethod
    def _lock_for_import(self, tx: Tx) -> None:
        """Keep writers out while an import checks the store is empty and fills it."""

    @abstractmethod
    def _after_import(self, tx: Tx) -> None:
        """Called after rows were loaded with explicit positions (PostgreSQL moves its sequence on)."""

    @abstractmethod
    def migrations(self) -> Sequence[Migration]: ...

    @abstractmethod
    def _has_migrations_table(self, tx: Tx) -> bool: ...

    @abstractmethod
    def _lock_migrations(self, tx: Tx) -> None:
        """Two processes migrating at once must not both apply a step."""

    @abstractmethod
    def close(self) -> None: ...

    def ping(self) -> None:
        """Raise if the store cannot be reached: the worker's readiness probe asks this."""
        with self._reader() as tx:
            tx.execute("SELECT 1").fetchone()


def stored_event(row: Sequence[Any], upcasters: Upcasters) -> StoredEvent:
    """An `EVENT_COLUMNS` row as the event this release reads: its data upcast to the current shape."""
    stored = EventRow(*row[:16])
    return StoredEvent.model_validate(
        {
            **stored._asdict(),
            "data": upcasters.parse(stored.type, stored.schema_version, json.loads(stored.data)),
            "act": act_of(stored.act),
        }
    )


def chain_row(row: Sequence[Any]) -> tuple[int, int, str, str, bytes]:
    """(position, version, prev_hash, hash, chained bytes) of an `EVENT_COLUMNS` row, exactly as stored:
    no column is parsed or re-encoded on the way to the hash."""
    # EVENT_COLUMNS: position, then the CHAINED_COLUMNS in their order, then prev_hash and hash.
    return row[0], row[3], row[12], row[13], chained_columns(row[1:12])


def streams_in_order(tx: Tx, page: int | None = None) -> Iterator[tuple[str, Iterator[Any]]]:
    """Every stream and its `EVENT_COLUMNS` rows, stream after stream (by id), each in version order.

    Read a page at a time by (stream_id, version) keyset on the unique index, and handed out row by
    row: memory holds one page, however long the log or any one stream (the allocation ledger's) is.
    Each stream's rows must be read before the next stream is asked for (`itertools.groupby`). Inside
    a snapshot (`_snapshot`) the pages are consistent.
    """
    return groupby(_rows_in_stream_order(tx, page or PAGE), key=itemgetter(2))


def _rows_in_stream_order(tx: Tx, page: int) -> Iterator[Any]:
    after: tuple[str, int] = ("", 0)
    while True:
        found = tx.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE (stream_id, version) > (?, ?)"
            " ORDER BY stream_id, version LIMIT ?",
            (*after, page),
        ).fetchall()
        yield from found
        if len(found) < page:
            return
        after = (found[-1][2], found[-1][3])


def set_head(tx: Tx, stream_id: str, version: int, head_hash: str) -> None:
    tx.execute(
        "INSERT INTO streams (stream_id, version, head_hash) VALUES (?, ?, ?) "
        "ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, head_hash = excluded.head_hash",
        (stream_id, version, head_hash),
    )


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
