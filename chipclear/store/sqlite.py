"""SQLite event store: the embedded default, safe for several worker processes on one machine.

WAL lets readers run beside the single writer; `BEGIN IMMEDIATE` takes the write lock up front so two
processes never both read a stream version and then both write (no read-then-write race), and
`busy_timeout` makes the loser wait instead of failing.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chipclear.domain.allocation import normalise_buyer
from chipclear.domain.events import Event, ScreeningListLoaded, StoredEvent
from chipclear.domain.evidence import InvoiceOwner
from chipclear.domain.models import Status
from chipclear.domain.screening import ScreeningEntry, ScreeningList, ScreeningListInfo
from chipclear.domain.state import RequestState, fold
from chipclear.store import projection
from chipclear.store.chain import GENESIS, chained_fields, first_break, link, timestamp
from chipclear.store.protocol import AppendResult, AuditReport, ChainBreak, ConcurrencyError, RequestSummary

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       TEXT NOT NULL UNIQUE,
    stream_id      TEXT NOT NULL,
    version        INTEGER NOT NULL CHECK (version >= 1),
    type           TEXT NOT NULL,
    data           TEXT NOT NULL,
    occurred_at    TEXT NOT NULL,
    recorded_at    TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    actor          TEXT NOT NULL,
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE TABLE IF NOT EXISTS streams (
    stream_id TEXT PRIMARY KEY,
    version   INTEGER NOT NULL,
    head_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
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
CREATE INDEX IF NOT EXISTS requests_status ON requests (status, submitted_at);
-- Which request each domestic invoice counts for: an invoice counts once, across all requests.
-- request_id NULL: the request ended without a licence; only the same buyer may count it again.
CREATE TABLE IF NOT EXISTS invoices (
    invoice_key   TEXT PRIMARY KEY,
    request_id    TEXT,
    buyer         TEXT NOT NULL,
    buyer_key     TEXT NOT NULL,
    registered_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS invoices_request ON invoices (request_id);
CREATE TABLE IF NOT EXISTS screening_lists (
    version   TEXT PRIMARY KEY,
    sha256    TEXT NOT NULL,
    source    TEXT NOT NULL,
    loaded_at TEXT NOT NULL,
    entries   INTEGER NOT NULL,
    names     INTEGER NOT NULL,
    data      TEXT NOT NULL
);
-- The log is append-only; these guards stop accidents, the hash chain catches the rest.
CREATE TRIGGER IF NOT EXISTS events_append_only_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_append_only_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
"""

SCREENING_STREAM = "screening-lists"

EVENT_COLUMNS = (
    "position, event_id, stream_id, version, type, data, occurred_at, recorded_at, "
    "policy_version, actor, prev_hash, hash"
)


