"""The server's budget of distinct updates per workflow run (`history.maxTotalUpdates`, 2,000 by default).

It counts the updates a run has completed and those it holds admitted or accepted. Under a rush the ledger's
run can spend it while it is closing (turning new reservations away, finishing those in flight, then
continuing as new); every further update is then refused with FAILED_PRECONDITION until the next run starts.
The reserve activity sends such a reservation again, as it does one the ledger turned away, instead of
failing it (which cost the request a failed local activity and a patient wait of 5 s or more).

A dev server of its own, with a budget of 12, so that a rush of 30 runs into it for certain.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import ActivityEnvironment

from activities.allocation import AllocationActivities
from chipclear import client as ops
from chipclear.contracts import CONTINUING_AS_NEW, LEDGER_WORKFLOW, LedgerInput, entity_queue, ledger_id
from chipclear.devserver import DevServer, free_port, stop
from chipclear.domain.allocation import BatchSpec, OpenBatch, Reservation, Reserve
from chipclear.domain.policy import DEFAULT_ROUTE
from chipclear.store.sqlite import SQLiteEventStore
from chipclear.temporal import connect, send_again_because
from tests.conftest import running_worker
from tests.factories import make_policy

BUDGET, RUSH = 12, 30


@pytest.fixture
async def small_budget(tmp_path: Path) -> AsyncIterator[Client]:
    budget = ["--dynamic-config-value", f"history.maxTotalUpdates={BUDGET}"]
    dev = DevServer(port=free_port(), ui_port=None, db=tmp_path / "temporal.db", extra=budget)
    process = dev.start(log=tmp_path / "temporal.log")
    try:
        await dev.wait_ready(process)
        yield await connect(target_host=dev.address, namespace="default")
    finally:
        stop(process)


async def test_reservations_past_a_runs_update_budget_are_sent_again_and_answered(
    small_budget: Client, store: SQLiteEventStore
) -> None:
    client = small_budget
    policy = make_policy(
        "manual", route=DEFAULT_ROUTE, us_export={"mode": "auto"}, cn_import={"allocate_from_batches": True}
    )
    async with running_worker(client, store, policy) as worker:
        queue = worker.task_queue
        # A short history: the ledger continues as new every few reservations, as it would in a rush.
        short, home = LedgerInput(history_limit=30), entity_queue(queue)
        await client.start_workflow(LEDGER_WORKFLOW, short, id=ledger_id(queue), task_queue=home)
        await ops.open_batch(
            client, queue, OpenBatch(batch=BatchSpec(batch_id="B1", capacity=10_000), actor="wang")
        )
        heartbeats: list[str] = []

        async def reserve(index: int) -> Reservation:
            # The real activity, on the deployment's queue; run as a regular one, whose heartbeats say why
            # it waited (a request runs it as a local activity, which has none).
            env = ActivityEnvironment(client)
            env.info = dataclasses.replace(env.info, task_queue=queue, is_local=False)
            env.on_heartbeat = lambda *details: heartbeats.extend(str(d) for d in details)
            command = Reserve(request_id=f"rush-{index}", buyer=f"B{index % 5}", units=10, workflow_id="none")
            answer: Reservation = await env.run(AllocationActivities(client).reserve_units, command)
            return answer

        answers = await asyncio.gather(*(reserve(index) for index in range(RUSH)))
        assert [answer.outcome for answer in answers] == ["granted"] * RUSH
        # The rush did run into the budget, and those refused were sent again rather than failed.
        assert any("update budget" in beat for beat in heartbeats), heartbeats[:5]
        book = await ops.ledger_state(client, store, queue)
        assert book.batches["B1"].allocated == 10 * RUSH and len(book.allocations) == RUSH


def _refused(status: RPCStatusCode, message: str) -> RPCError:
    return RPCError(message, status, b"")


PRECONDITION = RPCStatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize(
    ("error", "again"),
    [
        (WorkflowUpdateFailedError(ApplicationError("closing", type=CONTINUING_AS_NEW)), True),
        (WorkflowUpdateRPCTimeoutOrCancelledError(), True),
        (_refused(RPCStatusCode.RESOURCE_EXHAUSTED, "limit on number of concurrent in-flight updates"), True),
        (_refused(PRECONDITION, "The limit on the total number of distinct updates"), True),
        (_refused(PRECONDITION, "Unable to ... due to Workflow Task in failed state."), True),
        # The entity's own rule refused it: that is the answer.
        (WorkflowUpdateFailedError(ApplicationError("no batch B9", type="DomainError")), False),
        (_refused(PRECONDITION, "some other precondition"), False),
        (_refused(RPCStatusCode.NOT_FOUND, "workflow not found"), False),
        (_refused(RPCStatusCode.INVALID_ARGUMENT, "bad input"), False),
    ],
)
def test_an_entity_call_is_sent_again_only_for_what_time_cures(error: BaseException, again: bool) -> None:
    assert (send_again_because(error) is not None) is again


async def test_a_call_is_never_sent_again_once_its_caller_is_cancelled() -> None:
    seen: list[str | None] = []

    async def caller() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            # As the SDK reports a cancelled update call: the caller's cancellation, as this error.
            seen.append(send_again_because(WorkflowUpdateRPCTimeoutOrCancelledError()))
            seen.append(send_again_because(_refused(RPCStatusCode.UNAVAILABLE, "connection refused")))
            raise

    task = asyncio.create_task(caller())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [None, None]
