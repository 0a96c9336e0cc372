"""The event store contract, as a conformance suite.

Every backend must pass the tests that take the `event_store` fixture (SQLite, and PostgreSQL on a
throwaway cluster); add a backend by adding its name to `BACKENDS` and a branch to `open_backend`.
The tampering and repair tests reach behind the contract (`Raw`: plain SQL on the database) to play an
attacker or an operator with database access.

Events are never hand-written when the decider can produce them: each scenario plays real commands
through `decide` and `fold`, so the store is exercised with the batches the workflow really appends.
"""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from multiprocessing.synchronize import Barrier as ProcessBarrier
from pathlib import Path
from typing import Any, Protocol

import psycopg
import pytest

import chipclear.store.sql as sql_backend
from chipclear.devserver import free_port
from chipclear.domain.commands import AddEvidence, Command, Evaluate, Expire, Submit, Withdraw
from chipclear.domain.decider import decide
from chipclear.domain.events import Event, RequestWithdrawn, StoredEvent
from chipclear.domain.models import Gate, ProcurementRecord, Status
from chipclear.domain.policy import Policy
from chipclear.domain.state import RequestState, fold
from chipclear.store.chain import GENESIS, chained_fields, first_break, link, timestamp
from chipclear.store.factory import StoreURLError, open_store
from chipclear.store.migrations import SchemaError
from chipclear.store.postgres import PostgresEventStore, split_url
from chipclear.store.protocol import AppendResult, ConcurrencyError, EventStore, StoreUnavailable
from chipclear.store.sqlite import SQLiteEventStore
from chipclear.store.urls import redact
from tests.factories import make_policy, make_request
from tests.postgres import Cluster

BACKENDS = ["sqlite", "postgresql"]
NOW = datetime(2026, 3, 2, 9, 30, 15, 123456, tzinfo=UTC)
AUTO = make_policy("auto")
MANUAL = make_policy("manual")


class StoreUnderTest(EventStore, Protocol):
    """The contract plus the projection dump every backend offers for rebuild comparisons."""

    def projection_rows(self) -> list[tuple[Any, ...]]: ...


# -- scenarios: real event batches from the pure decider ---------------------------------------------


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Scenario:
    request_id: str
    batches: list[list[Event]]
    state: RequestState  # the fold of every batch: what the store must end up holding

    @property
    def events(self) -> list[Event]:
        return [event for batch in self.batches for event in batch]


Step = tuple[timedelta, Command]


def play(policy: Policy, steps: Sequence[Step], *, start: datetime = NOW) -> Scenario:
    """Run commands through `decide`, one batch per command that emits events (as the workflow does)."""
    state, batches = RequestState(), []
    for offset, command in steps:
        events = decide(state, command, policy, start + offset, new_id=new_id)
        if events:
            batches.append(events)
            state = fold(events, state)
    assert state.request_id is not None
    return Scenario(request_id=state.request_id, batches=batches, state=state)


def minutes(n: int) -> timedelta:
    return timedelta(minutes=n)


def evaluations(*gates: Gate) -> list[Step]:
    return [(minutes(i), Evaluate(gate=gate)) for i, gate in enumerate(gates, start=1)]


ALL_GATES = (Gate.US_EXPORT, Gate.CN_IMPORT, Gate.DOMESTIC_QUOTA)
SHORT_EVIDENCE = [{"vendor": "Huawei", "product": "Ascend 910C", "units": 1_000, "invoice": "HW-1"}]
MORE_EVIDENCE = ProcurementRecord(vendor="Cambricon", product="MLU590", units=49_000, invoice="CB-7")
EXPECTED_STATUS = {
    "licensed": Status.LICENSED,
    "denied": Status.DENIED,
    "quota_pending": Status.DOMESTIC_QUOTA_REVIEW,
    "licensed_after_evidence": Status.LICENSED,
    "awaiting_review": Status.US_EXPORT_REVIEW,
    "withdrawn": Status.WITHDRAWN,
    "expired": Status.EXPIRED,
}
KINDS = list(EXPECTED_STATUS)


