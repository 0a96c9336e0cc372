"""`decide`: every business rule of the three gates, as one pure function.

The workflow calls it (in its update validators too, so a command that would fail is rejected before it
enters history); tests call it directly with no server at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from chipclear.domain.commands import (
    AddEvidence,
    Command,
    Decide,
    Evaluate,
    Expire,
    RecordAllocation,
    RecordRelease,
    Submit,
    Withdraw,
)
from chipclear.domain.errors import DomainError
from chipclear.domain.events import (
    AllocationGranted,
    AllocationQueued,
    AllocationReleased,
    DomesticQuotaAssessed,
    Event,
    EventData,
    EvidenceAdded,
    GateApproved,
    GateDenied,
    GateOpened,
    LicenseIssued,
    RequestExpired,
    RequestSubmitted,
    RequestWithdrawn,
)
from chipclear.domain.models import Gate, ProcurementRecord
from chipclear.domain.policy import GateMode, Policy
from chipclear.domain.state import RequestState

POLICY_ACTOR = "policy"
DEADLINE_ACTOR = "deadline"
LEDGER_ACTOR = "allocation-ledger"

NewId = Callable[[], str]


@dataclass(frozen=True)
class ByPolicy:
    """An event the policy's rules caused, whoever sent the command that triggered them."""

    data: EventData


Payload = EventData | ByPolicy


def decide(
    state: RequestState, command: Command, policy: Policy, now: datetime, *, new_id: NewId
) -> list[Event]:
    """Events that carry out `command`, or DomainError naming the rule it breaks.

    `new_id` supplies event ids; the workflow passes `workflow.uuid4` so ids are stable on replay and
    an activity retry re-appends the very same events.
    """
    match command:
        case Submit():
            actor, payloads = command.actor, _submit(state, command, policy, now)
        case Evaluate():
            actor, payloads = POLICY_ACTOR, _evaluate(state, command.gate, policy, now)
        case Decide():
            actor, payloads = command.reviewer, _decide(state, command, policy, now)
        case AddEvidence():
            actor, payloads = command.actor, _add_evidence(state, command, policy, now)
        case Withdraw():
            _require_open(state)
            actor, payloads = (
                command.actor,
                [RequestWithdrawn(gate=state.gate, reason=command.reason)],
            )
        case Expire():
            actor, payloads = DEADLINE_ACTOR, _expire(state, command.gate, now)
        case RecordAllocation():
            actor, payloads = LEDGER_ACTOR, _record_allocation(state, command, policy, now)
        case RecordRelease():
            actor, payloads = LEDGER_ACTOR, _record_release(state, command)
    stream_id = state.request_id or _submitted_id(payloads)
    return [
        Event(
            event_id=new_id(),
            stream_id=stream_id,
            version=state.version + offset,
            data=data,
            occurred_at=now,
            policy_version=policy.version,
            # Rules that fire inside someone else's command (an approval once evidence suffices) are
            # the policy's decision, not that person's.
            actor=POLICY_ACTOR if isinstance(payload, ByPolicy) else actor,
        )
        for offset, payload in enumerate(payloads, start=1)
        for data in [payload.data if isinstance(payload, ByPolicy) else payload]
    ]


def _submitted_id(payloads: list[Payload]) -> str:
    first = payloads[0]
    assert isinstance(first, RequestSubmitted)
    return first.request.request_id


def _require_open(state: RequestState) -> None:
    if state.status is None:
        raise DomainError("request has not been submitted")
    if state.is_final:
        raise DomainError(f"request is already final (status {state.status})")


def _require_at(state: RequestState, gate: Gate) -> None:
    _require_open(state)
    if state.gate != gate:
        raise DomainError(f"request is at {state.gate or state.status}, not at gate {gate}")


def _submit(state: RequestState, command: Submit, policy: Policy, now: datetime) -> list[Payload]:
    if state.status is not None:
        raise DomainError(f"request {state.request_id} was already submitted")
    return [RequestSubmitted(request=command.request), *_open(Gate.US_EXPORT, policy, now)]


def _open(gate: Gate, policy: Policy, now: datetime) -> list[EventData]:
    return [GateOpened(gate=gate, deadline=now + policy.deadline(gate))]


