"""Restricted-party screening lists on SQL: each load stored with its chained `ScreeningListLoaded`.

The list in force is the one the newest `ScreeningListLoaded` event of the `screening-lists` stream
names, never "the newest row" of `screening_lists`: the table only holds the entries. Every screening
asks which list is in force; the answer is checked against the chain (the newest event must be the
stream's head and hash to its stored hash) and against the stored row (same version, checksum, source,
counts and load time), and the entries are checked against the event's `entries_sha256` when they are
read. Anything missing or different stops screening with `ScreeningListUnavailable`, naming the list:
a deleted newest row never quietly puts an older list back in force.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from chipclear.domain.events import Event, ScreeningListLoaded, StoredEvent
from chipclear.domain.screening import DumpedList, ScreeningEntry, ScreeningList, ScreeningListInfo
from chipclear.domain.screening_act import SCREENING_STREAM as SCREENING_STREAM
from chipclear.domain.screening_act import LoadScreeningList
from chipclear.store.chain import ChainBreak, link, timestamp
from chipclear.store.protocol import ConcurrencyError
from chipclear.store.screening_tables import (
    AUDIT_HINT,
    DESCRIPTION,
    LOADED_FIELDS,
    SCREENING_COLUMNS,
    ScreeningListUnavailable,
    entries_json,
)
from chipclear.store.sql_base import EVENT_COLUMNS, SQLBackend, Tx, chain_row, sha256, stored_event
from chipclear.store.sql_log import append_in


def loaded_by(event: StoredEvent) -> ScreeningListLoaded:
    assert isinstance(event.data, ScreeningListLoaded)
    return event.data


def described(event: StoredEvent) -> tuple[Any, ...]:
    """What a `screening_lists` row must say about the list `event` loaded, in `DESCRIPTION` order."""
    loaded = loaded_by(event)
    return (loaded.sha256, loaded.source, loaded.entries, loaded.names, timestamp(event.occurred_at))


def info_of(event: StoredEvent) -> ScreeningListInfo:
    described = loaded_by(event).model_dump(include=LOADED_FIELDS)
    return ScreeningListInfo(**described, loaded_at=event.occurred_at)


def loaded_events(backend: SQLBackend, tx: Tx) -> list[StoredEvent]:
    """Every `ScreeningListLoaded` of the stream, oldest first (one per load: a short stream)."""
    rows = tx.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ? ORDER BY version", (SCREENING_STREAM,)
    ).fetchall()
    events = [stored_event(row, backend.upcasters) for row in rows]
    return [event for event in events if isinstance(event.data, ScreeningListLoaded)]


def _named(event: StoredEvent) -> str:
    loaded = loaded_by(event)
    return f"{loaded.version} (sha256 {loaded.sha256[:16]}…, event {event.version} of {SCREENING_STREAM})"


class SQLScreeningLists(SQLBackend):
    def save_screening_list(self, listing: ScreeningList | DumpedList, by: LoadScreeningList | str) -> bool:
        """Make `listing` current, with its `ScreeningListLoaded` event, in one transaction.

        False (and nothing written) when the list in force already has the same checksum and is stored;
        a list in force whose row is missing is loaded again under a new version. `by` is the person's
        signed load, kept on the event: it was signed for the stream at a version, and if the stream has
        moved on since, nothing is written (ConcurrencyError); or, unsigned, only who loaded it. A
        `DumpedList` is stored as its entries were dumped (`entries_json`), unread.
        """
        if isinstance(by, str):
            actor, act, expected_version = by, None, None
        else:
            assert by.signature is not None, "a load act is stored signed"
            actor, act, expected_version = by.actor, by.model_dump(mode="json"), by.signature.expected_version
        info = listing.info
        assert info.loaded_at is not None, "only a loaded list (with a load time) is stored"
        with self._transaction() as tx:
            # The stream is taken first: two operators loading at once are served one after the other.
            version, _ = self._lock_stream(tx, SCREENING_STREAM)
            if expected_version is not None and version != expected_version:
                raise ConcurrencyError(
                    f"{SCREENING_STREAM} moved on while the load was signed (version {expected_version}, "
                    f"now {version}); nothing was loaded: load it again"
                )
            events = loaded_events(self, tx)
            if events:
                in_force = loaded_by(events[-1])
                stored = tx.execute(
                    "SELECT sha256 FROM screening_lists WHERE version = ?", (in_force.version,)
                ).fetchone()
                if in_force.sha256 == info.sha256 and stored is not None and stored[0] == info.sha256:
                    return False
            data = listing.entries_json if isinstance(listing, DumpedList) else entries_json(listing.entries)
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
                    **info.model_dump(include=LOADED_FIELDS), entries_sha256=sha256(data)
                ),
                occurred_at=info.loaded_at,
                policy_version="screening",
                actor=actor,
                act=act,
            )
            append_in(self, tx, SCREENING_STREAM, version, [loaded])
            return True

    def screening_list_versions(self) -> list[ScreeningListInfo]:
        """Every list ever loaded, as its event records it, newest (the one in force) first."""
        with self._reader() as tx:
            return [info_of(event) for event in reversed(loaded_events(self, tx))]

    def current_screening_info(self) -> ScreeningListInfo | None:
        """The list in force (no entries), or None if none was ever loaded: every screening asks.

        Two statements, no entries read: the newest event with the stream head, then its row.
        """
        with self._reader() as tx:
            newest = self._newest_loaded(tx)
            if newest is None:
                return None
            row = tx.execute(
                f"SELECT {', '.join(DESCRIPTION)} FROM screening_lists WHERE version = ?",
                (loaded_by(newest).version,),
            ).fetchone()
        if row is None:
            raise ScreeningListUnavailable(
                f"the screening list in force, {_named(newest)}, is missing from the screening_lists "
                f"table; {AUDIT_HINT}"
            )
        if tuple(row) != described(newest):
            raise ScreeningListUnavailable(
                f"the stored description of the screening list in force, {_named(newest)}, differs from "
                f"its ScreeningListLoaded event; {AUDIT_HINT}"
            )
        return info_of(newest)

    def _newest_loaded(self, tx: Tx) -> StoredEvent | None:
        """The stream's newest event, vouched for by the chain: it is the head and hashes to its hash."""
        # The head first, so the event's columns keep their `EVENT_COLUMNS` places in the row.
        row = tx.execute(
            "SELECT (SELECT version FROM streams WHERE stream_id = ?) AS head_version, "
            f"(SELECT head_hash FROM streams WHERE stream_id = ?) AS head_hash, {EVENT_COLUMNS} "
            "FROM events WHERE stream_id = ? ORDER BY events.version DESC LIMIT 1",
            (SCREENING_STREAM, SCREENING_STREAM, SCREENING_STREAM),
        ).fetchone()
        if row is None:
            head = tx.execute(
                "SELECT version FROM streams WHERE stream_id = ?", (SCREENING_STREAM,)
            ).fetchone()
            if head is not None and head[0] > 0:
                raise ScreeningListUnavailable(
                    f"stream {SCREENING_STREAM} is at version {head[0]} but none of its events is stored, "
                    f"so the list in force is unknown; {AUDIT_HINT}"
                )
            return None
        head_version, head_hash, event_row = row[0], row[1], row[2:]
        _, version, prev_hash, hash_, fields = chain_row(event_row)
        if (head_version, head_hash) != (version, hash_) or link(prev_hash, fields) != hash_:
            raise ScreeningListUnavailable(
                f"the newest event of stream {SCREENING_STREAM} (version {version}) is not the one the "
                f"chain vouches for (stream head: version {head_version}), so the list in force is "
                f"unknown; {AUDIT_HINT}"
            )
        event = stored_event(event_row, self.upcasters)
        if not isinstance(event.data, ScreeningListLoaded):
            raise ScreeningListUnavailable(
                f"the newest event of stream {SCREENING_STREAM} is a {event.type}, not a "
                f"ScreeningListLoaded; {AUDIT_HINT}"
            )
        return event

    def screening_list(self, info: ScreeningListInfo) -> ScreeningList:
        """A stored list with its entries, checked against the event that loaded it (tens of megabytes
        for a full list: read it once per version)."""
        with self._reader() as tx:
            found = tx.execute(
                "SELECT sha256, data FROM screening_lists WHERE version = ?", (info.version,)
            ).fetchone()
            events = [e for e in loaded_events(self, tx) if loaded_by(e).version == info.version]
        what = f"screening list {info.version} (sha256 {info.sha256[:16]}…)"
        if found is None:
            raise ScreeningListUnavailable(f"{what} is missing from the screening_lists table; {AUDIT_HINT}")
        stored_sha, data = found
        if not events:
            raise ScreeningListUnavailable(f"{what} is stored but no ScreeningListLoaded event records it")
        loaded = loaded_by(events[-1])
        if stored_sha != info.sha256 or loaded.sha256 != info.sha256:
            raise ScreeningListUnavailable(f"{what} is stored with another checksum; {AUDIT_HINT}")
        if loaded.entries_sha256 is not None and sha256(data) != loaded.entries_sha256:
            raise ScreeningListUnavailable(
                f"{what}: the stored entries differ from the list that was loaded (entries sha256); "
                f"{AUDIT_HINT}"
            )
        entries = [ScreeningEntry.model_validate(entry) for entry in json.loads(data)]
        return ScreeningList(info=info, entries=entries)

    def current_screening_list(self) -> ScreeningList | None:
        """The list in force with its entries, or None if none was loaded."""
        info = self.current_screening_info()
        return self.screening_list(info) if info is not None else None