def scenario(kind: str, request_id: str | None = None, *, start: datetime = NOW) -> Scenario:
    """A request's whole event history; `kind` is one of `KINDS`."""
    ident = {"request_id": request_id} if request_id else {}
    match kind:
        case "licensed":  # 4 batches, 9 events
            request = make_request(**ident)
            steps = [(minutes(0), Submit(request=request)), *evaluations(*ALL_GATES)]
            found = play(AUTO, steps, start=start)
        case "denied":  # a state-owned buyer passes US export, then cn-import denies it
            request = make_request(
                buyer={"name": "Sinopec AI", "country": "CN", "kind": "state_owned"}, **ident
            )
            steps = [(minutes(0), Submit(request=request)), *evaluations(Gate.US_EXPORT, Gate.CN_IMPORT)]
            found = play(AUTO, steps, start=start)
        case "quota_pending" | "licensed_after_evidence":  # short of domestic units at the last gate
            request = make_request(domestic_procurement=SHORT_EVIDENCE, **ident)
            steps = [(minutes(0), Submit(request=request)), *evaluations(*ALL_GATES)]
            if kind == "licensed_after_evidence":
                steps.append((minutes(30), AddEvidence(records=[MORE_EVIDENCE])))
            found = play(AUTO, steps, start=start)
        case "awaiting_review":  # manual mode: evaluation emits nothing, a reviewer is awaited
            request = make_request(**ident)
            steps = [(minutes(0), Submit(request=request)), *evaluations(Gate.US_EXPORT)]
            found = play(MANUAL, steps, start=start)
        case "withdrawn":
            request = make_request(**ident)
            steps = [(minutes(0), Submit(request=request)), (minutes(7), Withdraw(reason="order cancelled"))]
            found = play(MANUAL, steps, start=start)
        case "expired":
            request = make_request(**ident)
            steps = [(minutes(0), Submit(request=request)), (timedelta(days=91), Expire(gate=Gate.US_EXPORT))]
            found = play(MANUAL, steps, start=start)
        case _:
            raise AssertionError(f"unknown scenario kind {kind!r}")
    assert found.state.status is EXPECTED_STATUS[kind], (kind, found.state.status)
    return found


def scenarios(n: int, prefix: str = "req") -> list[Scenario]:
    """`n` requests cycling through every kind, submitted a second apart."""
    return [
        scenario(KINDS[i % len(KINDS)], f"{prefix}-{i:03d}", start=NOW + timedelta(seconds=i))
        for i in range(n)
    ]


def append_batches(store: EventStore, batches: Sequence[Sequence[Event]]) -> list[AppendResult]:
    return [store.append(batch[0].stream_id, batch[0].version - 1, batch) for batch in batches]


def append_all(store: EventStore, found: Sequence[Scenario]) -> None:
    for each in found:
        append_batches(store, each.batches)


def as_event(stored: StoredEvent) -> Event:
    return Event.model_validate({name: getattr(stored, name) for name in Event.model_fields})


def stray_event(stream_id: str, version: int, *, event_id: str | None = None) -> Event:
    return Event(
        event_id=event_id or new_id(),
        stream_id=stream_id,
        version=version,
        data=RequestWithdrawn(gate=None, reason="written by someone else"),
        occurred_at=NOW,
        policy_version="test-auto",
        actor="intruder",
    )


def snapshot(store: StoreUnderTest) -> tuple[list[StoredEvent], list[tuple[Any, ...]]]:
    """Everything a failed append must leave untouched: the whole log and the whole projection."""
    return list(store.read_all()), store.projection_rows()


def store_url(store: EventStore) -> str:
    """The `CHIPCLEAR_EVENT_STORE` URL that opens another handle on the same database."""
    if isinstance(store, SQLiteEventStore):
        return f"sqlite:///{store.path.resolve()}"
    if isinstance(store, PostgresEventStore):
        return store.url
    raise NotImplementedError(type(store).__name__)


def open_backend(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> StoreUnderTest:
    if name == "sqlite":
        return SQLiteEventStore(tmp_path / "events.db")
    if name == "postgresql":
        return PostgresEventStore(request.getfixturevalue("pg_url"))
    raise NotImplementedError(name)


@pytest.fixture(params=BACKENDS)
def event_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreUnderTest]:
    store = open_backend(request.param, request, tmp_path)
    yield store
    store.close()


# -- append and read -----------------------------------------------------------------------------------


