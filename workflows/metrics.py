"""What the import workflow tells Prometheus: requests by status, units licensed, gate durations,
screening hits.

Recorded from the workflow's metric meter, which the SDK silences during replay, and only for events
the event store has accepted, so a count never includes a step that was rolled back.
"""

from __future__ import annotations

from collections.abc import Sequence

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from chipclear.domain.events import (
        Event,
        GateApproved,
        GateDenied,
        LicenseIssued,
        PartiesScreened,
        RequestExpired,
        RequestWithdrawn,
    )
    from chipclear.domain.models import Gate
    from chipclear.domain.state import RequestState


def record(before: RequestState, after: RequestState, events: Sequence[Event]) -> None:
    meter = workflow.metric_meter()
    if before.status != after.status and after.status is not None:
        meter.create_counter(
            "chipclear_request_transitions", "Requests entering each status.", "requests"
        ).add(1, {"status": after.status.value})
    for event in events:
        match event.data:
            case LicenseIssued(units=units):
                meter.create_counter("chipclear_units_licensed", "Units on issued licences.", "units").add(
                    units
                )
            case PartiesScreened(matches=matches) if matches:
                meter.create_counter(
                    "chipclear_screening_hits", "Restricted-party screening matches.", "matches"
                ).add(len(matches))
            case GateApproved(gate=gate) | GateDenied(gate=gate) | RequestExpired(gate=gate):
                _gate_closed(before, gate, event)
            case RequestWithdrawn(gate=gate) if gate is not None:
                _gate_closed(before, gate, event)


def _gate_closed(before: RequestState, gate: Gate, event: Event) -> None:
    opened = before.gates.get(gate)
    # A gate opened and closed in the same step (auto mode) took no time.
    duration = 0.0 if opened is None else (event.occurred_at - opened.opened_at).total_seconds()
    workflow.metric_meter().create_histogram_float(
        "chipclear_gate_duration_seconds", "Time from a gate opening to its outcome.", "s"
    ).record(duration, {"gate": gate.value, "outcome": event.type})
