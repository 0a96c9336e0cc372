"""The event log's conformance suite: append, read, idempotent retries, conflicts, atomicity, writers.

Every test that takes `event_store` runs on SQLite and on PostgreSQL (tests/store/conftest.py).
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from multiprocessing.synchronize import Barrier as ProcessBarrier
from typing import Any

import pytest

from chipclear.domain.commands import Withdraw
from chipclear.domain.decider import decide
from chipclear.domain.events import Event, RequestWithdrawn, schema_versions
from chipclear.domain.facts import NONE
from chipclear.domain.state import fold
from chipclear.projections import get_request, list_requests, open_event_store
from chipclear.store.chain import GENESIS, canonical, chained_bytes, link, timestamp
from chipclear.store.protocol import AppendResult, ConcurrencyError, EventStore
from tests.store.support import (
    AUTO,
    CN_IMPORT,
    KINDS,
    NOW,
    RECORDER,
    Scenario,
    append_all,
    append_batches,
    as_event,
    minutes,
    new_id,
    open_handle,
    run_threads,
    scenario,
    scenarios,
    signed,
    snapshot,
    store_url,
    stray_event,
)

# -- append and read -----------------------------------------------------------------------------------


class TestAppendAndRead:
    def test_round_trip_preserves_every_field_and_chains_the_hashes(self, event_store: EventStore) -> None:
        found = scenarios(len(KINDS))
        for each in found:
            for batch in each.batches:
                before = datetime.now(UTC)
                result = event_store.append(each.request_id, batch[0].version - 1, batch)
                after = datetime.now(UTC)
                assert result == AppendResult(
                    stream_id=each.request_id, version=batch[-1].version, written=True
                )
                for stored in event_store.read_stream(each.request_id)[-len(batch) :]:
                    assert before - timedelta(seconds=1) <= stored.recorded_at <= after + timedelta(seconds=1)

        positions: list[int] = []
        for each in found:
            stored_events = event_store.read_stream(each.request_id)
            assert len(stored_events) == len(each.events)
            expected_prev = GENESIS
            for version, (stored, original) in enumerate(zip(stored_events, each.events, strict=True), 1):
                assert as_event(stored) == original
                assert (stored.event_id, stored.stream_id, stored.version, stored.type) == (
                    original.event_id,
                    each.request_id,
                    version,
                    original.type,
                )
                assert stored.data == original.data
                assert stored.data_json() == original.data_json()
                assert timestamp(stored.occurred_at) == timestamp(original.occurred_at)
                assert (stored.policy_version, stored.actor) == (original.policy_version, original.actor)
                assert stored.recorded_at.tzinfo is not None
                # The chain: v1 starts at genesis, each link names the previous hash, and an auditor can
                # recompute every hash from the public fields alone.
                assert stored.prev_hash == expected_prev
                chained = chained_bytes(
                    event_id=stored.event_id,
                    stream_id=stored.stream_id,
                    version=stored.version,
                    type_=stored.type,
                    schema_version=schema_versions()[stored.type],
                    data=canonical(stored.data_json()),
                    occurred_at=timestamp(stored.occurred_at),
                    recorded_at=timestamp(stored.recorded_at),
                    policy_version=stored.policy_version,
                    actor=stored.actor,
                    act=None if stored.act is None else canonical(stored.act),
                )
                assert stored.hash == link(stored.prev_hash, chained)
                assert len(stored.hash) == 64 and stored.hash != GENESIS
                expected_prev = stored.hash
            positions += [stored.position for stored in stored_events]
        # Appended one stream after another, so positions rise across the whole log.
        assert positions == sorted(positions) and len(set(positions)) == len(positions)

        everything = list(event_store.read_all())
        assert [e.position for e in everything] == sorted(positions)
        assert [e.event_id for e in everything] == [e.event_id for s in found for e in s.events]
        middle = everything[len(everything) // 2].position
        assert [e.position for e in event_store.read_all(after_position=middle)] == [
            p for p in sorted(positions) if p > middle
        ]
        assert list(event_store.read_all(after_position=everything[-1].position)) == []

    def test_a_timestamp_in_another_zone_is_stored_as_the_same_instant(self, event_store: EventStore) -> None:
        found = scenario("licensed", start=NOW.astimezone(timezone(timedelta(hours=8))))
        append_all(event_store, [found])
        for stored, original in zip(event_store.read_stream(found.request_id), found.events, strict=True):
            assert stored.occurred_at == original.occurred_at
            assert stored.occurred_at.utcoffset() == timedelta(0)

    def test_unknown_stream_and_empty_batch(self, event_store: EventStore) -> None:
        assert event_store.read_stream("no-such-request") == []
        assert get_request(event_store, "no-such-request") is None
        assert event_store.append("no-such-request", 0, []) == AppendResult(
            stream_id="no-such-request", version=0, written=False
        )
        assert list(event_store.read_all()) == []
        assert list_requests(event_store) == []


# -- idempotency and conflicts ---------------------------------------------------------------------------


class TestIdempotentRetry:
    def test_the_same_batch_twice_writes_once(self, event_store: EventStore) -> None:
        found = scenario("licensed")
        first = found.batches[0]
        assert event_store.append(found.request_id, 0, first).written
        before = snapshot(event_store)

        again = event_store.append(found.request_id, 0, first)

        assert again == AppendResult(stream_id=found.request_id, version=first[-1].version, written=False)
        assert snapshot(event_store) == before
        assert len(list(event_store.read_all())) == len(first)

    def test_a_late_retry_of_an_old_batch_is_still_a_no_op(self, event_store: EventStore) -> None:
        found, other = scenario("licensed"), scenario("denied")
        append_all(event_store, [found, other])
        before = snapshot(event_store)
        total = len(found.events) + len(other.events)

        for batch in found.batches[:-1]:  # acknowledgements lost long ago, retries arrive now
            result = event_store.append(found.request_id, batch[0].version - 1, batch)
            assert result.written is False
            assert result.stream_id == found.request_id

        assert snapshot(event_store) == before
        assert len(before[0]) == total
        assert event_store.verify().ok

    def test_a_retry_whose_timestamps_came_back_in_another_zone_is_the_same_batch(
        self, event_store: EventStore
    ) -> None:
        found = scenario("licensed")
        append_all(event_store, [found])
        before = snapshot(event_store)
        shanghai = timezone(timedelta(hours=8))
        batch = [
            e.model_copy(update={"occurred_at": e.occurred_at.astimezone(shanghai)}) for e in found.batches[1]
        ]

        assert event_store.append(found.request_id, batch[0].version - 1, batch).written is False
        assert snapshot(event_store) == before


def head(written: Scenario) -> int:
    """The version `written` (the `TestConflicts` fixture) left its stream at."""
    return written.batches[1][-1].version


class TestConflicts:
    @pytest.fixture
    def written(self, event_store: EventStore) -> Scenario:
        """A request two batches in (at `head`), beside a finished one that must never be disturbed."""
        found = scenario("licensed", "conflict-1")
        append_batches(event_store, found.batches[:2])
        append_all(event_store, [scenario("denied", "bystander")])
        return found

    def assert_unchanged(self, store: EventStore, before: Any, stream_id: str, version: int) -> None:
        assert snapshot(store) == before
        assert store.read_stream(stream_id)[-1].version == version
        state = get_request(store, stream_id)
        assert state is not None and state.version == version
        assert store.verify().ok

    def test_a_different_batch_at_a_taken_version(self, event_store: EventStore, written: Scenario) -> None:
        before = snapshot(event_store)
        # Another writer saw version 2 and decided something else: fresh event ids, versions 3..
        state = fold(written.batches[0])
        rival = decide(
            state,
            signed(Withdraw(reason="changed my mind"), state),
            NONE,
            AUTO,
            NOW + minutes(2),
            new_id=new_id,
        )
        assert [e.version for e in rival] == [state.version + 1]

        with pytest.raises(ConcurrencyError):
            event_store.append(written.request_id, state.version, rival)
        self.assert_unchanged(event_store, before, written.request_id, head(written))

    @pytest.mark.parametrize(
        "expected_version",
        [pytest.param(7, id="too-high"), pytest.param(2, id="too-low"), pytest.param(0, id="as-if-new")],
    )
    def test_expected_version_mismatch(
        self, event_store: EventStore, written: Scenario, expected_version: int
    ) -> None:
        before = snapshot(event_store)
        batch = [stray_event(written.request_id, expected_version + i) for i in (1, 2)]

        with pytest.raises(ConcurrencyError):
            event_store.append(written.request_id, expected_version, batch)
        self.assert_unchanged(event_store, before, written.request_id, head(written))

    @pytest.mark.parametrize(
        "change",
        [
            {"actor": "mallory"},
            {"policy_version": "test-other"},
            {"occurred_at": NOW + timedelta(microseconds=1)},
            {"data": RequestWithdrawn(gate=CN_IMPORT, reason="not what was stored")},
        ],
        ids=["actor", "policy_version", "occurred_at", "data"],
    )
    def test_an_event_id_reused_with_different_content(
        self, event_store: EventStore, written: Scenario, change: dict[str, Any]
    ) -> None:
        before = snapshot(event_store)
        stored_batch = written.batches[1]
        altered = [stored_batch[0].model_copy(update=change), *stored_batch[1:]]

        with pytest.raises(ConcurrencyError):
            event_store.append(written.request_id, stored_batch[0].version - 1, altered)
        self.assert_unchanged(event_store, before, written.request_id, head(written))

    def test_a_stored_event_id_in_a_new_batch(self, event_store: EventStore, written: Scenario) -> None:
        before = snapshot(event_store)
        taken = written.batches[0][0].event_id
        # The next batch at the right version, but its second event reuses a stored id.
        at = head(written)
        mixed = [
            stray_event(written.request_id, at + 1),
            stray_event(written.request_id, at + 2, event_id=taken),
        ]
        with pytest.raises(ConcurrencyError):
            event_store.append(written.request_id, at, mixed)
        # And a brand-new stream whose first event reuses an id from another stream.
        elsewhere = [stray_event("conflict-2", 1, event_id=taken)]
        with pytest.raises(ConcurrencyError):
            event_store.append("conflict-2", 0, elsewhere)

        self.assert_unchanged(event_store, before, written.request_id, at)
        assert event_store.read_stream("conflict-2") == []

    def test_a_retry_with_a_batch_extended_by_new_events(
        self, event_store: EventStore, written: Scenario
    ) -> None:
        before = snapshot(event_store)
        stored_batch = written.batches[1]
        extended = [*stored_batch, stray_event(written.request_id, stored_batch[-1].version + 1)]
        with pytest.raises(ConcurrencyError):
            event_store.append(written.request_id, stored_batch[0].version - 1, extended)
        self.assert_unchanged(event_store, before, written.request_id, head(written))


class TestAtomicity:
    @pytest.mark.parametrize("defect", ["version gap", "repeated version", "other stream"])
    def test_a_batch_with_an_invalid_second_event_writes_nothing(
        self, event_store: EventStore, defect: str
    ) -> None:
        found = scenario("licensed", "atomic-1")
        append_batches(event_store, found.batches[:1])
        before = snapshot(event_store)
        first, second = found.batches[1][:2]
        at = first.version - 1
        bad = {
            "version gap": second.model_copy(update={"version": second.version + 1}),
            "repeated version": second.model_copy(update={"version": first.version}),
            "other stream": second.model_copy(update={"stream_id": "atomic-2"}),
        }[defect]

        with pytest.raises(ValueError, match=f"expected atomic-1@{second.version}"):
            event_store.append("atomic-1", at, [first, bad])

        assert snapshot(event_store) == before
        assert event_store.read_stream("atomic-2") == []
        # The valid batch still goes in afterwards: nothing was half-written.
        assert event_store.append("atomic-1", at, found.batches[1]).written

    def test_a_batch_that_fails_inside_the_transaction_writes_nothing(self, event_store: EventStore) -> None:
        """The first insert succeeds, the second collides (the same id twice): all must roll back."""
        found = scenario("licensed", "atomic-3")
        append_batches(event_store, found.batches[:1])
        before = snapshot(event_store)
        first = found.batches[1][0]
        twin = found.batches[1][1].model_copy(update={"event_id": first.event_id})

        with pytest.raises((ValueError, ConcurrencyError, sqlite3.IntegrityError)):
            event_store.append("atomic-3", first.version - 1, [first, twin])

        assert snapshot(event_store) == before
        assert event_store.verify().ok
        assert event_store.append("atomic-3", first.version - 1, found.batches[1]).written

    def test_a_batch_repeating_an_event_id_is_refused_with_a_contract_error(
        self, event_store: EventStore
    ) -> None:
        found = scenario("licensed")
        first, second, *_ = found.batches[0]
        twin = second.model_copy(update={"event_id": first.event_id})
        with pytest.raises((ValueError, ConcurrencyError)):
            event_store.append(found.request_id, 0, [first, twin])


# -- concurrent writers ----------------------------------------------------------------------------------


def assert_complete(store: EventStore, found: Sequence[Scenario]) -> None:
    for each in found:
        assert [as_event(e) for e in store.read_stream(each.request_id)] == each.events
        assert get_request(store, each.request_id) == each.state
    report = store.verify()
    assert report.ok, report.breaks
    assert report.streams_checked == len(found)
    assert report.events_checked == sum(len(each.events) for each in found)


def _append_in_process(url: str, batches_json: list[list[str]], barrier: ProcessBarrier) -> None:
    """Runs in a spawned process: its own store handle, opened from the URL as a worker would."""
    store = open_event_store(url).seal_with(RECORDER)
    try:
        barrier.wait(timeout=60)
        for batch_json in batches_json:
            batch = [Event.model_validate_json(text) for text in batch_json]
            store.append(batch[0].stream_id, batch[0].version - 1, batch)
    finally:
        store.close()


class TestConcurrentWriters:
    def test_threads_on_distinct_streams(self, event_store: EventStore) -> None:
        workers = 4
        found = [scenarios(6, prefix=f"thread{w}") for w in range(workers)]
        start = threading.Barrier(workers)
        handles: list[EventStore] = [event_store, event_store, open_handle(event_store)]
        handles.append(open_handle(event_store))

        def writer(store: EventStore, mine: list[Scenario]) -> Callable[[], None]:
            def run() -> None:
                start.wait(timeout=30)
                # Interleave the streams so the writers' appends really alternate.
                for step in range(max(len(each.batches) for each in mine)):
                    append_batches(store, [each.batches[step] for each in mine if step < len(each.batches)])

            return run

        try:
            errors = run_threads([writer(h, mine) for h, mine in zip(handles, found, strict=True)])
        finally:
            for handle in handles[2:]:
                handle.close()
        assert errors == []
        assert_complete(event_store, [each for mine in found for each in mine])

    def test_processes_on_distinct_streams(self, event_store: EventStore) -> None:
        workers = 3
        found = [scenarios(4, prefix=f"proc{w}") for w in range(workers)]
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(workers)
        processes = [
            context.Process(
                target=_append_in_process,
                args=(
                    store_url(event_store),
                    [[event.model_dump_json() for event in batch] for each in mine for batch in each.batches],
                    barrier,
                ),
            )
            for mine in found
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=60)
        assert [process.exitcode for process in processes] == [0] * workers
        assert_complete(event_store, [each for mine in found for each in mine])

    @pytest.mark.parametrize("round_", range(5))
    def test_two_writers_racing_for_the_same_version(self, event_store: EventStore, round_: int) -> None:
        found = scenario("licensed", f"race-{round_}")
        append_batches(event_store, found.batches[:1])
        state = fold(found.batches[0])
        contenders = {
            "evaluate": found.batches[1],
            "withdraw": decide(
                state,
                signed(Withdraw(reason="cancelled"), state),
                NONE,
                AUTO,
                NOW + minutes(1),
                new_id=new_id,
            ),
        }
        rival_store = open_handle(event_store)
        start = threading.Barrier(2)
        results: dict[str, AppendResult] = {}

        def contender(name: str, store: EventStore) -> Callable[[], None]:
            def run() -> None:
                start.wait(timeout=30)
                results[name] = store.append(found.request_id, state.version, contenders[name])

            return run

        try:
            errors = run_threads([contender("evaluate", event_store), contender("withdraw", rival_store)])
        finally:
            rival_store.close()

        assert len(results) == 1 and len(errors) == 1, (results, errors)
        assert isinstance(errors[0], ConcurrencyError)
        ((winner, result),) = results.items()
        assert result.written and result.version == contenders[winner][-1].version
        stored = [as_event(e) for e in event_store.read_stream(found.request_id)]
        assert stored == [*found.batches[0], *contenders[winner]]
        assert get_request(event_store, found.request_id) == fold(stored)
        assert event_store.verify().ok
