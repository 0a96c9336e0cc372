"""What the import workflow tells Prometheus: requests by status, units licensed, gate durations,
screening hits.

Recorded from the workflow's metric meter, which the SDK silences during replay, and only for events
the event store has accepted, so a count never includes a step that was rolled back.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from temporalio import workflow
from temporalio.common import MetricCounter, MetricHistogramFloat

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


# Every instrument a workflow records: its name, what it measures (Prometheus's HELP) and its unit.
# Each is made at its first use in a workflow run, so a run pays only for what it records.
COUNTERS: dict[str, tuple[str, str]] = {
    "chipclear_request_transitions": ("Requests entering each status.", "requests"),
    "chipclear_units_licensed": ("Units on issued licences.", "units"),
    "chipclear_screening_hits": ("Restricted-party screening matches.", "matches"),
    "chipclear_licence_transitions": ("Licences entering each status.", "licences"),
    "chipclear_units_shipped": ("Units shipped under licences (recorded shipments).", "units"),
    "chipclear_shipments_refused": ("Shipments refused, by the rule that refused them.", "shipments"),
}
GATE_DURATION = ("chipclear_gate_duration_seconds", "Time from a gate opening to its outcome.", "s")


class _Instruments:
    """A workflow run's instruments, each made once, when first recorded, rather than at every step."""

    def __init__(self) -> None:
        self.meter = workflow.metric_meter()
        self._counters: dict[str, MetricCounter] = {}

    def add(self, name: str, value: int, attributes: dict[str, str] | None = None) -> None:
        counter = self._counters.get(name)
        if counter is None:
            counter = self._counters[name] = self.meter.create_counter(name, *COUNTERS[name])
        counter.add(value, attributes)

    def entered(self, counter: str, before: object, after: object) -> None:
        if before != after and after is not None:
            self.add(counter, 1, {"status": str(after)})


class RequestMetrics(_Instruments):
    """Requests by status, units licensed, screening hits and the time each gate took."""

    def record(self, before: RequestState, after: RequestState, events: Sequence[Event]) -> None:
        self.entered("chipclear_request_transitions", before.status, after.status)
        for event in events:
            match event.data:
                case LicenseIssued(units=units):
                    self.add("chipclear_units_licensed", units)
                case PartiesScreened(matches=matches) if matches:
                    self.add("chipclear_screening_hits", len(matches))
                case GateApproved(gate=gate) | GateDenied(gate=gate) | RequestExpired(gate=gate):
                    self._gate_closed(before, gate, event)
                case RequestWithdrawn(gate=gate) if gate is not None:
                    self._gate_closed(before, gate, event)

    @functools.cached_property
    def _gate_duration(self) -> MetricHistogramFloat:
        return self.meter.create_histogram_float(*GATE_DURATION)

    def _gate_closed(self, before: RequestState, gate: str, event: Event) -> None:
        opened = before.gates.get(gate)
        # A gate opened and closed in the same step (auto mode) took no time.
        duration = 0.0 if opened is None else (event.occurred_at - opened.opened_at).total_seconds()
        self._gate_duration.record(duration, {"gate": gate, "outcome": event.type})


class LicenceMetrics(_Instruments):
    """A licence's instruments: units shipped, shipments refused by reason, licences by status."""

    def record(self, before: LicenceState, after: LicenceState, events: Sequence[LicencePayload]) -> None:
        self.entered("chipclear_licence_transitions", before.status, after.status)
        for event in events:
            if isinstance(event, ShipmentRecorded):
                self.add("chipclear_units_shipped", event.units)

    def refused(self, reason: str) -> None:
        self.add("chipclear_shipments_refused", 1, {"reason": reason})
