"""Helpers the workflow tests share: starting a request, waiting on its own state, deciding its gates."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from chipclear import client as ops
from chipclear.contracts import ImportRequestResult, ledger_id
from chipclear.domain.allocation import Reservation, Reserve
from chipclear.domain.commands import Decide
from chipclear.domain.models import ImportRequest
from chipclear.domain.state import RequestState, fold
from chipclear.projections import get_request
from chipclear.store.protocol import EventStore
from chipclear.store.sqlite import SQLiteEventStore
from chipclear.temporal import turned_away_to_continue
from chipclear.worker import ChipclearWorker
from tests import keys
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
    """As the reserve activity sends it: again while the ledger turns it away to continue as new, or the
    server is busy; anything else fails the test. Returns the answer and how often it was turned away."""
    turned_away = 0
    while True:
        try:
            answer = await client.get_workflow_handle(ledger_id(queue)).execute_update(
                "reserve", command, result_type=Reservation
            )
            return answer, turned_away
        except WorkflowUpdateFailedError as exc:
            if not turned_away_to_continue(exc):
                raise
            turned_away += 1
        except RPCError as exc:
            if exc.status not in (RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.UNAVAILABLE):
                raise
        await asyncio.sleep(0.05 + random.random() * 0.05)