class TestAppendAndRead:
    def test_round_trip_preserves_every_field_and_chains_the_hashes(
        self, event_store: StoreUnderTest
    ) -> None:
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
                fields = chained_fields(
                    event_id=stored.event_id,
                    stream_id=stored.stream_id,
                    version=stored.version,
                    type_=stored.type,
                    data=stored.data_json(),
                    occurred_at=timestamp(stored.occurred_at),
                    recorded_at=timestamp(stored.recorded_at),
                    policy_version=stored.policy_version,
                    actor=stored.actor,
                )
                assert stored.hash == link(stored.prev_hash, fields)
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

    def test_a_timestamp_in_another_zone_is_stored_as_the_same_instant(
        self, event_store: StoreUnderTest
    ) -> None:
        found = scenario("licensed", start=NOW.astimezone(timezone(timedelta(hours=8))))
        append_all(event_store, [found])
        for stored, original in zip(event_store.read_stream(found.request_id), found.events, strict=True):
            assert stored.occurred_at == original.occurred_at
            assert stored.occurred_at.utcoffset() == timedelta(0)

    def test_unknown_stream_and_empty_batch(self, event_store: StoreUnderTest) -> None:
        assert event_store.read_stream("no-such-request") == []
        assert event_store.get_request("no-such-request") is None
        assert event_store.append("no-such-request", 0, []) == AppendResult(
            stream_id="no-such-request", version=0, written=False
        )
        assert list(event_store.read_all()) == []
        assert event_store.list_requests() == []


# -- idempotency and conflicts ---------------------------------------------------------------------------


class TestIdempotentRetry:
    def test_the_same_batch_twice_writes_once(self, event_store: StoreUnderTest) -> None:
        found = scenario("licensed")
        first = found.batches[0]
        assert event_store.append(found.request_id, 0, first).written
        before = snapshot(event_store)

        again = event_store.append(found.request_id, 0, first)

        assert again == AppendResult(stream_id=found.request_id, version=first[-1].version, written=False)
        assert snapshot(event_store) == before
        assert len(list(event_store.read_all())) == len(first)

    def test_a_late_retry_of_an_old_batch_is_still_a_no_op(self, event_store: StoreUnderTest) -> None:
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
        self, event_store: StoreUnderTest
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


class TestConflicts:
    @pytest.fixture
    def written(self, event_store: StoreUnderTest) -> Scenario:
        """A request two batches in (version 4), beside a finished one that must never be disturbed."""
        found = scenario("licensed", "conflict-1")
        append_batches(event_store, found.batches[:2])
        append_all(event_store, [scenario("denied", "bystander")])
        return found

    def assert_unchanged(self, store: StoreUnderTest, before: Any, stream_id: str, version: int) -> None:
        assert snapshot(store) == before
        assert store.read_stream(stream_id)[-1].version == version
        state = store.get_request(stream_id)
        assert state is not None and state.version == version
        assert store.verify().ok

    def test_a_different_batch_at_a_taken_version(
        self, event_store: StoreUnderTest, written: Scenario
    ) -> None:
        before = snapshot(event_store)
        # Another writer saw version 2 and decided something else: fresh event ids, versions 3..
        state = fold(written.batches[0])
        rival = decide(state, Withdraw(reason="changed my mind"), AUTO, NOW + minutes(2), new_id=new_id)
        assert [e.version for e in rival] == [3]

        with pytest.raises(ConcurrencyError):
            event_store.append(written.request_id, 2, rival)
        self.assert_unchanged(event_store, before, written.request_id, 4)

    @pytest.mark.parametrize(
        "expected_version",
        [pytest.param(7, id="too-high"), pytest.param(2, id="too-low"), pytest.param(0, id="as-if-new")],
    )
    def test_expected_version_mismatch(
        self, event_store: StoreUnderTest, written: Scenario, expected_version: int
    ) -> None:
        before = snapshot(event_store)
        batch = [stray_event(written.request_id, expected_version + i) for i in (1, 2)]

        with pytest.raises(ConcurrencyError):
            event_store.append(written.request_id, expected_version, batch)
        self.assert_unchanged(event_store, before, written.request_id, 4)

    @pytest.mark.parametrize(
        "change",
        [
            {"actor": "mallory"},
            {"policy_version": "test-other"},
            {"occurred_at": NOW + timedelta(microseconds=1)},
            {"data": RequestWithdrawn(gate=Gate.CN_IMPORT, reason="not what was stored")},
        ],
        ids=["actor", "policy_version", "occurred_at", "data"],
    )
    def test_an_event_id_reused_with_different_content(
        self, event_store: StoreUnderTest, written: Scenario, change: dict[str, Any]
    ) -> None:
        before = snapshot(event_store)
        stored_batch = written.batches[1]
        altered = [stored_batch[0].model_copy(update=change), *stored_batch[1:]]

        with pytest.raises(ConcurrencyError):
            event_store.append(written.request_id, stored_batch[0].version - 1, altered)
        self.assert_unchanged(event_store, before, written.request_id, 4)

    def test_a_stored_event_id_in_a_new_batch(self, event_store: StoreUnderTest, written: Scenario) -> None:
        before = snapshot(event_store)
        taken = written.batches[0][0].event_id
        # The next batch at the right version, but its second event reuses a stored id.
        mixed = [stray_event(written.request_id, 5), stray_event(written.request_id, 6, event_id=taken)]
        with pytest.raises(ConcurrencyError):
            event_store.append(written.request_id, 4, mixed)
        # And a brand-new stream whose first event reuses an id from another stream.
        elsewhere = [stray_event("conflict-2", 1, event_id=taken)]
        with pytest.raises(ConcurrencyError):
            event_store.append("conflict-2", 0, elsewhere)

        self.assert_unchanged(event_store, before, written.request_id, 4)
        assert event_store.read_stream("conflict-2") == []

    def test_a_retry_with_a_batch_extended_by_new_events(
        self, event_store: StoreUnderTest, written: Scenario
    ) -> None:
        before = snapshot(event_store)
        stored_batch = written.batches[1]
        extended = [*stored_batch, stray_event(written.request_id, stored_batch[-1].version + 1)]
        with pytest.raises(ConcurrencyError):
            event_store.append(written.request_id, stored_batch[0].version - 1, extended)
        self.assert_unchanged(event_store, before, written.request_id, 4)


