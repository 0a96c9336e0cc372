"""What the SQL backends share: the append algorithm, the hash chain, the projection, the registries.

SQLite and PostgreSQL run the same statements (written with `?` placeholders; the PostgreSQL adapter
turns them into `%s`) and differ only where their concurrency differs: how a writer takes a stream
(SQLite: the database write lock, taken up front; PostgreSQL: that stream's head row, `FOR UPDATE`, so
writers on other streams never wait), how a consistent snapshot is read, and how the schema is made.
One algorithm means one set of semantics, which is what the conformance suite checks.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel

from chipclear.domain.events import Event, ScreeningListLoaded, StoredEvent
from chipclear.domain.evidence import InvoiceOwner
from chipclear.domain.models import Status
from chipclear.domain.names import normalise_buyer
from chipclear.domain.screening import ScreeningEntry, ScreeningList, ScreeningListInfo
from chipclear.domain.state import RequestState, fold
from chipclear.store import projection
from chipclear.store.chain import GENESIS, canonical, chained_fields, first_break, link, timestamp
from chipclear.store.follow import InOrderFollower, LogFollower
from chipclear.store.migrations import MIGRATIONS_TABLE, Migration, SchemaError
from chipclear.store.protocol import AppendResult, AuditReport, ChainBreak, ConcurrencyError, RequestSummary
from chipclear.store.transfer import (
    ExportedEvent,
    ExportedInvoice,
    ExportedScreeningList,
    ExportedStream,
    ExportHeader,
    ExportRecord,
    ImportSummary,
    InvalidExport,
)

SCREENING_STREAM = "screening-lists"

EVENT_COLUMNS = (
    "position, event_id, stream_id, version, type, data, occurred_at, recorded_at, "
    "policy_version, actor, prev_hash, hash"
)
PAGE = 1000  # events per read: a long log is read in pages, never all at once into memory


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

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> Any: ...


class SQLEventStore(ABC):
    """The event store algorithm over any SQL database that offers the hooks below."""

    # Where a screening list's load order lives: SQLite's rowid, a PostgreSQL identity column.
    SCREENING_ORDER = "rowid"
    # Appended to the projection read inside an append: PostgreSQL locks the row so a concurrent
    # rebuild and an append cannot interleave; SQLite's write lock already serialises them.
    FOR_UPDATE = ""

    # -- what a backend provides -------------------------------------------------------------------
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
    def _lock_projection(self, tx: Tx) -> None:
        """Keep appenders off the projection while it is rebuilt."""

    @abstractmethod
    def migrations(self) -> Sequence[Migration]: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def _lock_for_import(self, tx: Tx) -> None:
        """Keep writers out while an import checks the store is empty and fills it."""

    @abstractmethod
    def _after_import(self, tx: Tx) -> None:
        """Called after rows were loaded with explicit positions (PostgreSQL moves its sequence on)."""

    # -- schema ------------------------------------------------------------------------------------
    def schema_version(self) -> int:
        with self._reader() as tx:
            if not self._has_migrations_table(tx):
                return 0
            found = tx.execute("SELECT max(version) FROM schema_migrations").fetchone()
            return int(found[0] or 0)

    @abstractmethod
    def _has_migrations_table(self, tx: Tx) -> bool: ...

    def pending_migrations(self) -> list[Migration]:
        current = self.schema_version()
        return [m for m in self.migrations() if m.version > current]

    def require_schema(self) -> None:
        """Refuse to run against a schema this release did not make: too old or too new."""
        current, latest = self.schema_version(), self.migrations()[-1].version
        if current < latest:
            raise SchemaError(
                f"the event store's schema is at version {current}, this release needs {latest}: "
                "run `chipclear store migrate`"
            )
        if current > latest:
            raise SchemaError(
                f"the event store's schema is at version {current}, newer than this release knows "
                f"({latest}): upgrade chipclear"
            )

    def migrate(self) -> list[Migration]:
        """Apply every pending migration in order, each in its own transaction; returns those applied."""
        applied: list[Migration] = []
        if not self.pending_migrations():
            return applied
        for migration in self.migrations():
            with self._transaction() as tx:
                self._lock_migrations(tx)
                tx.execute(MIGRATIONS_TABLE)
                done = tx.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
                ).fetchone()
                if done:
                    continue  # applied earlier, or by another process while this one waited
                migration.apply(tx)
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, timestamp(datetime.now(UTC))),
                )
                applied.append(migration)
        return applied

    @abstractmethod
    def _lock_migrations(self, tx: Tx) -> None:
        """Two processes migrating at once must not both apply a step."""

    # -- writing -----------------------------------------------------------------------------------
    def append(self, stream_id: str, expected_version: int, events: Sequence[Event]) -> AppendResult:
        if not events:
            return AppendResult(stream_id=stream_id, version=expected_version, written=False)
        _check_batch(stream_id, expected_version, events)
        with self._transaction() as tx:
            return self._append_in(tx, stream_id, expected_version, events)

    def _append_in(
        self, tx: Tx, stream_id: str, expected_version: int, events: Sequence[Event]
    ) -> AppendResult:
        current, prev_hash = self._lock_stream(tx, stream_id)
        if _already_stored(tx, events):
            return AppendResult(stream_id=stream_id, version=events[-1].version, written=False)
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
                    canonical(data),
                    occurred_at,
                    recorded_at,
                    event.policy_version,
                    event.actor,
                    previous,
                    prev_hash,
                )
            )
        tx.executemany(
            "INSERT INTO events (event_id, stream_id, version, type, data, occurred_at, recorded_at,"
            " policy_version, actor, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        _set_head(tx, stream_id, events[-1].version, prev_hash)
        if projection.is_request_stream(events):
            state = self._load_state(tx, stream_id)
            _upsert_projection(tx, fold(events, state))
        return AppendResult(stream_id=stream_id, version=events[-1].version, written=True)

    def _load_state(self, tx: Tx, stream_id: str) -> RequestState | None:
        found = tx.execute(
            f"SELECT state FROM requests WHERE request_id = ?{self.FOR_UPDATE}", (stream_id,)
        ).fetchone()
        return RequestState.model_validate_json(found[0]) if found else None

    # -- reading -----------------------------------------------------------------------------------
    def read_stream(self, stream_id: str) -> list[StoredEvent]:
        with self._reader() as tx:
            cursor = tx.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ? ORDER BY version", (stream_id,)
            )
            return [stored_event(row) for row in cursor]

    def read_all(self, after_position: int = 0) -> Iterator[StoredEvent]:
        """Every event committed now after `after_position`, in position order, page by page.

        A one-off read. To follow a log that writers are still appending to, use `follow`: on
        PostgreSQL a lower position can commit after a higher one.
        """
        while True:
            page = self.read_page(after_position)
            yield from page
            if len(page) < PAGE:
                return
            after_position = page[-1].position

    def read_page(self, after_position: int, limit: int = PAGE) -> list[StoredEvent]:
        with self._reader() as tx:
            cursor = tx.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?",
                (after_position, limit),
            )
            return [stored_event(row) for row in cursor]

    def follow(self, after_position: int = 0) -> LogFollower:
        """A reader that hands out each event once, in position order, as it becomes final."""
        return InOrderFollower(self, after_position)

    def get_request(self, request_id: str) -> RequestState | None:
        with self._reader() as tx:
            found = tx.execute("SELECT state FROM requests WHERE request_id = ?", (request_id,)).fetchone()
        return RequestState.model_validate_json(found[0]) if found else None

    def list_requests(self, status: Status | None = None, flags: Sequence[str] = ()) -> list[RequestSummary]:
        columns = ", ".join(c for c in projection.COLUMNS if c != "state")
        where: list[str] = ["1 = 1"]
        params: list[str] = []
        if status is not None:
            where, params = [*where, "status = ?"], [*params, status.value]
        for flag in flags:
            where, params = [*where, "(',' || flags || ',') LIKE ?"], [*params, f"%,{flag},%"]
        with self._reader() as tx:
            cursor = tx.execute(
                f"SELECT {columns} FROM requests WHERE {' AND '.join(where)} "
                "ORDER BY submitted_at, request_id",
                params,
            )
            names = [d[0] for d in cursor.description]
            return [RequestSummary.model_validate(dict(zip(names, row, strict=True))) for row in cursor]

    def projection_rows(self) -> list[tuple[Any, ...]]:
        """Every projection row, for comparing the inline projection with a rebuild."""
        with self._reader() as tx:
            cursor = tx.execute(f"SELECT {', '.join(projection.COLUMNS)} FROM requests ORDER BY request_id")
            return [tuple(row) for row in cursor]

    def ping(self) -> None:
        """Raise if the store cannot be reached: the worker's readiness probe asks this."""
        with self._reader() as tx:
            tx.execute("SELECT 1").fetchone()

    # -- audit -------------------------------------------------------------------------------------
    def verify(self) -> AuditReport:
        # One read-only snapshot: consistent even while workers keep appending.
        with self._snapshot() as tx:
            return self._verify(tx)

    def _verify(self, tx: Tx) -> AuditReport:
        heads = {
            row[0]: (row[1], row[2])
            for row in tx.execute("SELECT stream_id, version, head_hash FROM streams")
        }
        stream_ids = sorted(
            set(heads) | {row[0] for row in tx.execute("SELECT DISTINCT stream_id FROM events")}
        )
        breaks, events_checked = [], 0
        for stream_id in stream_ids:
            # Hash what is on disk, column for column: re-serialising through the models could
            # paper over an edit that the models happen to normalise.
            rows = tx.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ? ORDER BY version", (stream_id,)
            ).fetchall()
            events_checked += len(rows)
            problem = first_break(stream_id, (chain_row(row) for row in rows), heads.get(stream_id))
            if problem is not None:
                breaks.append(problem)
        breaks += self._screening_list_breaks(tx)
        return AuditReport(
            ok=not breaks, streams_checked=len(stream_ids), events_checked=events_checked, breaks=breaks
        )

    def rebuild_projection(self) -> int:
        with self._transaction() as tx:
            return self._rebuild(tx)

    def _rebuild(self, tx: Tx) -> int:
        self._lock_projection(tx)
        tx.execute("DELETE FROM requests")
        states: dict[str, RequestState] = {}
        for row in tx.execute(f"SELECT {EVENT_COLUMNS} FROM events ORDER BY position").fetchall():
            event = stored_event(row)
            if projection.is_request_stream([event]):
                states[event.stream_id] = fold([event], states.get(event.stream_id))
        for state in states.values():
            _upsert_projection(tx, state)
        return len(states)

    # -- export and import -------------------------------------------------------------------------
    def dump(self) -> Generator[ExportRecord, None, None]:
        """Everything the store holds, as stored, from one consistent snapshot: header first."""
        version = self.schema_version()
        with self._snapshot() as tx:
            yield ExportHeader(exported_at=timestamp(datetime.now(UTC)), schema_version=version)
            after = 0
            while True:
                rows = tx.execute(
                    f"SELECT {EVENT_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?",
                    (after, PAGE),
                ).fetchall()
                for row in rows:
                    yield ExportedEvent.model_validate(
                        {**dict(zip(EXPORTED_EVENT_COLUMNS, row, strict=True)), "data": json.loads(row[5])}
                    )
                if len(rows) < PAGE:
                    break
                after = rows[-1][0]
            for stream_id, version, head_hash in tx.execute(
                "SELECT stream_id, version, head_hash FROM streams ORDER BY stream_id"
            ).fetchall():
                yield ExportedStream(stream_id=stream_id, version=version, head_hash=head_hash)
            for row in tx.execute(
                f"SELECT {', '.join(SCREENING_COLUMNS)} FROM screening_lists ORDER BY {self.SCREENING_ORDER}"
            ).fetchall():
                yield ExportedScreeningList.model_validate(dict(zip(SCREENING_COLUMNS, row, strict=True)))
            for row in tx.execute(
                f"SELECT {', '.join(INVOICE_COLUMNS)} FROM invoices ORDER BY invoice_key"
            ).fetchall():
                yield ExportedInvoice.model_validate(dict(zip(INVOICE_COLUMNS, row, strict=True)))

    def load(self, records: Iterable[ExportRecord]) -> ImportSummary:
        """Import an export into this empty store, in one transaction that commits only if it verifies.

        The chains are checked by the same audit as `verify`, inside the transaction, before commit:
        a broken or edited export leaves nothing behind. Positions are kept, so an auditor's
        references into the old log still point at the same events.
        """
        with self._transaction() as tx:
            self._lock_for_import(tx)
            for table in ("events", "streams", "screening_lists", "invoices"):
                if tx.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone():
                    raise StoreNotEmpty(
                        f"the target event store is not empty ({table}): import only into a new one"
                    )
            heads: dict[str, tuple[int, str]] = {}  # from the export's stream records
            tails: dict[str, tuple[int, str]] = {}  # from its events (a CSV has no stream records)
            seen: set[tuple[str, str]] = set()
            pending: list[tuple[Any, ...]] = []
            counts = {"events": 0, "screening_lists": 0, "invoices": 0}
            last_position = 0
            with_heads = False  # a JSON Lines export (it has a header) carries every stream's head
            for record in records:
                with_heads = with_heads or isinstance(record, ExportHeader)
                if isinstance(record, ExportedEvent):
                    _once(seen, "event id", record.event_id)
                    _once(seen, "stream version", f"{record.stream_id}@{record.version}")
                    if record.position <= last_position:
                        raise InvalidExport(
                            f"event {record.event_id} at position {record.position}: positions must rise "
                            f"(the one before is {last_position}); nothing was imported"
                        )
                    last_position = record.position
                    stored = record.model_dump() | {"data": record.data_text()}
                    pending.append(tuple(stored[c] for c in EXPORTED_EVENT_COLUMNS))
                    tails[record.stream_id] = (record.version, record.hash)
                    counts["events"] += 1
                    if len(pending) >= PAGE:
                        _insert(tx, "events", EXPORTED_EVENT_COLUMNS, pending)
                        pending = []
                elif isinstance(record, ExportedStream):
                    _once(seen, "stream", record.stream_id)
                    heads[record.stream_id] = (record.version, record.head_hash)
                elif isinstance(record, ExportedScreeningList):
                    _once(seen, "screening list", record.version)
                    _insert(tx, "screening_lists", SCREENING_COLUMNS, [_values(record, SCREENING_COLUMNS)])
                    counts["screening_lists"] += 1
                elif isinstance(record, ExportedInvoice):
                    _once(seen, "invoice", record.invoice_key)
                    _insert(tx, "invoices", INVOICE_COLUMNS, [_values(record, INVOICE_COLUMNS)])
                    counts["invoices"] += 1
            _insert(tx, "events", EXPORTED_EVENT_COLUMNS, pending)
            if with_heads and set(tails) - set(heads):
                missing = sorted(set(tails) - set(heads))
                raise InvalidExport(
                    f"the export has events but no stream record for {missing[0]!r}"
                    + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                    + "; nothing was imported"
                )
            for stream_id, (version, head_hash) in (heads if with_heads else tails).items():
                _set_head(tx, stream_id, version, head_hash)
            self._after_import(tx)
            # The audit first: a broken log may not even fold into states.
            report = self._verify(tx)
            if not report.ok:
                first = report.breaks[0]
                raise InvalidExport(
                    f"the export does not verify: stream {first.stream_id!r} at version {first.version}: "
                    f"{first.problem} ({len(report.breaks)} broken); nothing was imported"
                )
            try:
                requests = self._rebuild(tx)
            except (LookupError, ValueError, TypeError, AssertionError) as exc:  # a forged, re-hashed log
                raise InvalidExport(
                    f"the export verifies but its events do not replay ({type(exc).__name__}: {exc}); "
                    "nothing was imported"
                ) from None
            return ImportSummary(streams=len(heads if with_heads else tails), requests=requests, **counts)

    # -- the invoice registry ----------------------------------------------------------------------
    def register_invoices(self, request_id: str, buyer: str, keys: Sequence[str]) -> dict[str, InvoiceOwner]:
        """Register each free invoice to `request_id`; answer who owns every key, in one transaction.

        First come, first served, atomically: two requests registering one invoice at the same
        moment cannot both get it. Registering again for the same request changes nothing. Keys are
        taken in sorted order, so two registrations of overlapping sets cannot deadlock.
        """
        keys = sorted(set(keys))
        if not keys:
            return {}
        now = timestamp(datetime.now(UTC))
        with self._transaction() as tx:
            tx.executemany(
                "INSERT INTO invoices (invoice_key, request_id, buyer, buyer_key, registered_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (invoice_key) DO UPDATE SET "
                "request_id = excluded.request_id, registered_at = excluded.registered_at "
                "WHERE invoices.request_id IS NULL AND invoices.buyer_key = excluded.buyer_key",
                [(key, request_id, buyer, normalise_buyer(buyer), now) for key in keys],
            )
            marks = ", ".join("?" * len(keys))
            rows = tx.execute(
                f"SELECT invoice_key, request_id, buyer FROM invoices WHERE invoice_key IN ({marks})", keys
            ).fetchall()
        return {
            key: InvoiceOwner(request_id=owner or "(ended unlicensed)", buyer=owner_buyer)
            for key, owner, owner_buyer in rows
        }

    def release_invoices(self, request_id: str) -> int:
        """A request that ended without a licence frees its invoices, for its own buyer only."""
        with self._transaction() as tx:
            cursor = tx.execute("UPDATE invoices SET request_id = NULL WHERE request_id = ?", (request_id,))
            return cursor.rowcount

    # -- restricted-party screening lists ----------------------------------------------------------
    def save_screening_list(self, screening_list: ScreeningList, *, actor: str) -> bool:
        """Make `screening_list` current, with its `ScreeningListLoaded` event, in one transaction.

        False (and nothing written) when the current list already has the same checksum.
        """
        info = screening_list.info
        assert info.loaded_at is not None, "only a loaded list (with a load time) is stored"
        with self._transaction() as tx:
            # The stream is taken first: two operators loading at once are served one after the other.
            version, _ = self._lock_stream(tx, SCREENING_STREAM)
            current = tx.execute(
                f"SELECT sha256 FROM screening_lists ORDER BY {self.SCREENING_ORDER} DESC LIMIT 1"
            ).fetchone()
            if current is not None and current[0] == info.sha256:
                return False
            data = json.dumps([e.model_dump(mode="json") for e in screening_list.entries])
            tx.execute(
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
                    entries_sha256=sha256(data),
                ),
                occurred_at=info.loaded_at,
                policy_version="screening",
                actor=actor,
            )
            self._append_in(tx, SCREENING_STREAM, version, [loaded])
            return True

    def screening_list_versions(self) -> list[ScreeningListInfo]:
        """Every list ever loaded, newest (the current one) first."""
        return self._screening_infos()

    def _screening_infos(self, limit: int | None = None) -> list[ScreeningListInfo]:
        with self._reader() as tx:
            cursor = tx.execute(
                "SELECT version, sha256, source, loaded_at, entries, names FROM screening_lists "
                f"ORDER BY {self.SCREENING_ORDER} DESC"
                + (f" LIMIT {int(limit)}" if limit is not None else "")
            )
            names = [d[0] for d in cursor.description]
            return [ScreeningListInfo.model_validate(dict(zip(names, row, strict=True))) for row in cursor]

    def current_screening_info(self) -> ScreeningListInfo | None:
        """What the list in force is (one row, no entries): every screening asks, caching by version."""
        current = self._screening_infos(limit=1)
        return current[0] if current else None

    def screening_list(self, info: ScreeningListInfo) -> ScreeningList:
        """A stored list with its entries (tens of megabytes for a full list: read it once per version)."""
        with self._reader() as tx:
            found = tx.execute(
                "SELECT data FROM screening_lists WHERE version = ?", (info.version,)
            ).fetchone()
        entries = [ScreeningEntry.model_validate(entry) for entry in json.loads(found[0])]
        return ScreeningList(info=info, entries=entries)

    def current_screening_list(self) -> ScreeningList | None:
        """The newest loaded list with its entries, or None if none was loaded."""
        info = self.current_screening_info()
        return self.screening_list(info) if info is not None else None

    def _screening_list_breaks(self, tx: Tx) -> list[ChainBreak]:
        """Every stored screening list must be, byte for byte, the one its chained event says was loaded:
        its entries (by sha256) and its description (checksum, source, counts, load time)."""
        loaded: dict[str, StoredEvent] = {}
        for row in tx.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ? ORDER BY version", (SCREENING_STREAM,)
        ).fetchall():
            event = stored_event(row)
            if isinstance(event.data, ScreeningListLoaded):
                loaded[event.data.version] = event
        breaks = []
        for version, sha, source, loaded_at, entries, names, data in tx.execute(
            f"SELECT {', '.join(SCREENING_COLUMNS)} FROM screening_lists ORDER BY {self.SCREENING_ORDER}"
        ).fetchall():
            record = loaded.get(version)
            if record is None:
                problem = f"screening list {version} is stored but no ScreeningListLoaded event records it"
            else:
                assert isinstance(record.data, ScreeningListLoaded)
                said = record.data
                stored = (sha, source, entries, names, loaded_at)
                if said.entries_sha256 is not None and sha256(data) != said.entries_sha256:
                    problem = (
                        f"screening list {version} differs from the list that was loaded (entries sha256)"
                    )
                elif stored != (
                    said.sha256,
                    said.source,
                    said.entries,
                    said.names,
                    timestamp(record.occurred_at),
                ):
                    problem = (
                        f"screening list {version}'s description differs from its ScreeningListLoaded event"
                    )
                else:
                    continue
            at = record.version if record is not None else 0
            breaks.append(ChainBreak(stream_id=SCREENING_STREAM, version=at, problem=problem))
        return breaks


