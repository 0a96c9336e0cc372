"""A request's current state, and `evolve`: the only function that changes it.

The workflow, the inline projection, `rebuild` and `status` for a long-finished request all fold the
same events through this one function, so the live state and the audited state cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field

from chipclear.domain.buyer_cap import BuyerClaim
from chipclear.domain.events import (
    AllocationGranted,
    AllocationQueued,
    AllocationReleased,
    DomesticQuotaAssessed,
    Event,
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
    RequestExpired,
    RequestSubmitted,
    RequestWithdrawn,
    ReviewEscalated,
)
from chipclear.domain.evidence import RejectedRecord
from chipclear.domain.models import (
    GATE_OF_STATUS,
    Attachment,
    Gate,
    ImportRequest,
    ProcurementRecord,
    Status,
)


class GateRecord(BaseModel):
    gate: Gate
    opened_at: AwareDatetime
    deadline: AwareDatetime
    outcome: Literal["approved", "denied", "expired", "withdrawn"] | None = None
    decided_by: str | None = None
    decided_at: AwareDatetime | None = None
    units_approved: int | None = None
    reason: str | None = None
    review_due: AwareDatetime | None = None  # the SLA before time spent waiting for the applicant


class InfoExchange(BaseModel):
    """An officer's question and the applicant's answer; the review clock stops in between."""

    gate: Gate
    question: str
    asked_by: str
    asked_at: AwareDatetime
    due: AwareDatetime
    answer: str | None = None
    attachments: list[Attachment] = Field(default_factory=list)
    answered_by: str | None = None
    answered_at: AwareDatetime | None = None

    @property
    def waited(self) -> timedelta:
        return (self.answered_at - self.asked_at) if self.answered_at else timedelta(0)


class AllocationRecord(BaseModel):
    """Where the request stands with the cn-import allocation ledger."""

    outcome: Literal["granted", "partial", "queued"]
    batch_id: str | None = None
    units: int = 0
    requested: int = 0
    reason: str | None = None
    position: int | None = None  # when queued: place at the time of queueing
    released: bool = False


class RequestState(BaseModel):
    request_id: str | None = None
    request: ImportRequest | None = None
    status: Status | None = None  # None: nothing submitted yet
    version: int = 0
    policy_version: str | None = None
    units_requested: int = 0
    units_approved: int | None = None
    allocation: AllocationRecord | None = None
    conditions: list[str] = Field(default_factory=list)
    gates: dict[Gate, GateRecord] = Field(default_factory=dict)
    evidence: list[ProcurementRecord] = Field(default_factory=list)
    assessment: DomesticQuotaAssessed | None = None
    licence_id: str | None = None
    outcome_reason: str | None = None
    submitted_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None
    screening: PartiesScreened | None = None
    correspondence: list[InfoExchange] = Field(default_factory=list)
    escalated_gate: Gate | None = None
    escalated_at: AwareDatetime | None = None
    buyer_claim: BuyerClaim | None = None  # the per-buyer cap claim behind the us-export approval
    export_released: bool = False  # the US approval went unused and its units back to the buyer
    rejected_evidence: list[RejectedRecord] = Field(default_factory=list)
    licence_valid_until: AwareDatetime | None = None

    @property
    def gate(self) -> Gate | None:
        """The gate the request is at now, or None before submission and after a final status."""
        return GATE_OF_STATUS.get(self.status) if self.status else None

    @property
    def is_final(self) -> bool:
        return self.status is not None and self.status.is_final

    @property
    def units_in_play(self) -> int:
        """Units still under consideration: each gate (and the allocation) may cut them, never raise."""
        units = self.units_requested if self.units_approved is None else self.units_approved
        if self.allocation is not None and self.allocation.outcome != "queued":
            units = min(units, self.allocation.units)
        return units

    @property
    def deadline(self) -> datetime | None:
        gate = self.gate
        return self.gates[gate].deadline if gate in self.gates else None

    @property
    def buyer(self) -> str | None:
        return self.request.buyer.name if self.request else None

    @property
    def on_hold(self) -> bool:
        """A restricted-party match holds the request at us-export until an officer decides."""
        return self.gate is Gate.US_EXPORT and self.screening is not None and bool(self.screening.matches)

    @property
    def open_question(self) -> InfoExchange | None:
        """The officer's question the applicant has not answered yet, while the request is open."""
        if self.is_final or not self.correspondence or self.correspondence[-1].answered_at:
            return None
        last = self.correspondence[-1]
        return last if last.gate == self.gate else None

    @property
    def review_due(self) -> datetime | None:
        """When the current gate's review SLA runs out: the clock stops while the applicant answers."""
        gate = self.gate
        record = self.gates.get(gate) if gate else None
        if record is None or record.review_due is None:
            return None
        paused = sum((x.waited for x in self.correspondence if x.gate == gate), timedelta(0))
        return record.review_due + paused

    @property
    def escalated(self) -> bool:
        return self.escalated_gate is not None and self.escalated_gate == self.gate

    @property
    def flags(self) -> list[str]:
        """Short markers for lists: what needs someone's attention."""
        marks = {
            "held": self.on_hold,
            "awaiting-applicant": self.open_question is not None,
            "escalated": self.escalated,
        }
        return [name for name, on in marks.items() if on]


