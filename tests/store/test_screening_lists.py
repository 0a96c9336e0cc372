"""The screening lists' conformance suite: a loaded list becomes current with its chained event, and
`verify` proves the stored list is the one that was loaded. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from contextlib import closing
from datetime import timedelta

import pytest

from chipclear.domain.events import ScreeningListLoaded
from chipclear.store.protocol import EventStore
from chipclear.store.screening import CurrentList
from chipclear.store.sql_base import sha256
from chipclear.store.sql_screening import SCREENING_STREAM
from tests.domain.test_screening import ACME_ROWS, LOADED_AT, csl_list
from tests.store.support import Raw, open_handle


def test_a_store_without_lists(event_store: EventStore) -> None:
    assert event_store.current_screening_list() is None
    assert event_store.current_screening_info() is None
    assert event_store.screening_list_versions() == []
    assert event_store.read_stream(SCREENING_STREAM) == []


def test_a_saved_list_is_current_and_its_event_vouches_for_it(event_store: EventStore) -> None:
    acme = csl_list(*ACME_ROWS)
    assert event_store.save_screening_list(acme, actor="ops@example.com") is True

    assert event_store.current_screening_list() == acme
    assert event_store.screening_list_versions() == [acme.info]
    [event] = event_store.read_stream(SCREENING_STREAM)
    # The event vouches for the entries exactly as stored (what `audit verify` checks them against).
    raw = Raw(event_store)
    with closing(raw.conn):
        (data,) = raw.execute(
            "SELECT data FROM screening_lists WHERE version = ?", (acme.info.version,)
        ).fetchone()
    assert event.data == ScreeningListLoaded(
        version=acme.info.version,
        sha256=acme.info.sha256,
        source="test list",
        entries=2,
        names=4,
        entries_sha256=sha256(data),
    )
    assert (event.version, event.actor, event.occurred_at) == (1, "ops@example.com", LOADED_AT)
    assert event_store.verify().ok


def test_saving_the_same_content_again_writes_nothing(event_store: EventStore) -> None:
    acme = csl_list(*ACME_ROWS)
    assert event_store.save_screening_list(acme, actor="ops")
    assert event_store.save_screening_list(acme, actor="ops") is False
    # Same file, read again a day later: a different version string, the same checksum.
    again = csl_list(*ACME_ROWS, loaded_at=LOADED_AT + timedelta(days=1))
    assert event_store.save_screening_list(again, actor="ops") is False
    assert event_store.screening_list_versions() == [acme.info]
    assert len(event_store.read_stream(SCREENING_STREAM)) == 1


def test_the_newest_load_is_current_whatever_its_clock(event_store: EventStore) -> None:
    first = csl_list(*ACME_ROWS)
    second = csl_list(ACME_ROWS[1], loaded_at=LOADED_AT - timedelta(minutes=5))  # a host running behind
    assert event_store.save_screening_list(first, actor="host-a")
    assert event_store.save_screening_list(second, actor="host-b")

    assert event_store.current_screening_list() == second
    assert event_store.current_screening_info() == second.info
    assert event_store.screening_list_versions() == [second.info, first.info]
    assert event_store.screening_list(first.info) == first
    # Going back to the first content is a new load, and it becomes current.
    back = csl_list(*ACME_ROWS, loaded_at=LOADED_AT + timedelta(hours=2))
    assert event_store.save_screening_list(back, actor="ops")
    assert [info.version for info in event_store.screening_list_versions()] == [
        back.info.version,
        second.info.version,
        first.info.version,
    ]
    events = event_store.read_stream(SCREENING_STREAM)
    assert [(e.version, e.data.version) for e in events] == [  # type: ignore[union-attr]
        (1, first.info.version),
        (2, second.info.version),
        (3, back.info.version),
    ]
    report = event_store.verify()
    assert report.ok and report.events_checked == 3


def test_lists_are_shared_by_every_handle(event_store: EventStore) -> None:
    acme = csl_list(*ACME_ROWS)
    event_store.save_screening_list(acme, actor="ops")
    with closing(open_handle(event_store)) as other:
        assert other.current_screening_list() == acme
        assert other.save_screening_list(acme, actor="ops") is False
        index = CurrentList(other).index()
        assert index.info == acme.info and len(index.entries) == 2


def test_verify_finds_an_edited_list(event_store: EventStore) -> None:
    """The list in force decides who is held: an edit to the stored entries must not go unnoticed."""
    acme = csl_list(*ACME_ROWS)
    assert event_store.save_screening_list(acme, actor="ops")
    raw = Raw(event_store)
    with closing(raw.conn):
        raw.execute(
            "UPDATE screening_lists SET data = ? WHERE version = ?", (json.dumps([]), acme.info.version)
        )
    [broken] = event_store.verify().breaks
    assert (broken.stream_id, broken.version) == (SCREENING_STREAM, 1)
    assert "differs from the list that was loaded" in broken.problem


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("source", "'a trusted source'"),
        ("entries", "entries + 1"),
        ("sha256", "'0'"),
        ("loaded_at", "'2020'"),
    ],
)
def test_verify_finds_an_edited_description(event_store: EventStore, column: str, value: str) -> None:
    """What a list says about itself (its source, its size, when it was loaded) is checked too."""
    acme = csl_list(*ACME_ROWS)
    assert event_store.save_screening_list(acme, actor="ops")
    raw = Raw(event_store)
    with closing(raw.conn):
        raw.execute(f"UPDATE screening_lists SET {column} = {value} WHERE version = ?", (acme.info.version,))
    [broken] = event_store.verify().breaks
    assert (broken.stream_id, broken.version) == (SCREENING_STREAM, 1)
    assert "description differs from its ScreeningListLoaded event" in broken.problem


def test_verify_finds_a_list_no_event_records(event_store: EventStore) -> None:
    acme = csl_list(*ACME_ROWS)
    assert event_store.save_screening_list(acme, actor="ops")
    raw = Raw(event_store)
    with closing(raw.conn):
        raw.execute(
            "INSERT INTO screening_lists (version, sha256, source, loaded_at, entries, names, data) "
            "SELECT 'smuggled', sha256, source, loaded_at, entries, names, data FROM screening_lists"
        )
    [broken] = event_store.verify().breaks
    assert (broken.stream_id, broken.version) == (SCREENING_STREAM, 0)
    assert broken.problem == "screening list smuggled is stored but no ScreeningListLoaded event records it"
