"""Presenting results: rich tables for people, stable JSON for programs."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from chipclear.domain.events import (
    AllocationGranted,
    AllocationQueued,
    AllocationReleased,
    DomesticQuotaAssessed,
    EvidenceAdded,
    GateApproved,
    GateDenied,
    GateOpened,
    LicenseIssued,
    RequestExpired,
    RequestSubmitted,
    RequestWithdrawn,
    StoredEvent,
)
from chipclear.domain.state import RequestState
from chipclear.store.chain import timestamp

console = Console()
errors = Console(stderr=True)


def print_json(document: Any) -> None:
    # Plain print, not rich: programs parse this, and rich would wrap long lines.
    print(json.dumps(document, indent=2, ensure_ascii=False, default=str))


def state_document(state: RequestState, *, source: str) -> dict[str, Any]:
    """The `status --json` contract: stable keys, ISO timestamps."""
    assert state.status is not None
    deadline = state.deadline
    return {
        "request_id": state.request_id,
        "status": state.status.value,
        "gate": state.gate.value if state.gate else None,
        "buyer": state.buyer,
        "units_requested": state.units_requested,
        "units_approved": state.units_approved,
        "policy_version": state.policy_version,
        "deadline": timestamp(deadline) if deadline else None,
        "licence_id": state.licence_id,
        "conditions": state.conditions,
        "outcome_reason": state.outcome_reason,
        "domestic_quota": state.assessment.model_dump(exclude={"type"}) if state.assessment else None,
        "evidence_records": len(state.evidence),
        "allocation": state.allocation.model_dump() if state.allocation else None,
        "gates": {
            gate.value: record.model_dump(mode="json", exclude={"gate"})
            for gate, record in state.gates.items()
        },
        "version": state.version,
        "submitted_at": timestamp(state.submitted_at) if state.submitted_at else None,
        "updated_at": timestamp(state.updated_at) if state.updated_at else None,
        "source": source,
    }


def print_state(state: RequestState, *, source: str) -> None:
    doc = state_document(state, source=source)
    console.print(
        f"[bold]{doc['request_id']}[/]  status [bold]{doc['status']}[/]"
        + (f" at gate [bold]{doc['gate']}[/] (deadline {doc['deadline']})" if doc["gate"] else "")
    )
    console.print(
        f"buyer {doc['buyer']}  units requested {doc['units_requested']}  "
        f"approved {doc['units_approved'] if doc['units_approved'] is not None else '-'}  "
        f"policy {doc['policy_version']}"
    )
    table = Table("gate", "outcome", "by", "units", "opened", "decided", "reason")
    for gate, record in state.gates.items():
        table.add_row(
            gate.value,
            record.outcome or "pending",
            record.decided_by or "",
            str(record.units_approved or ""),
            timestamp(record.opened_at)[:19],
            timestamp(record.decided_at)[:19] if record.decided_at else "",
            record.reason or "",
        )
    console.print(table)
    if state.allocation:
        held = state.allocation
        if held.outcome == "queued":
            where = f"queued for allocation, position {held.position}" if held.position else "queued"
        else:
            where = f"{held.units} of {held.requested} units allocated from batch {held.batch_id}"
            where += f" ({held.reason})" if held.reason else ""
        console.print(f"allocation: {where}" + (" [released]" if held.released else ""))
    if state.assessment:
        a = state.assessment
        console.print(
            f"domestic quota: {a.domestic_units} domestic units vs {a.required_units} required "
            f"(ratio {a.required_ratio} x {a.imported_units}); shortfall {a.shortfall}"
        )
    if state.licence_id:
        console.print(f"licence [bold]{state.licence_id}[/] for {state.units_approved} units")
        for condition in state.conditions:
            console.print(f"  condition: {condition}")
    if state.outcome_reason:
        console.print(f"reason: {state.outcome_reason}")
    console.print(f"[dim]source: {source}, version {state.version}[/]")


def event_document(event: StoredEvent) -> dict[str, Any]:
    return {
        "position": event.position,
        "event_id": event.event_id,
        "stream_id": event.stream_id,
        "version": event.version,
        "type": event.type,
        "data": event.data_json(),
        "occurred_at": timestamp(event.occurred_at),
        "recorded_at": timestamp(event.recorded_at),
        "policy_version": event.policy_version,
        "actor": event.actor,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def summarise(event: StoredEvent) -> str:
    """One line a person can read; `events --json` has every field."""
    match event.data:
        case RequestSubmitted(request=r):
            return f"{r.buyer.name} ({r.buyer.kind}) asks for {r.units} {r.product}"
        case GateOpened(gate=gate, deadline=deadline):
            return f"{gate} opened, deadline {timestamp(deadline)[:10]}"
        case GateApproved(gate=gate, units_approved=units, rule=rule, conditions=conditions):
            extra = f" ({rule})" if rule else ""
            extra += f", {len(conditions)} condition(s)" if conditions else ""
            return f"{gate} approved {units} units{extra}"
        case GateDenied(gate=gate, reason=reason):
            return f"{gate} denied: {reason}"
        case EvidenceAdded(records=records):
            return f"{len(records)} record(s), {sum(r.units for r in records)} domestic units"
        case DomesticQuotaAssessed() as a:
            return f"{a.domestic_units} domestic vs {a.required_units} required, shortfall {a.shortfall}"
        case LicenseIssued(licence_id=licence_id, units=units, conditions=conditions):
            return f"{licence_id}: {units} units, {len(conditions)} condition(s)"
        case RequestWithdrawn(gate=gate, reason=reason):
            return f"withdrawn at {gate}: {reason}"
        case RequestExpired(gate=gate, deadline=deadline):
            return f"expired at {gate} (deadline {timestamp(deadline)[:19]})"
        case AllocationGranted(batch_id=batch, units=units, requested=requested, reason=reason):
            return f"{units} of {requested} units from batch {batch}" + (f" ({reason})" if reason else "")
        case AllocationQueued(position=position):
            return f"queued for a later batch, position {position}"
        case AllocationReleased(batch_id=batch, units=units):
            return f"gave back {units} units to batch {batch}" if batch else "left the allocation queue"
    return event.type


def print_events(events: list[StoredEvent]) -> None:
    table = Table("v", "type", "actor", "occurred (UTC)", "what", "hash")
    for event in events:
        table.add_row(
            str(event.version),
            event.type,
            event.actor,
            timestamp(event.occurred_at)[:19],
            summarise(event),
            event.hash[:10],
        )
    console.print(table)
