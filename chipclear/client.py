"""What the CLI, the demo and the benchmark do against Temporal, as plain async functions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from chipclear import keys, payload_limits, ui_text
from chipclear.client_errors import Conflict as Conflict
from chipclear.client_errors import NotAnswered as NotAnswered
from chipclear.client_errors import NotFound as NotFound
from chipclear.client_errors import Rejected as Rejected
from chipclear.config import Settings
from chipclear.contracts import (
    ACT_UPDATE,
    LEDGER_OPEN_BATCH,
    REQUEST_WORKFLOW,
    STATE_QUERY,
    ImportRequestInput,
    ImportRequestResult,
    OpenBatchResult,
    StateQuery,
    TransitionResult,
    ledger_entity,
    ledger_id,
    ledger_stream,
    workflow_id,
)
from chipclear.domain.allocation import (
    LedgerState,
    OpenBatch,
    fold_ledger,
)
from chipclear.domain.commands import HumanAct, Submit
from chipclear.domain.errors import StaleSignature
from chipclear.domain.gates import cn_import
from chipclear.domain.models import ImportRequest
from chipclear.domain.signing import signed as signed
from chipclear.domain.state import RequestState
from chipclear.projections import get_request
from chipclear.store.protocol import EventStore
from chipclear.temporal import refusal, update_entity

if TYPE_CHECKING:
    from chipclear.contracts import DeclaredResult, LicenceActResult
    from chipclear.domain.exporter import DeclareUsShipments, ExporterState
    from chipclear.domain.licence import LicenceAct, LicenceState

    # For the handles' types only: requests are started, queried and updated by name (contracts), so a
    # CLI call does not import the workflow's code (docs/performance.md, "CLI start-up").
    from workflows.import_request import ImportRequestWorkflow

UPDATE_WAIT = 60.0


@dataclass
class Submission:
    handle: WorkflowHandle[ImportRequestWorkflow, ImportRequestResult]
    created: bool  # False: the request was already submitted and nothing new started


async def submit(
    client: Client,
    store: EventStore,
    request: ImportRequest,
    *,
    task_queue: str,
    actor: str,
    key: Ed25519PrivateKey | None = None,
) -> Submission:
    """Start `import-<id>`; submitting the same request again returns the existing run.

    Signed when a `key` is given (a registered person submits); the workflow refuses a registered
    person's unsigned submission and records nothing.
    """
    wf_id = workflow_id(request.request_id)
    existing = get_request(store, request.request_id)
    if existing is not None:
        _same_request(existing, request)
        return Submission(request_handle(client, request.request_id), created=False)
    start = ImportRequestInput(
        request=request,
        actor=actor,
        signature=None
        if key is None
        else signed(Submit(request=request, actor=actor), request.request_id, 0, key).signature,
    )
    await payload_limits.check(client.data_converter, start, what="the request")
    try:
        handle = await client.start_workflow(
            REQUEST_WORKFLOW,
            start,
            id=wf_id,
            result_type=ImportRequestResult,
            task_queue=task_queue,
            # A request id is used once, ever: a finished request is not re-opened by resubmission. A
            # submission the rules refused (a bad signature) fails its run having recorded nothing, and
            # the id may be used again, correctly signed.
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            # What an operator sees in the Web UI's workflow list instead of an opaque id, cut to what
            # the server takes (names are counted in characters, the server counts bytes).
            static_summary=payload_limits.fit(ui_text.summary(request), payload_limits.SUMMARY_LIMIT),
            static_details=payload_limits.fit(ui_text.details(request), payload_limits.DETAILS_LIMIT),
        )
        return Submission(handle, created=True)
    except WorkflowAlreadyStartedError:
        handle = request_handle(client, request.request_id)
        started = await started_with(client, handle)
        if started is not None:
            if started != request:
                raise Conflict(_DIFFERENT.format(request_id=request.request_id)) from None
            return Submission(handle, created=False)
        try:
            state = await query_state(handle)
        except RPCError:
            return Submission(handle, created=False)
        if state.status is not None:
            _same_request(state, request)
        return Submission(handle, created=False)


async def started_with(client: Client, handle: WorkflowHandle[Any, Any]) -> ImportRequest | None:
    """The request a run was started with, read from its first history event: known with or without a
    worker (a query waits for one), and what was submitted, whatever has happened since. None if the
    history cannot be read or decoded."""
    try:
        async for event in handle.fetch_history_events(page_size=1, rpc_timeout=timedelta(seconds=5)):
            payloads = event.workflow_execution_started_event_attributes.input.payloads
            [start] = await client.data_converter.decode(payloads, [ImportRequestInput])
            return start.request if isinstance(start, ImportRequestInput) else None
    except (RPCError, ValueError, TypeError):  # unreachable, or a payload this code cannot read
        return None
    return None


async def refused_submission(handle: WorkflowHandle[Any, Any]) -> str | None:
    """Why the rules refused a submission (its run failed at once, recording nothing), or None."""
    try:
        description = await handle.describe(rpc_timeout=timedelta(seconds=5))
    except RPCError:
        return None
    if description.status != WorkflowExecutionStatus.FAILED:
        return None
    try:
        await handle.result()
    except WorkflowFailureError as exc:
        cause = exc.cause
        return str(cause.message if isinstance(cause, ApplicationError) else cause)
    return None


_DIFFERENT = (
    "request_id {request_id!r} is already used by a request with different content; choose a new request_id"
)


def _same_request(state: RequestState, request: ImportRequest) -> None:
    if state.request is not None and state.request != request:
        raise Conflict(_DIFFERENT.format(request_id=request.request_id))


def request_handle(
    client: Client, request_id: str
) -> WorkflowHandle[ImportRequestWorkflow, ImportRequestResult]:
    """The request's workflow, by id: the same handle `get_workflow_handle_for` gives, without
    importing the workflow's module."""
    return client.get_workflow_handle(workflow_id(request_id), result_type=ImportRequestResult)