class TestAtomicity:
    @pytest.mark.parametrize("defect", ["version gap", "repeated version", "other stream"])
    def test_a_batch_with_an_invalid_second_event_writes_nothing(
        self, event_store: StoreUnderTest, defect: str
    ) -> None:
        found = scenario("licensed", "atomic-1")
        append_batches(event_store, found.batches[:1])
        before = snapshot(event_store)
        first, second = found.batches[1][:2]
        bad = {
            "version gap": second.model_copy(update={"version": 5}),
            "repeated version": second.model_copy(update={"version": 3}),
            "other stream": second.model_copy(update={"stream_id": "atomic-2"}),
        }[defect]

        with pytest.raises(ValueError, match="expected atomic-1@4"):
            event_store.append("atomic-1", 2, [first, bad])

        assert snapshot(event_store) == before
        assert event_store.read_stream("atomic-2") == []
        # The valid batch still goes in afterwards: nothing was half-written.
        assert event_store.append("atomic-1", 2, found.batches[1]).written

    def test_a_batch_that_fails_inside_the_transaction_writes_nothing(
        self, event_store: StoreUnderTest
    ) -> None:
        """The first insert succeeds, the second collides (the same id twice): all must roll back."""
        found = scenario("licensed", "atomic-3")
        append_batches(event_store, found.batches[:1])
        before = snapshot(event_store)
        first = found.batches[1][0]
        twin = found.batches[1][1].model_copy(update={"event_id": first.event_id})

        with pytest.raises((ValueError, ConcurrencyError, sqlite3.IntegrityError)):
            event_store.append("atomic-3", 2, [first, twin])

        assert snapshot(event_store) == before
        assert event_store.verify().ok
        assert event_store.append("atomic-3", 2, found.batches[1]).written

    def test_a_batch_repeating_an_event_id_is_refused_with_a_contract_error(
        self, event_store: StoreUnderTest
    ) -> None:
        found = scenario("licensed")
        first, second = found.batches[0]
        twin = second.model_copy(update={"event_id": first.event_id})
        with pytest.raises((ValueError, ConcurrencyError)):
            event_store.append(found.request_id, 0, [first, twin])


# -- projection ----------------------------------------------------------------------------------------


