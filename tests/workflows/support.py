"""Helpers the workflow tests share: starting a request, waiting on its own state, deciding its gates."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.worker import Worker

from chipclear import client as ops
from chipclear.contracts import (
    LEDGER_WORKFLOW,
    ImportRequestResult,
    LedgerInput,
    entity_queue,
    ledger_id,
)
from chipclear.domain.allocation import BatchSpec, OpenBatch, Reservation, Reserve
from chipclear.domain.commands import Decide
from chipclear.domain.models import ImportRequest, Status
from chipclear.domain.state import RequestState, fold
from chipclear.projections import get_request
from chipclear.store.protocol import EventStore
from chipclear.store.sqlite import SQLiteEventStore
from chipclear.temporal import EntityCallError, send_again_because
from chipclear.worker import ChipclearWorker
from tests import keys
from tests.factories import make_request
from workflows.import_request import ImportRequestWorkflow

Handle = WorkflowHandle[ImportRequestWorkflow, ImportRequestResult]


async def submit_signed(
    client: Client, store: EventStore, request: ImportRequest, task_queue: str
) -> ops.Submission:
    """Submit `request` as the applicant does: a registered person, signing with their key."""
    return await ops.submit(
        client, store, request, task_queue=task_queue, actor="applicant", key=keys.private("applicant")
    )


async def start(
    client: Client, store: SQLiteEventStore, worker: ChipclearWorker | Worker, request: ImportRequest
) -> Handle:
    """Submit `request` as an applicant would; it must be new."""
    submission = await submit_signed(client, store, request, worker.task_queue)
    assert submission.created
    return submission.handle


async def wait_for(client: Client, request_id: str, predicate: Any, within: float = 20.0) -> RequestState:
    """Poll the workflow's own state until `predicate` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        state = await ops.live_state(client, request_id)
        if state is not None and predicate(state):
            return state
        if loop.time() > deadline:
            raise AssertionError(f"{request_id}: condition not reached, last state {state}")
        await asyncio.sleep(0.05)


async def settled_history_length(handle: WorkflowHandle[Any, Any]) -> int:
    """The history length once the workflow has stopped moving (its last append has completed)."""
    previous = -1
    while True:
        length = len((await handle.fetch_history()).events)
        if length == previous:
            return length
        previous = length
        await asyncio.sleep(0.5)


def at_gate(gate: str) -> Callable[[RequestState], bool]:
    """A `wait_for` predicate: the request stands at `gate` (by name, `us-export`)."""
    return lambda state: state.gate == gate


def decision(gate: str, reviewer: str, **fields: Any) -> Decide:
    """A reviewer's decision at `gate`: an approval unless `approve=False`."""
    return Decide(gate=gate, reviewer=reviewer, approve=fields.pop("approve", True), **fields)


def assert_store_matches(store: SQLiteEventStore, request_id: str, result: ImportRequestResult) -> None:
    """The stored stream is gapless, folds to the workflow's result, matches the projection and verifies."""
    events = store.read_stream(request_id)
    assert [e.version for e in events] == list(range(1, len(events) + 1))
    state = fold(events)
    assert state.status == result.status
    assert state.version == result.version
    assert get_request(store, request_id) == state
    assert store.verify().ok


async def reserve_until_admitted(client: Client, queue: str, command: Reserve) -> tuple[Reservation, int]:
    """As the reserve activity sends it: again whenever `send_again_because` says so; anything else fails
    the test. Returns the answer and how often the ledger turned it away to continue as new."""
    turned_away = 0
    while True:
        try:
            answer = await client.get_workflow_handle(ledger_id(queue)).execute_update(
                "reserve", command, result_type=Reservation
            )
            return answer, turned_away
        except EntityCallError as exc:
            if send_again_because(exc) is None:
                raise
            turned_away += isinstance(exc, WorkflowUpdateFailedError)
        await asyncio.sleep(0.05 + random.random() * 0.05)


async def ledger_through_runs(
    client: Client, store: SQLiteEventStore, worker: ChipclearWorker, history_limit: int
) -> tuple[str, list[str], list[str]]:
    """A licensed request and a denied one (its units given back) on an allocation ledger with a short
    history, then reservations of no real request until the ledger has begun its third run: the second
    carried both requests in, and (with settling) settled them as it ended. The ledger's id, its run ids
    first to last, and the two requests' ids (licensed, denied)."""
    queue = worker.task_queue
    licensed = make_request(
        request_id=f"settle-licensed-{queue}",
        buyer={"name": "ByteDance Ltd.", "country": "CN", "kind": "private"},
        units=600,
        domestic_procurement=[{"vendor": "Huawei", "product": "Ascend", "units": 60_000, "invoice": queue}],
    )
    denied = make_request(  # a state-funded data centre: the domestic quota denies it, its units go back
        request_id=f"settle-denied-{queue}",
        buyer={"name": "JD.com, Inc.", "country": "CN", "kind": "private"},
        units=500,
        data_center={"name": "Hub", "province": "Ningxia", "state_funded": True},
    )
    ledger = await client.start_workflow(
        LEDGER_WORKFLOW,
        LedgerInput(history_limit=history_limit),
        id=ledger_id(queue),
        task_queue=entity_queue(queue),
    )
    runs = [ledger.result_run_id or ""]
    await ops.open_batch(
        client, queue, OpenBatch(batch=BatchSpec(batch_id="S1", capacity=10_000), actor="wang")
    )
    handles = [await start(client, store, worker, request) for request in (licensed, denied)]
    assert [(await handle.result()).status for handle in handles] == [Status.LICENSED, Status.DENIED]
    for i in range(100):
        if len(runs) == 3:
            return ledger_id(queue), runs, [licensed.request_id, denied.request_id]
        command = Reserve(request_id=f"keep-{i}-{queue}", buyer="Kuaishou", units=10, workflow_id="none")
        await reserve_until_admitted(client, queue, command)
        current = (await client.get_workflow_handle(ledger_id(queue)).describe()).run_id
        if current != runs[-1]:
            runs.append(current)
    raise AssertionError(f"the ledger was meant to continue as new twice: {len(runs)} run(s)")
