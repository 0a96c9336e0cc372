"""The screening lists' conformance suite: a loaded list becomes current with its chained event,
`verify` proves the stored list is the one that was loaded, and the screening activity's index follows
the list in force. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import re
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest

from activities.screening import ScreeningActivities
from chipclear.domain.events import PartiesScreened, ScreeningListLoaded
from chipclear.domain.screening import (
    ScreenedParty,
    ScreeningEntry,
    ScreeningList,
    ScreeningListInfo,
    bundled_list,
)
from chipclear.store.protocol import EventStore
from chipclear.store.reconcile import reconcile
from chipclear.store.screening import CurrentList, IndexCache
from chipclear.store.screening_tables import ScreeningListUnavailable, entries_json
from chipclear.store.sql_base import sha256
from chipclear.store.sql_screening import SCREENING_STREAM
from chipclear.store.upcasting import UPCASTERS
from tests.domain.test_screening import ACME_ROWS, HUAWEI, LOADED_AT, csl_list, entry_names
from tests.store.support import Raw, attacker, open_handle


def test_a_store_without_lists(event_store: EventStore) -> None:
    assert event_store.current_screening_list() is None
    assert event_store.current_screening_info() is None
    assert event_store.screening_list_versions() == []
    assert event_store.read_stream(SCREENING_STREAM) == []


def test_a_saved_list_is_current_and_its_event_vouches_for_it(event_store: EventStore) -> None:
    acme = csl_list(*ACME_ROWS)
    assert event_store.save_screening_list(acme, by="ops@example.com") is True

    assert event_store.current_screening_list() == acme
    assert event_store.screening_list_versions() == [acme.info]
    [event] = event_store.read_stream(SCREENING_STREAM)
    assert event.type == "ScreeningListLoaded"
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
    assert event_store.save_screening_list(acme, by="ops")
    assert event_store.save_screening_list(acme, by="ops") is False
    # Same file, read again a day later: a different version string, the same checksum.
    again = csl_list(*ACME_ROWS, loaded_at=LOADED_AT + timedelta(days=1))
    assert event_store.save_screening_list(again, by="ops") is False
    assert event_store.screening_list_versions() == [acme.info]
    assert len(event_store.read_stream(SCREENING_STREAM)) == 1


def test_the_newest_load_is_current_whatever_its_clock(event_store: EventStore) -> None:
    first = csl_list(*ACME_ROWS)
    second = csl_list(ACME_ROWS[1], loaded_at=LOADED_AT - timedelta(minutes=5))  # a host running behind
    assert event_store.save_screening_list(first, by="host-a")
    assert event_store.save_screening_list(second, by="host-b")

    assert event_store.current_screening_list() == second
    assert event_store.current_screening_info() == second.info
    assert event_store.screening_list_versions() == [second.info, first.info]
    assert event_store.screening_list(first.info) == first
    # Going back to the first content is a new load, and it becomes current.
    back = csl_list(*ACME_ROWS, loaded_at=LOADED_AT + timedelta(hours=2))
    assert event_store.save_screening_list(back, by="ops")
    assert event_store.current_screening_list() == back
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
    event_store.save_screening_list(acme, by="ops")
    with closing(open_handle(event_store)) as other:
        assert other.current_screening_list() == acme
        assert other.screening_list_versions() == [acme.info]
        assert len(other.read_stream(SCREENING_STREAM)) == 1
        assert other.verify().ok
        assert other.save_screening_list(acme, by="ops") is False
        index = CurrentList(other).index()
        assert index.info == acme.info and index.entries == 2


def test_verify_finds_an_edited_list(event_store: EventStore) -> None:
    """The list in force decides who is held: an edit to the stored entries must not go unnoticed."""
    acme = csl_list(*ACME_ROWS)
    assert event_store.save_screening_list(acme, by="ops")
    assert event_store.verify().ok
    raw = Raw(event_store)
    with closing(raw.conn):
        raw.execute(
            "UPDATE screening_lists SET data = ? WHERE version = ?", (json.dumps([]), acme.info.version)
        )
    report = event_store.verify()
    assert not report.ok
    [broken] = report.breaks
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
    assert event_store.save_screening_list(acme, by="ops")
    raw = Raw(event_store)
    with closing(raw.conn):
        raw.execute(f"UPDATE screening_lists SET {column} = {value} WHERE version = ?", (acme.info.version,))
    [broken] = event_store.verify().breaks
    assert (broken.stream_id, broken.version) == (SCREENING_STREAM, 1)
    assert "description differs from its ScreeningListLoaded event" in broken.problem


def test_verify_finds_a_list_no_event_records(event_store: EventStore) -> None:
    acme = csl_list(*ACME_ROWS)
    assert event_store.save_screening_list(acme, by="ops")
    raw = Raw(event_store)
    with closing(raw.conn):
        raw.execute(
            "INSERT INTO screening_lists (version, sha256, source, loaded_at, entries, names, data) "
            "SELECT 'smuggled', sha256, source, loaded_at, entries, names, data FROM screening_lists"
        )
    [broken] = event_store.verify().breaks
    assert (broken.stream_id, broken.version) == (SCREENING_STREAM, 0)
    assert broken.problem == "screening list smuggled is stored but no ScreeningListLoaded event records it"


# -- the screening activity's index: the list in force ------------------------------------------------


def test_the_activity_uses_the_bundled_sample_until_a_list_is_loaded(event_store: EventStore) -> None:
    activities = ScreeningActivities(event_store)
    index = activities.index()
    assert index.info.loaded_at is None
    assert index.info.version.startswith("sample-")
    assert index.info == bundled_list().info
    assert entry_names(index, "Huawei") == [HUAWEI]
    assert activities.index() is index  # cached while nothing changes


def test_the_activity_switches_to_a_loaded_list(event_store: EventStore) -> None:
    activities = ScreeningActivities(event_store)
    sample_index = activities.index()
    acme = csl_list(*ACME_ROWS)
    event_store.save_screening_list(acme, by="ops")

    index = activities.index()
    assert index is not sample_index
    assert index.info == acme.info
    assert entry_names(index, "Acme Quantum Devices") == ["Acme Quantum Devices Co., Ltd."]
    assert entry_names(index, "Huawei Technologies Co., Ltd.") == []
    # Cached by version: the store answers with an empty list for the known version, and the index
    # keeps its entries.
    again = activities.index()
    assert again is index
    assert again.entries == 2
    assert entry_names(again, "Zenith Trading") == ["Zenith Trading LLC"]

    newer = csl_list(ACME_ROWS[1], loaded_at=LOADED_AT + timedelta(hours=1))
    event_store.save_screening_list(newer, by="ops")
    latest = activities.index()
    assert latest.info == newer.info
    assert entry_names(latest, "Acme Quantum Devices") == []


def test_the_activity_starts_with_the_stored_list(event_store: EventStore) -> None:
    acme = csl_list(*ACME_ROWS)
    event_store.save_screening_list(acme, by="ops")
    index = ScreeningActivities(event_store).index()
    assert index.info == acme.info
    assert entry_names(index, "SMIC") == []


def test_the_list_in_force_is_read_in_full_once_per_version(
    event_store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every screening asks which list is in force; only a new version is read and indexed again."""
    reads: list[str] = []
    read_in_full = event_store.screening_list

    def counted(info: ScreeningListInfo) -> ScreeningList:
        reads.append(info.version)
        return read_in_full(info)

    monkeypatch.setattr(event_store, "screening_list", counted)
    current = CurrentList(event_store)
    assert current.index().info.version.startswith("sample-")  # nothing loaded: the bundled sample
    acme = csl_list(*ACME_ROWS)
    assert event_store.save_screening_list(acme, by="ops")
    first = current.index()
    assert first.info == acme.info and current.index() is first and current.index() is first
    second = csl_list(ACME_ROWS[1], loaded_at=LOADED_AT + timedelta(hours=1))
    assert event_store.save_screening_list(second, by="ops")
    assert current.index().info == second.info
    assert reads == [acme.info.version, second.info.version]


