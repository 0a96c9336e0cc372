"""The benchmarks' yardsticks outside the sandbox: their no-op activity and the models their workflows take
and return.

The models live here, not in workflows/bench.py or workflows/ledger_bench.py, because the sandbox imports a
workflow's module afresh for every run: a model defined there is a new class each run, its schema built again
and its type adapter cached again, a cost no real workflow of chipclear's pays (its contracts are passed
through), which would flatter every ratio taken against the yardstick.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from temporalio import activity
from temporalio.client import WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy

from chipclear.contracts import Entity, EntityInput

# The yardstick's name and update (workflows/ledger_bench.py), here so that its callers need not import it.
NOOP_LEDGER_WORKFLOW = "NoOpLedger"
NOOP_LEDGER_RESERVE = "reserve"


class BareInput(BaseModel):
    local: bool  # local activities (as chipclear's appends) or regular ones


class BareResult(BaseModel):
    steps: int


class BareStepInput(BaseModel):
    step: int


class BareStepResult(BaseModel):
    step: int


class NoOpLedgerState(BaseModel):
    answered: int = 0


class NoOpLedgerInput(EntityInput[NoOpLedgerState]):
    """Carried from run to run, as the ledger's state is."""


def noop_ledger(task_queue: str) -> Entity:
    """The no-op ledger on `task_queue`, addressed as the real entities are: it starts itself with the
    first reservation anyone sends it."""
    workflow_id = f"noop-ledger-{task_queue}"

    def start() -> WithStartWorkflowOperation[Any, Any]:
        return WithStartWorkflowOperation(
            NOOP_LEDGER_WORKFLOW,
            NoOpLedgerInput(),
            id=workflow_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )

    return Entity(workflow_id, start)


@activity.defn(name="bare_step")
def bare_step(input: BareStepInput) -> BareStepResult:
    return BareStepResult(step=input.step)
