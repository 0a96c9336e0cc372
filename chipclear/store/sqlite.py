"""SQLite event store: the embedded default, safe for several worker processes on one machine.

WAL lets readers run beside the single writer; `BEGIN IMMEDIATE` takes the write lock up front so two
processes never both read a stream version and then both write (no read-then-write race), and
`busy_timeout` makes the loser wait instead of failing. Because writers are serialised, positions
commit in order and a reader following the log never meets a gap that fills in later.

A transaction must never outlive the call that opened it: a connection left inside one keeps the write
lock for good and wedges every writer in every process. So each transaction opens inside the block
that ends it, whatever ends the call (an error, a cancellation raised into the thread), and a
connection that cannot be rolled back is closed, which releases its locks. The wait for the lock
(`BUSY_TIMEOUT`) is shorter than an append's start-to-close timeout (workflows/options.py), so an
activity facing a held lock fails cleanly with StoreUnavailable before Temporal gives up on it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Literal

from chipclear.private_files import private_file
from chipclear.store.chain import GENESIS
from chipclear.store.errors import StoreUnavailable
from chipclear.store.migrations import Migration
from chipclear.store.projection import Projection
from chipclear.store.sql import SQLEventStore
from chipclear.store.sql_base import Tx
from chipclear.store.trust import RecorderKey
from chipclear.store.upcasting import UPCASTERS, Upcasters

SCHEMA = """
CREATE TABLE events (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       TEXT NOT NULL UNIQUE,
    stream_id      TEXT NOT NULL,
    version        INTEGER NOT NULL CHECK (version >= 1),
    type           TEXT NOT NULL,
    schema_version INTEGER NOT NULL CHECK (schema_version >= 1),
    data           TEXT NOT NULL,
    occurred_at    TEXT NOT NULL,
    recorded_at    TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    actor          TEXT NOT NULL,
    act            TEXT,          -- the person's signed act that caused the event (canonical JSON)
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL,
    sealed_by      TEXT NOT NULL, -- the recorder's public key, ed25519:...
    seal           TEXT NOT NULL, -- its signature over the hash (not chained: made after it)
    UNIQUE (stream_id, version)
);
CREATE TABLE streams (
    stream_id TEXT PRIMARY KEY,
    version   INTEGER NOT NULL,
    head_hash TEXT NOT NULL
);
CREATE TABLE requests (
    request_id      TEXT PRIMARY KEY,
    status          TEXT NOT NULL,
    gate            TEXT,
    buyer           TEXT NOT NULL,
    units_requested INTEGER NOT NULL,
    units_approved  INTEGER,
    policy_version  TEXT NOT NULL,
    version         INTEGER NOT NULL,
    submitted_at    TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    state           TEXT NOT NULL,
    flags           TEXT NOT NULL DEFAULT ''
);
-- `list` pages newest first by (submitted_at, request_id), with or without a status.
CREATE INDEX requests_status ON requests (status, submitted_at, request_id);
CREATE INDEX requests_newest ON requests (submitted_at, request_id);
-- Which request each domestic invoice counts for: an invoice counts once, across all requests.
-- request_id NULL: the request ended without a licence; only the same buyer may count it again.
CREATE TABLE invoices (
    invoice_key   TEXT PRIMARY KEY,
    request_id    TEXT,
    buyer         TEXT NOT NULL,
    buyer_key     TEXT NOT NULL,
    registered_at TEXT NOT NULL
);
CREATE INDEX invoices_request ON invoices (request_id);
CREATE TABLE screening_lists (
    version   TEXT PRIMARY KEY,
    sha256    TEXT NOT NULL,
    source    TEXT NOT NULL,
    loaded_at TEXT NOT NULL,
    entries   INTEGER NOT NULL,
    names     INTEGER NOT NULL,
    data      TEXT NOT NULL
);
-- Signed tree heads over the whole log in position order (chipclear.store.checkpoint).
CREATE TABLE checkpoints (
    tree_size     INTEGER PRIMARY KEY CHECK (tree_size >= 0),
    root_hash     TEXT NOT NULL,
    last_position INTEGER NOT NULL,
    timestamp     TEXT NOT NULL,
    key           TEXT NOT NULL,
    signature     TEXT NOT NULL
);
-- The log is append-only; these guards stop accidents, the hash chain catches the rest.
CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER checkpoints_append_only_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
CREATE TRIGGER checkpoints_append_only_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
"""


# Seconds a writer waits for another's write lock before giving up with StoreUnavailable: under the
# append's 10 s start-to-close timeout, so the activity reports a held lock instead of timing out.
BUSY_TIMEOUT = 5.0


def _busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds the lock past the busy timeout."""
    text = str(exc)
    return "locked" in text or "busy" in text