def test_entries_are_stored_as_each_ones_model_dump() -> None:
    """The stored entries (and so their sha256 in the event) are the JSON of every entry's
    `model_dump(mode="json")`, every field set, as they always were."""
    every_field = ScreeningEntry(
        **{
            name: ["one", "two \u00e9"] if field.annotation == list[str] else f'{name} \u4e2d"\\'
            for name, field in ScreeningEntry.model_fields.items()
        }
    )
    entries = [*bundled_list().entries, every_field, ScreeningEntry(source="EL", name="Acme")]
    assert entries_json(entries) == json.dumps([entry.model_dump(mode="json") for entry in entries])


# -- the prepared index, cached on disk across processes ------------------------------------------------


def test_a_cached_index_answers_as_the_one_in_memory(event_store: EventStore, tmp_path: Path) -> None:
    """A CLI call opens the index a former call (or the load) prepared, and screens exactly as the
    worker's in-memory index does, explanations included."""
    acme = csl_list(*ACME_ROWS)
    event_store.save_screening_list(acme, by="ops")
    cache = IndexCache(tmp_path / "cache")
    first = CurrentList(event_store, cache).index()
    [written] = list((tmp_path / "cache").glob("screening-*.sqlite"))  # and its part
    assert written.name.startswith(f"screening-{acme.info.sha256[:24]}-")

    reads: list[ScreeningListInfo] = []
    later = CurrentList(event_store, cache)
    later.store = Counted(event_store, reads)
    opened = later.index()
    assert reads == []  # nothing read in full: the cache answered
    assert opened.info == acme.info and opened.entries == 2
    for name in ("ACME QUANTUM Co Ltd", "Zenith Tr\u0430ding", "阿克米量子器件", "Nobody Ltd"):
        party = ScreenedParty(role="buyer", name=name)
        assert opened.match(party, 90) == first.match(party, 90), name
    assert [m.entry_id for m in opened.match(ScreenedParty(role="buyer", name="Acme Quantum"), 90)] == ["t-1"]


