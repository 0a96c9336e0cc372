"""The per-buyer cap on US export approvals: one small entity workflow per buyer.

Claims are Updates whose handlers never await, so Temporal runs them one at a time: two requests of
one buyer approved at the same instant cannot both see the same headroom. The validator refuses a claim
above the headroom before it enters history, naming the headroom.
"""

from __future__ import annotations

import re

from pydantic import BaseModel
from temporalio import workflow
from temporalio.client import WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from chipclear.config import DEFAULT_TASK_QUEUE
    from chipclear.domain.buyer_cap import (
        BuyerCapState,
        BuyerClaim,
        ClaimUnits,
        ReleaseClaim,
        apply_claim,
        apply_release,
        check_claim,
    )
    from chipclear.domain.errors import DomainError
    from chipclear.domain.names import normalise_buyer
    from workflows.options import until_history_is_long

BUYER_CAP_PREFIX = "us-export-buyer-"
DEFAULT_HISTORY_LIMIT = 2_000


def buyer_cap_id(buyer: str, task_queue: str) -> str:
    """`us-export-buyer-bytedance`: one owner per buyer, however the buyer's name is written."""
    slug = re.sub(r"\s+", "-", normalise_buyer(buyer))
    suffix = "" if task_queue == DEFAULT_TASK_QUEUE else f"@{task_queue}"
    return f"{BUYER_CAP_PREFIX}{slug}{suffix}"


class BuyerCapInput(BaseModel):
    state: BuyerCapState | None = None
    history_limit: int = DEFAULT_HISTORY_LIMIT


class ReleasedUnits(BaseModel):
    request_id: str
    units: int  # 0 when nothing was held, or it was released before


class BuyerCapQuery(BaseModel):
    """Empty today; a model so the query can grow a field."""


def buyer_cap_start(buyer: str, task_queue: str) -> WithStartWorkflowOperation[BuyerCapWorkflow, None]:
    return WithStartWorkflowOperation(
        BuyerCapWorkflow.run,
        BuyerCapInput(),
        id=buyer_cap_id(buyer, task_queue),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


@workflow.defn(name="UsExportBuyerCap")
class BuyerCapWorkflow:
    @workflow.init
    def __init__(self, input: BuyerCapInput) -> None:
        self._state = input.state or BuyerCapState()
        self._history_limit = input.history_limit

    @workflow.run
    async def run(self, input: BuyerCapInput) -> None:
        await until_history_is_long(self._history_limit)
        workflow.continue_as_new(BuyerCapInput(state=self._state, history_limit=self._history_limit))

    @workflow.query(name="buyer_cap")
    def buyer_cap(self, _: BuyerCapQuery | None = None) -> BuyerCapState:
        return self._state

    @workflow.update(name="claim")
    def claim(self, command: ClaimUnits) -> BuyerClaim:
        claim = self._check(command)
        self._state = apply_claim(self._state, claim)
        return claim

    @claim.validator
    def _validate_claim(self, command: ClaimUnits) -> None:
        self._check(command)

    @workflow.update(name="release")
    def release(self, command: ReleaseClaim) -> ReleasedUnits:
        self._state, units = apply_release(self._state, command)
        return ReleasedUnits(request_id=command.request_id, units=units)

    def _check(self, command: ClaimUnits) -> BuyerClaim:
        try:
            return check_claim(self._state, command)
        except DomainError as exc:
            raise ApplicationError(str(exc), type="DomainError", non_retryable=True) from None