async def query_state(handle: WorkflowHandle[ImportRequestWorkflow, ImportRequestResult]) -> RequestState:
    state: RequestState = await handle.query(
        STATE_QUERY, StateQuery(), result_type=RequestState, rpc_timeout=timedelta(seconds=5)
    )
    return state


async def live_state(client: Client, request_id: str) -> RequestState | None:
    """The running workflow's own state, or None when no workflow is running for the request."""
    handle = request_handle(client, request_id)
    try:
        description = await handle.describe(rpc_timeout=timedelta(seconds=5))
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    if description.status != WorkflowExecutionStatus.RUNNING:
        return None
    try:
        state = await query_state(handle)
    except RPCError as exc:
        # No worker is polling (the server says so at once with FAILED_PRECONDITION once it has seen
        # none for a while), or it is overloaded: the event store still has every recorded step.
        if (
            exc.status
            in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED, RPCStatusCode.FAILED_PRECONDITION)
            or "Timeout" in exc.message
        ):
            return None
        raise
    return state if state.status is not None else None


R = TypeVar("R")
M = TypeVar("M", bound=BaseModel)


def own_key(person: str, key: Ed25519PrivateKey | None = None) -> Ed25519PrivateKey:
    """`key`, or the person's own key file ($CHIPCLEAR_KEY_FILE, `$CHIPCLEAR_HOME/keys/NAME.key`),
    read once per act however often it is signed again."""
    if key is not None:
        return key
    return keys.load_private(keys.person_key_file(person, Settings.from_env().home))


# How often an act is signed again when only the request's version moved under it.
SIGNING_ATTEMPTS = 3


async def update(
    client: Client, request_id: str, command: HumanAct, *, key: Ed25519PrivateKey | None = None
) -> TransitionResult:
    """Sign `command` for the request as it stands now and send it; the workflow checks the signature
    before anything is recorded.

    If the request moved on between reading its version and sending (the rules or a timer acted:
    a gate's evaluation just after it opened), the workflow refuses the stale signature and the same
    act is signed again for the version now; its rules are checked again. The act never changes, and
    a signature still counts once: a copy sent later is refused.
    """
    key = own_key(command.person, key)
    return await _signed_until_current(lambda: _send_signed(client, request_id, command, key))