class TestProjection:
    def test_rebuild_gives_the_same_rows_and_get_request_is_the_fold(
        self, event_store: StoreUnderTest
    ) -> None:
        found = scenarios(2 * len(KINDS))
        append_all(event_store, found)
        before = event_store.projection_rows()
        assert len(before) == len(found)

        assert event_store.rebuild_projection() == len(found)

        assert event_store.projection_rows() == before
        statuses = set()
        for each in found:
            state = event_store.get_request(each.request_id)
            assert state == fold(event_store.read_stream(each.request_id))
            assert state == each.state
            assert state is not None
            statuses.add(state.status)
        # Denied, licensed and still-open requests all went through the rebuild.
        assert statuses == set(EXPECTED_STATUS.values())

    def test_list_requests_filters_by_status(self, event_store: StoreUnderTest) -> None:
        found = scenarios(2 * len(KINDS))
        append_all(event_store, found)
        by_id = {each.request_id: each.state for each in found}

        everything = event_store.list_requests()
        assert [row.request_id for row in everything] == [each.request_id for each in found]  # by submission
        for row in everything:
            state = by_id[row.request_id]
            assert state.status is not None and state.request is not None and state.submitted_at is not None
            assert (row.status, row.gate, row.buyer) == (state.status, state.gate, state.request.buyer.name)
            assert (row.units_requested, row.units_approved) == (state.units_requested, state.units_approved)
            assert (row.version, row.policy_version) == (state.version, state.policy_version)
            assert row.submitted_at == timestamp(state.submitted_at)

        for status in Status:
            expected = [each.request_id for each in found if each.state.status is status]
            listed = event_store.list_requests(status)
            assert [row.request_id for row in listed] == expected
            assert all(row.status is status for row in listed)
        assert event_store.list_requests(Status.SUBMITTED) == []  # a submission opens a gate at once
        assert len(event_store.list_requests(Status.LICENSED)) == 4

    def test_the_projection_follows_each_append(self, event_store: StoreUnderTest) -> None:
        found = scenario("licensed_after_evidence")
        for count, batch in enumerate(found.batches, start=1):
            event_store.append(found.request_id, batch[0].version - 1, batch)
            assert event_store.get_request(found.request_id) == fold(
                event for earlier in found.batches[:count] for event in earlier
            )

    def test_rebuild_matches_when_events_were_decided_in_another_zone(
        self, event_store: StoreUnderTest
    ) -> None:
        found = scenario("licensed", start=NOW.astimezone(timezone(timedelta(hours=8))))
        append_all(event_store, [found])
        before = event_store.projection_rows()
        event_store.rebuild_projection()
        assert event_store.projection_rows() == before


class TestProjectionRepair:
    def test_rebuild_restores_deleted_and_edited_rows(self, event_store: StoreUnderTest) -> None:
        found = scenarios(len(KINDS))
        append_all(event_store, found)
        before = event_store.projection_rows()

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
        assert event_store.get_request(found[0].request_id) is None
        assert event_store.projection_rows() != before

        assert event_store.rebuild_projection() == len(found)

        assert event_store.projection_rows() == before
        for each in found:
            assert event_store.get_request(each.request_id) == fold(event_store.read_stream(each.request_id))


# -- audit ---------------------------------------------------------------------------------------------


class TestVerify:
    def test_a_clean_store_verifies(self, event_store: StoreUnderTest) -> None:
        assert event_store.verify().model_dump() == {
            "ok": True,
            "streams_checked": 0,
            "events_checked": 0,
            "breaks": [],
        }
        found = scenarios(len(KINDS))
        append_all(event_store, found)
        report = event_store.verify()
        assert report.ok and report.breaks == []
        assert report.streams_checked == len(found)
        assert report.events_checked == sum(len(each.events) for each in found)


class Raw:
    """Plain SQL on the store's database, outside the store: `?` placeholders on either backend."""

    def __init__(self, store: EventStore) -> None:
        self.postgres = isinstance(store, PostgresEventStore)
        if isinstance(store, PostgresEventStore):
            self.conn: Any = psycopg.connect(split_url(store.url)[0], autocommit=True)
        else:
            assert isinstance(store, SQLiteEventStore)
            self.conn = sqlite3.connect(store.path, isolation_level=None)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql.replace("?", "%s") if self.postgres else sql, params)

    def drop_guards(self) -> None:
        if self.postgres:
            self.execute("ALTER TABLE events DISABLE TRIGGER USER")
        else:
            self.execute("DROP TRIGGER events_append_only_update")
            self.execute("DROP TRIGGER events_append_only_delete")


@contextmanager
def attacker(store: EventStore) -> Iterator[Raw]:
    """A raw connection to the database that first drops the append-only guards, as an attacker would."""
    raw = Raw(store)
    try:
        raw.drop_guards()
        yield raw
    finally:
        raw.conn.close()


TARGET = "tamper-b"


