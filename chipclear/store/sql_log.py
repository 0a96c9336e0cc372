"""The event log on SQL: append with optimistic concurrency and idempotent retries, read, follow."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

from chipclear.domain.events import Event, StoredEvent
from chipclear.store.chain import canonical, chained_bytes, link, timestamp
from chipclear.store.errors import ConcurrencyError
from chipclear.store.follow import InOrderFollower, LogFollower
from chipclear.store.protocol import PAGE, AppendResult
from chipclear.store.sql_base import EVENT_COLUMNS, SQLBackend, Tx, set_head, stored_event
from chipclear.store.sql_projection import project

INSERT_EVENTS = (
    "INSERT INTO events (event_id, stream_id, version, type, schema_version, data, occurred_at,"
    " recorded_at, policy_version, actor, act, prev_hash, hash, sealed_by, seal)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING"
)


def append_in(
    backend: SQLBackend, tx: Tx, stream_id: str, expected_version: int, events: Sequence[Event]
) -> AppendResult:
    """Append inside `tx`, which the caller commits: stream, head and projections move together.

    The common case costs the stream lock, one INSERT and the head: the existence check is folded into
    the insert (`ON CONFLICT (event_id) DO NOTHING`, then its row count), and stored events are read back only
    when the stream has moved on (a retry, or a lost race) or an event id is already taken.
    """
    current, prev_hash = backend._lock_stream(tx, stream_id)
    if current != expected_version:
        if _already_stored(backend, tx, events):
            return AppendResult(stream_id=stream_id, version=events[-1].version, written=False)
        raise ConcurrencyError(f"stream {stream_id} is at version {current}, expected {expected_version}")
    sealer = backend.sealer()  # before anything is written: an unsealed event is never stored
    recorded_at = timestamp(datetime.now(UTC))
    current_version = backend.upcasters.current
    rows = []
    for event in events:
        # One encoding per event: the texts stored are the bytes hashed.
        data = canonical(event.data_json())
        act = None if event.act is None else canonical(event.act)
        occurred_at = timestamp(event.occurred_at)
        schema_version = current_version(event.type)
        chained = chained_bytes(
            event_id=event.event_id,
            stream_id=stream_id,
            version=event.version,
            type_=event.type,
            schema_version=schema_version,
            data=data,
            occurred_at=occurred_at,
            recorded_at=recorded_at,
            policy_version=event.policy_version,
            actor=event.actor,
            act=act,
        )
        prev_hash, previous = link(prev_hash, chained), prev_hash
        # One Ed25519 signature per event (tens of microseconds), no extra round trip: the seal goes
        # into the same INSERT as the event.
        rows.append(
            (
                event.event_id,
                stream_id,
                event.version,
                event.type,
                schema_version,
                data,
                occurred_at,
                recorded_at,
                event.policy_version,
                event.actor,
                act,
                previous,
                prev_hash,
                sealer.public,
                sealer.seal(prev_hash),
            )
        )
    if tx.executemany(INSERT_EVENTS, rows).rowcount != len(rows):
        # An event id is stored already. Not this batch in this stream (the stream was at
        # `expected_version`, which a stored copy would have moved on): `_already_stored` names the
        # event that collides, and raising rolls the rest back.
        _already_stored(backend, tx, events)
        raise ConcurrencyError(f"a batch for {stream_id} holds an event id that is stored already")
    set_head(tx, stream_id, events[-1].version, prev_hash)
    project(backend, tx, stream_id, events)
    return AppendResult(stream_id=stream_id, version=events[-1].version, written=True)


def check_batch(stream_id: str, expected_version: int, events: Sequence[Event]) -> None:
    if len({event.event_id for event in events}) != len(events):
        raise ValueError(f"a batch for {stream_id} repeats an event id")
    for offset, event in enumerate(events, start=1):
        if event.stream_id != stream_id or event.version != expected_version + offset:
            raise ValueError(
                f"event {event.event_id} is {event.stream_id}@{event.version}, "
                f"expected {stream_id}@{expected_version + offset}"
            )


def _already_stored(backend: SQLBackend, tx: Tx, events: Sequence[Event]) -> bool:
    """True if this exact batch is stored (a retry); ConcurrencyError if its ids collide otherwise."""
    ids = [event.event_id for event in events]
    marks = ", ".join("?" * len(ids))
    found = {
        row[1]: stored_event(row, backend.upcasters)
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
        and stored.act == event.act
    )


class SQLEventLog(SQLBackend):
    def append(self, stream_id: str, expected_version: int, events: Sequence[Event]) -> AppendResult:
        if not events:
            return AppendResult(stream_id=stream_id, version=expected_version, written=False)
        check_batch(stream_id, expected_version, events)
        with self._transaction() as tx:
            return append_in(self, tx, stream_id, expected_version, events)

    def read_stream(self, stream_id: str) -> list[StoredEvent]:
        with self._reader() as tx:
            cursor = tx.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ? ORDER BY version", (stream_id,)
            )
            return [stored_event(row, self.upcasters) for row in cursor]

    def read_all(self, after_position: int = 0, types: Sequence[str] | None = None) -> Iterator[StoredEvent]:
        """Every event committed now after `after_position`, in position order, page by page; `types`:
        only events of these types (chosen by the database: the others are never parsed).

        A one-off read. To follow a log that writers are still appending to, use `follow`: on
        PostgreSQL a lower position can commit after a higher one.
        """
        while True:
            page = self.read_page(after_position, types=types)
            yield from page
            if len(page) < PAGE:
                return
            after_position = page[-1].position

    def read_page(
        self, after_position: int, limit: int = PAGE, types: Sequence[str] | None = None
    ) -> list[StoredEvent]:
        if types is not None and not types:
            return []
        only, params = "", [after_position, *(types or ())]
        if types is not None:
            only = f" AND type IN ({', '.join('?' * len(types))})"
        with self._reader() as tx:
            cursor = tx.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE position > ?{only} ORDER BY position LIMIT ?",
                (*params, limit),
            )
            return [stored_event(row, self.upcasters) for row in cursor]

    def follow(self, after_position: int = 0) -> LogFollower:
        """A reader that hands out each event once, in position order, as it becomes final."""
        return InOrderFollower(self, after_position)