def _statements(script: str) -> Iterator[str]:
    """Split a script into whole statements (a trigger body holds semicolons of its own)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""


def _initial_schema(tx: Tx) -> None:
    for statement in _statements(SCHEMA):
        tx.execute(statement)


# The buyers' caps move from an entity workflow per buyer into the store (chipclear.store.sql_buyer_caps).
BUYER_CLAIMS = """
CREATE TABLE buyer_claims (
    request_id TEXT PRIMARY KEY,
    buyer      TEXT NOT NULL,
    buyer_key  TEXT NOT NULL,
    deployment TEXT NOT NULL,                        -- '' for production, '@<queue>' beside it
    units      INTEGER NOT NULL CHECK (units >= 0),  -- held against the buyer's cap now
    released   INTEGER CHECK (released >= 0),        -- handed back when it ended unlicensed; NULL: holds
    claimed_at TEXT NOT NULL
)
"""
BUYER_CLAIMS_INDEX = "CREATE INDEX buyer_claims_buyer ON buyer_claims (buyer_key, deployment)"


def _buyer_claims(tx: Tx) -> None:
    tx.execute(BUYER_CLAIMS)
    tx.execute(BUYER_CLAIMS_INDEX)


MIGRATIONS = (
    Migration(
        1, "events, streams, projection, invoice registry, screening lists, checkpoints", _initial_schema
    ),
    Migration(2, "buyer caps", _buyer_claims),
)


@contextmanager
def _unavailable_when_busy(path: Path) -> Iterator[None]:
    """A lock held past the busy timeout is an outage of the store, not an error in the caller's data."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if not _busy(exc):
            raise
        raise StoreUnavailable(
            f"the event store {path} is locked by another connection for over {BUSY_TIMEOUT:.0f}s ({exc})"
        ) from exc


class SQLiteEventStore(SQLEventStore):
    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "FULL",
        migrate: bool = True,
        projections: Iterable[Projection[Any]] = (),
        upcasters: Upcasters = UPCASTERS,
        recorder: RecorderKey | None = None,
    ) -> None:
        super().__init__(projections=projections, upcasters=upcasters, recorder=recorder)
        self.path = Path(path)
        # The record in clear: a new store file is 0600 in a 0700 directory before SQLite writes to it,
        # and SQLite gives its -wal and -shm files the database file's mode.
        private_file(self.path)
        # FULL by default: this is the legal record, and an acknowledged append must survive power loss.
        self._synchronous = synchronous.upper()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # Embedded, one file: the store brings its own schema up to date when opened (but never one
        # newer than this release). `migrate=False` leaves it as found, for `chipclear store migrate`.
        if migrate:
            self.migrate()
            self.require_schema()

    def migrations(self) -> Sequence[Migration]:
        return MIGRATIONS

    def _has_migrations_table(self, tx: Tx) -> bool:
        found = tx.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ).fetchone()
        return found is not None

    # -- connections -------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        """One connection per thread: activities run in a thread pool, and sqlite3 objects are not shared."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # check_same_thread=False only so close() may run on another thread; each thread uses its own.
            conn = sqlite3.connect(
                self.path, isolation_level=None, timeout=BUSY_TIMEOUT, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        elif conn.in_transaction:
            # Left open by a call interrupted where no Python code could end it: end it now, first.
            self._roll_back(conn)
            return self._conn()
        return conn

    def _roll_back(self, conn: sqlite3.Connection) -> None:
        """Roll back; a connection that is still inside a transaction afterwards is closed, which
        releases its locks, and the thread opens a fresh one next time."""
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the connection is closed below: that ends the transaction too
        finally:
            if conn.in_transaction:
                self._discard(conn)

    def _discard(self, conn: sqlite3.Connection) -> None:
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
        conn.close()

    @contextmanager
    def _begin(self, mode: Literal["IMMEDIATE", "DEFERRED"]) -> Iterator[Tx]:
        conn = self._conn()
        # BEGIN inside the `try`: whatever interrupts the call after the lock is taken (an error, a
        # cancellation raised into this thread), the `finally` ends the transaction it opened.
        try:
            with _unavailable_when_busy(self.path):
                conn.execute(f"BEGIN {mode}")
            yield conn
            with _unavailable_when_busy(self.path):
                conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                self._roll_back(conn)

    def _transaction(self) -> AbstractContextManager[Tx]:
        return self._begin("IMMEDIATE")  # the write lock, up front

    @contextmanager
    def _reader(self) -> Iterator[Tx]:
        with _unavailable_when_busy(self.path):
            yield self._conn()

    def _snapshot(self) -> AbstractContextManager[Tx]:
        # No lock until the first read; from then on the reads see one snapshot, as WAL keeps it.
        return self._begin("DEFERRED")

    def _lock_stream(self, tx: Tx, stream_id: str) -> tuple[int, str]:
        # BEGIN IMMEDIATE already holds the database's write lock: reading the head is enough.
        head = tx.execute(
            "SELECT version, head_hash FROM streams WHERE stream_id = ?", (stream_id,)
        ).fetchone()
        return (head[0], head[1]) if head else (0, GENESIS)

    def _lock_buyer(self, tx: Tx, buyer_key: str) -> None:
        pass  # BEGIN IMMEDIATE: one writer at a time already

    def _lock_projections(self, tx: Tx, tables: Sequence[str]) -> None:
        pass  # the write lock again

    def _lock_migrations(self, tx: Tx) -> None:
        pass  # and again

    def _lock_for_import(self, tx: Tx) -> None:
        pass  # BEGIN IMMEDIATE: the one writer

    def _after_import(self, tx: Tx) -> None:
        pass  # AUTOINCREMENT continues after the highest position stored

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()
