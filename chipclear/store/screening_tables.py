"""The screening lists as the store's tables keep them, and the list in force read straight from them.

The store's screening code (chipclear.store.sql_screening) writes and reads these tables through its
models. A cold `chipclear screening check` only needs to know which list is in force to open its
prepared index (chipclear.store.screening): `list_in_force` reads that from a SQLite store's file with
sqlite3, read-only, making the same checks as the store (the newest `ScreeningListLoaded` is the
stream's head and hashes to its stored hash; the `screening_lists` row describes the same list), so the
call imports neither the domain's events nor the store (docs/performance.md, "CLI start-up").
tests/store/test_screening_tables.py compares the two on every state a store can be in.

Whatever is not plainly in order (another backend, a store to migrate, an event in an older shape, a
break of any kind) is `None` from `list_in_force`: the caller then asks the store, which says what is
wrong, in the words its `ScreeningListUnavailable` uses.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from chipclear.domain.screening import ScreeningList, ScreeningListInfo
from chipclear.domain.screening_act import SCREENING_STREAM
from chipclear.store.chain import CHAINED_COLUMNS, chained_columns, link

if TYPE_CHECKING:
    from chipclear.domain.screening import ScreeningEntry

SCREENING_COLUMNS = ("version", "sha256", "source", "loaded_at", "entries", "names", "data")
# What a row says about its list, in the order `described` gives the event's account of it.
DESCRIPTION = ("sha256", "source", "entries", "names", "loaded_at")
# What a `ScreeningListLoaded` says of its list, as `ScreeningListInfo` names it (the load time is
# the event's).
LOADED_FIELDS: set[str] = {"version", "sha256", "source", "entries", "names"}
AUDIT_HINT = "screening stops until it is put right (load the list again, and see `chipclear audit verify`)"
LOADED_TYPE = "ScreeningListLoaded"
# chipclear.domain.events.ScreeningListLoaded.SCHEMA_VERSION (a test compares): an event stored in
# another shape is left to the store, which upcasts it.
LOADED_SCHEMA_VERSION = 1


class ScreeningListUnavailable(RuntimeError):
    """The list in force (the newest `ScreeningListLoaded`) is missing, altered or not vouched for by
    the chain: screening refuses rather than use another list. The message names the list."""


def entries_json(entries: list[ScreeningEntry]) -> str:
    """The entries as stored: `json.dumps` of each one's `model_dump(mode="json")`, read from its
    fields as they are (strings, None and lists of strings only), without tens of thousands of dumps."""
    return json.dumps([vars(entry) for entry in entries])


def joined_entries_json(runs: list[str]) -> str:
    """`entries_json` of the entries of `runs` one after the other, from each run's `entries_json` (of
    one entry or more): the same text, as `json.dumps` separates a list's items with ", "."""
    return "[" + ", ".join(run[1:-1] for run in runs) + "]"


class ListsInForce(Protocol):
    """What `CurrentList` asks of the store (`ScreeningLists` has it): which list is in force, and a
    list's entries when it has to prepare its index."""

    def current_screening_info(self) -> ScreeningListInfo | None: ...

    def screening_list(self, info: ScreeningListInfo) -> ScreeningList: ...


class InForce:
    """The list in force as `list_in_force` read it (None: no list was ever loaded), answering what
    `CurrentList` asks of a store; a list's entries, needed only to prepare an index no cache holds
    yet, come from the store itself (`store`, opened then)."""

    def __init__(self, info: ScreeningListInfo | None, store: Callable[[], ListsInForce]) -> None:
        self.info = info
        self._store = store

    def current_screening_info(self) -> ScreeningListInfo | None:
        return self.info

    def screening_list(self, info: ScreeningListInfo) -> ScreeningList:
        return self._store().screening_list(info)


def list_in_force(url: str, store: Callable[[], ListsInForce]) -> InForce | None:
    """The list in force in the SQLite store at `url` (a `CHIPCLEAR_EVENT_STORE` URL), read as the
    store reads it; None if this module cannot tell (see the module's docstring). `store` opens the
    store, for a list's entries."""
    from chipclear.request_rows import open_read_only

    db = open_read_only(url)
    if db is None:
        return None
    try:
        return _in_force(db, store)
    except (sqlite3.Error, ValueError, TypeError, KeyError):
        return None
    finally:
        db.close()


def _in_force(db: sqlite3.Connection, store: Callable[[], ListsInForce]) -> InForce | None:
    row = db.execute(
        "SELECT (SELECT version FROM streams WHERE stream_id = ?), "
        "(SELECT head_hash FROM streams WHERE stream_id = ?), "
        f"{', '.join(CHAINED_COLUMNS)}, prev_hash, hash "
        "FROM events WHERE stream_id = ? ORDER BY version DESC LIMIT 1",
        (SCREENING_STREAM, SCREENING_STREAM, SCREENING_STREAM),
    ).fetchone()
    if row is None:
        head = db.execute("SELECT version FROM streams WHERE stream_id = ?", (SCREENING_STREAM,)).fetchone()
        return InForce(None, store) if head is None or head[0] == 0 else None
    head_version, head_hash, chained, prev_hash, hash_ = row[0], row[1], row[2:13], row[13], row[14]
    event = dict(zip(CHAINED_COLUMNS, chained, strict=True))
    if (head_version, head_hash) != (event["version"], hash_) or link(
        prev_hash, chained_columns(chained)
    ) != hash_:
        return None
    if (event["type"], event["schema_version"]) != (LOADED_TYPE, LOADED_SCHEMA_VERSION):
        return None
    loaded = json.loads(event["data"])
    described = db.execute(
        f"SELECT {', '.join(DESCRIPTION)} FROM screening_lists WHERE version = ?", (loaded["version"],)
    ).fetchone()
    info = ScreeningListInfo(
        **{field: loaded[field] for field in LOADED_FIELDS}, loaded_at=event["occurred_at"]
    )
    expected = (info.sha256, info.source, info.entries, info.names, event["occurred_at"])
    if described is None or tuple(described) != expected:
        return None
    return InForce(info, store)
