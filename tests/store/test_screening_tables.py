"""`list_in_force` reads the list in force from a SQLite store's file as the store does, or not at all.

It lets a cold `screening check` skip importing the store (chipclear/store/screening_tables.py). Whatever
state the store is in, it must never name another list than `current_screening_info`: where the store
answers plainly it gives the same answer, and wherever the store refuses (a row or an event gone, an
edit, a break) it gives None, so that the check asks the store, which says what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest

from chipclear.domain.events import ScreeningListLoaded, schema_versions
from chipclear.domain.screening import ScreeningListInfo
from chipclear.projections import PROJECTIONS
from chipclear.store.chain import CHAINED_COLUMNS, chained_columns, link
from chipclear.store.screening_tables import (
    LOADED_SCHEMA_VERSION,
    LOADED_TYPE,
    InForce,
    ScreeningListUnavailable,
    list_in_force,
)
from chipclear.store.sql_screening import SCREENING_STREAM
from chipclear.store.sqlite import SQLiteEventStore
from chipclear.store.upcasting import UpcastError
from tests.domain.test_screening import ACME_ROWS, LOADED_AT, csl_list
from tests.store.support import RECORDER, Raw, attacker

Refused = str  # the store's ScreeningListUnavailable, by its message


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteEventStore]:
    store = SQLiteEventStore(tmp_path / "events.db", projections=PROJECTIONS, recorder=RECORDER)
    with closing(store):
        yield store


def url(store: SQLiteEventStore) -> str:
    return f"sqlite:///{store.path.resolve()}"


def the_store_says(store: SQLiteEventStore) -> ScreeningListInfo | Refused | None:
    try:
        return store.current_screening_info()
    except ScreeningListUnavailable as exc:
        return str(exc)


def same_answer(store: SQLiteEventStore) -> ScreeningListInfo | None:
    """The list both name, when the store answers plainly (read straight from the file: not None)."""
    said = the_store_says(store)
    assert not isinstance(said, str), said
    read = list_in_force(url(store), lambda: store)
    assert read is not None and read.info == said
    return said


def refused_by_both(store: SQLiteEventStore) -> None:
    """The store refuses, and the file read gives no answer (the check then asks the store)."""
    assert isinstance(the_store_says(store), str)
    assert list_in_force(url(store), lambda: store) is None


def test_the_constants_are_the_events(sqlite_store: SQLiteEventStore) -> None:
    assert ScreeningListLoaded.__name__ == LOADED_TYPE
    assert schema_versions()[LOADED_TYPE] == LOADED_SCHEMA_VERSION


def test_no_list_loaded(sqlite_store: SQLiteEventStore) -> None:
    assert same_answer(sqlite_store) is None


def test_the_newest_load_is_in_force(sqlite_store: SQLiteEventStore) -> None:
    first = csl_list(*ACME_ROWS)
    assert sqlite_store.save_screening_list(first, by="ops")
    assert same_answer(sqlite_store) == first.info
    second = csl_list(ACME_ROWS[1], loaded_at=LOADED_AT - timedelta(days=1))  # whatever its clock
    assert sqlite_store.save_screening_list(second, by="ops")
    assert same_answer(sqlite_store) == second.info


def two_lists(store: SQLiteEventStore) -> tuple[ScreeningListInfo, ScreeningListInfo]:
    first, second = csl_list(*ACME_ROWS), csl_list(ACME_ROWS[1], loaded_at=LOADED_AT + timedelta(hours=1))
    assert store.save_screening_list(first, by="ops") and store.save_screening_list(second, by="ops")
    return first.info, second.info


EDITS: dict[str, Callable[[Raw, ScreeningListInfo], object]] = {
    "the newest row deleted": lambda raw, newest: raw.execute(
        "DELETE FROM screening_lists WHERE version = ?", (newest.version,)
    ),
    "its checksum edited": lambda raw, newest: raw.execute(
        "UPDATE screening_lists SET sha256 = '0' WHERE version = ?", (newest.version,)
    ),
    "its count edited": lambda raw, newest: raw.execute(
        "UPDATE screening_lists SET entries = entries + 1 WHERE version = ?", (newest.version,)
    ),
    "its source edited": lambda raw, newest: raw.execute(
        "UPDATE screening_lists SET source = 'a trusted source' WHERE version = ?", (newest.version,)
    ),
    "its load time edited": lambda raw, newest: raw.execute(
        "UPDATE screening_lists SET loaded_at = '2020-01-01T00:00:00.000000+00:00' WHERE version = ?",
        (newest.version,),
    ),
    "the newest event deleted": lambda raw, _: raw.execute(
        "DELETE FROM events WHERE stream_id = ? AND version = 2", (SCREENING_STREAM,)
    ),
    "the newest event's list renamed": lambda raw, newest: raw.execute(
        "UPDATE events SET data = replace(data, ?, 'csl-other') WHERE stream_id = ? AND version = 2",
        (newest.version, SCREENING_STREAM),
    ),
    "every event of the stream deleted": lambda raw, _: raw.execute(
        "DELETE FROM events WHERE stream_id = ?", (SCREENING_STREAM,)
    ),
    "the stream head moved on": lambda raw, _: raw.execute(
        "UPDATE streams SET version = 3 WHERE stream_id = ?", (SCREENING_STREAM,)
    ),
}


@pytest.mark.parametrize("edit", EDITS)
def test_whatever_the_store_refuses_is_not_read(sqlite_store: SQLiteEventStore, edit: str) -> None:
    _, newest = two_lists(sqlite_store)
    with attacker(sqlite_store) as raw:
        EDITS[edit](raw, newest)
    refused_by_both(sqlite_store)


def test_a_row_no_event_records_is_not_in_force(sqlite_store: SQLiteEventStore) -> None:
    first, newest = two_lists(sqlite_store)
    raw = Raw(sqlite_store)
    with closing(raw.conn):
        raw.execute(
            "INSERT INTO screening_lists (version, sha256, source, loaded_at, entries, names, data) "
            "SELECT 'csl-smuggled', sha256, source, loaded_at, entries, names, data FROM screening_lists "
            "WHERE version = ?",
            (first.version,),
        )
    assert same_answer(sqlite_store) == newest


def test_the_head_moved_back_with_the_event_puts_the_older_list_in_force(
    sqlite_store: SQLiteEventStore,
) -> None:
    """As the store reads it (the audit names the row no event records): both say the older list."""
    first, _ = two_lists(sqlite_store)
    with attacker(sqlite_store) as raw:
        raw.execute("DELETE FROM events WHERE stream_id = ? AND version = 2", (SCREENING_STREAM,))
        (head,) = raw.execute(
            "SELECT hash FROM events WHERE stream_id = ? AND version = 1", (SCREENING_STREAM,)
        ).fetchone()
        raw.execute(
            "UPDATE streams SET version = 1, head_hash = ? WHERE stream_id = ?", (head, SCREENING_STREAM)
        )
    assert same_answer(sqlite_store) == first


def test_an_event_in_another_shape_is_left_to_the_store(sqlite_store: SQLiteEventStore) -> None:
    """A newest event of another schema version, its chain and head made whole again around it: the
    store's to upcast (which it cannot: the file read must not read it as the current shape)."""
    two_lists(sqlite_store)
    columns = ", ".join(CHAINED_COLUMNS)
    with attacker(sqlite_store) as raw:
        raw.execute(
            "UPDATE events SET schema_version = 2 WHERE stream_id = ? AND version = 2", (SCREENING_STREAM,)
        )
        *chained, prev_hash = raw.execute(
            f"SELECT {columns}, prev_hash FROM events WHERE stream_id = ? AND version = 2",
            (SCREENING_STREAM,),
        ).fetchone()
        rehashed = link(prev_hash, chained_columns(chained))
        raw.execute(
            "UPDATE events SET hash = ? WHERE stream_id = ? AND version = 2", (rehashed, SCREENING_STREAM)
        )
        raw.execute("UPDATE streams SET head_hash = ? WHERE stream_id = ?", (rehashed, SCREENING_STREAM))
    with pytest.raises(UpcastError):
        sqlite_store.current_screening_info()
    assert list_in_force(url(sqlite_store), lambda: sqlite_store) is None


@pytest.mark.parametrize(
    "where",
    [
        "postgresql://chipclear@localhost/chipclear",
        "sqlite:///{missing}",
        "sqlite:///{not_a_store}",
        "sqlite:///{store}?synchronous=sometimes",
    ],
)
def test_what_is_no_sqlite_store_at_the_current_schema_is_not_read(
    sqlite_store: SQLiteEventStore, tmp_path: Path, where: str
) -> None:
    not_a_store = tmp_path / "notes.txt"
    not_a_store.write_text("not a database")
    found = where.format(missing=tmp_path / "none.db", not_a_store=not_a_store, store=sqlite_store.path)
    assert list_in_force(found, lambda: sqlite_store) is None
    assert isinstance(list_in_force(url(sqlite_store), lambda: sqlite_store), InForce)