def _evaluate(state: RequestState, gate: Gate, policy: Policy, now: datetime) -> list[Payload]:
    """Rules that apply on entering a gate: denials in every mode, decisions in auto mode."""
    _require_at(state, gate)
    denial = _rule_denial(state, gate, policy)
    if denial is not None:
        return [denial]
    auto = policy.mode(gate) is GateMode.AUTO
    match gate:
        case Gate.US_EXPORT:
            if not auto:
                return []
            cap = policy.us_export.max_units_per_request
            units = min(state.units_in_play, cap)
            capped = units < state.units_in_play
            note = f"capped at us_export.max_units_per_request = {cap}" if capped else None
            return _approve(state, gate, units, [], policy, now, by_policy=True, note=note)
        case Gate.CN_IMPORT:
            if not auto or _awaiting_allocation(state, policy):
                return []
            return _approve(state, gate, state.units_in_play, [], policy, now, by_policy=True)
        case Gate.DOMESTIC_QUOTA:
            assessment = assess(state, state.evidence, policy)
            if auto and assessment.shortfall == 0:
                return [
                    assessment,
                    *_approve(state, gate, state.units_in_play, [], policy, now, by_policy=True),
                ]
            return [assessment]


def _rule_denial(state: RequestState, gate: Gate, policy: Policy) -> GateDenied | None:
    request = state.request
    assert request is not None
    match gate:
        case Gate.US_EXPORT:
            kind = request.effective_end_user.kind
            if kind in policy.us_export.excluded_end_user_kinds:
                rule = "us_export.excluded_end_user_kinds"
                return GateDenied(gate=gate, rule=rule, reason=f"end user kind {kind} is in {rule}")
        case Gate.CN_IMPORT:
            kind = request.buyer.kind
            if kind in policy.cn_import.excluded_buyer_kinds:
                rule = "cn_import.excluded_buyer_kinds"
                return GateDenied(gate=gate, rule=rule, reason=f"buyer kind {kind} is in {rule}")
        case Gate.DOMESTIC_QUOTA:
            if policy.domestic_quota.deny_state_funded and request.data_center.state_funded:
                rule = "domestic_quota.deny_state_funded"
                reason = f"data centre {request.data_center.name!r} is state-funded ({rule})"
                return GateDenied(gate=gate, rule=rule, reason=reason)
    return None


def assess(state: RequestState, evidence: list[ProcurementRecord], policy: Policy) -> DomesticQuotaAssessed:
    ratio = policy.domestic_quota.required_ratio
    imported = state.units_in_play
    # Exact decimal arithmetic: 1.1 x 50,000 is 55,000, not the float 55000.00000000001 rounded up.
    required = math.ceil(Decimal(str(ratio)) * imported)
    domestic = sum(record.units for record in evidence)
    return DomesticQuotaAssessed(
        imported_units=imported,
        domestic_units=domestic,
        required_ratio=ratio,
        required_units=required,
        shortfall=max(0, required - domestic),
    )


def _approve(
    state: RequestState,
    gate: Gate,
    units: int,
    conditions: list[str],
    policy: Policy,
    now: datetime,
    *,
    by_policy: bool,
    note: str | None = None,
) -> list[Payload]:
    """An approval, then the next gate opens, or after the last gate the licence is issued."""
    rule = f"{gate.replace('-', '_')}.mode = auto" if by_policy else None
    approved = GateApproved(gate=gate, units_approved=units, conditions=conditions, note=note, rule=rule)
    following = gate.next
    payloads: list[EventData]
    if following is not None:
        payloads = [approved, *_open(following, policy, now)]
    else:
        all_conditions = [*state.conditions, *(c for c in conditions if c not in state.conditions)]
        assert state.request_id is not None
        licence = LicenseIssued(licence_id=f"LIC-{state.request_id}", units=units, conditions=all_conditions)
        payloads = [approved, licence]
    return [ByPolicy(p) for p in payloads] if by_policy else list(payloads)