EXPORTED_EVENT_COLUMNS = tuple(column.strip() for column in EVENT_COLUMNS.split(","))
SCREENING_COLUMNS = ("version", "sha256", "source", "loaded_at", "entries", "names", "data")
INVOICE_COLUMNS = ("invoice_key", "request_id", "buyer", "buyer_key", "registered_at")


class StoreNotEmpty(RuntimeError):
    """An import into a store that already holds a log: logs are moved, never merged."""


def _once(seen: set[tuple[str, str]], kind: str, key: str) -> None:
    if (kind, key) in seen:
        raise InvalidExport(f"the export holds {kind} {key!r} twice; nothing was imported")
    seen.add((kind, key))


def _insert(tx: Tx, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
    if rows:
        marks = ", ".join("?" * len(columns))
        tx.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)


def _values(record: BaseModel, columns: Sequence[str]) -> tuple[Any, ...]:
    return tuple(getattr(record, column) for column in columns)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_batch(stream_id: str, expected_version: int, events: Sequence[Event]) -> None:
    if len({event.event_id for event in events}) != len(events):
        raise ValueError(f"a batch for {stream_id} repeats an event id")
    for offset, event in enumerate(events, start=1):
        if event.stream_id != stream_id or event.version != expected_version + offset:
            raise ValueError(
                f"event {event.event_id} is {event.stream_id}@{event.version}, "
                f"expected {stream_id}@{expected_version + offset}"
            )


