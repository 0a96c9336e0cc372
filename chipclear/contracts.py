"""What the workflows and their callers agree on: ids, task queues, names, start operations and models.

Activities, workflows, the client, the CLI, the demo and the bench all import this module, and it imports
none of them (only the domain and the configuration). So an activity can start an entity workflow, and a
caller can read a workflow's answer, without importing any workflow's code: the layers point one way.

Everything here is a wire format. A renamed workflow, update or id, or a model field removed, no longer
matches running workflows and saved histories; add fields with defaults instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, Self, TypeVar

from pydantic import BaseModel, Field
from temporalio.client import WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from chipclear.config import DEFAULT_TASK_QUEUE
from chipclear.domain.allocation import LedgerState
from chipclear.domain.exporter import ChinaCount, ExporterState, exporter_key
from chipclear.domain.models import ImportRequest, Status, Text
from chipclear.domain.signing import ActSignature

# Continue as new past this many history events; tests set it small to prove nothing is lost.
DEFAULT_HISTORY_LIMIT = 2_000

StateT = TypeVar("StateT", bound=BaseModel)


class EntityInput(BaseModel, Generic[StateT]):
    """The input of a long-lived entity workflow (the ledger, an exporter): the state it carries over
    from its previous run (None on its first), and how long its history may grow before it continues as
    new."""

    state: StateT | None = None
    history_limit: int = DEFAULT_HISTORY_LIMIT

    def carrying(self, state: StateT) -> Self:
        """The input of the next run: this state, the same history limit."""
        return type(self)(state=state, history_limit=self.history_limit)


@dataclass(frozen=True)
class Entity:
    """An entity workflow (the allocation ledger, an exporter) as its callers address it: by its id, and
    with a fresh update-with-start operation for when it is not running (one is used up by the call that
    carries it). `chipclear.temporal.update_entity` sends it an update."""

    workflow_id: str
    start: Callable[[], WithStartWorkflowOperation[Any, Any]]


def entity(workflow: str, input: BaseModel, workflow_id: str, task_queue: str, summary: str) -> Entity:
    """An entity workflow of the deployment on `task_queue`: it starts itself, on the deployment's entity
    queue, the first time anyone needs it, and a call that finds it running uses it."""

    def start() -> WithStartWorkflowOperation[Any, Any]:
        return WithStartWorkflowOperation(
            workflow,
            input,
            id=workflow_id,
            task_queue=entity_queue(task_queue),
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=summary,
        )

    return Entity(workflow_id, start)


# An entity's refusal that means "not now": its run is about to continue as new and admits no more
# updates (the server caps the updates one run may take); the caller sends it again, to the next run.
CONTINUING_AS_NEW = "ContinuingAsNew"


# -- task queues --------------------------------------------------------------------------------------
LEDGER_CALLS_SUFFIX = ".ledger-calls"


def ledger_calls_queue(task_queue: str) -> str:
    """Where the activities that call the entities run: apart from the appends, so they never starve
    each other.

    A reserve activity waits for the ledger, and the ledger waits for its own append activity; on one
    shared pool of activity slots a rush of reservations could take every slot and wait forever.
    """
    return task_queue + LEDGER_CALLS_SUFFIX


ENTITIES_SUFFIX = ".entities"


def entity_queue(task_queue: str) -> str:
    """Where the entity workflows (the ledger, each exporter) run: apart from the requests, on
    workflow-task slots of their own, so that however many requests are in flight, the one serial
    point of a reservation rush always has a slot.

    (The buyers' caps, entity workflows until their claims moved into the store, showed why: a request's
    first task claimed its cap in a local activity and held its slot until the cap's own task answered,
    and on one shared pool a rush of requests took every slot; docs/performance.md, "Worker tuning".)
    """
    return task_queue + ENTITIES_SUFFIX


def home_queue(task_queue: str) -> str:
    """The deployment's own queue (the requests' and licences'), given it or one of its side queues.
    The entities' ids are named after it, whichever queue they run on."""
    return task_queue.removesuffix(LEDGER_CALLS_SUFFIX).removesuffix(ENTITIES_SUFFIX)


def _deployment_suffix(task_queue: str) -> str:
    # One entity per deployment (task queue); the production ones carry no suffix.
    return "" if task_queue == DEFAULT_TASK_QUEUE else f"@{task_queue}"


def deployment(task_queue: str) -> str:
    """Which deployment a queue (or one of its side queues) belongs to: '' for production, `@<queue>` for
    another beside it in the same store (a demo). Its buyers' caps are its own, as its ledger is."""
    return _deployment_suffix(home_queue(task_queue))