def _decide(state: RequestState, command: Decide, policy: Policy, now: datetime) -> list[Payload]:
    gate = command.gate
    _require_at(state, gate)
    if not policy.may_decide(command.reviewer, gate):
        allowed = sorted(name for name, gates in policy.reviewers.items() if gate in gates)
        raise DomainError(
            f"reviewer {command.reviewer!r} may not decide gate {gate} "
            f"(policy {policy.version} [reviewers] allows: {', '.join(allowed) or 'nobody'})"
        )
    if command.approve and (denial := _rule_denial(state, gate, policy)) is not None:
        # Excluded kinds and state-funded data centres are denied in every mode; no reviewer overrides.
        raise DomainError(f"cannot approve: {denial.reason}")
    if not command.approve:
        if command.units is not None or command.conditions:
            raise DomainError("a denial takes a reason only, not units or conditions")
        if not command.reason or not command.reason.strip():
            raise DomainError("reason: a denial needs a reason")
        return [GateDenied(gate=gate, reason=command.reason.strip())]
    if gate is Gate.CN_IMPORT and _awaiting_allocation(state, policy):
        where = state.allocation.position if state.allocation else None
        raise DomainError(
            "no units allocated yet"
            + (f" (queued at position {where})" if where else "")
            + "; cn-import can approve only units from an allocation batch"
        )
    in_play = state.units_in_play
    cap = policy.us_export.max_units_per_request if gate is Gate.US_EXPORT else None
    units = command.units if command.units is not None else min(in_play, cap or in_play)
    if units > in_play:
        raise DomainError(f"units: {units} exceeds the {in_play} units still requested")
    if cap is not None and units > cap:
        raise DomainError(f"units: {units} exceeds us_export.max_units_per_request = {cap}")
    payloads: list[Payload] = []
    if gate is Gate.DOMESTIC_QUOTA:
        assessment = assess(state.model_copy(update={"units_approved": units}), state.evidence, policy)
        if assessment.shortfall:
            raise DomainError(
                f"domestic quota not met: {assessment.domestic_units} domestic units < "
                f"{assessment.required_units} required (ratio {assessment.required_ratio} x "
                f"{assessment.imported_units}); short by {assessment.shortfall}"
            )
        if assessment != state.assessment:
            payloads.append(assessment)
    note = command.reason.strip() if command.reason else None
    return payloads + _approve(
        state, gate, units, list(command.conditions), policy, now, by_policy=False, note=note
    )


def _add_evidence(state: RequestState, command: AddEvidence, policy: Policy, now: datetime) -> list[Payload]:
    _require_open(state)
    if not command.records:
        raise DomainError("records: at least one procurement record is needed")
    known = {record.invoice.casefold() for record in state.evidence}
    seen: set[str] = set()
    for record in command.records:
        key = record.invoice.casefold()
        if key in known or key in seen:
            raise DomainError(f"invoice {record.invoice!r} was already submitted for this request")
        seen.add(key)
    payloads: list[Payload] = [EvidenceAdded(records=list(command.records))]
    if state.gate is Gate.DOMESTIC_QUOTA:
        assessment = assess(state, state.evidence + list(command.records), policy)
        payloads.append(assessment)
        if policy.mode(Gate.DOMESTIC_QUOTA) is GateMode.AUTO and assessment.shortfall == 0:
            payloads += _approve(
                state, Gate.DOMESTIC_QUOTA, state.units_in_play, [], policy, now, by_policy=True
            )
    return payloads


def _expire(state: RequestState, gate: Gate, now: datetime) -> list[Payload]:
    _require_at(state, gate)
    deadline = state.deadline
    assert deadline is not None
    if now < deadline:
        raise DomainError(f"gate {gate} deadline {deadline.isoformat()} has not passed")
    return [RequestExpired(gate=gate, deadline=deadline)]


def _awaiting_allocation(state: RequestState, policy: Policy) -> bool:
    allocation = state.allocation
    return policy.cn_import.allocate_from_batches and (allocation is None or allocation.outcome == "queued")


def _record_allocation(
    state: RequestState, command: RecordAllocation, policy: Policy, now: datetime
) -> list[Payload]:
    _require_at(state, Gate.CN_IMPORT)
    if not _awaiting_allocation(state, policy):
        raise DomainError("units are already allocated to this request")
    if command.outcome == "queued":
        if state.allocation is not None:
            raise DomainError("request is already queued for allocation")
        return [AllocationQueued(position=command.position)]
    if command.batch_id is None or command.units < 1:
        raise DomainError("a granted allocation names its batch and at least one unit")
    granted = AllocationGranted(
        batch_id=command.batch_id, units=command.units, requested=command.requested, reason=command.reason
    )
    payloads: list[Payload] = [granted]
    if policy.mode(Gate.CN_IMPORT) is GateMode.AUTO:
        units = min(state.units_in_play, command.units)
        payloads += _approve(state, Gate.CN_IMPORT, units, [], policy, now, by_policy=True)
    return payloads


def _record_release(state: RequestState, command: RecordRelease) -> list[Payload]:
    """Compensation: allowed after the request is final, once, and only for what it holds."""
    allocation = state.allocation
    if allocation is None or allocation.released:
        raise DomainError("request holds no allocation to release")
    return [AllocationReleased(batch_id=command.batch_id, units=command.units, reason=command.reason)]
