"""`decide`: every business rule of the three gates, as one pure function.

The workflow calls it (in its update validators too, so a command that would fail is rejected before it
enters history); tests call it directly with no server at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from chipclear.domain.buyer_cap import RULE as BUYER_CAP_RULE
from chipclear.domain.buyer_cap import BuyerClaim, ClaimUnits
from chipclear.domain.commands import (
    AddEvidence,
    Command,
    Decide,
    Escalate,
    Evaluate,
    Expire,
    RecordAllocation,
    RecordExportRelease,
    RecordRelease,
    RecordScreening,
    RequestInfo,
    Respond,
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
    EvidenceRejected,
    ExportApprovalReleased,
    GateApproved,
    GateDenied,
    GateOpened,
    InformationProvided,
    InformationRequested,
    LicenseIssued,
    PartiesScreened,
    PublicHubShare,
    RequestExpired,
    RequestSubmitted,
    RequestWithdrawn,
    ReviewEscalated,
)
from chipclear.domain.evidence import (
    InvoiceOwner,
    RejectedRecord,
    hub_shortfall,
    judge,
    local_today,
    required_units,
)
from chipclear.domain.models import Gate, ProcurementRecord, Status
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
            actor, payloads = POLICY_ACTOR, _evaluate(state, command.gate, policy, now, command.buyer_claim)
        case Decide():
            actor, payloads = command.reviewer, _decide(state, command, policy, now)
        case RecordScreening():
            actor, payloads = POLICY_ACTOR, _record_screening(state, command, policy)
        case RequestInfo():
            actor, payloads = command.reviewer, _request_info(state, command, policy, now)
        case Respond():
            actor, payloads = command.actor, _respond(state, command, now)
        case Escalate():
            actor, payloads = DEADLINE_ACTOR, _escalate(state, command.gate, now)
        case RecordExportRelease():
            actor, payloads = POLICY_ACTOR, _record_export_release(state, command)
        case AddEvidence():
            actor, payloads = command.actor, _add_evidence(state, command, policy, now)
        case Withdraw():
            _require_open(state)
            actor, payloads = (
                command.actor,
                [RequestWithdrawn(gate=state.gate, reason=command.reason)],
            )
        case Expire():
            actor, payloads = DEADLINE_ACTOR, _expire(state, command, now)
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
    request = command.request
    if not judges_evidence(policy):
        return [RequestSubmitted(request=request), *_open(Gate.US_EXPORT, policy, now)]
    # The request's own records are judged like any evidence sent later; those that count follow.
    payloads: list[Payload] = [RequestSubmitted(request=request, evidence_separately=True)]
    if request.domestic_procurement:
        accepted, rejected = _judge(
            request.domestic_procurement,
            request_id=request.request_id,
            buyer=request.buyer.name,
            already=[],
            owners=command.invoice_owners,
            policy=policy,
            now=now,
        )
        payloads += [EvidenceAdded(records=accepted)] if accepted else []
        payloads += [EvidenceRejected(records=rejected)] if rejected else []
    return [*payloads, *_open(Gate.US_EXPORT, policy, now)]


def judges_evidence(policy: Policy) -> bool:
    """Records are judged one by one once the policy has a vendor list or keeps invoices unique."""
    rules = policy.domestic_quota
    return bool(rules.vendors) or rules.unique_invoices


def _judge(
    records: list[ProcurementRecord],
    *,
    request_id: str,
    buyer: str,
    already: list[ProcurementRecord],
    owners: dict[str, InvoiceOwner] | None,
    policy: Policy,
    now: datetime,
) -> tuple[list[ProcurementRecord], list[RejectedRecord]]:
    if policy.domestic_quota.unique_invoices and owners is None:
        raise DomainError("the invoices have not been checked against the invoice registry")
    return judge(
        records,
        request_id=request_id,
        buyer=buyer,
        already=already,
        policy=policy,
        today=local_today(now),
        owners=owners if policy.domestic_quota.unique_invoices else None,
    )


def _open(gate: Gate, policy: Policy, now: datetime) -> list[EventData]:
    sla = policy.us_export.review_sla if gate is Gate.US_EXPORT else None
    review_due = now + sla if sla is not None else None
    return [GateOpened(gate=gate, deadline=now + policy.deadline(gate), review_due=review_due)]


def _evaluate(
    state: RequestState, gate: Gate, policy: Policy, now: datetime, claim: BuyerClaim | None
) -> list[Payload]:
    """Rules that apply on entering a gate: denials in every mode, decisions in auto mode."""
    _require_at(state, gate)
    denial = _rule_denial(state, gate, policy)
    if denial is not None:
        return [denial]
    auto = policy.mode(gate) is GateMode.AUTO
    match gate:
        case Gate.US_EXPORT:
            _require_screened(state, policy)
            if not _exports_automatically(state, policy):
                return []
            return _auto_export_approval(state, policy, now, claim)
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
    required = required_units(ratio, imported)
    domestic = sum(record.units for record in evidence)
    hub = _public_hub(state, evidence, policy, imported)
    shortfall = max(0, required - domestic, hub.shortfall if hub else 0)
    return DomesticQuotaAssessed(
        imported_units=imported,
        domestic_units=domestic,
        required_ratio=ratio,
        required_units=required,
        shortfall=shortfall,
        public_hub=hub,
    )


def shortfall_reason(a: DomesticQuotaAssessed) -> str:
    """Which rule is short, and by how much, in a reviewer's words."""
    parts = []
    if a.domestic_units < a.required_units:
        parts.append(
            f"{a.domestic_units} domestic units < {a.required_units} required "
            f"(ratio {a.required_ratio} x {a.imported_units})"
        )
    if a.public_hub is not None and a.public_hub.shortfall:
        hub = a.public_hub
        parts.append(
            f"the public computing hub's domestic share after import would be {hub.share_after:.2%}, "
            f"not above domestic_quota.min_domestic_share {hub.min_share}"
        )
    return "; ".join(parts) + f"; short by {a.shortfall}"