# -- the import request -------------------------------------------------------------------------------
REQUEST_WORKFLOW = "ImportRequest"
REQUEST_PREFIX = "import-"


def workflow_id(request_id: str) -> str:
    """`import-<request_id>`: submitting the same request again finds its workflow, not a second one."""
    return REQUEST_PREFIX + request_id


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


# What a TransitionResult repeats from the request's state, as it stands once the update is stored.
STANDING = {"request_id", "status", "gate", "version", "units_approved"}


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
    # A hold a gate keeps on the whole request (a re-screening match), until a reviewer clears it.
    held: str | None = None


# -- what every workflow answers, and the updates a request and its licence both take ---------------
# The one query every workflow answers: its state as the event store holds it (a request's RequestState,
# the ledger's LedgerState, a licence's LicenceState…).
STATE_QUERY = "state"


class StateQuery(BaseModel):
    """Empty today; a model so the query can grow a field without breaking callers."""


# The one Update every act of a person is sent as: on a request, a chipclear.domain.commands.HumanCommand;
# on a licence, a chipclear.domain.licence.LicenceActCommand.
ACT_UPDATE = "act"
# A new restricted-party list is in force: screen the parties again (the re-screening workflow sends it
# to every live request and licence; chipclear.domain.commands.Rescreen).
RESCREEN_UPDATE = "rescreen"


# -- the cn-import allocation ledger ------------------------------------------------------------------
LEDGER_WORKFLOW = "CnImportAllocation"
LEDGER_ID = "cn-import-allocation"
LEDGER_RESERVE = "reserve"
LEDGER_RELEASE = "release"
LEDGER_OPEN_BATCH = "open_batch"
# The signal the ledger sends a queued request when a batch or a release grants it units.
ALLOCATION_GRANTED_SIGNAL = "allocation_granted"


# The Web UI's one-line summary of each entity workflow (like the exporter's): in a list of
# requests, these say at once that they are not requests (a request's names its units and buyer).
LEDGER_SUMMARY = "not a request: the cn-import allocation ledger (an entity workflow owning every batch)"


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


def ledger_entity(task_queue: str) -> Entity:
    """The deployment's ledger: it starts itself the first time anyone needs it."""
    return entity(LEDGER_WORKFLOW, LedgerInput(), ledger_id(task_queue), task_queue, LEDGER_SUMMARY)


# -- the per-buyer cap on US export approvals ---------------------------------------------------------
# Kept in the event store (chipclear.store.sql_buyer_caps), claimed by a local activity of the request.


class ReleasedUnits(BaseModel):
    request_id: str
    units: int  # 0 when nothing was held, or it was released before


# -- a licence once issued ----------------------------------------------------------------------------
LICENCE_WORKFLOW = "Licence"
LICENCE_PREFIX = "licence-"


def licence_workflow_id(request_id: str) -> str:
    """`licence-<request_id>`: the licence a request ended with lives on in a workflow of its own."""
    return LICENCE_PREFIX + request_id


def licence_summary(request: ImportRequest, licence_id: str) -> str:
    return f"licence {licence_id} of {request.request_id}: {request.units:,} H200 for {request.buyer.name}"


# The licence's one read-only update: it answers once the licence has read its terms, so that a caller
# that has just started it (update-with-start) has its state to sign against.
LICENCE_OPENED_UPDATE = "opened"


def licence_start(
    request: ImportRequest, licence_id: str, task_queue: str
) -> WithStartWorkflowOperation[Any, Any]:
    """Update-with-start of a licence's workflow, at its first use (a shipment, a suspension, a
    re-screening), on the deployment's main queue; a call that finds it running uses it. A licence whose
    workflow has ended is not started again (its id is used once), unless that run failed."""
    return WithStartWorkflowOperation(
        LICENCE_WORKFLOW,
        LicenceInput(request_id=request.request_id),
        id=licence_workflow_id(request.request_id),
        task_queue=home_queue(task_queue),
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        static_summary=licence_summary(request, licence_id)[:200],
    )


class LicenceInput(BaseModel):
    """Only the request's id: the licence reads its terms from the request's stored record, so no caller
    can start one with terms of its own making."""

    request_id: str


class StartLicence(BaseModel):
    """What a request that ended licensed asked before licences opened at their first use: start its
    licence's workflow, with this Web UI summary (kept for histories recorded then, docs/versioning.md)."""

    request_id: str
    summary: str


class LicenceResult(BaseModel):
    request_id: str
    licence_id: str | None
    status: str  # exhausted or expired
    units_shipped: int


