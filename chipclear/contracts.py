"""What the workflows and their callers agree on: ids, task queues, names, start operations and models.

Activities, workflows, the client, the CLI, the demo and the bench all import this module, and it imports
none of them (only the domain and the configuration). So an activity can start an entity workflow, and a
caller can read a workflow's answer, without importing any workflow's code: the layers point one way.

Everything here is a wire format. A renamed workflow, update or id, or a model field removed, no longer
matches running workflows and saved histories; add fields with defaults instead.
"""

from __future__ import annotations

import re
from typing import Any, Generic, Self, TypeVar

from pydantic import BaseModel, Field
from temporalio.client import WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy

from chipclear.config import DEFAULT_TASK_QUEUE
from chipclear.domain.allocation import LedgerState
from chipclear.domain.buyer_cap import BuyerCapState
from chipclear.domain.models import ImportRequest, Status, Text
from chipclear.domain.names import normalise_buyer
from chipclear.domain.signing import ActSignature

# Continue as new past this many history events; tests set it small to prove nothing is lost.
DEFAULT_HISTORY_LIMIT = 2_000

StateT = TypeVar("StateT", bound=BaseModel)


class EntityInput(BaseModel, Generic[StateT]):
    """The input of a long-lived entity workflow (the ledger, a buyer's cap): the state it carries over
    from its previous run (None on its first), and how long its history may grow before it continues as
    new."""

    state: StateT | None = None
    history_limit: int = DEFAULT_HISTORY_LIMIT

    def carrying(self, state: StateT) -> Self:
        """The input of the next run: this state, the same history limit."""
        return type(self)(state=state, history_limit=self.history_limit)


# -- task queues --------------------------------------------------------------------------------------
LEDGER_CALLS_SUFFIX = ".ledger-calls"


def ledger_calls_queue(task_queue: str) -> str:
    """Where the activities that call the entities run: apart from the appends, so they never starve
    each other.

    A reserve activity waits for the ledger, and the ledger waits for its own append activity; on one
    shared pool of activity slots a rush of reservations could take every slot and wait forever.
    """
    return task_queue + LEDGER_CALLS_SUFFIX


def home_queue(task_queue: str) -> str:
    """The requests' own queue, given it or its ledger-calls queue: the entities live there."""
    return task_queue.removesuffix(LEDGER_CALLS_SUFFIX)


def _deployment_suffix(task_queue: str) -> str:
    # One entity per deployment (task queue); the production ones carry no suffix.
    return "" if task_queue == DEFAULT_TASK_QUEUE else f"@{task_queue}"


# -- the import request -------------------------------------------------------------------------------
REQUEST_WORKFLOW = "ImportRequest"
# The one Update every act of a person is sent as (chipclear.domain.commands.HumanCommand).
REQUEST_ACT = "act"


def workflow_id(request_id: str) -> str:
    """`import-<request_id>`: submitting the same request again finds its workflow, not a second one."""
    return f"import-{request_id}"


class ImportRequestInput(Text):
    """Where a request enters its workflow: checked for NUL characters here, once, not on every parse."""

    request: ImportRequest
    actor: str = "applicant"
    signature: ActSignature | None = None  # a registered person's submission is signed (version 0)


class ImportRequestResult(BaseModel):
    request_id: str
    status: Status  # always final: the workflow returns only once the request is
    units_requested: int
    units_approved: int | None
    licence_id: str | None
    outcome_reason: str | None
    version: int


class TransitionResult(BaseModel):
    """What an update did: the events it recorded and where the request stands now."""

    request_id: str
    status: str  # a final Status, or the status the gate it stands at names (`us_export_review`)
    gate: str | None  # the gate it stands at, by name (`us-export`); None once final
    version: int
    units_approved: int | None
    events: list[str]
    # Evidence records that did not count, each with its reason ("invoice 'X': …").
    rejected: list[str] = Field(default_factory=list)


