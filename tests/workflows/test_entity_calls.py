"""How a request's activities address an entity workflow (`chipclear.temporal.update_entity`).

A plain update while the entity runs; an update-with-start only when none runs (never started, or ended),
which starts it. Every reservation used to be an update-with-start, and the server tried a start for each.
Counted here by a client interceptor on a real server, through the real reserve activity.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

from temporalio.client import (
    Client,
    Interceptor,
    OutboundInterceptor,
    StartWorkflowUpdateInput,
    StartWorkflowUpdateWithStartInput,
    WorkflowExecutionStatus,
    WorkflowUpdateHandle,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.testing import ActivityEnvironment

from activities.allocation import AllocationActivities
from activities.bench import NOOP_LEDGER_RESERVE, bare_step, noop_ledger
from chipclear.contracts import LEDGER_WORKFLOW, LedgerInput, ledger_id
from chipclear.domain.allocation import Reservation, Reserve
from chipclear.domain.policy import DEFAULT_ROUTE
from chipclear.store.sqlite import SQLiteEventStore
from chipclear.temporal import update_entity
from tests.conftest import running_worker
from tests.factories import make_policy
from tests.workflows.support import reserve_until_admitted
from workflows.ledger_bench import NoOpLedgerWorkflow


class _Counting(Interceptor):
    """Records each update call the client sends: "plain", or "with start"."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _CountingOutbound(next, self.calls)


class _CountingOutbound(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, calls: list[str]) -> None:
        super().__init__(next)
        self._calls = calls

    async def start_workflow_update(self, input: StartWorkflowUpdateInput) -> WorkflowUpdateHandle[Any]:
        self._calls.append("plain")
        return await super().start_workflow_update(input)

    async def start_update_with_start_workflow(
        self, input: StartWorkflowUpdateWithStartInput
    ) -> WorkflowUpdateHandle[Any]:
        self._calls.append("with start")
        return await super().start_update_with_start_workflow(input)


def _watched_by(client: Client, counting: _Counting) -> Client:
    """The same connection, with every update call counted."""
    config = client.config()
    config["interceptors"] = [counting]
    return Client(**config)


async def test_the_ledger_is_started_by_the_first_reservation_and_updated_plainly_after(
    client: Client, store: SQLiteEventStore
) -> None:
    counting = _Counting()
    watched = _watched_by(client, counting)
    policy = make_policy("manual", route=DEFAULT_ROUTE, cn_import={"allocate_from_batches": True})
    async with running_worker(client, store, policy) as worker:
        queue = worker.task_queue

        async def reserve(request_id: str) -> Reservation:
            env = ActivityEnvironment(watched)
            env.info = dataclasses.replace(env.info, task_queue=queue, is_local=True)
            command = Reserve(request_id=request_id, buyer="Buyer Co.", units=5, workflow_id="none")
            answer: Reservation = await env.run(AllocationActivities(watched).reserve_units, command)
            return answer

        # No ledger yet: the plain update finds none, the same call sent with the start starts it.
        first = await reserve("R-1")
        assert counting.calls == ["plain", "with start"]
        ledger = client.get_workflow_handle(ledger_id(queue))
        started = await ledger.describe()
        assert started.status == WorkflowExecutionStatus.RUNNING

        # Running: one plain update each, no start tried.
        second = await reserve("R-2")
        again = await reserve("R-1")
        assert counting.calls == ["plain", "with start", "plain", "plain"]
        assert (first.outcome, second.outcome) == ("queued", "queued")  # no batch is open
        assert again == first  # a repeated reservation is answered as the first was


async def test_an_entity_that_has_ended_is_started_again(client: Client, store: SQLiteEventStore) -> None:
    """An ended entity (terminated by hand) answers a plain update with NOT_FOUND, as one never started
    does: the same call, sent with the start, starts a new run. The yardstick's no-op ledger stands in for
    an entity here: a real ledger started afresh would not find its stored stream where it left it."""
    counting = _Counting()
    watched = _watched_by(client, counting)
    policy = make_policy("manual", route=DEFAULT_ROUTE)
    extra = {"extra_workflows": [NoOpLedgerWorkflow], "extra_activities": [bare_step]}
    async with running_worker(client, store, policy, **extra) as worker:
        entity = noop_ledger(worker.task_queue)
        command = Reserve(request_id="R-1", buyer="Buyer Co.", units=1, workflow_id="none")
        await update_entity(watched, entity, NOOP_LEDGER_RESERVE, command, Reservation)
        handle = client.get_workflow_handle(entity.workflow_id)
        first_run = (await handle.describe()).run_id
        await handle.terminate(reason="test")

        answer = await update_entity(watched, entity, NOOP_LEDGER_RESERVE, command, Reservation)
        assert answer.outcome == "granted"
        assert counting.calls == ["plain", "with start", "plain", "with start"]
        again = await handle.describe()
        assert again.status == WorkflowExecutionStatus.RUNNING
        assert again.run_id != first_run


async def test_a_caller_that_is_cancelled_stops_sending_its_call(client: Client) -> None:
    """The SDK turns the caller's own cancellation into WorkflowUpdateRPCTimeoutOrCancelledError, which
    alone would read as "no answer in time, send it again": a caller that did so would never stop (a
    benchmark whose measurement timed out kept thousands of calls going after its server had stopped)."""
    queue = f"no-worker-{uuid.uuid4().hex[:8]}"
    # A ledger that never answers: no worker polls its queue.
    await client.start_workflow(LEDGER_WORKFLOW, LedgerInput(), id=ledger_id(queue), task_queue=queue)
    command = Reserve(request_id="R-1", buyer="Buyer Co.", units=1, workflow_id="none")
    caller = asyncio.create_task(reserve_until_admitted(client, queue, command))
    await asyncio.sleep(1.0)  # the update is in flight, waiting
    caller.cancel()
    done, _ = await asyncio.wait({caller}, timeout=20)
    assert caller in done, "the cancelled caller went on sending its call"
    assert caller.cancelled() or isinstance(caller.exception(), WorkflowUpdateRPCTimeoutOrCancelledError)
    await client.get_workflow_handle(ledger_id(queue)).terminate(reason="test")
