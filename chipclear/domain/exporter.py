"""The 50% rule, per exporter: its shipments to China in a quarter stay at or below half of the units
it shipped to US end users in that quarter (91 FR 1684, the exporter's certification).

The rule spans every licence an exporter holds, so two shipments under two licences decided at the
same instant must not both see the same room. One owner per exporter (an entity workflow) checks and
counts each China shipment in one step, and records it in the exporter's own stream before it answers.
This module is that owner's pure logic: what a declaration and a count decide, and how they fold.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from chipclear.domain.errors import DomainError
from chipclear.domain.models import MAX_UNITS, Attachment, NonEmpty, Text
from chipclear.domain.names import normalise_buyer
from chipclear.domain.payload import EventPayload
from chipclear.domain.signing import ActorSignedAct

RULE = "50% rule (91 FR 1684): China shipments <= 50% of US end-user shipments, per exporter and quarter"
PERIOD_PATTERN = r"^\d{4}Q[1-4]$"
# An exporter ships far more to US end users than any one licence: a bound against typos, not a rule.
MAX_US_UNITS = 100 * MAX_UNITS

Period = Annotated[str, Field(pattern=PERIOD_PATTERN, description="a calendar quarter: 2026Q1")]


def period_of(moment: datetime) -> str:
    """The calendar quarter `moment` falls in, as the declarations name it: `2026Q4`."""
    return f"{moment.year}Q{(moment.month - 1) // 3 + 1}"


def exporter_key(name: str) -> str:
    """One owner per exporter however its name is written: 'NVIDIA Corporation' -> 'nvidia'."""
    return re.sub(r"\s+", "-", normalise_buyer(name))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExporterPayload(EventPayload):
    """An event of an exporter's own stream."""


class UsShipmentsDeclared(ExporterPayload):
    """The exporter's declared US end-user shipments for a quarter, to date; a later declaration for the
    same quarter replaces the earlier (`previous`)."""

    exporter: str
    period: str
    units: int
    previous: int | None = None
    evidence: Attachment | None = None


class ChinaShipmentCounted(ExporterPayload):
    """A shipment to China counted against the quarter's room, with the sum an auditor redoes."""

    exporter: str
    period: str
    shipment: str  # `<request_id>/<shipment_id>`
    units: int
    china_before: int
    us_units: int


class DeclareUsShipments(ActorSignedAct, Text):
    """The exporter's officer declares its US end-user shipments for a quarter (a signed act)."""

    kind: Literal["us-shipments"] = "us-shipments"
    exporter: NonEmpty
    period: Period
    units: Annotated[StrictInt, Field(ge=0, le=MAX_US_UNITS)]
    evidence: Attachment | None = None


class CountChinaShipment(_Model):
    """Count one China shipment against its quarter; the same `shipment` counted again answers as the
    first time (a retried call), never twice."""

    exporter: NonEmpty
    period: Period
    shipment: NonEmpty
    units: Annotated[StrictInt, Field(ge=1, le=MAX_UNITS)]


class ChinaCount(_Model):
    """What the owner counted: recorded on the shipment too, so either stream proves the sum."""

    exporter: str
    period: str
    shipment: str
    units: int
    china_before: int
    us_units: int

    @property
    def china_after(self) -> int:
        return self.china_before + self.units


class Quarter(_Model):
    us_units: int = 0
    declared_by: str | None = None
    china_units: int = 0
    counted: dict[str, ChinaCount] = Field(default_factory=dict)  # shipment -> its count
    # Shipments counted before the run that carried them in, settled out of `counted` (`settle_exporter`):
    # their units stay in `china_units`, their counts in the exporter's stream.
    settled: int = 0

    @property
    def shipments(self) -> int:
        return self.settled + len(self.counted)


class ExporterState(_Model):
    exporter: str | None = None
    version: int = 0  # of the exporter's stream: a declaration is signed for it
    quarters: dict[str, Quarter] = Field(default_factory=dict)

    def quarter(self, period: str) -> Quarter:
        return self.quarters.get(period, Quarter())