class TestTampering:
    """Every edit an attacker with database access can make is caught, in the right stream and version.

    Three licensed streams of 9 events; only the middle one is touched:
    v1 RequestSubmitted, v2 GateOpened, v3 GateApproved, v4 GateOpened, v5 GateApproved,
    v6 GateOpened, v7 DomesticQuotaAssessed, v8 GateApproved, v9 LicenseIssued.
    """

    @pytest.fixture
    def store(self, event_store: StoreUnderTest) -> StoreUnderTest:
        append_all(event_store, [scenario("licensed", f"tamper-{name}") for name in "abc"])
        assert event_store.verify().ok
        return event_store

    def only_break(self, store: EventStore, version: int, events_checked: int = 27) -> str:
        report = store.verify()
        assert not report.ok
        assert report.streams_checked == 3
        assert report.events_checked == events_checked
        assert [(b.stream_id, b.version) for b in report.breaks] == [(TARGET, version)], report.breaks
        return report.breaks[0].problem

    def test_the_guards_refuse_update_and_delete(self, store: EventStore) -> None:
        raw = Raw(store)
        with closing(raw.conn):
            with pytest.raises(Exception, match="append-only"):
                raw.execute("UPDATE events SET actor = 'mallory' WHERE stream_id = ?", (TARGET,))
            with pytest.raises(Exception, match="append-only"):
                raw.execute("DELETE FROM events WHERE stream_id = ?", (TARGET,))
            if raw.postgres:
                with pytest.raises(Exception, match="append-only"):
                    raw.execute("TRUNCATE events")
        assert store.verify().ok
        assert len(store.read_stream(TARGET)) == 9

    def test_edited_data(self, store: EventStore) -> None:
        with attacker(store) as conn:
            (data,) = conn.execute(
                "SELECT data FROM events WHERE stream_id = ? AND version = 3", (TARGET,)
            ).fetchone()
            edited = json.dumps(json.loads(data) | {"units_approved": 75000})
            conn.execute("UPDATE events SET data = ? WHERE stream_id = ? AND version = 3", (edited, TARGET))
        assert "hash" in self.only_break(store, 3)

    def test_edited_row_with_its_hash_recomputed(self, store: EventStore) -> None:
        """Re-hashing the edited row moves the break to the next link, which still names the old hash."""
        with attacker(store) as conn:
            row = conn.execute(
                f"SELECT {sql_backend.EVENT_COLUMNS} FROM events WHERE stream_id = ? AND version = 5",
                (TARGET,),
            ).fetchone()
            fields = sql_backend.chain_row(row)[4]
            fields["actor"] = "mallory"
            conn.execute(
                "UPDATE events SET actor = 'mallory', hash = ? WHERE stream_id = ? AND version = 5",
                (link(row[10], fields), TARGET),
            )
        assert "prev_hash" in self.only_break(store, 6)

    def test_deleted_middle_row(self, store: EventStore) -> None:
        with attacker(store) as conn:
            conn.execute("DELETE FROM events WHERE stream_id = ? AND version = 5", (TARGET,))
        assert "version 5 is missing" in self.only_break(store, 5, events_checked=26)

    def test_deleted_first_row(self, store: EventStore) -> None:
        with attacker(store) as conn:
            conn.execute("DELETE FROM events WHERE stream_id = ? AND version = 1", (TARGET,))
        assert "version 1 is missing" in self.only_break(store, 1, events_checked=26)

    def test_swapped_content_of_two_rows(self, store: EventStore) -> None:
        with attacker(store) as conn:
            (t2, d2), (t3, d3) = conn.execute(
                "SELECT type, data FROM events WHERE stream_id = ? AND version IN (2, 3) ORDER BY version",
                (TARGET,),
            ).fetchall()
            update = "UPDATE events SET type = ?, data = ? WHERE stream_id = ? AND version = ?"
            conn.execute(update, (t3, d3, TARGET, 2))
            conn.execute(update, (t2, d2, TARGET, 3))
        assert "hash" in self.only_break(store, 2)

    def test_swapped_version_numbers(self, store: EventStore) -> None:
        with attacker(store) as conn:
            move = "UPDATE events SET version = ? WHERE stream_id = ? AND version = ?"
            conn.execute(move, (1000, TARGET, 4))
            conn.execute(move, (4, TARGET, 5))
            conn.execute(move, (5, TARGET, 1000))
        self.only_break(store, 4)

    def test_truncated_tail(self, store: EventStore) -> None:
        with attacker(store) as conn:
            conn.execute("DELETE FROM events WHERE stream_id = ? AND version = 9", (TARGET,))
        problem = self.only_break(store, 9, events_checked=26)
        assert "version 9 is missing" in problem and "head" in problem

    def test_truncated_tail_and_head_rolled_back_without_its_hash(self, store: EventStore) -> None:
        with attacker(store) as conn:
            conn.execute("DELETE FROM events WHERE stream_id = ? AND version IN (8, 9)", (TARGET,))
            conn.execute("UPDATE streams SET version = 7 WHERE stream_id = ?", (TARGET,))
        assert "head hash" in self.only_break(store, 7, events_checked=25)

    def test_deleted_stream_head(self, store: EventStore) -> None:
        with attacker(store) as conn:
            conn.execute("DELETE FROM streams WHERE stream_id = ?", (TARGET,))
        assert "head is missing" in self.only_break(store, 9)

    def test_edited_recorded_at(self, store: EventStore) -> None:
        with attacker(store) as conn:
            recorded = conn.execute(
                "SELECT recorded_at FROM events WHERE stream_id = ? AND version = 6", (TARGET,)
            ).fetchone()[0]
            earlier = timestamp(datetime.fromisoformat(recorded) - timedelta(days=30))
            conn.execute(
                "UPDATE events SET recorded_at = ? WHERE stream_id = ? AND version = 6", (earlier, TARGET)
            )
        assert "hash" in self.only_break(store, 6)

    def test_verify_during_a_concurrent_append_reports_no_false_break(
        self, event_store: StoreUnderTest, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        early, late = scenario("licensed", "race-a"), scenario("licensed", "race-b")
        append_batches(event_store, [early.batches[0], late.batches[0]])
        other_worker = open_store(store_url(event_store))

        def first_break_while_a_worker_appends(stream_id: str, rows: Any, head: Any) -> Any:
            if stream_id == "race-a":  # heads are already read; race-b gets a new batch before its rows
                other_worker.append("race-b", 2, late.batches[1])
            return first_break(stream_id, rows, head)

        monkeypatch.setattr("chipclear.store.sql.first_break", first_break_while_a_worker_appends)
        try:
            during = event_store.verify()
        finally:
            monkeypatch.undo()
            other_worker.close()

        assert event_store.verify().ok  # the log itself is fine...
        assert during.ok, during.breaks  # ...so the audit taken during the append must be too


# -- concurrent writers ----------------------------------------------------------------------------------


def assert_complete(store: EventStore, found: Sequence[Scenario]) -> None:
    for each in found:
        assert [as_event(e) for e in store.read_stream(each.request_id)] == each.events
        assert store.get_request(each.request_id) == each.state
    report = store.verify()
    assert report.ok, report.breaks
    assert report.streams_checked == len(found)
    assert report.events_checked == sum(len(each.events) for each in found)


def run_threads(targets: Sequence[Callable[[], None]], timeout: float = 60) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads)
    return errors