async def _signed_until_current(send: Callable[[], Awaitable[R]]) -> R:
    """`send` (which signs for the stream as it stands, then sends) again while only the stream's
    version moved under it, SIGNING_ATTEMPTS times at most."""
    for attempt in range(1, SIGNING_ATTEMPTS + 1):
        try:
            return await send()
        except StaleSignatureRefused:
            if attempt == SIGNING_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


async def _answered(call: Awaitable[R], *, check: str) -> R:
    """An update's answer within UPDATE_WAIT: a refusal by the rules as Rejected (StaleSignatureRefused
    when only the signature is stale); no answer as NotAnswered, naming the command (`check`) that shows
    whether it applied meanwhile."""
    try:
        return await asyncio.wait_for(call, UPDATE_WAIT)
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        # Ours or the server's own wait for an update no worker has taken.
        raise NotAnswered(
            f"no worker answered within {UPDATE_WAIT:.0f} s; is `chipclear worker` running? The update "
            f"may still apply when a worker picks it up: check `{check}` before sending it again."
        ) from None
    except WorkflowUpdateFailedError as exc:
        raise _refused(exc) from None


class StaleSignatureRefused(Rejected):
    """The workflow refused a signature made for a version the request has left."""


def _refused(exc: WorkflowUpdateFailedError) -> Rejected:
    if isinstance(exc.cause, ApplicationError) and exc.cause.type == StaleSignature.__name__:
        return StaleSignatureRefused(refusal(exc))
    return Rejected(refusal(exc))


async def _send_signed(
    client: Client, request_id: str, command: HumanAct, key: Ed25519PrivateKey
) -> TransitionResult:
    handle = request_handle(client, request_id)
    now = await live_state(client, request_id)
    command = signed(command, request_id, now.version if now is not None else 0, key)
    answer = await _send(
        client, handle, ACT_UPDATE, command, TransitionResult, what=f"the {command.kind} act", check="status"
    )
    if answer is not None:
        return answer
    # The server answers NOT_FOUND both for no workflow and for a closed one: tell them apart.
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise NotFound(f"no request {request_id!r} is in progress (workflow {handle.id})") from None
        raise
    closed = description.status.name.lower() if description.status else "closed"
    raise Rejected(f"request {request_id!r} is already final (workflow {closed}); nothing can change it")


async def _send(
    client: Client,
    handle: WorkflowHandle[Any, Any],
    update: str,
    act: BaseModel,
    result_type: type[M],
    *,
    what: str,
    check: str,
) -> M | None:
    """Send a signed act as `update`: its answer, or None when no workflow runs to take it (none, or
    closed). `check` names the command that shows whether an unanswered one applied meanwhile."""
    await payload_limits.check(client.data_converter, act, what=what)
    try:
        # By name with result_type: the typed method references trip mypy on async handlers.
        update_call = handle.execute_update(update, act, result_type=result_type)
        return await _answered(update_call, check=f"chipclear {check}")
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND and "already completed" not in exc.message:
            raise
    return None


def ledger_handle(client: Client, task_queue: str) -> WorkflowHandle[Any, Any]:
    return client.get_workflow_handle(ledger_id(task_queue))


async def open_batch(
    client: Client, task_queue: str, command: OpenBatch, *, key: Ed25519PrivateKey | None = None
) -> OpenBatchResult:
    """Open a batch, signed by its import reviewer for the ledger as it stands now; the ledger starts
    itself if this is the first thing anyone asks of it. Signed again, as `update` does, when only the
    ledger's version moved under it (requests reserve all the time)."""
    key = own_key(command.person, key)
    stream = ledger_stream(ledger_id(task_queue))

    async def send() -> OpenBatchResult:
        opening = signed(command, stream, await _ledger_version(client, task_queue), key)
        return await _open_signed(client, task_queue, opening)

    return await _signed_until_current(send)


