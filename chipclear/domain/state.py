"""A request's current state, and `evolve`: the only function that changes it.

The workflow, the inline projection, `rebuild` and `status` for a long-finished request all fold the
same events through this one function, so the live state and the audited state cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, SerializeAsAny

from chipclear.domain.events import (
    ApprovalProposed,
    Event,
    GateApproved,
    GateDenied,
    GateOpened,
    InformationProvided,
    InformationRequested,
    LicenseIssued,
    RequestExpired,
    RequestSubmitted,
    RequestWithdrawn,
    ReviewEscalated,
)
from chipclear.domain.models import Attachment, GateName, ImportRequest, Status, is_final
from chipclear.domain.registry import gate_of, registered


class GateRecord(BaseModel):
    gate: GateName
    opened_at: AwareDatetime
    deadline: AwareDatetime
    outcome: Literal["approved", "denied", "expired", "withdrawn"] | None = None
    decided_by: str | None = None
    decided_at: AwareDatetime | None = None
    units_approved: int | None = None
    reason: str | None = None
    review_due: AwareDatetime | None = None  # the SLA before time spent waiting for the applicant
    proposal: Proposal | None = None  # a first approval waiting for a second reviewer (four eyes)


class Proposal(BaseModel):
    by: str
    units: int
    conditions: list[str] = Field(default_factory=list)


class InfoExchange(BaseModel):
    """An officer's question and the applicant's answer; the review clock stops in between."""

    gate: GateName
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


class GateSlice(BaseModel):
    """A gate's own part of a request's state (screening, allocation, evidence…), folded by the gate.

    The core knows only these two questions about it.
    """

    model_config = ConfigDict(frozen=True)

    def unit_limit(self) -> int | None:
        """Units this gate's facts allow at most (an allocation), or None: no limit of its own."""
        return None

    def flags(self) -> list[str]:
        """Markers for lists: what needs someone's attention at this gate."""
        return []

    def labels(self) -> dict[str, str]:
        """Public labels the Web UI's list may index (`batch`); never prices, invoices or reasons."""
        return {}

    def document(self, state: RequestState) -> dict[str, Any]:
        """This gate's keys in `status --json` (JSON-ready)."""
        return {}

    def describe(self, state: RequestState) -> list[str]:
        """This gate's lines in `status`, plain text for a person."""
        return []


def _typed_slices(raw: Any) -> Any:
    """Slices read back from JSON (a query's answer, a projection) become each gate's own model."""
    if not isinstance(raw, dict):
        return raw
    gates = registered()
    typed: dict[str, Any] = {}
    for name, value in raw.items():
        gate = gates.get(name)
        typed[name] = (
            gate.slice_model.model_validate(value) if gate is not None and isinstance(value, dict) else value
        )
    return typed


