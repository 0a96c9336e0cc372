"""The projection interface: an inline hook the store runs in each append's transaction, and rebuild.

The request projection (chipclear.projections) is registered by `open_backend`, as the worker registers
it; a toy projection defined here shows the store keeps any projection it is handed, and nothing else.
Every test that takes `event_store` runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from chipclear.domain.events import Event
from chipclear.domain.models import Status
from chipclear.domain.state import fold
from chipclear.projections import (
    PROJECTIONS,
    REQUESTS,
    get_request,
    licensed_among,
    list_requests,
    newest_requests,
    open_event_store,
    request_summary,
    requests_by_id,
)
from chipclear.store.chain import timestamp
from chipclear.store.factory import open_store
from chipclear.store.projection import RowQuery
from chipclear.store.protocol import EventStore
from chipclear.store.sqlite import SQLiteEventStore
from tests.cli.test_cli import chipclear, flat, hermetic_env, ok
from tests.store.support import (
    EXPECTED_STATUS,
    KINDS,
    NOW,
    RECORDER,
    Raw,
    append_all,
    grant,
    scenario,
    scenarios,
    store_url,
    write_stream,
)

# -- projection ----------------------------------------------------------------------------------------


class TestProjection:
    def test_rebuild_gives_the_same_rows_and_get_request_is_the_fold(self, event_store: EventStore) -> None:
        found = scenarios(2 * len(KINDS))
        append_all(event_store, found)
        before = event_store.projection_rows(REQUESTS)
        assert len(before) == len(found)

        assert event_store.rebuild_projection() == len(found)

        assert event_store.projection_rows(REQUESTS) == before
        statuses = set()
        for each in found:
            state = get_request(event_store, each.request_id)
            assert state == fold(event_store.read_stream(each.request_id))
            assert state == each.state
            assert state is not None
            statuses.add(state.status)
        # Denied, licensed and still-open requests all went through the rebuild.
        assert statuses == set(EXPECTED_STATUS.values())

    def test_list_requests_filters_by_status(self, event_store: EventStore) -> None:
        found = scenarios(2 * len(KINDS))
        append_all(event_store, found)
        by_id = {each.request_id: each.state for each in found}

        everything = list_requests(event_store)
        assert [row.request_id for row in everything] == [each.request_id for each in found]  # by submission
        for row in everything:
            state = by_id[row.request_id]
            assert state.status is not None and state.request is not None and state.submitted_at is not None
            assert (row.status, row.gate, row.buyer) == (state.status, state.gate, state.request.buyer.name)
            assert (row.units_requested, row.units_approved) == (state.units_requested, state.units_approved)
            assert (row.version, row.policy_version) == (state.version, state.policy_version)
            assert row.submitted_at == timestamp(state.submitted_at)

        for status in {*EXPECTED_STATUS.values(), Status.SUBMITTED}:
            expected = [each.request_id for each in found if each.state.status == status]
            listed = list_requests(event_store, status)
            assert [row.request_id for row in listed] == expected
            assert all(row.status == status for row in listed)
        assert list_requests(event_store, Status.SUBMITTED) == []  # a submission opens a gate at once
        assert len(list_requests(event_store, Status.LICENSED)) == 4

    def test_pages_newest_first_cover_every_row_once(self, event_store: EventStore) -> None:
        found = scenarios(2 * len(KINDS))
        append_all(event_store, found)
        everything = list_requests(event_store)
        newest = sorted(everything, key=lambda row: (row.submitted_at, row.request_id), reverse=True)
        assert len({row.submitted_at for row in everything}) > 1
        for status, size in ((None, 3), (None, 1), (Status.LICENSED, 3), (None, len(found) + 5)):
            expected = [row for row in newest if status is None or row.status == status]
            pages, after = [], None
            while page := newest_requests(event_store, status, limit=size, after=after):
                assert len(page) <= size
                pages.append(page)
                after = page[-1]
            assert [row for page in pages for row in page] == expected
            assert len(pages) == -(-len(expected) // size)
        # One row by id, and the rows of some ids: what `list --after` and `list --gate` read.
        last = newest[-1]
        assert request_summary(event_store, last.request_id) == last
        assert request_summary(event_store, "no-such-request") is None
        some = [row.request_id for row in newest[:3]]
        assert requests_by_id(event_store, [*some, "no-such-request"]) == {
            row.request_id: row for row in newest[:3]
        }

    def test_the_licensed_among_many_ids_in_the_order_asked(self, event_store: EventStore) -> None:
        """What an entity asks as it continues as new: more ids than one query takes, and at most so many
        answers (the answer is recorded in its history)."""
        found = scenarios(2 * len(KINDS))
        append_all(event_store, found)
        rows = list_requests(event_store)
        licensed = [row.request_id for row in rows if row.status == Status.LICENSED]
        others = [row.request_id for row in rows if row.status != Status.LICENSED]
        assert licensed and others
        unknown = [f"no-such-request-{i}" for i in range(1_200)]  # past two pages of 500 keys
        asked = [*unknown[:600], *reversed(licensed), *others, *unknown[600:]]
        assert licensed_among(event_store, asked, at_most=1_000) == list(reversed(licensed))
        assert licensed_among(event_store, asked, at_most=2) == list(reversed(licensed))[:2]
        assert licensed_among(event_store, [], at_most=1_000) == []

    def test_the_projection_follows_each_append(self, event_store: EventStore) -> None:
        found = scenario("licensed_after_evidence")
        for count, batch in enumerate(found.batches, start=1):
            event_store.append(found.request_id, batch[0].version - 1, batch)
            assert get_request(event_store, found.request_id) == fold(
                event for earlier in found.batches[:count] for event in earlier
            )

    def test_rebuild_matches_when_events_were_decided_in_another_zone(self, event_store: EventStore) -> None:
        found = scenario("licensed", start=NOW.astimezone(timezone(timedelta(hours=8))))
        append_all(event_store, [found])
        before = event_store.projection_rows(REQUESTS)
        event_store.rebuild_projection()
        assert event_store.projection_rows(REQUESTS) == before


class TestProjectionRepair:
    def test_rebuild_restores_deleted_and_edited_rows(self, event_store: EventStore) -> None:
        found = scenarios(len(KINDS))
        append_all(event_store, found)
        before = event_store.projection_rows(REQUESTS)

        raw = Raw(event_store)
        with closing(raw.conn):
            # The projection has no append-only guard: it is derived data.
            raw.execute(
                "DELETE FROM requests WHERE request_id IN (?, ?)", (found[0].request_id, found[3].request_id)
            )
            raw.execute(
                "UPDATE requests SET status = 'licensed', units_approved = 1 WHERE request_id = ?",
                (found[1].request_id,),
            )
        assert get_request(event_store, found[0].request_id) is None
        assert event_store.projection_rows(REQUESTS) != before

        assert event_store.rebuild_projection() == len(found)

        assert event_store.projection_rows(REQUESTS) == before
        for each in found:
            assert get_request(event_store, each.request_id) == fold(event_store.read_stream(each.request_id))


# -- any projection: the store keeps what it is handed ----------------------------------------------
class StreamCounts:
    """A toy projection of ledger streams: how many grants each holds, and their event types as tags."""

    table = "stream_counts"
    columns = ("stream_id", "events", "types")

    def __init__(self, *, refuse: str | None = None) -> None:
        self.refuse = refuse  # a stream whose row this projection fails to compute

    def wants(self, event: Event) -> bool:
        return event.type == "UnitsGranted"

    def load(self, row: Mapping[str, Any]) -> tuple[str, int, frozenset[str]]:
        return row["stream_id"], row["events"], frozenset(row["types"].split(","))

    def evolve(
        self, state: tuple[str, int, frozenset[str]] | None, events: Sequence[Event]
    ) -> tuple[str, int, frozenset[str]]:
        stream_id, count, types = state or (events[0].stream_id, 0, frozenset[str]())
        return stream_id, count + len(events), types | {event.type for event in events}

    def row(self, state: tuple[str, int, frozenset[str]]) -> dict[str, Any]:
        stream_id, count, types = state
        if stream_id == self.refuse:
            raise RuntimeError(f"cannot project {stream_id}")
        return {"stream_id": stream_id, "events": count, "types": ",".join(sorted(types))}


COUNTS = StreamCounts()


def with_counts(store: EventStore, projection: StreamCounts = COUNTS) -> EventStore:
    """Another handle on the same database with a toy projection registered (its table made first)."""
    raw = Raw(store)
    with closing(raw.conn):
        raw.execute(
            "CREATE TABLE stream_counts (stream_id TEXT PRIMARY KEY, events INTEGER NOT NULL, types TEXT)"
        )
    return open_store(store_url(store), projections=[projection], recorder=RECORDER)


@pytest.fixture
def counted(event_store: EventStore) -> Iterator[EventStore]:
    with closing(with_counts(event_store)) as handle:
        yield handle


class TestAnyProjection:
    def test_a_registered_projection_follows_each_append(self, counted: EventStore) -> None:
        write_stream(counted, "ledger-a", 3)
        write_stream(counted, "ledger-b", 1)
        append_all(counted, [scenario("licensed")])  # not wanted: no row, and no request row either

        assert counted.projection_row(COUNTS, "ledger-a") == {
            "stream_id": "ledger-a",
            "events": 3,
            "types": "UnitsGranted",
        }
        assert counted.projection_row(COUNTS, "ledger-c") is None
        assert [row["stream_id"] for row in counted.projection_rows(COUNTS)] == ["ledger-a", "ledger-b"]
        ones = counted.projection_rows(COUNTS, RowQuery(equal={"events": 1}, columns=["stream_id"]))
        assert ones == [{"stream_id": "ledger-b"}]
        by_count = counted.projection_rows(
            COUNTS, RowQuery(tagged={"types": ["UnitsGranted"]}, order_by=["events"])
        )
        assert [row["stream_id"] for row in by_count] == ["ledger-b", "ledger-a"]
        assert (
            counted.projection_rows(COUNTS, RowQuery(tagged={"types": ["UnitsGranted", "BatchOpened"]})) == []
        )
        assert counted.projection_rows(REQUESTS) == []

    def test_only_the_projections_own_columns_reach_the_sql(self, counted: EventStore) -> None:
        for query in (
            RowQuery(equal={"events; DROP TABLE events": 1}),
            RowQuery(tagged={"kinds": ["x"]}),
            RowQuery(columns=["stream_id", "1"]),
            RowQuery(order_by=["random()"]),
        ):
            with pytest.raises(ValueError, match="stream_counts has no column"):
                counted.projection_rows(COUNTS, query)

    def test_rebuild_replays_the_log_into_every_registered_projection(
        self, event_store: EventStore, counted: EventStore
    ) -> None:
        write_stream(counted, "ledger-a", 2)
        append_all(counted, [scenario("denied", "req-a")])
        before = counted.projection_rows(COUNTS)
        raw = Raw(event_store)
        with closing(raw.conn):
            raw.execute("DELETE FROM stream_counts")
            raw.execute("INSERT INTO stream_counts VALUES ('ledger-z', 9, 'forged')")

        assert counted.rebuild_projection() == 1  # its own projection only: one ledger stream
        assert counted.projection_rows(COUNTS) == before
        # The request projection is the other handle's: rebuilt there, from the same log.
        assert event_store.rebuild_projection() == 1
        assert get_request(event_store, "req-a") == fold(event_store.read_stream("req-a"))

    def test_a_projection_that_fails_fails_the_append_and_writes_nothing(
        self, event_store: EventStore
    ) -> None:
        refusing = with_counts(event_store, StreamCounts(refuse="ledger-doomed"))
        try:
            write_stream(refusing, "ledger-a", 1)
            with pytest.raises(RuntimeError, match="cannot project ledger-doomed"):
                write_stream(refusing, "ledger-doomed", 1)
            assert refusing.read_stream("ledger-doomed") == []
            assert [row["stream_id"] for row in refusing.projection_rows(COUNTS)] == ["ledger-a"]
            assert refusing.verify().ok
        finally:
            refusing.close()
        # Nothing of the failed append is left: the stream is still new for the next writer.
        assert event_store.append("ledger-doomed", 0, [grant("ledger-doomed", 1)]).written
        assert event_store.verify().ok


def test_the_store_chipclear_opens_keeps_the_request_projection(event_store: EventStore) -> None:
    """`open_event_store` (the worker's, the CLI's) registers the request projection with the store."""
    found = scenario("licensed_after_evidence", "req-wired")
    with closing(open_event_store(store_url(event_store)).seal_with(RECORDER)) as wired:
        append_all(wired, [found])
        assert get_request(wired, "req-wired") == found.state
    assert [row.request_id for row in list_requests(event_store)] == ["req-wired"]


def test_a_store_opened_without_projections_keeps_none(event_store: EventStore) -> None:
    bare = open_store(store_url(event_store), recorder=RECORDER)
    try:
        append_all(bare, [scenario("licensed", "req-bare")])
        assert bare.read_stream("req-bare") and bare.verify().ok
        assert get_request(bare, "req-bare") is None and bare.projection_rows(REQUESTS) == []
        assert bare.rebuild_projection() == 0
        assert event_store.rebuild_projection() == 1  # a handle that keeps it catches up from the log
        assert get_request(event_store, "req-bare") == get_request(bare, "req-bare")
    finally:
        bare.close()


# -- `chipclear projections rebuild` -----------------------------------------------------------------
def test_cli_projections_rebuild(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with closing(SQLiteEventStore(path, projections=PROJECTIONS, recorder=RECORDER)) as store:
        append_all(store, scenarios(len(KINDS)))
        expected = store.projection_rows(REQUESTS)
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM requests")
    conn.close()

    result = ok(
        chipclear(
            hermetic_env(
                CHIPCLEAR_EVENT_STORE=f"sqlite:///{path.resolve()}", CHIPCLEAR_HOME=str(tmp_path / "home")
            ),
            "projections",
            "rebuild",
        )
    )

    assert f"rebuilt the projection of {len(KINDS)} requests from the log" in flat(result.stdout)
    with closing(SQLiteEventStore(path, projections=PROJECTIONS, recorder=RECORDER)) as store:
        assert store.projection_rows(REQUESTS) == expected
