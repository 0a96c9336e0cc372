"""The allocation ledger against a real dev server: concurrency, queueing, releases, continue-as-new.

Every path is driven as a user drives it (submissions, updates, batch openings); nothing is
terminated or cancelled by hand.
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

from temporalio.client import Client

from chipclear import client as ops
from chipclear.contracts import LedgerInput, entity_queue, ledger_id, ledger_stream
from chipclear.domain.allocation import (
    BatchSpec,
    LedgerState,
    OpenBatch,
    RequestsSettled,
    Reservation,
    Reserve,
    fold_ledger,
)
from chipclear.domain.commands import Withdraw
from chipclear.domain.events import AllocationGranted, StoredEvent
from chipclear.domain.gates import cn_import
from chipclear.domain.models import ImportRequest, Status
from chipclear.domain.policy import DEFAULT_ROUTE, Policy
from chipclear.domain.state import RequestState
from chipclear.projections import get_request
from chipclear.store.sqlite import SQLiteEventStore
from tests.conftest import running_worker
from tests.factories import make_policy, make_request
from tests.workflows.support import ledger_through_runs, reserve_until_admitted, submit_signed
from workflows.allocation import AllocationLedgerWorkflow


def allocation_policy(**sections: dict[str, Any]) -> Policy:
    """US export decided by rule; cn-import and the domestic quota wait for reviewers."""
    return make_policy(
        "manual",
        route=DEFAULT_ROUTE,  # given by name, so mypy does not read `**sections` as the route
        us_export={"mode": "auto", **sections.pop("us_export", {})},
        cn_import={"allocate_from_batches": True, **sections.pop("cn_import", {})},
        **sections,
    )


async def open_batch(client: Client, task_queue: str, **spec: Any) -> list[str]:
    result = await ops.open_batch(client, task_queue, OpenBatch(batch=BatchSpec(**spec), actor="wang"))
    return result.served


async def ledger(client: Client, store: SQLiteEventStore, task_queue: str) -> LedgerState:
    return await ops.ledger_state(client, store, task_queue)


async def settled(
    store: SQLiteEventStore, request_ids: list[str], done: Any, within: float = 90.0
) -> dict[str, RequestState]:
    """Wait (reading the event store, as `chipclear status` would) until every request is `done`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        states = {rid: get_request(store, rid) for rid in request_ids}
        if all(state is not None and done(state) for state in states.values()):
            return {rid: state for rid, state in states.items() if state is not None}
        if loop.time() > deadline:
            waiting = [rid for rid, s in states.items() if s is None or not done(s)]
            raise AssertionError(f"{len(waiting)} requests never settled, e.g. {waiting[:3]}")
        await asyncio.sleep(0.2)