def _public_hub(
    state: RequestState, evidence: list[ProcurementRecord], policy: Policy, imported: int
) -> PublicHubShare | None:
    """A public computing hub must stay majority domestic after the import (policy min share)."""
    min_share = policy.domestic_quota.min_domestic_share
    assert state.request is not None
    site = state.request.data_center
    if min_share is None or not site.public_computing_hub:
        return None
    # Evidence counts towards the hub when delivered there (or no site is named on the record).
    added = sum(
        r.units for r in evidence if r.data_center is None or r.data_center.casefold() == site.name.casefold()
    )
    domestic = site.installed_domestic + added
    total = domestic + site.installed_foreign + imported
    return PublicHubShare(
        installed_domestic=site.installed_domestic,
        installed_foreign=site.installed_foreign,
        domestic_added=added,
        imported_units=imported,
        share_after=round(domestic / total, 4) if total else 0.0,
        min_share=min_share,
        shortfall=hub_shortfall(min_share, domestic, total),
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
    buyer_claim: BuyerClaim | None = None,
) -> list[Payload]:
    """An approval, then the next gate opens, or after the last gate the licence is issued."""
    rule = f"{gate.replace('-', '_')}.mode = auto" if by_policy else None
    # The policy's standing conditions ride on every export approval, first, whoever approves; a
    # condition given twice is one condition.
    standing = policy.us_export.default_conditions if gate is Gate.US_EXPORT else ()
    conditions = list(dict.fromkeys([*standing, *conditions]))
    approved = GateApproved(
        gate=gate,
        units_approved=units,
        conditions=conditions,
        note=note,
        rule=rule,
        buyer_claim=buyer_claim,
    )
    following = gate.next
    payloads: list[EventData]
    if following is not None:
        payloads = [approved, *_open(following, policy, now)]
    else:
        all_conditions = list(dict.fromkeys([*state.conditions, *conditions]))
        assert state.request_id is not None
        licence = LicenseIssued(
            licence_id=f"LIC-{state.request_id}",
            units=units,
            conditions=all_conditions,
            valid_until=policy.licence_validity.after(now),
        )
        payloads = [approved, licence]
    return [ByPolicy(p) for p in payloads] if by_policy else list(payloads)