class StateQuery(BaseModel):
    """Empty today; a model so the query can grow a field without breaking callers."""


# -- the cn-import allocation ledger ------------------------------------------------------------------
LEDGER_WORKFLOW = "CnImportAllocation"
LEDGER_ID = "cn-import-allocation"
LEDGER_RESERVE = "reserve"
LEDGER_RELEASE = "release"
LEDGER_OPEN_BATCH = "open_batch"
LEDGER_QUERY = "ledger"
# The signal the ledger sends a queued request when a batch or a release grants it units.
ALLOCATION_GRANTED_SIGNAL = "allocation_granted"


# The Web UI's one-line summary of each entity workflow: in a list of requests, these say at once
# that they are not requests (a request's names its units and buyer).
LEDGER_SUMMARY = "not a request: the cn-import allocation ledger (an entity workflow owning every batch)"


def buyer_cap_summary(buyer: str) -> str:
    return f"not a request: {buyer}'s us-export buyer cap (an entity workflow owning its headroom)"


def ledger_id(task_queue: str) -> str:
    """One ledger per deployment (task queue); the production one is plainly `cn-import-allocation`."""
    return LEDGER_ID + _deployment_suffix(task_queue)


def ledger_stream(ledger_workflow_id: str) -> str:
    """The ledger's stream in the event store: `allocation`, or `allocation@<queue>` beside production."""
    return "allocation" + ledger_workflow_id.removeprefix(LEDGER_ID)


class LedgerInput(EntityInput[LedgerState]):
    """The ledger's input: every batch, allocation and queued request, carried from run to run."""


class ReleaseResult(BaseModel):
    request_id: str
    batch_id: str | None
    units: int  # units given back (0 if the request was only queued, or already released)
    left_queue: bool


class OpenBatchResult(BaseModel):
    batch_id: str
    capacity: int
    served: list[str]  # queued requests granted at once


class LedgerQuery(BaseModel):
    """Empty today; a model so the query can grow a field."""


def ledger_start(task_queue: str) -> WithStartWorkflowOperation[Any, Any]:
    """Update-with-start: the ledger starts itself the first time anyone needs it.

    A fresh operation for every call: one is used up by the call that carries it.
    """
    return WithStartWorkflowOperation(
        LEDGER_WORKFLOW,
        LedgerInput(),
        id=ledger_id(task_queue),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=LEDGER_SUMMARY,
    )


# -- the per-buyer cap on US export approvals ---------------------------------------------------------
BUYER_CAP_WORKFLOW = "UsExportBuyerCap"
BUYER_CAP_PREFIX = "us-export-buyer-"
BUYER_CAP_CLAIM = "claim"
BUYER_CAP_RELEASE = "release"
BUYER_CAP_QUERY = "buyer_cap"


def buyer_cap_id(buyer: str, task_queue: str) -> str:
    """`us-export-buyer-bytedance`: one owner per buyer, however the buyer's name is written."""
    slug = re.sub(r"\s+", "-", normalise_buyer(buyer))
    return f"{BUYER_CAP_PREFIX}{slug}{_deployment_suffix(task_queue)}"


class BuyerCapInput(EntityInput[BuyerCapState]):
    """A buyer's cap's input: the units it holds for each request, carried from run to run."""


class ReleasedUnits(BaseModel):
    request_id: str
    units: int  # 0 when nothing was held, or it was released before


class BuyerCapQuery(BaseModel):
    """Empty today; a model so the query can grow a field."""


def buyer_cap_start(buyer: str, task_queue: str) -> WithStartWorkflowOperation[Any, Any]:
    """Update-with-start: a buyer's cap starts itself with the buyer's first claim."""
    return WithStartWorkflowOperation(
        BUYER_CAP_WORKFLOW,
        BuyerCapInput(),
        id=buyer_cap_id(buyer, task_queue),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=buyer_cap_summary(buyer),
    )