def test_an_unreadable_cache_is_prepared_again(event_store: EventStore, tmp_path: Path) -> None:
    acme = csl_list(*ACME_ROWS)
    event_store.save_screening_list(acme, by="ops")
    cache = IndexCache(tmp_path)
    cache.path(acme.info).write_bytes(b"not a database")
    index = CurrentList(event_store, cache).index()
    assert entry_names(index, "Acme Quantum") == ["Acme Quantum Devices Co., Ltd."]
    assert cache.open(acme.info) is not None  # written again, whole
    path = cache.path(acme.info)  # and nothing beside it but its one part
    assert sorted(tmp_path.glob("screening-*")) == sorted([path, *cache.part_paths(acme.info.sha256, 1)])


class Counted:
    """The store, counting full reads of a list."""

    def __init__(self, store: EventStore, reads: list[ScreeningListInfo]) -> None:
        self._store, self._reads = store, reads

    def current_screening_info(self) -> ScreeningListInfo | None:
        return self._store.current_screening_info()

    def screening_list(self, info: ScreeningListInfo) -> ScreeningList:
        self._reads.append(info)
        return self._store.screening_list(info)


# -- the list in force is the newest event's, whatever the table holds --------------------------------


@pytest.fixture
def two_lists(event_store: EventStore) -> tuple[ScreeningList, ScreeningList]:
    first, second = csl_list(*ACME_ROWS), csl_list(ACME_ROWS[1], loaded_at=LOADED_AT + timedelta(hours=1))
    assert event_store.save_screening_list(first, by="ops")
    assert event_store.save_screening_list(second, by="ops")
    assert event_store.current_screening_info() == second.info
    return first, second


def test_deleting_the_newest_row_does_not_put_an_older_list_in_force(
    event_store: EventStore, two_lists: tuple[ScreeningList, ScreeningList]
) -> None:
    first, second = two_lists
    raw = Raw(event_store)
    with closing(raw.conn):
        raw.execute("DELETE FROM screening_lists WHERE version = ?", (second.info.version,))
    named = [f"screening list in force, {second.info.version} (sha256 {second.info.sha256[:16]}"]
    for ask in (event_store.current_screening_info, event_store.current_screening_list):
        with pytest.raises(ScreeningListUnavailable, match=re.escape(named[0])) as refused:
            ask()
        assert "missing from the screening_lists table" in str(refused.value)
    # The screening activity refuses to screen rather than fall back to the first list.
    with pytest.raises(ScreeningListUnavailable, match=re.escape(second.info.version)):
        ScreeningActivities(event_store).index()
    # The record still says which list is in force; the older one is intact and readable by name.
    assert event_store.screening_list_versions() == [second.info, first.info]
    assert event_store.screening_list(first.info) == first
    # The audit names it (the chain itself is whole: an export in CSV carries no lists either).
    assert event_store.verify().ok
    [missing] = reconcile(event_store)
    assert (missing.table, missing.key) == ("screening_lists", second.info.version)
    assert "(the list in force) missing" in missing.problem
    # Loading the same file again puts it right: a new load, in force, with its own event.
    again = csl_list(ACME_ROWS[1], loaded_at=LOADED_AT + timedelta(hours=2))
    assert event_store.save_screening_list(again, by="ops") is True
    assert event_store.current_screening_list() == again
    assert len(event_store.read_stream(SCREENING_STREAM)) == 3


def test_a_row_no_event_records_is_never_in_force(
    event_store: EventStore, two_lists: tuple[ScreeningList, ScreeningList]
) -> None:
    """A row slipped into the table (the newest by insertion order) is not a load."""
    first, second = two_lists
    raw = Raw(event_store)
    with closing(raw.conn):
        raw.execute(
            "INSERT INTO screening_lists (version, sha256, source, loaded_at, entries, names, data) "
            "SELECT 'csl-smuggled', sha256, source, loaded_at, entries, names, data FROM screening_lists "
            "WHERE version = ?",
            (first.info.version,),
        )
    assert event_store.current_screening_list() == second
    assert event_store.screening_list_versions() == [second.info, first.info]
    assert not event_store.verify().ok