def screening_list_breaks(backend: SQLBackend, tx: Tx) -> list[ChainBreak]:
    """Every stored screening list must be, byte for byte, the one its chained event says was loaded:
    its entries (by sha256) and its description (checksum, source, counts, load time).

    A list an event records but the table lacks is not a break here: an export in CSV carries the events
    only. `reconcile` names it, and screening refuses to run while it is the list in force."""
    loaded = {loaded_by(event).version: event for event in loaded_events(backend, tx)}
    breaks = []
    for version, sha, source, loaded_at, entries, names, data in tx.execute(
        f"SELECT {', '.join(SCREENING_COLUMNS)} FROM screening_lists ORDER BY {backend.SCREENING_ORDER}"
    ).fetchall():
        record = loaded.get(version)
        if record is None:
            problem = f"screening list {version} is stored but no ScreeningListLoaded event records it"
        else:
            said = loaded_by(record)
            if said.entries_sha256 is not None and sha256(data) != said.entries_sha256:
                problem = f"screening list {version} differs from the list that was loaded (entries sha256)"
            elif (sha, source, entries, names, loaded_at) != described(record):
                problem = f"screening list {version}'s description differs from its ScreeningListLoaded event"
            else:
                continue
        at = record.version if record is not None else 0
        breaks.append(ChainBreak(stream_id=SCREENING_STREAM, version=at, problem=problem))
    return breaks
