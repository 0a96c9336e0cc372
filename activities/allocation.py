"""Talking to the entity workflows (the allocation ledger, each exporter) from a request workflow.

Workflows cannot send an Update to another workflow, so these activities do it with a client
(`chipclear.temporal.update_entity`): a plain update while the entity runs, and update-with-start when it
does not, so an entity starts itself the first time anyone needs it.

An update may wait a long time (the ledger waits for the event store before it answers), so the regular
activities here heartbeat while they wait: a worker that dies mid-call has its calls retried on another
within the heartbeat timeout (workflows/options.py), not at the end of the start-to-close timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable
from typing import TypeVar

from pydantic import BaseModel
from temporalio import activity
from temporalio.client import (
    Client,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

from chipclear import payload_limits
from chipclear.contracts import (
    EXPORTER_COUNT,
    LEDGER_RELEASE,
    LEDGER_RESERVE,
    LICENCE_WORKFLOW,
    ChinaCountAnswer,
    Entity,
    LicenceInput,
    ReleaseResult,
    StartLicence,
    exporter_entity,
    home_queue,
    ledger_entity,
    licence_workflow_id,
)
from chipclear.domain.allocation import Release, Reservation, Reserve
from chipclear.domain.exporter import ChinaCount, CountChinaShipment
from chipclear.temporal import (
    EntityCallError,
    refusal,
    send_again_because,
    taken,
    update_entity,
)

T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")
HEARTBEAT_EVERY = 2.0  # seconds between heartbeats while an update waits (a third of the timeout)


class AllocationActivities:
    def __init__(self, client: Client) -> None:
        self.client = client

    @staticmethod
    def _home_queue() -> str:
        # The entities live on the requests' own queue, not on this side queue.
        return home_queue(activity.info().task_queue)

    async def _update(
        self, name: str, command: BaseModel, result_type: type[T], entity: Entity | None = None
    ) -> T:
        """Send one update to an entity (the ledger unless `entity` says otherwise), waiting out its
        admission limit.

        The server admits only a few in-flight updates per workflow (history.maxInFlightUpdates); under
        a rush of reservations the rest are refused with RESOURCE_EXHAUSTED. The ledger itself turns
        updates away while its run is about to continue as new (workflows/entity.py `admit`), and a run
        that closes under a rush may spend the server's budget of updates per run (`update_budget_spent`)
        before the next run takes over. Retrying
        here, quickly and with jitter, keeps the queue moving; the activity's own retry policy covers
        everything else.
        """
        await _within_limits(self.client, command, name)
        entity = entity or ledger_entity(self._home_queue())
        delay = 0.05
        while True:
            try:
                return await _heartbeating(update_entity(self.client, entity, name, command, result_type))
            except EntityCallError as exc:
                why = send_again_because(exc)
                if why is None and isinstance(exc, WorkflowUpdateFailedError):
                    # The entity's own words (its validator names the rule).
                    raise ApplicationError(refusal(exc), type="LedgerRefused", non_retryable=True) from exc
                if why is None:
                    raise
                _heartbeat(f"{why}, retrying in {delay:.2f}s")
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 1.5, 2.0)

    @activity.defn(name="reserve_units")
    async def reserve_units(self, command: Reserve) -> Reservation:
        # Safe to retry: the ledger answers a repeated reserve from the same request identically.
        return await self._update(LEDGER_RESERVE, command, Reservation)

    @activity.defn(name="release_units")
    async def release_units(self, command: Release) -> ReleaseResult:
        # Safe to retry: releasing what is no longer held is a no-op in the ledger.
        return await self._update(LEDGER_RELEASE, command, ReleaseResult)

    @activity.defn(name="count_china_shipment")
    async def count_china_shipment(self, command: CountChinaShipment) -> ChinaCountAnswer:
        # Safe to retry: the exporter answers a shipment counted before with its first count.
        queue = self._home_queue()
        try:
            exporter = exporter_entity(command.exporter, queue)
            count = await self._update(EXPORTER_COUNT, command, ChinaCount, exporter)
        except ApplicationError as exc:
            if exc.type != "LedgerRefused":
                raise
            return ChinaCountAnswer(refused=exc.message)
        return ChinaCountAnswer(count=count)

    @activity.defn(name="start_licence")
    async def start_licence(self, input: StartLicence) -> None:
        # Safe to repeat: a licence's workflow id is used once, ever; a second start finds it started.
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await self.client.start_workflow(
                LICENCE_WORKFLOW,
                LicenceInput(request_id=input.request_id),
                id=licence_workflow_id(input.request_id),
                task_queue=self._home_queue(),
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                static_summary=input.summary,
            )


def _heartbeat(detail: str) -> None:
    # A local activity has no heartbeat of its own: its workflow task is its lease.
    if not activity.info().is_local:
        activity.heartbeat(detail)


async def _heartbeating(call: Awaitable[R]) -> R:
    """Await `call`, heartbeating every HEARTBEAT_EVERY seconds; cancelled with the activity."""
    task = asyncio.ensure_future(call)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY)
            if done:
                return task.result()
            _heartbeat("waiting for the entity's answer")
    except BaseException:
        task.cancel()
        # Its outcome (the SDK turns the cancellation into an error of its own) is ours to drop.
        task.add_done_callback(taken)
        raise


async def _within_limits(client: Client, command: BaseModel, name: str) -> None:
    """Every message to an entity passes the client's payload check (chipclear.payload_limits); one
    too large can never become small by retrying, so the refusal is final."""
    try:
        await payload_limits.check(client.data_converter, command, what=f"the {name} update")
    except payload_limits.PayloadTooLarge as exc:
        raise ApplicationError(str(exc), type="PayloadTooLarge", non_retryable=True) from None
