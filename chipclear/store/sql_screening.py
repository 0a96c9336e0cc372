"""Restricted-party screening lists on SQL: each load stored with its chained `ScreeningListLoaded`."""

from __future__ import annotations

import json
import uuid

from chipclear.domain.events import Event, ScreeningListLoaded, StoredEvent
from chipclear.domain.screening import ScreeningEntry, ScreeningList, ScreeningListInfo
from chipclear.store.chain import ChainBreak, timestamp
from chipclear.store.sql_base import EVENT_COLUMNS, SQLBackend, Tx, sha256, stored_event
from chipclear.store.sql_log import append_in

SCREENING_STREAM = "screening-lists"
SCREENING_COLUMNS = ("version", "sha256", "source", "loaded_at", "entries", "names", "data")


class SQLScreeningLists(SQLBackend):
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
            append_in(self, tx, SCREENING_STREAM, version, [loaded])
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


def screening_list_breaks(backend: SQLBackend, tx: Tx) -> list[ChainBreak]:
    """Every stored screening list must be, byte for byte, the one its chained event says was loaded:
    its entries (by sha256) and its description (checksum, source, counts, load time)."""
    loaded: dict[str, StoredEvent] = {}
    for row in tx.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ? ORDER BY version", (SCREENING_STREAM,)
    ).fetchall():
        event = stored_event(row, backend.upcasters)
        if isinstance(event.data, ScreeningListLoaded):
            loaded[event.data.version] = event
    breaks = []
    for version, sha, source, loaded_at, entries, names, data in tx.execute(
        f"SELECT {', '.join(SCREENING_COLUMNS)} FROM screening_lists ORDER BY {backend.SCREENING_ORDER}"
    ).fetchall():
        record = loaded.get(version)
        if record is None:
            problem = f"screening list {version} is stored but no ScreeningListLoaded event records it"
        else:
            assert isinstance(record.data, ScreeningListLoaded)
            said = record.data
            stored = (sha, source, entries, names, loaded_at)
            if said.entries_sha256 is not None and sha256(data) != said.entries_sha256:
                problem = f"screening list {version} differs from the list that was loaded (entries sha256)"
            elif stored != (
                said.sha256,
                said.source,
                said.entries,
                said.names,
                timestamp(record.occurred_at),
            ):
                problem = f"screening list {version}'s description differs from its ScreeningListLoaded event"
            else:
                continue
        at = record.version if record is not None else 0
        breaks.append(ChainBreak(stream_id=SCREENING_STREAM, version=at, problem=problem))
    return breaks