class SQLiteEventStore:
    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # FULL by default: this is the legal record, and an acknowledged append must survive power loss.
        self._synchronous = synchronous.upper()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # executescript commits on its own; every statement in SCHEMA is idempotent.
        self._conn().executescript(SCHEMA)
        self._upgrade()

    def _upgrade(self) -> None:
        """Bring a store made by an earlier release up to this schema (columns added since)."""
        with self._transaction() as conn:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
            if "flags" not in columns:
                conn.execute("ALTER TABLE requests ADD COLUMN flags TEXT NOT NULL DEFAULT ''")
                self._rebuild(conn)

    # -- connections -------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        """One connection per thread: activities run in a thread pool, and sqlite3 objects are not shared."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # check_same_thread=False only so close() may run on another thread; each thread uses its own.
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=60.0, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA busy_timeout=60000")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    # -- writing -----------------------------------------------------------------------------
    def append(self, stream_id: str, expected_version: int, events: Sequence[Event]) -> AppendResult:
        if not events:
            return AppendResult(stream_id=stream_id, version=expected_version, written=False)
        _check_batch(stream_id, expected_version, events)
        with self._transaction() as conn:
            return self._append_in(conn, stream_id, expected_version, events)

    def _append_in(
        self, conn: sqlite3.Connection, stream_id: str, expected_version: int, events: Sequence[Event]
    ) -> AppendResult:
        already = _already_stored(conn, events)
        if already:
            return AppendResult(stream_id=stream_id, version=events[-1].version, written=False)
        head = conn.execute(
            "SELECT version, head_hash FROM streams WHERE stream_id = ?", (stream_id,)
        ).fetchone()
        current, prev_hash = (head[0], head[1]) if head else (0, GENESIS)
        if current != expected_version:
            raise ConcurrencyError(f"stream {stream_id} is at version {current}, expected {expected_version}")
        recorded_at = timestamp(datetime.now(UTC))
        rows = []
        for event in events:
            data = event.data_json()
            occurred_at = timestamp(event.occurred_at)
            fields = chained_fields(
                event_id=event.event_id,
                stream_id=stream_id,
                version=event.version,
                type_=event.type,
                data=data,
                occurred_at=occurred_at,
                recorded_at=recorded_at,
                policy_version=event.policy_version,
                actor=event.actor,
            )
            prev_hash, previous = link(prev_hash, fields), prev_hash
            rows.append(
                (
                    event.event_id,
                    stream_id,
                    event.version,
                    event.type,
                    json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
                    occurred_at,
                    recorded_at,
                    event.policy_version,
                    event.actor,
                    previous,
                    prev_hash,
                )
            )
        conn.executemany(
            "INSERT INTO events (event_id, stream_id, version, type, data, occurred_at, recorded_at,"
            " policy_version, actor, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute(
            "INSERT INTO streams (stream_id, version, head_hash) VALUES (?, ?, ?) "
            "ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, "
            "head_hash = excluded.head_hash",
            (stream_id, events[-1].version, prev_hash),
        )
        if projection.is_request_stream(events):
            state = _load_state(conn, stream_id)
            _upsert_projection(conn, fold(events, state))
        return AppendResult(stream_id=stream_id, version=events[-1].version, written=True)

    # -- reading -----------------------------------------------------------------------------
    def read_stream(self, stream_id: str) -> list[StoredEvent]:
        cursor = self._conn().execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ? ORDER BY version", (stream_id,)
        )
        return [_stored(row) for row in cursor]

    def read_all(self, after_position: int = 0) -> Iterator[StoredEvent]:
        cursor = self._conn().execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE position > ? ORDER BY position", (after_position,)
        )
        for row in cursor:
            yield _stored(row)

    def get_request(self, request_id: str) -> RequestState | None:
        found = (
            self._conn().execute("SELECT state FROM requests WHERE request_id = ?", (request_id,)).fetchone()
        )
        return RequestState.model_validate_json(found[0]) if found else None

    def list_requests(self, status: Status | None = None, flag: str | None = None) -> list[RequestSummary]:
        columns = ", ".join(c for c in projection.COLUMNS if c != "state")
        where: list[str] = ["1 = 1"]
        params: list[str] = []
        if status is not None:
            where, params = [*where, "status = ?"], [*params, status.value]
        if flag is not None:
            where, params = [*where, "(',' || flags || ',') LIKE ?"], [*params, f"%,{flag},%"]
        cursor = self._conn().execute(
            f"SELECT {columns} FROM requests WHERE {' AND '.join(where)} ORDER BY submitted_at, request_id",
            params,
        )
        names = [d[0] for d in cursor.description]
        return [RequestSummary.model_validate(dict(zip(names, row, strict=True))) for row in cursor]

    # -- audit -------------------------------------------------------------------------------
    def verify(self) -> AuditReport:
        # One read transaction: a consistent snapshot even while workers keep appending.
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            return self._verify(conn)
        finally:
            conn.execute("COMMIT")

    def _verify(self, conn: sqlite3.Connection) -> AuditReport:
        heads = {row[0]: (row[1], row[2]) for row in conn.execute("SELECT * FROM streams")}
        stream_ids = sorted(
            set(heads) | {row[0] for row in conn.execute("SELECT DISTINCT stream_id FROM events")}
        )
        breaks, events_checked = [], 0
        for stream_id in stream_ids:
            # Hash what is on disk, column for column: re-serialising through the models could
            # paper over an edit that the models happen to normalise.
            rows = conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ? ORDER BY version", (stream_id,)
            ).fetchall()
            events_checked += len(rows)
            problem = first_break(stream_id, (_chain_row(row) for row in rows), heads.get(stream_id))
            if problem is not None:
                breaks.append(problem)
        breaks += _screening_list_breaks(conn)
        return AuditReport(
            ok=not breaks, streams_checked=len(stream_ids), events_checked=events_checked, breaks=breaks
        )

    def rebuild_projection(self) -> int:
        with self._transaction() as conn:
            return self._rebuild(conn)

    def _rebuild(self, conn: sqlite3.Connection) -> int:
        conn.execute("DELETE FROM requests")
        states: dict[str, RequestState] = {}
        for row in conn.execute(f"SELECT {EVENT_COLUMNS} FROM events ORDER BY position").fetchall():
            event = _stored(row)
            if projection.is_request_stream([event]):
                states[event.stream_id] = fold([event], states.get(event.stream_id))
        for state in states.values():
            _upsert_projection(conn, state)
        return len(states)

    # -- the invoice registry -----------------------------------------------------------------
    def register_invoices(self, request_id: str, buyer: str, keys: Sequence[str]) -> dict[str, InvoiceOwner]:
        """Register each free invoice to `request_id`; answer who owns every key, in one transaction.

        First come, first served, atomically: two requests registering one invoice at the same
        moment cannot both get it. Registering again for the same request changes nothing.
        """
        if not keys:
            return {}
        now = timestamp(datetime.now(UTC))
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO invoices (invoice_key, request_id, buyer, buyer_key, registered_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (invoice_key) DO UPDATE SET "
                "request_id = excluded.request_id, registered_at = excluded.registered_at "
                "WHERE invoices.request_id IS NULL AND invoices.buyer_key = excluded.buyer_key",
                [(key, request_id, buyer, normalise_buyer(buyer), now) for key in keys],
            )
            marks = ", ".join("?" * len(keys))
            rows = conn.execute(
                f"SELECT invoice_key, request_id, buyer FROM invoices WHERE invoice_key IN ({marks})",
                list(keys),
            ).fetchall()
        return {
            key: InvoiceOwner(request_id=owner or "(ended unlicensed)", buyer=owner_buyer)
            for key, owner, owner_buyer in rows
        }

    def release_invoices(self, request_id: str) -> int:
        """A request that ended without a licence frees its invoices, for its own buyer only."""
        with self._transaction() as conn:
            cursor = conn.execute("UPDATE invoices SET request_id = NULL WHERE request_id = ?", (request_id,))
            return cursor.rowcount

    # -- restricted-party screening lists ----------------------------------------------------
    def save_screening_list(self, screening_list: ScreeningList, *, actor: str) -> bool:
        """Make `screening_list` current, with its `ScreeningListLoaded` event, in one transaction.

        False (and nothing written) when the current list already has the same checksum.
        """
        info = screening_list.info
        assert info.loaded_at is not None, "only a loaded list (with a load time) is stored"
        with self._transaction() as conn:
            current = conn.execute(
                "SELECT sha256 FROM screening_lists ORDER BY rowid DESC LIMIT 1"
            ).fetchone()
            if current is not None and current[0] == info.sha256:
                return False
            data = json.dumps([e.model_dump(mode="json") for e in screening_list.entries])
            conn.execute(
                "INSERT INTO screening_lists (version, sha256, source, loaded_at, entries, names, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    info.version,
                    info.sha256,
                    info.source,
                    timestamp(info.loaded_at),
                    info.entries,
                    info.names,
                    data,
                ),
            )
            head = conn.execute(
                "SELECT version FROM streams WHERE stream_id = ?", (SCREENING_STREAM,)
            ).fetchone()
            version = head[0] if head else 0
            loaded = Event(
                event_id=str(uuid.uuid4()),
                stream_id=SCREENING_STREAM,
                version=version + 1,
                data=ScreeningListLoaded(
                    version=info.version,
                    sha256=info.sha256,
                    source=info.source,
                    entries=info.entries,
                    names=info.names,
                    entries_sha256=_sha256(data),
                ),
                occurred_at=info.loaded_at,
                policy_version="screening",
                actor=actor,
            )
            self._append_in(conn, SCREENING_STREAM, version, [loaded])
            return True

    def screening_list_versions(self) -> list[ScreeningListInfo]:
        """Every list ever loaded, newest (the current one) first."""
        return self._screening_infos()

    def _screening_infos(self, limit: int = -1) -> list[ScreeningListInfo]:
        cursor = self._conn().execute(
            "SELECT version, sha256, source, loaded_at, entries, names FROM screening_lists "
            "ORDER BY rowid DESC LIMIT ?",
            (limit,),
        )
        names = [d[0] for d in cursor.description]
        return [ScreeningListInfo.model_validate(dict(zip(names, row, strict=True))) for row in cursor]

    def current_screening_list(self, known_version: str | None = None) -> ScreeningList | None:
        """The newest loaded list, or None if none was loaded; `known_version` skips re-reading it.

        With `known_version` equal to the current version, only the version is read and the returned
        list has no entries: callers cache by version, since a full list is tens of megabytes. Every
        screening asks this, so it reads one row, not the whole history of loads.
        """
        current = self._screening_infos(limit=1)
        if not current:
            return None
        info = current[0]
        if info.version == known_version:
            return ScreeningList(info=info, entries=[])
        found = (
            self._conn()
            .execute("SELECT data FROM screening_lists WHERE version = ?", (info.version,))
            .fetchone()
        )
        entries = [ScreeningEntry.model_validate(entry) for entry in json.loads(found[0])]
        return ScreeningList(info=info, entries=entries)

    def projection_rows(self) -> list[tuple[Any, ...]]:
        """Every projection row, for comparing the inline projection with a rebuild."""
        return self._conn().execute("SELECT * FROM requests ORDER BY request_id").fetchall()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _screening_list_breaks(conn: sqlite3.Connection) -> list[ChainBreak]:
    """Every stored screening list must be, byte for byte, the one its chained event says was loaded."""
    loaded: dict[str, tuple[int, str | None]] = {}
    for row in conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ? ORDER BY version", (SCREENING_STREAM,)
    ):
        event = _stored(row)
        if isinstance(event.data, ScreeningListLoaded):
            loaded[event.data.version] = (event.version, event.data.entries_sha256)
    breaks = []
    for version, data in conn.execute("SELECT version, data FROM screening_lists ORDER BY rowid"):
        at, expected = loaded.get(version, (0, None))
        if at == 0:
            problem = f"screening list {version} is stored but no ScreeningListLoaded event records it"
        elif expected is not None and _sha256(data) != expected:
            problem = f"screening list {version} differs from the list that was loaded (entries sha256)"
        else:
            continue
        breaks.append(ChainBreak(stream_id=SCREENING_STREAM, version=at, problem=problem))
    return breaks