async def stream_ending(
    store: SQLiteEventStore, stream_id: str, last_type: str, within: float = 60.0
) -> list[StoredEvent]:
    """The stream once its last event is of `last_type` (or as it stands when `within` has passed)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        events = store.read_stream(stream_id)
        if events[-1].type == last_type or loop.time() > deadline:
            return events
        await asyncio.sleep(0.2)


def buyer(name: str) -> dict[str, str]:
    return {"name": name, "country": "CN", "kind": "private"}


def allocation(state: RequestState) -> cn_import.AllocationRecord | None:
    return cn_import.GATE.slice(state).allocation


def at_cn_import(state: RequestState) -> bool:
    return state.status in ("cn_import_review", "cn_import_queued") and allocation(state) is not None


def granted_units(store: SQLiteEventStore, request_ids: list[str]) -> int:
    return sum(
        event.data.units
        for rid in request_ids
        for event in store.read_stream(rid)
        if isinstance(event.data, AllocationGranted)
    )


async def submit_all(
    client: Client, store: SQLiteEventStore, task_queue: str, requests: list[ImportRequest]
) -> None:
    await asyncio.gather(*(submit_signed(client, store, r, task_queue) for r in requests))


async def test_concurrent_reservations_never_exceed_capacity_and_the_queue_is_served_in_order(
    client: Client, store: SQLiteEventStore
) -> None:
    rng = random.Random(2026)
    requests = [
        make_request(
            request_id=f"conc-{i:03d}",
            buyer=buyer(rng.choice(["ByteDance Ltd.", "JD.com", "Kuaishou", "Baidu Inc."]) + f" {i}"),
            units=rng.randint(50, 150),
        )
        for i in range(int(os.environ.get("CONC_N", "300")))
    ]
    demand = sum(r.units for r in requests)
    capacity = int(os.environ.get("CONC_CAP", "20000"))
    assert demand > capacity
    ids = [r.request_id for r in requests]
    async with running_worker(client, store, allocation_policy()) as worker:
        queue = worker.task_queue
        await open_batch(client, queue, batch_id="B1", capacity=capacity)
        await submit_all(client, store, queue, requests)
        states = await settled(store, ids, at_cn_import)

        book = await ledger(client, store, queue)
        assert book.batches["B1"].allocated == capacity  # every unit promised once, none twice
        assert sum(a.units for a in book.allocations.values()) == capacity
        assert granted_units(store, ids) == capacity
        granted = [rid for rid, s in states.items() if s.status == "cn_import_review"]
        queued = [rid for rid, s in states.items() if s.status == "cn_import_queued"]
        assert len(granted) + len(queued) == len(requests) and queued
        assert {e.request_id for e in book.queue} == set(queued)
        assert len(set(book.allocations)) == len(book.allocations) == len(granted)

        # The next batch serves the queue at once, in order, and wakes exactly those requests.
        waiting = [entry.request_id for entry in book.ordered_queue()]
        head = waiting[:40]
        room = sum(next(r.units for r in requests if r.request_id == rid) for rid in head)
        served = await open_batch(client, queue, batch_id="B2", capacity=room)
        assert served == head
        woken = await settled(store, head, lambda s: s.status == "cn_import_review")
        assert all((held := allocation(s)) and held.batch_id == "B2" for s in woken.values())
        assert all(get_request(store, rid).status == "cn_import_queued" for rid in waiting[40:])  # type: ignore[union-attr]

        # A withdrawal gives its units back, and the head of the queue is served from them.
        donor = granted[0]
        donor_units = allocation(states[donor]).units  # type: ignore[union-attr]
        next_in_line = waiting[40]
        await ops.update(client, donor, Withdraw(reason="order cancelled"))
        await settled(store, [donor], lambda s: (held := allocation(s)) is not None and held.released)
        after = await ledger(client, store, queue)
        assert donor not in after.allocations
        assert after.batches["B1"].allocated <= capacity
        needed = next(r.units for r in requests if r.request_id == next_in_line)
        served_state = await settled(store, [next_in_line], lambda s: s.status == "cn_import_review")
        assert allocation(served_state[next_in_line]).units == min(needed, donor_units)  # type: ignore[union-attr]

        # The donor gives back what each gate holds one step at a time: its allocation, then (through the
        # buyer's cap) its US approval, which may still be on its way when the next in line is served.
        *_, release, unused = await stream_ending(store, donor, "ExportApprovalReleased")
        assert unused.type == "ExportApprovalReleased"  # its US approval goes unused too
        assert release.type == "AllocationReleased" and release.data.units == donor_units  # type: ignore[union-attr]
        ledger_types = [e.type for e in store.read_stream(ledger_stream(ledger_id(queue)))]
        assert "UnitsReleased" in ledger_types
        assert store.verify().ok
        for batch in after.batches.values():
            assert batch.allocated + batch.free == batch.capacity


async def test_priority_buyers_first_then_first_come_first_served(
    client: Client, store: SQLiteEventStore
) -> None:
    names = ["JD.com, Inc.", "ByteDance Ltd.", "Hangzhou Lingxi Co., Ltd.", "Alibaba Group Holding Ltd."]
    requests = [make_request(request_id=f"prio-{i}", buyer=buyer(n), units=100) for i, n in enumerate(names)]
    ids = [r.request_id for r in requests]
    async with running_worker(client, store, allocation_policy()) as worker:
        queue = worker.task_queue
        for request in requests:  # one at a time, so arrival order is known
            await submit_signed(client, store, request, queue)
            await settled(store, [request.request_id], at_cn_import)
        book = await ledger(client, store, queue)
        assert [e.request_id for e in book.ordered_queue()] == ids
        served = await open_batch(
            client, queue, batch_id="P1", capacity=300, priority=["bytedance", "ALIBABA"], eligible="all"
        )
        # ByteDance and Alibaba first (priority, by arrival), then JD.com, the first non-priority.
        assert served == ["prio-1", "prio-3", "prio-0"]
        assert (await ledger(client, store, queue)).position("prio-2") == 1


async def test_denial_after_allocation_releases_the_units(client: Client, store: SQLiteEventStore) -> None:
    request = make_request(
        request_id="denied-after-allocation",
        data_center={"name": "Hub", "province": "Ningxia", "state_funded": True},
        units=500,
    )
    policy = allocation_policy(domestic_quota={"mode": "auto"}, cn_import={"mode": "auto"})
    async with running_worker(client, store, policy) as worker:
        await open_batch(client, worker.task_queue, batch_id="D1", capacity=1_000)
        submission = await ops.submit(client, store, request, task_queue=worker.task_queue, actor="a")
        result = await submission.handle.result()
        book = await ledger(client, store, worker.task_queue)
    assert result.status == Status.DENIED
    types = [e.type for e in store.read_stream(request.request_id)]
    assert types.count("AllocationGranted") == 1
    # Compensation, in order: the units back to the batch, then the export approval recorded unused.
    assert types[-3:] == ["GateDenied", "AllocationReleased", "ExportApprovalReleased"]
    assert book.batches["D1"].allocated == 0 and book.released[request.request_id].units == 500


async def test_expiry_in_the_queue_leaves_it(client: Client, store: SQLiteEventStore) -> None:
    request = make_request(request_id="expires-queued", units=100)
    policy = allocation_policy(cn_import={"decision_deadline": "PT2S"})
    async with running_worker(client, store, policy) as worker:
        submission = await ops.submit(client, store, request, task_queue=worker.task_queue, actor="a")
        result = await submission.handle.result()
        book = await ledger(client, store, worker.task_queue)
    assert result.status == Status.EXPIRED
    types = [e.type for e in store.read_stream(request.request_id)]
    assert types[-4:] == [
        "AllocationQueued",
        "RequestExpired",
        "AllocationReleased",
        "ExportApprovalReleased",
    ]
    assert book.queue == [] and book.released[request.request_id].units == 0


async def test_ledger_continues_as_new_and_loses_nothing(client: Client, store: SQLiteEventStore) -> None:
    async with running_worker(client, store, allocation_policy()) as worker:
        queue = worker.task_queue
        handle = await client.start_workflow(
            AllocationLedgerWorkflow.run,
            LedgerInput(history_limit=60),
            id=ledger_id(queue),
            task_queue=entity_queue(queue),
        )
        first_run = handle.result_run_id
        await open_batch(client, queue, batch_id="C1", capacity=1_000)
        answers = []
        for i in range(40):  # each reservation adds several history events: well past the limit
            reserve = Reserve(request_id=f"can-{i}", buyer=f"Buyer {i % 7}", units=40, workflow_id=f"wf-{i}")
            # Sent as the reserve activity sends it: past the history limit the ledger turns the next one
            # away while it continues as new.
            answers.append((await reserve_until_admitted(client, queue, reserve))[0])
        current = await client.get_workflow_handle(ledger_id(queue)).describe()
        assert current.run_id != first_run  # it continued as new at least once
        book = await ledger(client, store, queue)
        assert book.batches["C1"].allocated == 1_000
        assert len(book.allocations) == 25 and len(book.queue) == 15
        # Idempotent across runs: asking again gives the very same answer and reserves nothing more.
        again, _ = await reserve_until_admitted(
            client, queue, Reserve(request_id="can-3", buyer="Buyer 3", units=40, workflow_id="wf-3")
        )
        assert again == answers[3]
        assert (await ledger(client, store, queue)).batches["C1"].allocated == 1_000
        stored = fold_ledger(event.data for event in store.read_stream(ledger_stream(ledger_id(queue))))
        assert stored.allocations == book.allocations and stored.queue == book.queue


async def test_a_rush_longer_than_a_run_is_answered_across_runs(
    client: Client, store: SQLiteEventStore
) -> None:
    """The server takes at most 2,000 updates in one run. A rush that never lets the ledger's handlers all
    finish would keep its run from continuing as new until that limit refused every further update. Past
    its history limit the ledger turns new reservations away instead (ContinuingAsNew), the ones in flight
    finish, it continues, and each reservation sent again is answered once, in a later run."""
    count, in_flight = 2_100, 500
    async with running_worker(client, store, allocation_policy()) as worker:
        queue = worker.task_queue
        await open_batch(client, queue, batch_id="R1", capacity=count * 10)
        first_run = (await client.get_workflow_handle(ledger_id(queue)).describe()).run_id
        gate = asyncio.Semaphore(in_flight)

        async def one(index: int) -> tuple[Reservation, int]:
            command = Reserve(
                request_id=f"rush-{index}", buyer=f"Buyer {index % 9}", units=10, workflow_id="none"
            )
            async with gate:
                return await reserve_until_admitted(client, queue, command)

        results = await asyncio.gather(*(one(index) for index in range(count)))
        assert {answer.outcome for answer, _ in results} == {"granted"}
        assert (await client.get_workflow_handle(ledger_id(queue)).describe()).run_id != first_run
        book = await ledger(client, store, queue)
        assert book.batches["R1"].allocated == count * 10 and len(book.allocations) == count
        stored = fold_ledger(event.data for event in store.read_stream(ledger_stream(ledger_id(queue))))
        assert stored.allocations == book.allocations


async def test_the_ledger_stops_carrying_what_is_settled(client: Client, store: SQLiteEventStore) -> None:
    """A request that holds its licence and one that gave its units back are carried into one more run,
    then settled as that run ends: the next run's state no longer holds them, the batch keeps their units,
    the store keeps their grants, and the state still folds from the stored events."""
    policy = make_policy("auto", cn_import={"allocate_from_batches": True})
    async with running_worker(client, store, policy) as worker:
        ledger_workflow, _, (licensed, denied) = await ledger_through_runs(client, store, worker, 60)
        stream = ledger_stream(ledger_workflow)
        [event] = [event for event in store.read_stream(stream) if event.type == "RequestsSettled"]
        assert event.data == RequestsSettled(request_ids=[licensed, denied], licensed=1)
        book = await ledger(client, store, worker.task_queue)
    assert licensed not in book.allocations and denied not in book.released
    assert book.batches["S1"].by_buyer["bytedance"] == 600
    assert book.batches["S1"].allocated == 600 + 10 * len(book.allocations)  # keep-*: all still held
    assert fold_ledger(e.data for e in store.read_stream(stream)) == book
    # The grant is still in the record, and in the request's own stream.
    assert granted_units(store, [licensed]) == 600
