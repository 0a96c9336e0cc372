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


class _Counted:
    """What every entity's instruments share: a counter of entries into each status, made with the
    others once per workflow run rather than at every transition."""

    def __init__(self, what: str, unit: str) -> None:
        self.meter = workflow.metric_meter()
        self.transitions = self.meter.create_counter(
            f"chipclear_{what}_transitions", f"{unit.capitalize()} entering each status.", unit
        )

    def entered(self, before: object, after: object) -> None:
        if before != after and after is not None:
            self.transitions.add(1, {"status": str(after)})


class RequestMetrics(_Counted):
    """Requests by status, units licensed, screening hits and the time each gate took."""

    def __init__(self) -> None:
        super().__init__("request", "requests")
        self.licensed = self.meter.create_counter(
            "chipclear_units_licensed", "Units on issued licences.", "units"
        )
        self.hits = self.meter.create_counter(
            "chipclear_screening_hits", "Restricted-party screening matches.", "matches"
        )
        self.gate_duration = self.meter.create_histogram_float(
            "chipclear_gate_duration_seconds", "Time from a gate opening to its outcome.", "s"
        )

    def record(self, before: RequestState, after: RequestState, events: Sequence[Event]) -> None:
        self.entered(before.status, after.status)
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


class LicenceMetrics(_Counted):
    """A licence's instruments: units shipped, shipments refused by reason, licences by status."""

    def __init__(self) -> None:
        super().__init__("licence", "licences")
        self.shipped = self.meter.create_counter(
            "chipclear_units_shipped", "Units shipped under licences (recorded shipments).", "units"
        )
        self.refused = self.meter.create_counter(
            "chipclear_shipments_refused", "Shipments refused, by the rule that refused them.", "shipments"
        )

    def record(self, before: LicenceState, after: LicenceState, events: Sequence[LicencePayload]) -> None:
        self.entered(before.status, after.status)
        for event in events:
            if isinstance(event, ShipmentRecorded):
                self.shipped.add(event.units)