def _check_batch(stream_id: str, expected_version: int, events: Sequence[Event]) -> None:
    if len({event.event_id for event in events}) != len(events):
        raise ValueError(f"a batch for {stream_id} repeats an event id")
    for offset, event in enumerate(events, start=1):
        if event.stream_id != stream_id or event.version != expected_version + offset:
            raise ValueError(
                f"event {event.event_id} is {event.stream_id}@{event.version}, "
                f"expected {stream_id}@{expected_version + offset}"
            )


def _already_stored(conn: sqlite3.Connection, events: Sequence[Event]) -> bool:
    """True if this exact batch is stored (a retry); ConcurrencyError if its ids collide otherwise."""
    ids = [event.event_id for event in events]
    marks = ", ".join("?" * len(ids))
    found = {
        row[1]: _stored(row)
        for row in conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE event_id IN ({marks})", ids)
    }
    if not found:
        return False
    for event in events:
        stored = found.get(event.event_id)
        if stored is None or not _same_content(stored, event):
            raise ConcurrencyError(
                f"event {event.event_id} ({event.stream_id}@{event.version}) conflicts with what is stored"
            )
    return True


def _same_content(stored: StoredEvent, event: Event) -> bool:
    return (
        stored.stream_id == event.stream_id
        and stored.version == event.version
        and stored.type == event.type
        and stored.data_json() == event.data_json()
        and timestamp(stored.occurred_at) == timestamp(event.occurred_at)
        and stored.policy_version == event.policy_version
        and stored.actor == event.actor
    )