def _require_reviewer(reviewer: str, gate: Gate, policy: Policy) -> None:
    if not policy.may_decide(reviewer, gate):
        allowed = sorted(name for name, gates in policy.reviewers.items() if gate in gates)
        raise DomainError(
            f"reviewer {reviewer!r} may not decide gate {gate} "
            f"(policy {policy.version} [reviewers] allows: {', '.join(allowed) or 'nobody'})"
        )


def _decide(state: RequestState, command: Decide, policy: Policy, now: datetime) -> list[Payload]:
    gate = command.gate
    _require_at(state, gate)
    _require_reviewer(command.reviewer, gate, policy)
    if command.approve and (denial := _rule_denial(state, gate, policy)) is not None:
        # Excluded kinds and state-funded data centres are denied in every mode; no reviewer overrides.
        raise DomainError(f"cannot approve: {denial.reason}")
    if not command.approve:
        if command.units is not None or command.conditions:
            raise DomainError("a denial takes a reason only, not units or conditions")
        if not command.reason or not command.reason.strip():
            raise DomainError("reason: a denial needs a reason")
        return [GateDenied(gate=gate, reason=command.reason.strip())]
    if (question := state.open_question) is not None:
        raise DomainError(
            f"the request is waiting for the applicant's answer to {question.question!r} "
            f"(due {question.due.isoformat()}); it returns to review when they respond"
        )
    if gate is Gate.US_EXPORT:
        _require_screened(state, policy)
        if state.on_hold and not (command.reason and command.reason.strip()):
            assert state.screening is not None
            hits = ", ".join(sorted({m.entry_name for m in state.screening.matches}))
            raise DomainError(
                f"reason: the request is held by restricted-party screening (matches: {hits}); "
                "an approval needs a written reason"
            )
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
    claim = command.buyer_claim
    if gate is Gate.US_EXPORT and policy.us_export.max_units_per_buyer is not None:
        # The workflow claims the units from the buyer's cap owner first; without a matching claim
        # nobody has checked the buyer's other requests.
        if claim is None or claim.request_id != state.request_id or claim.units != units:
            raise DomainError(f"units: {units} have not been claimed against {BUYER_CAP_RULE}")
    else:
        claim = None
    payloads: list[Payload] = []
    if gate is Gate.DOMESTIC_QUOTA:
        assessment = assess(state.model_copy(update={"units_approved": units}), state.evidence, policy)
        if assessment.shortfall:
            raise DomainError(f"domestic quota not met: {shortfall_reason(assessment)}")
        if assessment != state.assessment:
            payloads.append(assessment)
    note = command.reason.strip() if command.reason else None
    return payloads + _approve(
        state,
        gate,
        units,
        list(command.conditions),
        policy,
        now,
        by_policy=False,
        note=note,
        buyer_claim=claim,
    )


def _add_evidence(state: RequestState, command: AddEvidence, policy: Policy, now: datetime) -> list[Payload]:
    _require_open(state)
    if not command.records:
        raise DomainError("records: at least one procurement record is needed")
    payloads: list[Payload]
    if judges_evidence(policy):
        assert state.request_id is not None and state.buyer is not None
        accepted, rejected = _judge(
            list(command.records),
            request_id=state.request_id,
            buyer=state.buyer,
            already=state.evidence,
            owners=command.invoice_owners,
            policy=policy,
            now=now,
        )
        if not accepted:
            reasons = "; ".join(f"invoice {r.record.invoice!r}: {r.reason}" for r in rejected)
            raise DomainError(f"no record counts ({reasons})")
        payloads = [EvidenceAdded(records=accepted)]
        payloads += [EvidenceRejected(records=rejected)] if rejected else []
    else:
        accepted = list(command.records)
        known = {record.invoice.casefold() for record in state.evidence}
        seen: set[str] = set()
        for record in accepted:
            key = record.invoice.casefold()
            if key in known or key in seen:
                raise DomainError(f"invoice {record.invoice!r} was already submitted for this request")
            seen.add(key)
        payloads = [EvidenceAdded(records=accepted)]
    if state.gate is Gate.DOMESTIC_QUOTA:
        assessment = assess(state, state.evidence + accepted, policy)
        payloads.append(assessment)
        if policy.mode(Gate.DOMESTIC_QUOTA) is GateMode.AUTO and assessment.shortfall == 0:
            payloads += _approve(
                state, Gate.DOMESTIC_QUOTA, state.units_in_play, [], policy, now, by_policy=True
            )
    return payloads


