"""One import request, from submission along its route of gates to a licence or a final refusal.

The workflow holds no business rules and names no gate. Every command takes one generic step: ask the
pure decider which outside facts it needs, fetch them through activities, decide once, fold the events
into the workflow's state with the same `evolve` the event store's projection uses, and have an
activity append them.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from temporalio import workflow
from temporalio.common import RawValue, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    # A submodule by its full name: `from workflows import calls` would import it afresh in every run's
    # sandbox (the import system fetches it past the sandbox's importer, which never passes it through).
    import workflows.calls as calls
    import workflows.metrics as metrics
    from activities.allocation import AllocationActivities
    from activities.events import EventActivities, InvoiceOwners, ReleasedInvoices
    from chipclear import search_attributes, ui_text
    from chipclear.contracts import (
        ACT_UPDATE,
        ALLOCATION_GRANTED_SIGNAL,
        REQUEST_WORKFLOW,
        RESCREEN_UPDATE,
        STANDING,
        STATE_QUERY,
        ImportRequestInput,
        ImportRequestResult,
        StartLicence,
        StateQuery,
        TransitionResult,
        licence_summary,
    )
    from chipclear.domain import bounds
    from chipclear.domain.allocation import Released, Reservation
    from chipclear.domain.buyer_cap import BuyerClaim
    from chipclear.domain.commands import (
        HUMAN_COMMANDS,
        Command,
        Escalate,
        Evaluate,
        HumanCommand,
        PersonAct,
        RecordAllocation,
        Rescreen,
        Submit,
    )
    from chipclear.domain.decider import Due, compensations, decide, needs, next_due
    from chipclear.domain.errors import DomainError
    from chipclear.domain.events import Event, EvidenceRejected
    from chipclear.domain.facts import NONE, Facts, FactsWanted, provisional
    from chipclear.domain.gates import gate_of
    from chipclear.domain.policy import Policy
    from chipclear.domain.state import RequestState, evolve
    from workflows.options import (
        LOCAL_LEDGER_RETRY,
        LOCAL_LEDGER_TIMEOUT,
    )


if TYPE_CHECKING:
    StartInput = ImportRequestInput
else:
    # The SDK decodes a workflow's input before any workflow code runs, and an input it cannot decode (a
    # client on another release, a hand-made start) fails the workflow task, forever: the request is
    # wedged before it exists. Taken raw and decoded first thing in `run`, an input the models refuse
    # fails the run with one sentence instead, having done nothing. Callers (and mypy) still see
    # ImportRequestInput: the payload on the wire is the same.
    StartInput = RawValue


def _start_input(value: object) -> ImportRequestInput:
    """The workflow input as a request, or ApplicationError (the run fails, nothing recorded)."""
    if isinstance(value, ImportRequestInput):
        return value
    try:
        if not isinstance(value, RawValue):
            raise TypeError(f"expected a payload, got {type(value).__name__}")
        decoded: ImportRequestInput = workflow.payload_converter().from_payload(
            value.payload, ImportRequestInput
        )
        return decoded
    except Exception as exc:
        text = " ".join(str(exc).split())
        raise ApplicationError(
            f"submission refused: the workflow input is not a request this release accepts ({text[:200]})",
            type="SubmissionRefused",
            non_retryable=True,
        ) from None


# Patch ids (docs/versioning.md): each names a change that makes running workflows issue other commands.
REFUSE_BEFORE_FACTS = "refuse-before-facts"
OPEN_LICENCE = "open-licence"
# Licences open at their first use (chipclear.licence_opening), not when the request ends: a licence never
# acted on costs the server no workflow, task or timer. Histories recorded between the two patches start it.
LICENCE_AT_FIRST_USE = "licence-at-first-use"
# A step that changes nothing the Web UI indexes (a question, an answer, evidence) upserts nothing: each
# upsert is an event in history and a write to the server's visibility store. Before it, every step did.
UPSERT_WHEN_CHANGED = "upsert-when-changed"
# The ledger's reservation is a local activity in the request's first workflow task, as the buyer's cap claim
# is: the request no longer waits for a regular activity's dispatch and a workflow task of its own before it
# goes on (docs/performance.md). Asked once, first thing in the run; histories recorded before it reserve
# through a regular activity on `<queue>.ledger-calls`.
RESERVE_IN_FIRST_TASK = "reserve-in-first-task"

_Self = TypeVar("_Self")
_Arg = TypeVar("_Arg")
_Result = TypeVar("_Result")


def _gate_table() -> str:
    """The current details as they were before a wait: the gate table of the running request."""
    instance = workflow.instance()
    return ui_text.gate_table(instance._durable) if isinstance(instance, ImportRequestWorkflow) else ""


@workflow.defn(name=REQUEST_WORKFLOW)
class ImportRequestWorkflow:
    @workflow.init
    def __init__(self, input: StartInput) -> None:
        self._state = RequestState()
        self._policy: Policy | None = None
        # Handlers await activities; the lock keeps facts→decide→append→evolve one atomic step so two
        # concurrent updates can never both decide against the same version.
        self._lock = asyncio.Lock()
        self._pending: list[Event] = []
        self._durable = self._state  # the state as of the last successful append
        self._upsert = False
        self._indexed: list[SearchAttributeUpdate[Any]] = []  # what the last upsert set
        self._metrics: metrics.RequestMetrics | None = None  # made at the first flush, inside the run
        self._granted: Reservation | None = None  # a grant signalled by the ledger, not yet recorded
        self._reserve_locally = False  # RESERVE_IN_FIRST_TASK, asked as the run starts

    @workflow.run
    async def run(self, input: StartInput) -> ImportRequestResult:
        input = _start_input(input)  # decoded before anything else: a refused input does nothing
        self._reserve_locally = workflow.patched(RESERVE_IN_FIRST_TASK)
        policy_result = await calls.current_policy()
        self._policy = policy_result.policy
        # Upsert the Web UI's search attributes only where the namespace has them (recorded above).
        self._upsert = policy_result.search_attributes
        async with self._lock:
            # Submission and the rules of every gate the request passes straight through are decided
            # together and recorded in one atomic append, before anyone waits.
            submit = Submit(request=input.request, actor=input.actor, signature=input.signature)
            try:
                await self._step(submit)
            except DomainError as exc:
                # A submission the rules refuse (a registered person's missing or forged signature)
                # records nothing and ends the run at once, saying why; retrying would not help.
                raise ApplicationError(str(exc), type="SubmissionRefused", non_retryable=True) from None
        while (gate := self._state.gate) is not None:
            async with self._lock:
                if self._state.gate == gate:  # an update may have moved the request on meanwhile
                    await self._step(Evaluate(gate=gate))
                if self._state.gate == gate:
                    await self._flush()
            await self._await_leaving(gate)
        async with self._lock:
            await self._flush()
            # A request that ends without a licence gives back what each gate holds, once.
            for command in compensations(self._state):
                await self._step(command)
                await self._flush()
        if (
            self._state.licence_id is not None
            and not workflow.patched(LICENCE_AT_FIRST_USE)
            and workflow.patched(OPEN_LICENCE)
        ):
            await self._open_licence()
        # Let an update that is mid-append finish before the run closes under it.
        await workflow.wait_condition(workflow.all_handlers_finished)
        # The result's fields, read from the final state (validation refuses one with no id or status).
        return ImportRequestResult.model_validate(self._state, from_attributes=True)

    async def _open_licence(self) -> None:
        """Replayed for histories recorded before LICENCE_AT_FIRST_USE only: the request started its
        licence's workflow (workflows/licence.py) as it ended; starting it twice finds it started."""
        request = self._state.request
        assert request is not None and self._state.licence_id is not None
        summary = licence_summary(request, self._state.licence_id)[:200]
        await calls.local(
            AllocationActivities.start_licence,
            StartLicence(request_id=request.request_id, summary=summary),
            "open the licence's workflow",
            LOCAL_LEDGER_TIMEOUT,
            LOCAL_LEDGER_RETRY,
            "Temporal",
            _gate_table,
        )

    # -- queries and updates ------------------------------------------------------------------
    @workflow.query(name=STATE_QUERY)
    def state(self, _: StateQuery | None = None) -> RequestState:
        # What the event store holds, never an event still on its way there: a query answered
        # mid-append must not show a step that may yet fail and never become true.
        return self._durable

    # Every act of a person (a decision, a question, an answer, evidence, a withdrawal) is one Update,
    # not a signal: the caller learns at once whether it was accepted, and the validator refuses a bad
    # one before it ever enters history. What the person sends says which act it is (`kind`).
    @workflow.update(name=ACT_UPDATE)
    async def act(self, command: HumanCommand) -> TransitionResult:
        return await self._handle(command)

    @act.validator
    def _validate_act(self, command: HumanCommand) -> None:
        self._validate(command)

    @workflow.update(name=RESCREEN_UPDATE)
    async def rescreen(self, command: Rescreen) -> TransitionResult:
        """A new list is in force: screen the parties again against it (the request's own activity
        reads the list; the sender decides nothing). A match holds the request, or denies it at a
        gate the rules decide alone."""
        return await self._handle(command)

    @rescreen.validator
    def _validate_rescreen(self, command: Rescreen) -> None:
        self._validate(command)

    @workflow.signal(name=ALLOCATION_GRANTED_SIGNAL)
    def allocation_granted(self, answer: Reservation) -> None:
        """The ledger served this request from the queue (a new batch, or units given back)."""
        self._granted = answer

    # -- the one step every command takes -----------------------------------------------------
    def _validate(self, command: Command) -> None:
        """Dry-run the decider with provisional facts: an update it would refuse never enters history."""
        if self._policy is None or self._state.status is None:
            raise ApplicationError("request is still being submitted; try again", type="NotReady")
        try:
            # Validators never run on replay, so the bounds need no patch here.
            self._refusal(command)
        except DomainError as exc:
            raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from None

    def _dry_run(self, command: Command, known: Facts) -> list[Event]:
        assert self._policy is not None
        now = workflow.now()
        wanted = needs(self._state, command, self._policy, now, known)
        # A constant id: validators must not draw from the workflow's random stream.
        facts = provisional(wanted).merged(known)
        return decide(self._state, command, facts, self._policy, now, new_id=lambda: "validation")

    def _refusal(self, command: Command) -> None:
        """Dry-run `command` and hold what it would record to the bounds (chipclear.domain.bounds).

        Whatever a person sent is refused here with one sentence, never raised from deeper: a value
        the rules choke on (a ValueError, an overflow) is refused like a rule, since failing the
        workflow task instead would retry it forever and wedge the request.
        """
        try:
            events = self._dry_run(command, NONE)
        except DomainError:
            raise
        except (ValueError, ArithmeticError) as exc:
            text = " ".join(str(exc).split())
            raise DomainError(f"{command.kind} refused: {text[:200]}") from None
        bounds.check(self._state, events, command.kind)

    async def _handle(self, command: Command) -> TransitionResult:
        try:
            async with self._lock:
                events = await self._step(command)
                await self._flush()
        except DomainError as exc:
            # The state moved between validation and our turn at the lock (another update won), or
            # an owner outside refused (the buyer's cap has no headroom left).
            raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from None
        state = self._state
        return TransitionResult(
            **state.model_dump(include=STANDING),
            events=[event.type for event in events],
            rejected=[
                f"invoice {rejected.record.invoice!r}: {rejected.reason}"
                for event in events
                if isinstance(event.data, EvidenceRejected)
                for rejected in event.data.records
            ],
            held=next((held for name in state.route if (held := gate_of(name).holds(state))), None),
        )

    async def _step(self, command: Command) -> list[Event]:
        """Facts, then decide once, then fold; the events stay pending until `_flush`. Lock held."""
        assert self._policy is not None
        if isinstance(command, PersonAct):
            self._refuse_before_facts(command)
        known = NONE
        while wanted := needs(self._state, command, self._policy, workflow.now(), known):
            if isinstance(command, HUMAN_COMMANDS):
                # Dry-run with provisional facts: a command the rules refuse takes nothing from the
                # world (no buyer-cap headroom, no invoice).
                self._dry_run(command, known)
            known = known.merged(await self._fetch(wanted))
        events = decide(
            self._state, command, known, self._policy, workflow.now(), new_id=lambda: str(workflow.uuid4())
        )
        for event in events:
            self._state = evolve(self._state, event)
        self._pending.extend(events)
        return events

    def _refuse_before_facts(self, command: Command) -> None:
        """A person's act (a submission too) that the rules or the bounds refuse is refused before
        the world is asked anything: no invoice is registered, no units claimed, for an act that
        records no event. Before this patch a refused submission had registered its invoices first,
        and an act too large for Temporal failed its workflow task forever."""
        try:
            self._refusal(command)
        except DomainError:
            # Asked only when refusing, so histories of acts that pass carry no marker; a history
            # recorded before the patch replays its old path (the facts, then the refusal or the wedge).
            if workflow.patched(REFUSE_BEFORE_FACTS):
                raise

    async def _fetch(self, wanted: FactsWanted) -> Facts:
        """Each wanted fact from its activity, in a fixed order (the same on every replay).

        Reads, claims, registrations and the ledger's reservation are local activities: each is safe
        to repeat (a claim, a registration or a reservation by the same request is answered as the
        first was), so a call repeated after a lost workflow task leaves the world as this workflow
        goes on to record, and the server is spared a round trip. The releases, at the end of an
        unlicensed request, are regular activities on the entity-call queue.
        """
        facts = Facts()
        if wanted.invoices is not None:
            registered: InvoiceOwners = await calls.on_store(
                EventActivities.register_invoices,
                wanted.invoices,
                f"register {len(wanted.invoices.keys)} invoice(s)",
                details=_gate_table,
            )
            facts = facts.merged(Facts(invoice_owners=registered.owners))
        if wanted.screening is not None:
            screened = await calls.screen(wanted.screening, "restricted-party screening", _gate_table)
            facts = facts.merged(Facts(screening=screened))
        if wanted.buyer_claim is not None:
            claim = wanted.buyer_claim
            try:
                granted: BuyerClaim = await calls.local(
                    EventActivities.claim_buyer_units,
                    claim,
                    f"claim {claim.units} units of {claim.buyer}'s cap",
                    LOCAL_LEDGER_TIMEOUT,
                    LOCAL_LEDGER_RETRY,
                    f"{claim.buyer}'s cap",
                    _gate_table,
                )
            except ActivityError as exc:
                cause = exc.cause
                if isinstance(cause, ApplicationError) and cause.type == "LedgerRefused":
                    raise DomainError(cause.message) from None
                raise
            facts = facts.merged(Facts(buyer_claim=granted))
        if wanted.reservation is not None:
            reserve = wanted.reservation.model_copy(update={"workflow_id": workflow.info().workflow_id})
            summary = f"reserve {reserve.units} units"
            answer: Reservation
            if self._reserve_locally:
                answer = await calls.local(
                    AllocationActivities.reserve_units,
                    reserve,
                    summary,
                    LOCAL_LEDGER_TIMEOUT,
                    LOCAL_LEDGER_RETRY,
                    "the allocation ledger",
                    _gate_table,
                )
            else:
                answer = await self._on_ledger_queue(AllocationActivities.reserve_units, reserve, summary)
            facts = facts.merged(Facts(reservation=answer))
        if wanted.release_allocation is not None:
            given = await self._on_ledger_queue(
                AllocationActivities.release_units, wanted.release_allocation, "release units"
            )
            released = Released(batch_id=given.batch_id, units=given.units)
            facts = facts.merged(Facts(allocation_released=released))
        if wanted.release_buyer_claim is not None:
            back = await self._on_ledger_queue(
                EventActivities.release_buyer_units,
                wanted.release_buyer_claim,
                "release the export approval's units",
            )
            facts = facts.merged(Facts(buyer_units_released=back.units))
        if wanted.release_invoices is not None:
            freed: ReleasedInvoices = await calls.on_store(
                EventActivities.release_invoices,
                wanted.release_invoices,
                "free the request's invoices",
                details=_gate_table,
            )
            facts = facts.merged(Facts(invoices_released=freed.released))
        return facts

    async def _on_ledger_queue(
        self, activity: Callable[[_Self, _Arg], Awaitable[_Result]], arg: _Arg, summary: str
    ) -> _Result:
        return await calls.on_entity_queue(
            activity, arg, summary, "the allocation ledger", lambda: ui_text.gate_table(self._durable)
        )

    async def _flush(self) -> None:
        """Append every pending event in one call. Callers hold the lock, so flushes never overlap.

        Nothing outside the workflow learns of a pending event before it is stored: the run flushes
        before it waits or returns, and an update flushes before it answers. If the worker dies first,
        replay decides the very same events again (same workflow.uuid4() ids) and stores them then.
        """
        if not self._pending:
            return
        events, self._pending = self._pending, []
        try:
            # A regular activity is scheduled in history before it writes, so the store never holds
            # an event from a workflow task that was later lost and decided differently.
            await calls.append(
                events, events[0].version - 1, details=lambda: ui_text.gate_table(self._durable)
            )
        except BaseException:
            # Not stored, so not true: fall back to the last state the event store agrees with.
            self._state = self._durable
            raise
        if self._metrics is None:
            self._metrics = metrics.RequestMetrics()
        self._metrics.record(self._durable, self._state, events)
        self._durable = self._state
        if self._upsert:
            indexed = search_attributes.updates(self._state)
            # Asked only when nothing changed, so a history whose every step changes them carries no marker.
            if indexed != self._indexed or not workflow.patched(UPSERT_WHEN_CHANGED):
                workflow.upsert_search_attributes(indexed)
                self._indexed = indexed
        # The Web UI's "current details": the gate table, as of what is stored (not a command).
        workflow.set_current_details(ui_text.gate_table(self._state))

    # -- waiting at a gate ----------------------------------------------------------------------
    async def _take_grant(self) -> None:
        async with self._lock:
            answer, self._granted = self._granted, None
            if answer is None or self._state.gate is None:
                return
            try:
                await self._step(RecordAllocation(reservation=answer))
            except DomainError:
                return  # no longer waiting for units (a late or repeated signal): nothing recorded
            await self._flush()

    def _changed(self, gate: str, due: Due) -> bool:
        """Wake the waiting run early only when something changes what time will do next (a question
        asked or answered), so a request's timers are the same on every replay."""
        return self._state.gate != gate or self._granted is not None or next_due(self._state) != due

    async def _await_leaving(self, gate: str) -> None:
        """Wait for a decision, evidence or withdrawal to move the request; meanwhile time escalates
        it (review SLA) or expires it (the deadline, or an unanswered question)."""
        while self._state.gate == gate:
            if self._granted is not None:
                await self._take_grant()
                continue
            due = next_due(self._state)
            assert due is not None
            remaining = due.at - workflow.now()
            if remaining > timedelta(0):
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        partial(self._changed, gate, due),
                        timeout=remaining,
                        timeout_summary=f"{due.command.kind} {gate} at {due.at:%Y-%m-%d %H:%M:%S} UTC",
                    )
                continue
            async with self._lock:
                if self._state.gate == gate and next_due(self._state) == due:
                    await self._step(due.command)
                    await self._flush()
                    if isinstance(due.command, Escalate):
                        workflow.logger.warning(
                            "review SLA passed without a decision: escalated",
                            extra={"request_id": self._state.request_id, "gate": gate, "due": str(due.at)},
                        )
