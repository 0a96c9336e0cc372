"""Talking to the allocation ledger from a request workflow.

Workflows cannot send an Update to another workflow, so these activities do it with a client:
update-with-start, so the ledger starts itself the first time anyone needs it.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError

from chipclear.domain.allocation import Release, Reservation, Reserve
from workflows.allocation import AllocationLedgerWorkflow, LedgerInput, ReleaseResult, ledger_id


class AllocationActivities:
    def __init__(self, client: Client, default_queue: str) -> None:
        self.client = client
        self.default_queue = default_queue

    def _start(self) -> WithStartWorkflowOperation[AllocationLedgerWorkflow, None]:
        task_queue = activity.info().task_queue
        return WithStartWorkflowOperation(
            AllocationLedgerWorkflow.run,
            LedgerInput(),
            id=ledger_id(task_queue, self.default_queue),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )

    @activity.defn(name="reserve_units")
    async def reserve_units(self, command: Reserve) -> Reservation:
        # Safe to retry: the ledger answers a repeated reserve from the same request identically.
        try:
            # By name with result_type: the typed method reference trips mypy on async handlers.
            result: Reservation = await self.client.execute_update_with_start_workflow(
                "reserve", command, start_workflow_operation=self._start(), result_type=Reservation
            )
        except WorkflowUpdateFailedError as exc:
            raise ApplicationError(str(exc.cause or exc), type="LedgerRefused", non_retryable=True) from exc
        return result

    @activity.defn(name="release_units")
    async def release_units(self, command: Release) -> ReleaseResult:
        # Safe to retry: releasing what is no longer held is a no-op in the ledger.
        try:
            result: ReleaseResult = await self.client.execute_update_with_start_workflow(
                "release", command, start_workflow_operation=self._start(), result_type=ReleaseResult
            )
        except WorkflowUpdateFailedError as exc:
            raise ApplicationError(str(exc.cause or exc), type="LedgerRefused", non_retryable=True) from exc
        return result