def _expire(state: RequestState, command: Expire, now: datetime) -> list[Payload]:
    gate = command.gate
    _require_at(state, gate)
    if command.cause == "information_request":
        question = state.open_question
        if question is None:
            raise DomainError("the request is not waiting for the applicant")
        deadline = question.due
    else:
        assert state.deadline is not None
        deadline = state.deadline
    if now < deadline:
        raise DomainError(f"gate {gate} deadline {deadline.isoformat()} has not passed")
    return [RequestExpired(gate=gate, deadline=deadline, cause=command.cause)]


# -- us-export in depth: screening, the per-buyer cap, questions, escalation -------------------------
def _require_screened(state: RequestState, policy: Policy) -> None:
    if policy.us_export.screening and state.screening is None:
        raise DomainError("restricted-party screening has not run for this request yet")


def _record_screening(state: RequestState, command: RecordScreening, policy: Policy) -> list[Payload]:
    _require_at(state, Gate.US_EXPORT)
    if state.screening is not None:
        raise DomainError("the parties of this request are already screened")
    screened = PartiesScreened(
        list_version=command.list_version,
        threshold=command.threshold,
        parties=list(command.parties),
        matches=list(command.matches),
    )
    if not command.matches or policy.mode(Gate.US_EXPORT) is GateMode.MANUAL:
        return [screened]  # a match holds the request for an officer
    best = max(command.matches, key=lambda match: match.score)
    reason = (
        f"{best.role} {best.party_name!r} matches {best.entry_name!r} on the {best.source} "
        f"(score {best.score:g} >= us_export.screening_threshold {command.threshold:g}, "
        f"list {command.list_version})"
    )
    return [screened, GateDenied(gate=Gate.US_EXPORT, rule="us_export.screening", reason=reason)]


def _auto_export_approval(
    state: RequestState, policy: Policy, now: datetime, claim: BuyerClaim | None
) -> list[Payload]:
    units = _export_units(state, policy)
    cap = policy.us_export.max_units_per_request
    note = f"capped at us_export.max_units_per_request = {cap}" if units < state.units_in_play else None
    if policy.us_export.max_units_per_buyer is not None:
        if claim is None or claim.request_id != state.request_id or claim.units > units:
            raise DomainError(f"an automatic export approval needs a claim against {BUYER_CAP_RULE}")
        if claim.units == 0:
            reason = (
                f"buyer {claim.buyer!r} has no headroom left under {BUYER_CAP_RULE} = {claim.cap} "
                f"({claim.approved_before} units already approved over its other requests)"
            )
            return [ByPolicy(GateDenied(gate=Gate.US_EXPORT, rule=BUYER_CAP_RULE, reason=reason))]
        if claim.units < units:
            units = claim.units
            note = f"capped at the buyer's remaining headroom under {BUYER_CAP_RULE} = {claim.cap}"
    else:
        claim = None
    return _approve(
        state, Gate.US_EXPORT, units, [], policy, now, by_policy=True, note=note, buyer_claim=claim
    )


def _exports_automatically(state: RequestState, policy: Policy) -> bool:
    """Whether entering us-export approves by policy: auto mode, not held, no rule denies it."""
    return (
        policy.mode(Gate.US_EXPORT) is GateMode.AUTO
        and not state.on_hold
        and _rule_denial(state, Gate.US_EXPORT, policy) is None
    )


def _export_units(state: RequestState, policy: Policy) -> int:
    """What an export approval covers unless an officer says otherwise: capped per request."""
    return min(state.units_in_play, policy.us_export.max_units_per_request)