async def _open_signed(client: Client, task_queue: str, command: OpenBatch) -> OpenBatchResult:
    await payload_limits.check(client.data_converter, command, what="the batch opening")
    return await _answered(
        update_entity(client, ledger_entity(task_queue), LEDGER_OPEN_BATCH, command, OpenBatchResult),
        check="chipclear batch list",
    )


async def _ledger_version(client: Client, task_queue: str) -> int:
    """The running ledger's version, or 0 when it has not started (the first batch starts it)."""
    handle = ledger_handle(client, task_queue)
    try:
        state: LedgerState = await handle.query(
            STATE_QUERY, StateQuery(), result_type=LedgerState, rpc_timeout=timedelta(seconds=5)
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return 0
        raise
    return state.version


async def ledger_state(client: Client | None, store: EventStore, task_queue: str) -> LedgerState:
    """The running ledger's own state, or the state folded from its stored events."""
    if client is not None:
        handle = ledger_handle(client, task_queue)
        try:
            description = await handle.describe(rpc_timeout=timedelta(seconds=5))
            if description.status == WorkflowExecutionStatus.RUNNING:
                state: LedgerState = await handle.query(
                    STATE_QUERY, StateQuery(), result_type=LedgerState, rpc_timeout=timedelta(seconds=5)
                )
                return state
        except RPCError:
            pass
    return fold_ledger(event.data for event in store.read_stream(ledger_stream(ledger_id(task_queue))))


async def with_queue_position(
    client: Client | None, store: EventStore, state: RequestState, task_queue: str
) -> RequestState:
    """`state` with its place in the allocation queue as it is now, if it waits there.

    The place recorded at queueing time moves as others are served or leave: the ledger knows it now.
    """
    held = cn_import.GATE.slice(state).allocation if cn_import.NAME in state.slices else None
    if held is None or held.outcome != "queued" or state.is_final or state.request_id is None:
        return state
    ledger = await ledger_state(client, store, task_queue)
    moved = held.model_copy(update={"position": ledger.position(state.request_id)})
    part = cn_import.GATE.slice(state).model_copy(update={"allocation": moved})
    return state.model_copy(update={"slices": {**state.slices, cn_import.NAME: part}})


# -- a licence once issued, and its exporter ------------------------------------------------------------
class LicenceClosed(Rejected):
    """The licence's workflow has ended (used up or expired): no act changes it any more."""


async def licence_live(client: Client, request_id: str) -> LicenceState | None:
    """The licence's workflow's own state while it runs, or None (never opened, or ended)."""
    from chipclear.contracts import STATE_QUERY, StateQuery, licence_workflow_id
    from chipclear.domain.licence import LicenceState

    handle = client.get_workflow_handle(licence_workflow_id(request_id))
    return await _while_running(handle, STATE_QUERY, StateQuery(), LicenceState)


async def _while_running(
    handle: WorkflowHandle[Any, Any], query: str, argument: BaseModel, result_type: type[M]
) -> M | None:
    """A running workflow's answer to `query`, or None when it is not running (or never ran)."""
    try:
        description = await handle.describe(rpc_timeout=timedelta(seconds=5))
        if description.status != WorkflowExecutionStatus.RUNNING:
            return None
        answer: M = await handle.query(
            query, argument, result_type=result_type, rpc_timeout=timedelta(seconds=5)
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    return answer


def stored_licence(store: EventStore, request_id: str) -> LicenceState:
    """The licence as the stored record gives it (its terms from the request's stream, then its own);
    NotFound when the request holds none."""
    from chipclear.domain.errors import DomainError
    from chipclear.domain.licence_terms import recorded_licence

    try:
        return recorded_licence(store.read_stream, request_id)
    except DomainError as exc:
        raise NotFound(str(exc)) from None


async def licence_act(
    client: Client,
    task_queue: str,
    request: RequestState,
    command: LicenceAct,
    *,
    key: Ed25519PrivateKey | None = None,
) -> LicenceActResult:
    """Sign a shipment, suspension or reinstatement for the licence of `request` (its stored state) as
    it stands now and send it, opening the licence's workflow if this is its first act; signed again, as
    `update` does, when only the licence's version moved under it (another shipment)."""
    from chipclear.contracts import ACT_UPDATE, LicenceActResult, licence_workflow_id
    from chipclear.domain.licence import licence_stream, signed_version
    from chipclear.licence_opening import LicenceEnded, open_licence

    key = own_key(command.person, key)
    request_id = request.request_id
    assert request_id is not None, "a stored request"
    handle = client.get_workflow_handle(licence_workflow_id(request_id))

    async def send() -> LicenceActResult:
        live = await licence_live(client, request_id)
        if live is None:
            try:
                live = await open_licence(client, task_queue, request)
            except LicenceEnded as exc:
                raise LicenceClosed(str(exc)) from None
        act = signed(command, licence_stream(request_id), signed_version(live, command), key)
        what = f"the {command.kind} act"
        answer = await _send(client, handle, ACT_UPDATE, act, LicenceActResult, what=what, check="licence")
        if answer is None:
            raise LicenceClosed(f"licence of {request_id!r} has ended")
        return answer

    return await _signed_until_current(send)


async def declare_us_shipments(
    client: Client, task_queue: str, command: DeclareUsShipments, *, key: Ed25519PrivateKey | None = None
) -> DeclaredResult:
    """Record an exporter's US end-user shipments for a quarter, signed by its officer for the exporter's
    record as it stands now; the exporter's workflow starts itself with its first declaration."""
    from chipclear.contracts import (
        EXPORTER_DECLARE,
        DeclaredResult,
        exporter_entity,
        exporter_stream,
        exporter_workflow_id,
    )

    key = own_key(command.person, key)
    stream = exporter_stream(exporter_workflow_id(command.exporter, task_queue))

    async def send() -> DeclaredResult:
        current = await exporter_live(client, command.exporter, task_queue)
        act = signed(command, stream, current.version if current is not None else 0, key)
        await payload_limits.check(client.data_converter, act, what="the declaration")
        exporter = exporter_entity(command.exporter, task_queue)
        return await _answered(
            update_entity(client, exporter, EXPORTER_DECLARE, act, DeclaredResult),
            check="chipclear exporter show",
        )

    return await _signed_until_current(send)


async def exporter_live(client: Client, exporter: str, task_queue: str) -> ExporterState | None:
    """The exporter's workflow's own state while it runs, or None."""
    from chipclear.contracts import STATE_QUERY, StateQuery, exporter_workflow_id
    from chipclear.domain.exporter import ExporterState

    handle = client.get_workflow_handle(exporter_workflow_id(exporter, task_queue))
    return await _while_running(handle, STATE_QUERY, StateQuery(), ExporterState)


def stored_exporter(store: EventStore, exporter: str, task_queue: str) -> ExporterState:
    """The exporter's record as its stored stream folds."""
    from chipclear.contracts import exporter_stream, exporter_workflow_id
    from chipclear.domain.exporter import ExporterPayload, fold_exporter

    stream = exporter_stream(exporter_workflow_id(exporter, task_queue))
    return fold_exporter(
        [
            (event.data, event.actor)
            for event in store.read_stream(stream)
            if isinstance(event.data, ExporterPayload)
        ]
    )


async def start_rescreening(client: Client, task_queue: str, list_version: str) -> WorkflowHandle[Any, Any]:
    """Start the fan-out that screens every live request and licence against `list_version` again; the
    same list loaded twice finds the fan-out it started the first time."""
    from temporalio.common import WorkflowIDConflictPolicy

    from chipclear.contracts import (
        RESCREENING_WORKFLOW,
        RescreeningInput,
        rescreening_id,
        rescreening_summary,
    )

    workflow_id_ = rescreening_id(list_version, task_queue)
    try:
        return await client.start_workflow(
            RESCREENING_WORKFLOW,
            RescreeningInput(list_version=list_version),
            id=workflow_id_,
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=rescreening_summary(list_version),
        )
    except WorkflowAlreadyStartedError:
        return client.get_workflow_handle(workflow_id_)