def _append_in_process(url: str, batches_json: list[list[str]], barrier: ProcessBarrier) -> None:
    """Runs in a spawned process: its own store handle, opened from the URL as a worker would."""
    store = open_store(url)
    try:
        barrier.wait(timeout=60)
        for batch_json in batches_json:
            batch = [Event.model_validate_json(text) for text in batch_json]
            store.append(batch[0].stream_id, batch[0].version - 1, batch)
    finally:
        store.close()


class TestConcurrentWriters:
    def test_threads_on_distinct_streams(self, event_store: StoreUnderTest) -> None:
        workers = 4
        found = [scenarios(6, prefix=f"thread{w}") for w in range(workers)]
        start = threading.Barrier(workers)
        handles: list[EventStore] = [event_store, event_store, open_store(store_url(event_store))]
        handles.append(open_store(store_url(event_store)))

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

    def test_processes_on_distinct_streams(self, event_store: StoreUnderTest) -> None:
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
    def test_two_writers_racing_for_the_same_version(self, event_store: StoreUnderTest, round_: int) -> None:
        found = scenario("licensed", f"race-{round_}")
        append_batches(event_store, found.batches[:1])
        state = fold(found.batches[0])
        contenders = {
            "evaluate": found.batches[1],
            "withdraw": decide(state, Withdraw(reason="cancelled"), AUTO, NOW + minutes(1), new_id=new_id),
        }
        rival_store = open_store(store_url(event_store))
        start = threading.Barrier(2)
        results: dict[str, AppendResult] = {}

        def contender(name: str, store: EventStore) -> Callable[[], None]:
            def run() -> None:
                start.wait(timeout=30)
                results[name] = store.append(found.request_id, 2, contenders[name])

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
        assert event_store.get_request(found.request_id) == fold(stored)
        assert event_store.verify().ok


# -- open_store ----------------------------------------------------------------------------------------


def pragma_synchronous(store: EventStore) -> int:
    assert isinstance(store, SQLiteEventStore)
    value = store._conn().execute("PRAGMA synchronous").fetchone()[0]
    assert isinstance(value, int)
    return value


FULL, NORMAL, EXTRA = 2, 1, 3