def buyer_claim_for(state: RequestState, command: Command, policy: Policy) -> ClaimUnits | None:
    """The claim the buyer's cap owner must grant before `command` can be recorded, if any.

    The workflow asks, claims, and passes the answer back in the command: the decider stays pure and
    the cap holds across requests decided at the same instant.
    """
    cap = policy.us_export.max_units_per_buyer
    request = state.request
    if cap is None or request is None or state.request_id is None or state.gate is not Gate.US_EXPORT:
        return None
    per_request = _export_units(state, policy)
    match command:
        case Decide(gate=Gate.US_EXPORT, approve=True, units=units):
            claim_units, partial = units if units is not None else per_request, False
        case Evaluate(gate=Gate.US_EXPORT):
            # Exactly when `_evaluate` approves by policy: a claim no approval uses would take headroom.
            if not _exports_automatically(state, policy):
                return None
            claim_units, partial = per_request, True
        case _:
            return None
    return ClaimUnits(
        buyer=request.buyer.name, request_id=state.request_id, units=claim_units, cap=cap, partial=partial
    )


def _request_info(state: RequestState, command: RequestInfo, policy: Policy, now: datetime) -> list[Payload]:
    gate = command.gate
    _require_at(state, gate)
    if gate is not Gate.US_EXPORT:
        raise DomainError(f"gate: information requests are part of the us-export review, not {gate}")
    _require_reviewer(command.reviewer, gate, policy)
    if (question := state.open_question) is not None:
        raise DomainError(f"the applicant has not answered the last question yet ({question.question!r})")
    due = now + policy.us_export.info_deadline
    return [InformationRequested(gate=gate, question=command.question.strip(), due=due)]


def _respond(state: RequestState, command: Respond, now: datetime) -> list[Payload]:
    _require_open(state)
    question = state.open_question
    if question is None:
        raise DomainError("nobody has asked this request for information; there is nothing to answer")
    if now > question.due:
        # The application is being returned without action; a late answer cannot revive it.
        raise DomainError(f"the answer was due by {question.due.isoformat()}; the request is being returned")
    return [
        InformationProvided(
            gate=question.gate, text=command.text.strip(), attachments=list(command.attachments)
        )
    ]


def _escalate(state: RequestState, gate: Gate, now: datetime) -> list[Payload]:
    _require_at(state, gate)
    due = state.review_due
    if due is None:
        raise DomainError(f"gate {gate} has no review SLA")
    if state.escalated:
        raise DomainError(f"gate {gate} is already escalated")
    if state.open_question is not None:
        raise DomainError("the review clock is stopped while the applicant answers")
    if now < due:
        raise DomainError(f"gate {gate} review SLA {due.isoformat()} has not passed")
    return [ReviewEscalated(gate=gate, due=due)]


def _record_export_release(state: RequestState, command: RecordExportRelease) -> list[Payload]:
    """Compensation, once: only a final request that never got its licence gives the units back."""
    export = state.gates.get(Gate.US_EXPORT)
    if export is None or export.outcome != "approved":
        raise DomainError("request holds no US export approval")
    if not state.is_final or state.status is Status.LICENSED:
        raise DomainError("only a request that ended without a licence releases its export approval")
    if state.export_released:
        raise DomainError("the export approval is already released")
    return [ExportApprovalReleased(units=command.units, reason=command.reason)]


@dataclass(frozen=True)
class Due:
    """The next thing time alone will do to a request, and when."""

    at: datetime
    command: Expire | Escalate


def next_due(state: RequestState) -> Due | None:
    gate = state.gate
    if gate is None or state.deadline is None:
        return None
    candidates = [Due(state.deadline, Expire(gate=gate))]
    question = state.open_question
    if question is not None:
        candidates.append(Due(question.due, Expire(gate=gate, cause="information_request")))
    elif (review_due := state.review_due) is not None and not state.escalated:
        candidates.append(Due(review_due, Escalate(gate=gate)))
    return min(candidates, key=lambda due: due.at)  # on a tie the hard deadline, listed first, wins


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