initial_state = RequestState


def evolve(state: RequestState, event: Event) -> RequestState:
    """Apply one event. Pure: returns a new state and never refuses (events are facts)."""
    data = event.data
    changes: dict[str, object] = {
        "version": event.version,
        "updated_at": event.occurred_at,
        "policy_version": state.policy_version or event.policy_version,
    }
    gates = dict(state.gates)
    match data:
        case RequestSubmitted(request=request):
            changes |= {
                "request_id": request.request_id,
                "request": request,
                "status": Status.SUBMITTED,
                "units_requested": request.units,
                # Judged one by one, the records that count follow as EvidenceAdded.
                "evidence": [] if data.evidence_separately else list(request.domestic_procurement),
                "submitted_at": event.occurred_at,
            }
        case GateOpened(gate=gate, deadline=deadline, review_due=review_due):
            gates[gate] = GateRecord(
                gate=gate, opened_at=event.occurred_at, deadline=deadline, review_due=review_due
            )
            changes["status"] = gate.review_status
        case PartiesScreened():
            changes["screening"] = data
        case InformationRequested(gate=gate, question=question, due=due):
            asked = InfoExchange(
                gate=gate, question=question, asked_by=event.actor, asked_at=event.occurred_at, due=due
            )
            changes["correspondence"] = [*state.correspondence, asked]
        case InformationProvided(text=text, attachments=attachments):
            answered = state.correspondence[-1].model_copy(
                update={
                    "answer": text,
                    "attachments": attachments,
                    "answered_by": event.actor,
                    "answered_at": event.occurred_at,
                }
            )
            changes["correspondence"] = [*state.correspondence[:-1], answered]
        case ReviewEscalated(gate=gate):
            changes |= {"escalated_gate": gate, "escalated_at": event.occurred_at}
        case GateApproved(gate=gate, units_approved=units, conditions=conditions, buyer_claim=claim):
            gates[gate] = _closed(gates, gate, "approved", event, units_approved=units)
            changes["units_approved"] = units
            changes["conditions"] = list(dict.fromkeys([*state.conditions, *conditions]))
            if claim is not None:
                changes["buyer_claim"] = claim
        case ExportApprovalReleased():
            changes["export_released"] = True
        case GateDenied(gate=gate, reason=reason):
            gates[gate] = _closed(gates, gate, "denied", event, reason=reason)
            changes |= {"status": Status.DENIED, "outcome_reason": reason}
        case EvidenceAdded(records=records):
            changes["evidence"] = state.evidence + records
        case EvidenceRejected(records=rejected):
            changes["rejected_evidence"] = state.rejected_evidence + rejected
        case DomesticQuotaAssessed():
            changes["assessment"] = data
        case LicenseIssued(licence_id=licence_id, units=units, valid_until=valid_until):
            changes |= {
                "status": Status.LICENSED,
                "licence_id": licence_id,
                "units_approved": units,
                "licence_valid_until": valid_until,
            }
        case RequestWithdrawn(gate=gate, reason=reason):
            if gate in gates:
                gates[gate] = _closed(gates, gate, "withdrawn", event, reason=reason)
            changes |= {"status": Status.WITHDRAWN, "outcome_reason": reason}
        case AllocationGranted(batch_id=batch_id, units=units, requested=requested, reason=reason):
            outcome: Literal["granted", "partial"] = "partial" if units < requested else "granted"
            changes |= {
                "status": Status.CN_IMPORT_REVIEW,
                "allocation": AllocationRecord(
                    outcome=outcome, batch_id=batch_id, units=units, requested=requested, reason=reason
                ),
            }
        case AllocationQueued(position=position):
            changes |= {
                "status": Status.CN_IMPORT_QUEUED,
                "allocation": AllocationRecord(
                    outcome="queued", requested=state.units_in_play, position=position
                ),
            }
        case AllocationReleased():
            assert state.allocation is not None
            changes["allocation"] = state.allocation.model_copy(update={"released": True})
        case RequestExpired(gate=gate, deadline=deadline, cause=cause):
            if cause == "information_request":
                reason = (
                    f"returned without action at {gate}: the applicant did not answer the request "
                    f"for information by {deadline.isoformat()}"
                )
            else:
                reason = f"no decision at {gate} before its deadline {deadline.isoformat()}"
            gates[gate] = _closed(gates, gate, "expired", event, reason=reason)
            changes |= {"status": Status.EXPIRED, "outcome_reason": reason}
    changes["gates"] = gates
    return state.model_copy(update=changes)


def _closed(
    gates: dict[Gate, GateRecord],
    gate: Gate,
    outcome: Literal["approved", "denied", "expired", "withdrawn"],
    event: Event,
    **fields: object,
) -> GateRecord:
    return gates[gate].model_copy(
        update={"outcome": outcome, "decided_by": event.actor, "decided_at": event.occurred_at} | fields
    )


def fold(events: Iterable[Event], state: RequestState | None = None) -> RequestState:
    current = state if state is not None else initial_state()
    for event in events:
        current = evolve(current, event)
    return current