class TestOpenStore:
    def test_relative_path(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)
        with closing(open_store("sqlite:///data/events.db")) as store:
            assert isinstance(store, SQLiteEventStore)
            assert store.path == Path("data/events.db")
            assert pragma_synchronous(store) == FULL
            found = scenario("withdrawn")
            append_all(store, [found])
            assert store.get_request(found.request_id) == found.state
        assert (tmp_path / "data" / "events.db").is_file()

    def test_absolute_path(self, tmp_path: Path) -> None:
        target = tmp_path / "abs" / "events.db"
        url = f"sqlite:///{target}"
        assert url.startswith("sqlite:////")
        with closing(open_store(url)) as store:
            assert isinstance(store, SQLiteEventStore)
            assert store.path == target and store.path.is_absolute()
        assert target.is_file()

    @pytest.mark.parametrize(
        ("query", "level"),
        [
            ("", FULL),
            ("?synchronous=normal", NORMAL),
            ("?synchronous=NORMAL", NORMAL),
            ("?synchronous=full", FULL),
            ("?synchronous=extra", EXTRA),
        ],
    )
    def test_synchronous_option(self, tmp_path: Path, query: str, level: int) -> None:
        with closing(open_store(f"sqlite:///{tmp_path / 'events.db'}{query}")) as store:
            assert isinstance(store, SQLiteEventStore)
            assert store.path == tmp_path / "events.db"
            assert pragma_synchronous(store) == level

    @pytest.mark.parametrize(
        "url",
        [
            "sqlite:///events.db?synchronous=off",
            "sqlite:///events.db?synchronous=fast",
            "sqlite:///",
            "sqlite:///?synchronous=normal",
            "mysql://x",
            "postgresql://chipclear@localhost/events?pool_max_size=0",
            "postgresql://chipclear@localhost/events?pool_min_size=5&pool_max_size=2",
            "postgresql://chipclear@localhost/events?pool_timeout=soon",
            "sqlite://events.db",
            "events.db",
        ],
    )
    def test_bad_urls_name_the_variable(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
    ) -> None:
        monkeypatch.chdir(tmp_path)
        with pytest.raises(StoreURLError, match="CHIPCLEAR_EVENT_STORE"):
            open_store(url)
        assert list(tmp_path.iterdir()) == []  # nothing created on the way to the error

    def test_unreachable_postgresql_names_the_store_without_its_password(self) -> None:
        url = f"postgresql://chipclear:s3cret@127.0.0.1:{free_port()}/events?pool_timeout=1"
        with pytest.raises(StoreUnavailable, match="cannot reach the PostgreSQL event store") as caught:
            open_store(url)
        assert "s3cret" not in str(caught.value) and ":***@" in str(caught.value)

    @pytest.mark.parametrize(
        ("url", "error", "says"),
        [
            ("{base}/no_such_db", StoreUnavailable, 'database "no_such_db" does not exist'),
            (
                "postgresql://nobody@127.0.0.1:{port}/postgres",
                StoreUnavailable,
                'role "nobody" does not exist',
            ),
            ("{base}/postgres?sslmod=require", StoreURLError, 'invalid URI query parameter: "sslmod"'),
        ],
    )
    def test_a_postgresql_store_that_refuses_says_why(
        self, postgres: Cluster, url: str, error: type[Exception], says: str
    ) -> None:
        base = f"postgresql://postgres@127.0.0.1:{postgres.port}"
        with pytest.raises(error, match="CHIPCLEAR_EVENT_STORE") as caught:
            open_store(url.format(base=base, port=postgres.port))
        assert says in str(caught.value)

    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("postgresql://bob:s3cret@db/x", "postgresql://bob:***@db/x"),
            (
                "postgresql://bob@db/x?password=s3cret&sslmode=require",
                "postgresql://bob@db/x?password=***&sslmode=require",
            ),
            ("postgresq://bob:s3cret@db/x", "postgresq://bob:***@db/x"),
            ("postgresql://bob@db/x?sslmode=require", "postgresql://bob@db/x?sslmode=require"),
            ("sqlite:///var/lib/chipclear/events.db", "sqlite:///var/lib/chipclear/events.db"),
        ],
    )
    def test_urls_in_messages_and_logs_never_show_a_password(self, url: str, shown: str) -> None:
        assert redact(url) == shown

    def test_an_unsupported_scheme_is_named_without_its_password(self) -> None:
        with pytest.raises(StoreURLError, match="unsupported scheme 'postgresq'") as caught:
            open_store("postgresq://bob:s3cret@db/x")
        assert "s3cret" not in str(caught.value)

    def test_unmigrated_postgresql_is_refused_until_migrated(self, postgres: Cluster) -> None:
        url = postgres.new_schema()
        with pytest.raises(SchemaError, match="chipclear store migrate"):
            open_store(url)
        with closing(open_store(url, require_schema=False)) as store:
            assert store.schema_version() == 0
            assert [m.version for m in store.migrate()] == [1]
            assert store.migrate() == []  # idempotent
        with closing(open_store(url)) as store:
            assert store.schema_version() == 1 and store.verify().ok