class RequestState(BaseModel):
    request_id: str | None = None
    request: ImportRequest | None = None
    route: tuple[GateName, ...] = ()
    # None: nothing submitted yet; at a gate, the gate's own status ("us_export_review", …).
    status: str | None = None
    gate: GateName | None = None  # the gate the request is at; None before submission and once final
    version: int = 0
    policy_version: str | None = None
    units_requested: int = 0
    units_approved: int | None = None
    conditions: list[str] = Field(default_factory=list)
    gates: dict[GateName, GateRecord] = Field(default_factory=dict)
    correspondence: list[InfoExchange] = Field(default_factory=list)  # reviewers' questions, answers
    slices: Annotated[dict[GateName, SerializeAsAny[GateSlice]], BeforeValidator(_typed_slices)] = Field(
        default_factory=dict
    )
    licence_id: str | None = None
    licence_valid_until: AwareDatetime | None = None
    outcome_reason: str | None = None
    submitted_at: AwareDatetime | None = None
    submitted_by: str | None = None  # `[duties] submitter_may_decide`: they decide none of its gates
    updated_at: AwareDatetime | None = None
    escalated_gate: GateName | None = None
    escalated_at: AwareDatetime | None = None

    @property
    def is_final(self) -> bool:
        return is_final(self.status)

    @property
    def units_in_play(self) -> int:
        """Units still under consideration: each gate (and its facts) may cut them, never raise."""
        units = self.units_requested if self.units_approved is None else self.units_approved
        for part in self.slices.values():
            limit = part.unit_limit()
            if limit is not None:
                units = min(units, limit)
        return units

    @property
    def deadline(self) -> datetime | None:
        gate = self.gate
        return self.gates[gate].deadline if gate in self.gates else None

    @property
    def buyer(self) -> str | None:
        return self.request.buyer.name if self.request else None

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
    def next_gate(self) -> GateName | None:
        """The gate after the current one on this request's route, or None after the last."""
        if self.gate is None:
            return None
        index = self.route.index(self.gate) + 1
        return self.route[index] if index < len(self.route) else None

    @property
    def labels(self) -> dict[str, str]:
        return {key: value for part in self.slices.values() for key, value in part.labels().items()}

    @property
    def flags(self) -> list[str]:
        """Short markers for lists: what needs someone's attention."""
        current = self.slices.get(self.gate) if self.gate else None
        marks = current.flags() if current is not None else []
        if self.open_question is not None:
            marks.append("awaiting-applicant")
        if self.escalated:
            marks.append("escalated")
        return marks


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
        case RequestSubmitted(request=request, route=route):
            changes |= {
                "request_id": request.request_id,
                "request": request,
                "route": route,
                "status": Status.SUBMITTED,
                "units_requested": request.units,
                "submitted_at": event.occurred_at,
                "submitted_by": event.actor,
                "slices": {gate: gate_of(gate).slice_model() for gate in route},
            }
        case GateOpened(gate=gate, deadline=deadline, review_due=review_due):
            gates[gate] = GateRecord(
                gate=gate, opened_at=event.occurred_at, deadline=deadline, review_due=review_due
            )
            changes["gate"] = gate
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
        case GateApproved(gate=gate, units_approved=units, conditions=conditions):
            gates[gate] = _closed(gates, gate, "approved", event, units_approved=units)
            changes["units_approved"] = units
            changes["conditions"] = list(dict.fromkeys([*state.conditions, *conditions]))
        case ApprovalProposed(gate=gate, units=units, conditions=conditions):
            proposal = Proposal(by=event.actor, units=units, conditions=conditions)
            gates[gate] = gates[gate].model_copy(update={"proposal": proposal})
        case GateDenied(gate=gate, reason=reason):
            gates[gate] = _closed(gates, gate, "denied", event, reason=reason)
            changes |= {"status": Status.DENIED, "gate": None, "outcome_reason": reason}
        case LicenseIssued(licence_id=licence_id, units=units, valid_until=valid_until):
            changes |= {
                "status": Status.LICENSED,
                "gate": None,
                "licence_id": licence_id,
                "units_approved": units,
                "licence_valid_until": valid_until,
            }
        case RequestWithdrawn(gate=gate, reason=reason):
            if gate is not None and gate in gates:
                gates[gate] = _closed(gates, gate, "withdrawn", event, reason=reason)
            changes |= {"status": Status.WITHDRAWN, "gate": None, "outcome_reason": reason}
        case RequestExpired(gate=gate, deadline=deadline, cause=cause):
            if cause == "information_request":
                reason = (
                    f"returned without action at {gate}: the applicant did not answer the request "
                    f"for information by {deadline.isoformat()}"
                )
            else:
                reason = f"no decision at {gate} before its deadline {deadline.isoformat()}"
            gates[gate] = _closed(gates, gate, "expired", event, reason=reason)
            changes |= {"status": Status.EXPIRED, "gate": None, "outcome_reason": reason}
    changes["gates"] = gates
    # Every gate of the route folds what concerns its own slice (most events concern none).
    slices = changes.get("slices", state.slices)
    assert isinstance(slices, dict)
    folded = {name: gate_of(name).evolve(part, event, state) for name, part in slices.items()}
    if any(folded[name] is not slices[name] for name in folded):
        changes["slices"] = folded
    new = state.model_copy(update=changes)
    if new.gate is not None:
        status = gate_of(new.gate).status(new)
        if status != new.status:
            new = new.model_copy(update={"status": status})
    return new


def _closed(
    gates: dict[GateName, GateRecord],
    gate: GateName,
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
