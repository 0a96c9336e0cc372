"""One import request, from submission through the three gates to a licence or a final refusal.

The workflow holds no business rules: it asks the pure decider what a command means, has an activity
append the resulting events, then folds them into its own state with the same `evolve` the event
store's projection uses.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from functools import partial

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.allocation import AllocationActivities
    from activities.events import (
        AppendInput,
        EventActivities,
        PolicyInput,
        RegisterInvoices,
        ReleaseInvoices,
    )
    from activities.screening import ScreeningActivities, ScreenInput
    from chipclear import search_attributes, ui_text
    from chipclear.domain.allocation import Release, Reservation, Reserve
    from chipclear.domain.buyer_cap import BuyerClaim, ClaimUnits, ReleaseClaim
    from chipclear.domain.commands import (
        AddEvidence,
        Command,
        Decide,
        Escalate,
        Evaluate,
        RecordAllocation,
        RecordExportRelease,
        RecordRelease,
        RecordScreening,
        RequestInfo,
        Respond,
        Submit,
        Withdraw,
    )
    from chipclear.domain.decider import Due, buyer_claim_for, decide, next_due
    from chipclear.domain.errors import DomainError
    from chipclear.domain.events import Event, EvidenceRejected
    from chipclear.domain.evidence import InvoiceOwner, local_today, registrable
    from chipclear.domain.models import Gate, ImportRequest, ProcurementRecord, Status, Text
    from chipclear.domain.policy import Policy
    from chipclear.domain.screening import parties_of
    from chipclear.domain.state import RequestState, evolve
    from workflows import metrics
    from workflows.allocation import ledger_calls_queue
    from workflows.options import (
        APPEND_RETRY,
        APPEND_TIMEOUT,
        LEDGER_RETRY,
        LEDGER_TIMEOUT,
        SCREENING_RETRY,
        SCREENING_TIMEOUT,
    )


APPEND_AS_ACTIVITY = "append-as-activity"
CLAIMS_LOCAL = "buyer-claims-local"
RECORD_UNUSED_EXPORT = "record-unused-export-approval"
RELEASE_CAP_ALWAYS = "release-buyer-cap-on-every-unlicensed-end"
RELEASE_INVOICES = "release-invoices-when-unlicensed"
SEARCH_ATTRIBUTES = "search-attributes"


def workflow_id(request_id: str) -> str:
    return f"import-{request_id}"


class ImportRequestInput(Text):
    """Where a request enters its workflow: checked for NUL characters here, once, not on every parse."""

    request: ImportRequest
    actor: str = "applicant"


class ImportRequestResult(BaseModel):
    request_id: str
    status: Status
    units_requested: int
    units_approved: int | None
    licence_id: str | None
    outcome_reason: str | None
    version: int


class TransitionResult(BaseModel):
    """What an update did: the events it recorded and where the request stands now."""

    request_id: str
    status: Status
    gate: Gate | None
    version: int
    units_approved: int | None
    events: list[str]
    # Evidence records that did not count, each with its reason ("invoice 'X': …").
    rejected: list[str] = Field(default_factory=list)


class StateQuery(BaseModel):
    """Empty today; a model so the query can grow a field without breaking callers."""


def _provisional(claim: ClaimUnits) -> BuyerClaim:
    """A claim as if granted in full: lets a validator check every rule but the headroom."""
    return BuyerClaim(
        buyer=claim.buyer, request_id=claim.request_id, units=claim.units, cap=claim.cap, approved_before=0
    )


def _allocation_command(answer: Reservation) -> RecordAllocation:
    outcome = "queued" if answer.outcome in ("queued", "released") else answer.outcome
    return RecordAllocation(
        outcome=outcome,
        batch_id=answer.batch_id,
        units=answer.units,
        requested=answer.requested,
        reason=answer.reason,
        position=answer.position,
    )


@workflow.defn(name="ImportRequest")
class ImportRequestWorkflow:
    @workflow.init
    def __init__(self, input: ImportRequestInput) -> None:
        self._state = RequestState()
        self._policy: Policy | None = None
        # Handlers await the append activity; the lock keeps decide→append→evolve one atomic step so
        # two concurrent updates can never both decide against the same version.
        self._lock = asyncio.Lock()
        self._pending: list[Event] = []
        self._durable = self._state  # the state as of the last successful append
        self._append_as_activity = True
        self._claims_local = True
        self._upsert = False
        self._metrics: metrics.RequestMetrics | None = None  # made at the first flush, inside the run
        self._granted: Reservation | None = None  # a grant signalled by the ledger, not yet recorded
        # The buyer's cap owner holds units for this request (maybe before the approval is stored):
        # whatever happens next, a request that ends unlicensed hands them back.
        self._claimed = False

    @workflow.run
    async def run(self, input: ImportRequestInput) -> ImportRequestResult:
        # Asked once, first thing, so the patch marker sits at the same place in every history.
        self._append_as_activity = workflow.patched(APPEND_AS_ACTIVITY)
        self._claims_local = workflow.patched(CLAIMS_LOCAL)
        # Asked here, before any local activity: a patch first asked right after one does not replay.
        self._upsert = workflow.patched(SEARCH_ATTRIBUTES)
        policy_result = await workflow.execute_local_activity_method(
            EventActivities.current_policy,
            PolicyInput(),
            start_to_close_timeout=APPEND_TIMEOUT,
            retry_policy=APPEND_RETRY,
            summary="read the policy in force",
        )
        self._policy = policy_result.policy
        # Upsert the Web UI's search attributes only where the namespace has them (recorded above).
        self._upsert = self._upsert and policy_result.search_attributes
        screening = await self._screen(input.request) if self._policy.us_export.screening else None
        request = input.request
        owners = (
            await self._register(
                request.request_id, request.buyer.name, self._registrable(request.domestic_procurement, [])
            )
            if self._unique_invoices
            else None
        )
        # Submission, screening and the rules of every gate the request passes straight through are
        # decided together; they are recorded in one atomic append, before anyone waits.
        self._record(Submit(request=request, actor=input.actor, invoice_owners=owners))
        if screening is not None:
            self._record(screening)
        while (gate := self._state.gate) is not None:
            async with self._lock:
                if self._state.gate == gate:  # an update may have moved the request on meanwhile
                    evaluate = Evaluate(gate=gate)
                    claim = await self._claim(evaluate)
                    self._record(evaluate.model_copy(update={"buyer_claim": claim}))
                if self._state.gate == gate:
                    await self._flush()
            if gate is Gate.CN_IMPORT:
                await self._reserve()
            await self._await_leaving(gate)
        async with self._lock:
            await self._flush()
        await self._compensate()
        # Let an update that is mid-append finish before the run closes under it.
        await workflow.wait_condition(workflow.all_handlers_finished)
        state = self._state
        assert state.request_id is not None and state.status is not None
        return ImportRequestResult(
            request_id=state.request_id,
            status=state.status,
            units_requested=state.units_requested,
            units_approved=state.units_approved,
            licence_id=state.licence_id,
            outcome_reason=state.outcome_reason,
            version=state.version,
        )

    # -- queries and updates ------------------------------------------------------------------
    @workflow.query(name="state")
    def state(self, _: StateQuery | None = None) -> RequestState:
        # What the event store holds, never an event still on its way there: a query answered
        # mid-append must not show a step that may yet fail and never become true.
        return self._durable

    # Decisions, evidence and withdrawal are updates, not signals: the caller learns at once whether
    # the command was accepted, and a validator rejects a bad one before it ever enters history.
    @workflow.update(name="decide")
    async def decide_gate(self, command: Decide) -> TransitionResult:
        return await self._handle(command)

    @decide_gate.validator
    def _validate_decide(self, command: Decide) -> None:
        self._validate(command)

    @workflow.update(name="add_evidence")
    async def add_evidence(self, command: AddEvidence) -> TransitionResult:
        return await self._handle(command)

    @add_evidence.validator
    def _validate_add_evidence(self, command: AddEvidence) -> None:
        self._validate(command)

    @workflow.update(name="withdraw")
    async def withdraw(self, command: Withdraw) -> TransitionResult:
        return await self._handle(command)

    @withdraw.validator
    def _validate_withdraw(self, command: Withdraw) -> None:
        self._validate(command)

    @workflow.update(name="request_info")
    async def request_info(self, command: RequestInfo) -> TransitionResult:
        return await self._handle(command)

    @request_info.validator
    def _validate_request_info(self, command: RequestInfo) -> None:
        self._validate(command)

    @workflow.update(name="respond")
    async def respond(self, command: Respond) -> TransitionResult:
        return await self._handle(command)

    @respond.validator
    def _validate_respond(self, command: Respond) -> None:
        self._validate(command)

    # -- internals ----------------------------------------------------------------------------
    def _validate(self, command: Command) -> None:
        """Dry-run the decider: an update it would refuse never enters history."""
        if self._policy is None or self._state.status is None:
            raise ApplicationError("request is still being submitted; try again", type="NotReady")
        if isinstance(command, AddEvidence) and self._unique_invoices:
            command = self._provisionally_owned(command)
        claim = buyer_claim_for(self._state, command, self._policy)
        if claim is not None and isinstance(command, Decide):
            # The headroom is checked by the buyer's cap owner, whose own validator names it; here,
            # every other rule, as if the claim were granted.
            command = command.model_copy(update={"buyer_claim": _provisional(claim)})
        try:
            # A constant id: validators must not draw from the workflow's random stream.
            decide(self._state, command, self._policy, workflow.now(), new_id=lambda: "validation")
        except DomainError as exc:
            raise ApplicationError(str(exc), type="DomainError", non_retryable=True) from None

    async def _handle(self, command: Command) -> TransitionResult:
        try:
            events = await self._transition(command)
        except DomainError as exc:
            # The state moved between validation and our turn at the lock (another update won).
            raise ApplicationError(str(exc), type="DomainError", non_retryable=True) from None
        state = self._state
        assert state.request_id is not None and state.status is not None
        return TransitionResult(
            request_id=state.request_id,
            status=state.status,
            gate=state.gate,
            version=state.version,
            units_approved=state.units_approved,
            events=[event.type for event in events],
            rejected=[
                f"invoice {rejected.record.invoice!r}: {rejected.reason}"
                for event in events
                if isinstance(event.data, EvidenceRejected)
                for rejected in event.data.records
            ],
        )

    async def _transition(self, command: Command) -> list[Event]:
        async with self._lock:
            if isinstance(command, Decide) and (claim := await self._claim(command)) is not None:
                command = command.model_copy(update={"buyer_claim": claim})
            if isinstance(command, AddEvidence) and self._unique_invoices:
                command = await self._with_owners(command)
            events = self._record(command)
            await self._flush()
            return events

    # -- the invoice registry ------------------------------------------------------------------
    @property
    def _unique_invoices(self) -> bool:
        return self._policy is not None and self._policy.domestic_quota.unique_invoices

    def _provisionally_owned(self, command: AddEvidence) -> AddEvidence:
        """As if every invoice were free: lets a validator check every rule but the registry's."""
        assert self._policy is not None
        state = self._state
        assert state.request_id is not None and state.buyer is not None
        owner = InvoiceOwner(request_id=state.request_id, buyer=state.buyer)
        keys = self._registrable(command.records, state.evidence)
        return command.model_copy(update={"invoice_owners": dict.fromkeys(keys, owner)})

    def _registrable(self, records: list[ProcurementRecord], already: list[ProcurementRecord]) -> list[str]:
        """The invoice keys of `records` that pass the policy's own rules: those to register."""
        assert self._policy is not None
        return registrable(records, already=already, policy=self._policy, today=local_today(workflow.now()))

    async def _with_owners(self, command: AddEvidence) -> AddEvidence:
        """Dry-run first (refused evidence registers nothing), then ask the registry; lock held."""
        assert self._policy is not None and self._state.request_id and self._state.buyer
        trial = self._provisionally_owned(command)
        decide(self._state, trial, self._policy, workflow.now(), new_id=lambda: "trial")
        owners = await self._register(
            self._state.request_id, self._state.buyer, list(trial.invoice_owners or {})
        )
        return command.model_copy(update={"invoice_owners": owners})

    async def _register(self, request_id: str, buyer: str, keys: list[str]) -> dict[str, InvoiceOwner]:
        """Register the invoices that passed the policy's own rules (`keys`); who owns each one now.

        A local activity: registering again for the same request changes nothing, so a call repeated
        after a lost workflow task gets the same answer.
        """
        if not keys:
            return {}
        result = await workflow.execute_local_activity_method(
            EventActivities.register_invoices,
            RegisterInvoices(request_id=request_id, buyer=buyer, keys=keys),
            start_to_close_timeout=APPEND_TIMEOUT,
            retry_policy=APPEND_RETRY,
            summary=f"register {len(keys)} invoice(s)",
        )
        return result.owners

    async def _screen(self, request: ImportRequest) -> RecordScreening:
        """Screen every party before anyone reviews the request (read-only, so a local activity)."""
        assert self._policy is not None
        result = await workflow.execute_local_activity_method(
            ScreeningActivities.screen_parties,
            ScreenInput(parties=parties_of(request), threshold=self._policy.us_export.screening_threshold),
            start_to_close_timeout=SCREENING_TIMEOUT,
            retry_policy=SCREENING_RETRY,
            summary="restricted-party screening",
        )
        return RecordScreening(
            list_version=result.list_version,
            threshold=result.threshold,
            parties=result.parties,
            matches=result.matches,
        )

    async def _claim(self, command: Decide | Evaluate) -> BuyerClaim | None:
        """Claim the units from the buyer's cap owner, when the command needs it; callers hold the lock.

        A decision is dry-run first, so a command the rules refuse never takes headroom; a claim the
        owner refuses (more than the headroom) fails the update with the owner's message.
        """
        assert self._policy is not None
        wanted = buyer_claim_for(self._state, command, self._policy)
        if wanted is None:
            return None
        if isinstance(command, Decide):
            trial = command.model_copy(update={"buyer_claim": _provisional(wanted)})
            decide(self._state, trial, self._policy, workflow.now(), new_id=lambda: "trial")
        try:
            claim = await self._claim_units(wanted)
        except ActivityError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type == "LedgerRefused":
                raise DomainError(cause.message) from None
            raise
        self._claimed = self._claimed or claim.units > 0
        return claim

    def _record(self, command: Command) -> list[Event]:
        """Decide and fold at once; the events stay pending until `_flush` makes them durable."""
        assert self._policy is not None
        events = decide(
            self._state, command, self._policy, workflow.now(), new_id=lambda: str(workflow.uuid4())
        )
        for event in events:
            self._state = evolve(self._state, event)
        self._pending.extend(events)
        return events

    async def _flush(self) -> None:
        """Append every pending event in one call. Callers hold the lock, so flushes never overlap.

        Nothing outside the workflow learns of a pending event before it is stored: the run flushes
        before it waits or returns, and an update flushes before it answers. If the worker dies first,
        replay decides the very same events again (same workflow.uuid4() ids) and stores them then.
        """
        if not self._pending:
            return
        events, self._pending = self._pending, []
        append = AppendInput(
            stream_id=events[0].stream_id, expected_version=events[0].version - 1, events=events
        )
        summary = " + ".join(event.type for event in events)
        try:
            if self._append_as_activity:
                # A regular activity is scheduled in history before it writes, so the store never
                # holds an event from a workflow task that was later lost and decided differently.
                await workflow.execute_activity_method(
                    EventActivities.append_events,
                    append,
                    start_to_close_timeout=APPEND_TIMEOUT,
                    retry_policy=APPEND_RETRY,
                    summary=summary,
                )
            else:  # histories recorded before the patch appended through local activities
                await workflow.execute_local_activity_method(
                    EventActivities.append_events,
                    append,
                    start_to_close_timeout=APPEND_TIMEOUT,
                    retry_policy=APPEND_RETRY,
                    summary=summary,
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
            workflow.upsert_search_attributes(search_attributes.updates(self._state))
        # The Web UI's "current details": the gate table, as of what is stored (not a command).
        workflow.set_current_details(ui_text.gate_table(self._state))

    async def _reserve(self) -> None:
        """Ask the allocation ledger for units. The lock is held throughout, so a withdrawal lands
        either before the reservation (nothing to give back) or after it is recorded (released)."""
        assert self._policy is not None
        if not self._policy.cn_import.allocate_from_batches:
            return
        async with self._lock:
            state = self._state
            if state.gate is not Gate.CN_IMPORT or state.allocation is not None:
                return
            assert state.request_id is not None and state.buyer is not None
            # A regular activity, not a local one: under a rush, a reservation waits for the one
            # ledger, and a local activity that long would stretch every workflow task around it.
            answer = await workflow.execute_activity_method(
                AllocationActivities.reserve_units,
                Reserve(
                    request_id=state.request_id,
                    buyer=state.buyer,
                    units=state.units_in_play,
                    workflow_id=workflow.info().workflow_id,
                ),
                task_queue=ledger_calls_queue(workflow.info().task_queue),
                start_to_close_timeout=LEDGER_TIMEOUT,
                retry_policy=LEDGER_RETRY,
                summary=f"reserve {state.units_in_play} units",
            )
            self._record(_allocation_command(answer))
            await self._flush()

    async def _claim_units(self, wanted: ClaimUnits) -> BuyerClaim:
        """Claim from the buyer's cap owner: a local activity, which saves the server a task round
        trip on every request's path.

        Safe as a local activity, unlike an append, because a claim by the same request replaces its
        own earlier one: a claim repeated after a lost workflow task leaves the owner holding exactly
        what this workflow goes on to record. One buyer's requests rarely contend, so the call is
        short. Histories from before the patch claimed through a regular activity and replay so.
        """
        summary = f"claim {wanted.units} units of {wanted.buyer}'s cap"
        if self._claims_local:
            return await workflow.execute_local_activity_method(
                AllocationActivities.claim_buyer_units,
                wanted,
                start_to_close_timeout=LEDGER_TIMEOUT,
                retry_policy=LEDGER_RETRY,
                summary=summary,
            )
        return await workflow.execute_activity_method(
            AllocationActivities.claim_buyer_units,
            wanted,
            task_queue=ledger_calls_queue(workflow.info().task_queue),
            start_to_close_timeout=LEDGER_TIMEOUT,
            retry_policy=LEDGER_RETRY,
            summary=summary,
        )

    @workflow.signal(name="allocation_granted")
    def allocation_granted(self, answer: Reservation) -> None:
        """The ledger served this request from the queue (a new batch, or units given back)."""
        self._granted = answer

    async def _take_grant(self) -> None:
        async with self._lock:
            answer, self._granted = self._granted, None
            if answer is not None and self._state.status is Status.CN_IMPORT_QUEUED:
                self._record(_allocation_command(answer))
                await self._flush()

    async def _compensate(self) -> None:
        """A request that ends without a licence gives back what it holds, once: its allocation to
        the ledger, and its export approval's units to the buyer's cap."""
        if self._state.status is Status.LICENSED:
            return
        state = self._state
        reason = f"request {state.status}: {state.outcome_reason or 'ended'}"
        await self._release_allocation(reason)
        await self._release_export_approval(reason)
        await self._release_invoices()

    async def _release_invoices(self) -> None:
        """The request's invoices never backed a licence: its buyer may count them for another."""
        if not self._unique_invoices or not workflow.patched(RELEASE_INVOICES):
            return
        assert self._state.request_id is not None
        await workflow.execute_local_activity_method(
            EventActivities.release_invoices,
            ReleaseInvoices(request_id=self._state.request_id),
            start_to_close_timeout=APPEND_TIMEOUT,
            retry_policy=APPEND_RETRY,
            summary="free the request's invoices",
        )

    async def _release_export_approval(self, reason: str) -> None:
        """The export approval goes unused: its units back to the buyer's cap (when claimed), and a
        record that the licence goes unused (`ExportApprovalReleased`), once."""
        state = self._state
        if state.export_released:
            return
        assert state.request_id is not None and state.request is not None
        assert self._policy is not None
        capped = self._policy.us_export.max_units_per_buyer is not None
        # A claim made by a local activity whose workflow task was then lost is not in `_claimed`,
        # yet the buyer's cap holds it: since the patch, every unlicensed end under a cap releases
        # (a release of nothing gives back nothing).
        if self._claimed or (capped and workflow.patched(RELEASE_CAP_ALWAYS)):
            await workflow.execute_activity_method(
                AllocationActivities.release_buyer_units,
                ReleaseClaim(buyer=state.request.buyer.name, request_id=state.request_id, reason=reason),
                task_queue=ledger_calls_queue(workflow.info().task_queue),
                start_to_close_timeout=LEDGER_TIMEOUT,
                retry_policy=LEDGER_RETRY,
                summary="release the export approval's units",
            )
        export = self._state.gates.get(Gate.US_EXPORT)
        if export is None or export.outcome != "approved" or export.units_approved is None:
            return
        # Requests that ran before every unused approval was recorded (only claimed ones were) replay
        # without the record; the patch marker sits here, where the record would be.
        if self._claimed or workflow.patched(RECORD_UNUSED_EXPORT):
            async with self._lock:
                self._record(RecordExportRelease(units=export.units_approved, reason=reason))
                await self._flush()

    async def _release_allocation(self, reason: str) -> None:
        allocation = self._state.allocation
        if allocation is None or allocation.released:
            return
        state = self._state
        assert state.request_id is not None
        given = await workflow.execute_activity_method(
            AllocationActivities.release_units,
            Release(request_id=state.request_id, reason=reason),
            task_queue=ledger_calls_queue(workflow.info().task_queue),
            start_to_close_timeout=LEDGER_TIMEOUT,
            retry_policy=LEDGER_RETRY,
            summary="release units",
        )
        async with self._lock:
            self._record(RecordRelease(batch_id=given.batch_id, units=given.units, reason=reason))
            await self._flush()

    def _changed(self, gate: Gate, due: Due) -> bool:
        """Wake the waiting run early only when something changes what time will do next (a question
        asked or answered), so a request's timers are the same on every replay."""
        return self._state.gate != gate or self._granted is not None or next_due(self._state) != due

    async def _await_leaving(self, gate: Gate) -> None:
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
                    self._record(due.command)
                    await self._flush()
                    if isinstance(due.command, Escalate):
                        workflow.logger.warning(
                            "review SLA passed without a decision: escalated",
                            extra={"request_id": self._state.request_id, "gate": gate, "due": str(due.at)},
                        )