class LicenceActResult(BaseModel):
    """What a shipment, suspension or reinstatement did, and where the licence stands now."""

    request_id: str
    licence_id: str
    status: str
    version: int
    units_shipped: int
    units_remaining: int
    events: list[str]  # empty: a repeat of a recorded shipment; nothing new was recorded


# -- an exporter's 50% rule ---------------------------------------------------------------------------
EXPORTER_WORKFLOW = "Exporter"
EXPORTER_PREFIX = "exporter-"
EXPORTER_DECLARE = "declare_us_shipments"
EXPORTER_COUNT = "count_china_shipment"


def exporter_workflow_id(exporter: str, task_queue: str) -> str:
    """`exporter-nvidia`: one owner per exporter, however its name is written."""
    return f"{EXPORTER_PREFIX}{exporter_key(exporter)}{_deployment_suffix(task_queue)}"


def exporter_stream(exporter_workflow: str) -> str:
    """`exporter:nvidia` (or `exporter:nvidia@<queue>` beside production): a colon, which no request id
    holds, keeps it apart from every request's stream."""
    return "exporter:" + exporter_workflow.removeprefix(EXPORTER_PREFIX)


def exporter_summary(exporter: str) -> str:
    return f"not a request: {exporter}'s 50% rule (an entity workflow counting its China shipments)"


class ExporterInput(EntityInput[ExporterState]):
    """An exporter's input: its quarters, carried from run to run."""


class DeclaredResult(BaseModel):
    """What a declaration of US shipments recorded: the quarter's figures as they now stand."""

    exporter: str
    period: str
    us_units: int
    china_units: int
    version: int


class ChinaCountAnswer(BaseModel):
    """The exporter's answer to a count: the count, or the 50% rule's refusal in its own words. A refusal
    is an answer, not a failed activity: nothing is retried and no worker logs it as an error."""

    count: ChinaCount | None = None
    refused: str | None = None


def exporter_entity(exporter: str, task_queue: str) -> Entity:
    """An exporter's owner: it starts itself with its first declaration or count."""
    entity_id = exporter_workflow_id(exporter, task_queue)
    return entity(EXPORTER_WORKFLOW, ExporterInput(), entity_id, task_queue, exporter_summary(exporter))


# -- re-screening when a new list comes into force ---------------------------------------------------
RESCREENING_WORKFLOW = "Rescreening"
RESCREENING_PREFIX = "rescreen-"
# How many live requests and licences one page of the fan-out screens before it continues as new.
RESCREENING_PAGE = 200
# Failed targets named in the tally (all are counted): a tally stays small however many fail.
FAILURES_KEPT = 50


def rescreening_id(list_version: str, task_queue: str) -> str:
    """`rescreen-<list version>`: one fan-out per list loaded; loading the same list again finds it."""
    return f"{RESCREENING_PREFIX}{list_version}{_deployment_suffix(task_queue)}"


def rescreening_summary(list_version: str) -> str:
    return f"not a request: re-screening every live request and licence against list {list_version}"


class RescreeningTally(BaseModel):
    """What the fan-out found so far: each target's outcome counted."""

    requests: int = 0
    requests_held: int = 0
    requests_denied: int = 0
    licences: int = 0
    licences_suspended: int = 0
    closed: int = 0  # ended before its turn came: nothing to screen
    failures: int = 0  # targets that could not be asked
    failed: list[str] = Field(default_factory=list)  # the first of them, and why (at most FAILURES_KEPT)


class RescreeningInput(BaseModel):
    list_version: str
    page_token: str | None = None  # the page to go on from (continue-as-new): activities/rescreening.py
    tally: RescreeningTally = Field(default_factory=RescreeningTally)


class LiveWorkflow(BaseModel):
    workflow_id: str
    workflow_type: str  # REQUEST_WORKFLOW or LICENCE_WORKFLOW


class RescreenTarget(LiveWorkflow):
    list_version: str


class RescreenOutcome(BaseModel):
    workflow_id: str
    kind: Literal["request", "licence"]
    outcome: Literal["clear", "held", "denied", "suspended", "closed", "failed"]
    detail: str | None = None


class RescreenPageInput(BaseModel):
    page_token: str | None = None
    page_size: int = RESCREENING_PAGE


class RescreenPage(BaseModel):
    targets: list[LiveWorkflow]
    next_page_token: str | None


def live_targets_query(task_queue: str) -> str:
    """Every running request of this deployment, as the visibility store finds them (its licences are
    found in the event store: activities/rescreening.py)."""
    running = f'WorkflowType = "{REQUEST_WORKFLOW}" AND ExecutionStatus = "Running"'
    return f'{running} AND TaskQueue = "{task_queue}"'
