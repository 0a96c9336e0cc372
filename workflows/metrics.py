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
    from chipclear.domain.licence import LicencePayload, LicenceState, ShipmentRecorded
    from chipclear.domain.state import RequestState


class RequestMetrics:
    """The instruments, made once per workflow run rather than at every transition."""

    def __init__(self) -> None:
        meter = workflow.metric_meter()
        self.transitions = meter.create_counter(
            "chipclear_request_transitions", "Requests entering each status.", "requests"
        )
        self.licensed = meter.create_counter("chipclear_units_licensed", "Units on issued licences.", "units")
        self.hits = meter.create_counter(
            "chipclear_screening_hits", "Restricted-party screening matches.", "matches"
        )
        self.gate_duration = meter.create_histogram_float(
            "chipclear_gate_duration_seconds", "Time from a gate opening to its outcome.", "s"
        )

    def record(self, before: RequestState, after: RequestState, events: Sequence[Event]) -> None:
        if before.status != after.status and after.status is not None:
            self.transitions.add(1, {"status": after.status})
        for event in events:
            match event.data:
                case LicenseIssued(units=units):
                    self.licensed.add(units)
                case PartiesScreened(matches=matches) if matches:
                    self.hits.add(len(matches))
                case GateApproved(gate=gate) | GateDenied(gate=gate) | RequestExpired(gate=gate):
                    self._gate_closed(before, gate, event)
                case RequestWithdrawn(gate=gate) if gate is not None:
                    self._gate_closed(before, gate, event)

    def _gate_closed(self, before: RequestState, gate: str, event: Event) -> None:
        opened = before.gates.get(gate)
        # A gate opened and closed in the same step (auto mode) took no time.
        duration = 0.0 if opened is None else (event.occurred_at - opened.opened_at).total_seconds()
        self.gate_duration.record(duration, {"gate": gate, "outcome": event.type})


class LicenceMetrics:
    """A licence's instruments: units shipped, shipments refused by reason, licences by status."""

    def __init__(self) -> None:
        meter = workflow.metric_meter()
        self.shipped = meter.create_counter(
            "chipclear_units_shipped", "Units shipped under licences (recorded shipments).", "units"
        )
        self.refused = meter.create_counter(
            "chipclear_shipments_refused", "Shipments refused, by the rule that refused them.", "shipments"
        )
        self.transitions = meter.create_counter(
            "chipclear_licence_transitions", "Licences entering each status.", "licences"
        )

    def record(self, before: LicenceState, after: LicenceState, events: Sequence[LicencePayload]) -> None:
        if before.status != after.status and after.status is not None:
            self.transitions.add(1, {"status": str(after.status)})
        for event in events:
            if isinstance(event, ShipmentRecorded):
                self.shipped.add(event.units)