def test_an_edited_list_in_force_is_refused_when_read(
    event_store: EventStore, two_lists: tuple[ScreeningList, ScreeningList]
) -> None:
    _, second = two_lists
    raw = Raw(event_store)
    with closing(raw.conn):
        raw.execute("UPDATE screening_lists SET data = ? WHERE version = ?", ("[]", second.info.version))
    with pytest.raises(ScreeningListUnavailable, match="stored entries differ from the list that was loaded"):
        event_store.current_screening_list()
    with pytest.raises(ScreeningListUnavailable, match=re.escape(second.info.version)):
        CurrentList(event_store).index()


@pytest.mark.parametrize(
    ("column", "value"),
    [("sha256", "'0'"), ("entries", "entries + 1"), ("source", "'a trusted source'")],
)
def test_an_edited_description_of_the_list_in_force_is_refused(
    event_store: EventStore, two_lists: tuple[ScreeningList, ScreeningList], column: str, value: str
) -> None:
    _, second = two_lists
    raw = Raw(event_store)
    with closing(raw.conn):
        raw.execute(
            f"UPDATE screening_lists SET {column} = {value} WHERE version = ?", (second.info.version,)
        )
    with pytest.raises(ScreeningListUnavailable, match="differs from its ScreeningListLoaded event"):
        event_store.current_screening_info()


def test_removing_the_newest_screening_list_loaded_is_a_chain_break(
    event_store: EventStore, two_lists: tuple[ScreeningList, ScreeningList]
) -> None:
    """Deleting the event of the list in force (to bring the older one back) breaks the chain: `verify`
    names it, and screening refuses to guess which list is in force."""
    first, second = two_lists
    with attacker(event_store) as raw:
        raw.execute("DELETE FROM events WHERE stream_id = ? AND version = 2", (SCREENING_STREAM,))
    report = event_store.verify()
    assert (SCREENING_STREAM, 2) in [(b.stream_id, b.version) for b in report.breaks]
    assert any("version 2 is missing" in b.problem for b in report.breaks), report.breaks
    with pytest.raises(ScreeningListUnavailable, match="not the one the chain vouches for"):
        event_store.current_screening_info()
    # Moving the stream head back too makes the older list the head again: its row for the newer list
    # is then a list no event records, which `verify` names.
    raw = Raw(event_store)
    with closing(raw.conn):
        (head,) = raw.execute(
            "SELECT hash FROM events WHERE stream_id = ? AND version = 1", (SCREENING_STREAM,)
        ).fetchone()
        raw.execute(
            "UPDATE streams SET version = 1, head_hash = ? WHERE stream_id = ?", (head, SCREENING_STREAM)
        )
    problems = [b.problem for b in event_store.verify().breaks]
    assert (
        f"screening list {second.info.version} is stored but no ScreeningListLoaded event records it"
        in problems
    )
    assert event_store.current_screening_info() == first.info


def test_every_stored_event_of_the_stream_is_gone(event_store: EventStore) -> None:
    """The stream head without any event: the list in force is unknown, not "none loaded"."""
    assert event_store.save_screening_list(csl_list(*ACME_ROWS), by="ops")
    with attacker(event_store) as raw:
        raw.execute("DELETE FROM events WHERE stream_id = ?", (SCREENING_STREAM,))
    with pytest.raises(ScreeningListUnavailable, match="none of its events is stored"):
        event_store.current_screening_info()


# -- PartiesScreened, schema 1 (before explanations) -------------------------------------------------


def test_a_screening_stored_before_explanations_reads_with_them_empty() -> None:
    """The data of a PartiesScreened as 1.0 stored it (schema 1), upcast at the read boundary."""
    stored = {
        "list_version": "sample-0123456789ab",
        "threshold": 90.0,
        "parties": [{"role": "buyer", "name": "Hu\u200bawei"}, {"role": "consignee", "name": "Acme"}],
        "matches": [
            {
                "role": "buyer",
                "party_name": "Hu\u200bawei",
                "entry_name": "Huawei Technologies Co., Ltd.",
                "matched_name": "Huawei",
                "entity_number": None,
                "source": "Entity List (EL) - Bureau of Industry and Security",
                "programs": [],
                "score": 100.0,
            }
        ],
    }
    assert PartiesScreened.SCHEMA_VERSION == UPCASTERS.current("PartiesScreened") == 2
    read = UPCASTERS.parse("PartiesScreened", 1, json.loads(json.dumps(stored)))
    assert isinstance(read, PartiesScreened)
    [match] = read.matches
    assert (match.entry_id, match.entry_type, match.tokens, match.folds) == (None, None, [], [])
    assert match.explanation() == ""
    huawei, acme = read.parties
    assert (huawei.country, acme.country, acme.suspicious) == (None, None, [])
    assert huawei.suspicious == ["zero-width U+200B removed"]  # read from the name, as always
    # The current release writes schema 2 as it is.
    assert UPCASTERS.parse("PartiesScreened", 2, read.model_dump(mode="json", exclude={"type"})) == read