def _stored(row: tuple[Any, ...]) -> StoredEvent:
    (position, event_id, stream_id, version, type_, data, occurred_at, recorded_at) = row[:8]
    (policy_version, actor, prev_hash, hash_) = row[8:]
    return StoredEvent(
        position=position,
        event_id=event_id,
        stream_id=stream_id,
        version=version,
        data=Event.parse_data(type_, json.loads(data)),
        occurred_at=datetime.fromisoformat(occurred_at),
        recorded_at=datetime.fromisoformat(recorded_at),
        policy_version=policy_version,
        actor=actor,
        prev_hash=prev_hash,
        hash=hash_,
    )


def _chain_row(row: tuple[Any, ...]) -> tuple[int, int, str, str, dict[str, Any]]:
    position, event_id, stream_id, version, type_, data, occurred_at, recorded_at = row[:8]
    policy_version, actor, prev_hash, hash_ = row[8:]
    fields = chained_fields(
        event_id=event_id,
        stream_id=stream_id,
        version=version,
        type_=type_,
        data=json.loads(data),
        occurred_at=occurred_at,
        recorded_at=recorded_at,
        policy_version=policy_version,
        actor=actor,
    )
    return position, version, prev_hash, hash_, fields


def _load_state(conn: sqlite3.Connection, stream_id: str) -> RequestState | None:
    found = conn.execute("SELECT state FROM requests WHERE request_id = ?", (stream_id,)).fetchone()
    return RequestState.model_validate_json(found[0]) if found else None


def _upsert_projection(conn: sqlite3.Connection, state: RequestState) -> None:
    values = projection.row(state)
    names = ", ".join(projection.COLUMNS)
    marks = ", ".join("?" * len(projection.COLUMNS))
    updates = ", ".join(f"{c} = excluded.{c}" for c in projection.COLUMNS if c != "request_id")
    conn.execute(
        f"INSERT INTO requests ({names}) VALUES ({marks}) ON CONFLICT (request_id) DO UPDATE SET {updates}",
        tuple(values[c] for c in projection.COLUMNS),
    )