def _same_exporter(state: ExporterState, name: str) -> None:
    if state.exporter is not None and exporter_key(state.exporter) != exporter_key(name):
        raise DomainError(f"exporter {name!r} is not {state.exporter!r}, whose record this is")


def check_count(state: ExporterState, command: CountChinaShipment) -> ChinaCount | None:
    """The count `command` gets, None if it was counted before (its earlier answer stands), or
    DomainError naming both totals when the quarter has no room for it."""
    _same_exporter(state, command.exporter)
    quarter = state.quarter(command.period)
    if command.shipment in quarter.counted:
        return None
    after = quarter.china_units + command.units
    if 2 * after > quarter.us_units:
        raise DomainError(
            f"shipment {command.shipment} ({command.units:,} units) would take {command.exporter}'s China "
            f"shipments for {command.period} to {after:,} units, above 50% of its {quarter.us_units:,} units "
            f"shipped to US end users (at most {quarter.us_units // 2:,}; 91 FR 1684)"
        )
    return ChinaCount(**command.model_dump(), china_before=quarter.china_units, us_units=quarter.us_units)


def counted(state: ExporterState, command: CountChinaShipment) -> ChinaCount:
    """The count already recorded for this shipment (a repeated call gets the first answer)."""
    found = state.quarter(command.period).counted.get(command.shipment)
    if found is None or found.units != command.units:
        raise DomainError(
            f"shipment {command.shipment} was counted for {command.period} with other units; "
            "a shipment is counted once"
        )
    return found


def decide_declaration(state: ExporterState, command: DeclareUsShipments) -> UsShipmentsDeclared:
    _same_exporter(state, command.exporter)
    quarter = state.quarter(command.period)
    return UsShipmentsDeclared(
        exporter=state.exporter or command.exporter,
        period=command.period,
        units=command.units,
        previous=quarter.us_units if quarter.declared_by is not None else None,
        evidence=command.evidence,
    )


def evolve_exporter(state: ExporterState, event: ExporterPayload, actor: str) -> ExporterState:
    """The only way an exporter's state changes; it never refuses an event."""
    quarters = dict(state.quarters)
    match event:
        case UsShipmentsDeclared(period=period, units=units):
            quarters[period] = state.quarter(period).model_copy(
                update={"us_units": units, "declared_by": actor}
            )
        case ChinaShipmentCounted(period=period, shipment=shipment):
            quarter = state.quarter(period)
            count = ChinaCount.model_validate(event.model_dump(exclude={"type"}))
            quarters[period] = quarter.model_copy(
                update={
                    "china_units": quarter.china_units + count.units,
                    "counted": {**quarter.counted, shipment: count},
                }
            )
    exporter = state.exporter or getattr(event, "exporter", None)
    return state.model_copy(update={"quarters": quarters, "version": state.version + 1, "exporter": exporter})


def fold_exporter(events: list[tuple[ExporterPayload, str]]) -> ExporterState:
    state = ExporterState()
    for event, actor in events:
        state = evolve_exporter(state, event, actor)
    return state


def carried_counts(state: ExporterState) -> frozenset[tuple[str, str]]:
    """The (quarter, shipment) counts a run was started with: those it may settle as it ends."""
    return frozenset(
        (period, shipment) for period, quarter in state.quarters.items() for shipment in quarter.counted
    )


def settle_exporter(state: ExporterState, carried: frozenset[tuple[str, str]]) -> ExporterState:
    """The state the next run need carry (chipclear.domain.settling): the counts it carried in leave
    `counted`, their units staying in the quarter's total. A count is final once made, so nothing needs
    asking; only counts carried in are settled, so a repeat of one made in the ending run (an activity
    attempt still in flight) still gets its first answer rather than being counted twice."""
    quarters = dict(state.quarters)
    changed = False
    for period, quarter in state.quarters.items():
        gone = [shipment for shipment in quarter.counted if (period, shipment) in carried]
        if gone:
            changed = True
            kept = {
                shipment: count
                for shipment, count in quarter.counted.items()
                if (period, shipment) not in carried
            }
            quarters[period] = quarter.model_copy(
                update={"counted": kept, "settled": quarter.settled + len(gone)}
            )
    return state.model_copy(update={"quarters": quarters}) if changed else state