def _already_stored(tx: Tx, events: Sequence[Event]) -> bool:
    """True if this exact batch is stored (a retry); ConcurrencyError if its ids collide otherwise."""
    ids = [event.event_id for event in events]
    marks = ", ".join("?" * len(ids))
    found = {
        row[1]: stored_event(row)
        for row in tx.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE event_id IN ({marks})", ids)
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


def _set_head(tx: Tx, stream_id: str, version: int, head_hash: str) -> None:
    tx.execute(
        "INSERT INTO streams (stream_id, version, head_hash) VALUES (?, ?, ?) "
        "ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, head_hash = excluded.head_hash",
        (stream_id, version, head_hash),
    )


def stored_event(row: Sequence[Any]) -> StoredEvent:
    (position, event_id, stream_id, version, type_, data, occurred_at, recorded_at) = row[:8]
    (policy_version, actor, prev_hash, hash_) = row[8:12]
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


def chain_row(row: Sequence[Any]) -> tuple[int, int, str, str, dict[str, Any]]:
    """(position, version, prev_hash, hash, chained fields) of a stored row, exactly as stored."""
    position, event_id, stream_id, version, type_, data, occurred_at, recorded_at = row[:8]
    policy_version, actor, prev_hash, hash_ = row[8:12]
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


def _upsert_projection(tx: Tx, state: RequestState) -> None:
    values = projection.row(state)
    names = ", ".join(projection.COLUMNS)
    marks = ", ".join("?" * len(projection.COLUMNS))
    updates = ", ".join(f"{c} = excluded.{c}" for c in projection.COLUMNS if c != "request_id")
    tx.execute(
        f"INSERT INTO requests ({names}) VALUES ({marks}) ON CONFLICT (request_id) DO UPDATE SET {updates}",
        tuple(values[c] for c in projection.COLUMNS),
    )


__all__ = ["EVENT_COLUMNS", "GENESIS", "SCREENING_STREAM", "SQLEventStore", "Tx", "chain_row", "stored_event"]
