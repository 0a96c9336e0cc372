"""A licence once issued: shipments drawn down against it, suspension and reinstatement, expiry.

A request ends at `licensed`; that is where an exporter's work starts. Each shipment is reviewed by a US
third-party test lab before export, draws the licence down by its units with no quantity tolerance (items
counted by number) and by its value with up to 25% over, and counts for its exporter's 50% rule
(chipclear.domain.exporter). A licence is valid until the end of its validity, unless suspended.

Pure, like the request's decider: `decide_licence` returns the events a command means or raises a
DomainError naming the rule; `evolve_licence` is the only way a licence's state changes. The licence's
stream is `licence:<request_id>`, apart from the request's own.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt

from chipclear.domain.errors import DomainError
from chipclear.domain.exporter import ChinaCount, CountChinaShipment, period_of
from chipclear.domain.facts import Screening
from chipclear.domain.models import MAX_UNIT_PRICE_USD, MAX_UNITS, Exporter, NonEmpty, Text
from chipclear.domain.payload import EventPayload
from chipclear.domain.people import require_exporter_officer, require_person, require_signature
from chipclear.domain.policy import Policy
from chipclear.domain.screening import ScreenedParty, ScreeningMatch
from chipclear.domain.signing import ID_BOUND_ACTS, ActorSignedAct

# Items counted by number have no quantity tolerance; value may run up to 25% over (15 CFR 750.11).
VALUE_TOLERANCE = 0.25
SHIPMENT_ID_PATTERN = r"^[A-Za-z0-9._/-]{1,64}$"
# A Chinese customs declaration number is 18 digits; other systems' numbers carry letters and dashes.
DECLARATION_PATTERN = r"^[A-Za-z0-9-]{1,40}$"
# Who suspends and reinstates a licence: a reviewer of the gate that grants the export licence.
LICENSING_GATE = "us-export"
# The gate whose approval a Chinese customs declaration is recorded against, when on the route.
IMPORT_GATE = "cn-import"


class ShipmentRefused(DomainError):
    """A licence rule refused the act; `reason` is a short label for metrics (`over_licence`, …)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def refusal_reason(exc: Exception) -> str:
    """The metrics label of a refused shipment: the licence rule's own, else who may act."""
    return exc.reason if isinstance(exc, ShipmentRefused) else "not_authorised"


def licence_stream(request_id: str) -> str:
    """`licence:<request_id>`: a colon, which no request id holds, keeps it apart from every request."""
    return f"licence:{request_id}"


class LicenceStatus(StrEnum):
    VALID = "valid"
    SUSPENDED = "suspended"
    EXHAUSTED = "exhausted"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        return self in (LicenceStatus.EXHAUSTED, LicenceStatus.EXPIRED)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApprovalRef(_Model):
    """An approval of the request a shipment refers to: the gate, who approved it, when, how many."""

    gate: str
    approved_by: str | None
    approved_at: datetime | None
    units: int | None


class LicenceTerms(_Model):
    """What the request's record says the licence allows, read from its stream when the licence opens."""

    request_id: str
    licence_id: str
    buyer: str
    exporter: Exporter | None
    units: int
    unit_price_usd: float | None
    conditions: list[str] = Field(default_factory=list)
    issued_at: datetime
    valid_until: AwareDatetime
    import_approval: ApprovalRef | None = None
    request_version: int  # the request's stream at its LicenseIssued event
    # Everyone the request names (buyer, end user, consignees): screened again when a new list comes in.
    parties: list[ScreenedParty] = Field(default_factory=list)

    @property
    def value_usd(self) -> float | None:
        return None if self.unit_price_usd is None else self.units * self.unit_price_usd


class LabReport(Text):
    """The US third-party test lab's report on a shipment, pinned by its digest; the file itself is kept
    in the content-addressed store next to the event store (chipclear.evidence_files)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: NonEmpty
    size: Annotated[StrictInt, Field(ge=1, le=2**53)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    lab: NonEmpty | None = None
    report_id: NonEmpty


# -- events ---------------------------------------------------------------------------------------------
class LicencePayload(EventPayload):
    """An event of a licence's own stream."""


class ShipmentRecorded(LicencePayload):
    shipment_id: str
    units: int
    value_usd: float | None
    lab_report: LabReport
    # The Chinese customs declaration, recorded against the request's import approval.
    declaration: str | None = None
    import_approval: ApprovalRef | None = None
    period: str
    china_count: ChinaCount  # the exporter's 50% sum at the moment the shipment counted
    units_remaining: int
    value_remaining_usd: float | None = None


class LicenceExhausted(LicencePayload):
    units_shipped: int


class LicenceSuspended(LicencePayload):
    reason: str


class LicenceReinstated(LicencePayload):
    reason: str


class LicenceExpired(LicencePayload):
    valid_until: datetime


class LicenceRescreened(LicencePayload):
    """A new list in force screened the licence's parties again; a match suspends a valid licence
    (`LicenceSuspended` in the same append) until a us-export reviewer reinstates it with a reason."""

    list_version: str
    threshold: float
    parties: list[ScreenedParty]
    matches: list[ScreeningMatch]


# -- commands -------------------------------------------------------------------------------------------
class Ship(ActorSignedAct, Text):
    """The exporter's officer records one shipment under the licence (a signed act)."""

    kind: Literal["ship"] = "ship"
    shipment_id: Annotated[str, Field(pattern=SHIPMENT_ID_PATTERN)]
    units: Annotated[StrictInt, Field(ge=1, le=MAX_UNITS)]
    value_usd: (
        Annotated[float, Field(gt=0, le=MAX_UNITS * MAX_UNIT_PRICE_USD, allow_inf_nan=False, strict=True)]
        | None
    ) = None
    lab_report: LabReport | None = None
    declaration: Annotated[str, Field(pattern=DECLARATION_PATTERN)] | None = None

    def same_shipment(self, recorded: ShipmentRecorded) -> bool:
        """A repeat of a recorded shipment (a retried call), whoever sends it again."""
        return (
            self.units == recorded.units
            and (self.value_usd is None or self.value_usd == recorded.value_usd)
            and self.lab_report is not None
            and self.lab_report.sha256 == recorded.lab_report.sha256
            and self.declaration == recorded.declaration
        )


class SuspendLicence(ActorSignedAct, Text):
    kind: Literal["suspend"] = "suspend"
    reason: Annotated[str, Field(min_length=1, max_length=2000)]


class ReinstateLicence(ActorSignedAct, Text):
    kind: Literal["reinstate"] = "reinstate"
    reason: Annotated[str, Field(min_length=1, max_length=2000)]


class ExpireLicence(_Model):
    kind: Literal["expire"] = "expire"


class RescreenLicence(_Model):
    """Screen the licence's parties against a new list: `screening` is the licence's own activity's
    answer, never the sender's."""

    kind: Literal["rescreen"] = "rescreen"
    screening: Screening


LicenceAct = Ship | SuspendLicence | ReinstateLicence
LicenceActCommand = Annotated[LicenceAct, Field(discriminator="kind")]
LicenceCommand = LicenceAct | ExpireLicence | RescreenLicence


# -- state ----------------------------------------------------------------------------------------------
class LicenceState(_Model):
    terms: LicenceTerms | None = None
    status: LicenceStatus | None = None  # None until opened
    version: int = 0
    units_shipped: int = 0
    value_shipped_usd: float = 0.0
    shipments: dict[str, ShipmentRecorded] = Field(default_factory=dict)
    suspended_reason: str | None = None
    closed_at: datetime | None = None
    rescreened_with: str | None = None  # the last list the parties were screened again against

    @property
    def units_remaining(self) -> int:
        return 0 if self.terms is None else self.terms.units - self.units_shipped

    @property
    def value_remaining_usd(self) -> float | None:
        value = None if self.terms is None else self.terms.value_usd
        return None if value is None else value - self.value_shipped_usd

    @classmethod
    def opened(cls, terms: LicenceTerms) -> LicenceState:
        """A licence as issued: its terms are the request's record (`LicenseIssued`); its own stream
        holds only what happens to it afterwards, from version 1."""
        return cls(terms=terms, status=LicenceStatus.VALID)

    def status_at(self, now: datetime) -> LicenceStatus | None:
        """The status as of `now`: a valid or suspended licence past its validity is expired, even
        before its timer has recorded it (a worker down at that moment)."""
        live = self.status in (LicenceStatus.VALID, LicenceStatus.SUSPENDED)
        if live and self.terms is not None and now >= self.terms.valid_until:
            return LicenceStatus.EXPIRED
        return self.status


def _terms(state: LicenceState) -> LicenceTerms:
    if state.terms is None or state.status is None:
        raise DomainError("the licence is not open yet; try again")
    return state.terms


def needs_count(state: LicenceState, command: LicenceCommand, now: datetime) -> CountChinaShipment | None:
    """The exporter count a shipment needs (the one fact from outside), or None."""
    if not isinstance(command, Ship) or state.terms is None or state.terms.exporter is None:
        return None
    if command.shipment_id in state.shipments:
        return None
    return CountChinaShipment(
        exporter=state.terms.exporter.name,
        period=period_of(now),
        shipment=f"{state.terms.request_id}/{command.shipment_id}",
        units=command.units,
    )


def decide_licence(
    state: LicenceState,
    command: LicenceCommand,
    policy: Policy,
    now: datetime,
    count: ChinaCount | None = None,
) -> list[LicencePayload]:
    """The events `command` means, or DomainError naming the rule. A shipment is decided first without
    its exporter count (`count` None: nothing outside asked yet), then with it."""
    match command:
        case ExpireLicence():
            terms = _terms(state)
            if state.status is not None and state.status.is_final:
                return []
            if now < terms.valid_until:
                raise DomainError(
                    f"licence {terms.licence_id} is valid until {terms.valid_until.isoformat()}"
                )
            return [LicenceExpired(valid_until=terms.valid_until)]
        case Ship():
            return _ship(state, command, policy, now, count)
        case RescreenLicence(screening=found):
            _open_for_acts(state, state.status_at(now))
            if found.list_version == state.rescreened_with:
                return []  # screened against this very list already: once is enough
            rescreened = LicenceRescreened.model_validate(found, from_attributes=True)
            if not found.matches or state.status is not LicenceStatus.VALID:
                return [rescreened]
            hits = "; ".join(
                f"{m.role} {m.party_name!r} matches {m.entry_name!r} ({m.source})" for m in found.matches
            )
            reason = f"re-screening against list {found.list_version}: {hits}"
            return [rescreened, LicenceSuspended(reason=reason[:2000])]
        case SuspendLicence(reason=reason):
            _may_suspend(state, command, policy)
            if state.status is LicenceStatus.SUSPENDED:
                raise DomainError(
                    f"licence {_terms(state).licence_id} is already suspended ({state.suspended_reason})"
                )
            return [LicenceSuspended(reason=reason)]
        case ReinstateLicence(reason=reason):
            _may_suspend(state, command, policy)
            if state.status is not LicenceStatus.SUSPENDED:
                raise DomainError(f"licence {_terms(state).licence_id} is {state.status}, not suspended")
            return [LicenceReinstated(reason=reason)]
    raise DomainError(f"unknown licence command {command!r}")


def _open_for_acts(state: LicenceState, status: LicenceStatus | None) -> LicenceTerms:
    """The terms of a licence that is neither expired nor used up in `status` (as of now for a shipment;
    as recorded for a suspension, which a licence past its validity whose timer has not fired may take)."""
    terms = _terms(state)
    if status is LicenceStatus.EXPIRED:
        raise ShipmentRefused(
            "expired",
            f"licence {terms.licence_id} expired on {terms.valid_until.isoformat()}: no shipment is accepted",
        )
    if status is LicenceStatus.EXHAUSTED:
        raise ShipmentRefused(
            "exhausted",
            f"licence {terms.licence_id} is exhausted (all {terms.units:,} units shipped): "
            "no shipment is accepted",
        )
    return terms


def _may_suspend(state: LicenceState, command: SuspendLicence | ReinstateLicence, policy: Policy) -> None:
    terms = _open_for_acts(state, state.status)
    require_person(policy, command.actor)
    if not policy.may_decide(command.actor, LICENSING_GATE):
        raise DomainError(
            f"{command.actor!r} is not a {LICENSING_GATE} reviewer in policy {policy.version}; only the "
            f"licensing authority suspends or reinstates licence {terms.licence_id}"
        )
    _signed(state, command, policy)


def signed_version(state: LicenceState, command: LicenceAct) -> int:
    """The version of the licence's stream an act is signed for. A shipment is signed for version 0:
    its id already makes it count once (a copy sent again is a repeat, recorded once), and officers
    shipping at the same time must not refuse each other's signatures. A suspension or reinstatement is
    signed for the version it saw, so a copy sent later (after a reinstatement) is refused."""
    return 0 if command.kind in ID_BOUND_ACTS else state.version


def _signed(state: LicenceState, command: LicenceAct, policy: Policy) -> None:
    terms = _terms(state)
    require_signature(
        policy,
        command.actor,
        command.model_dump(mode="json"),
        command.signature,
        stream=licence_stream(terms.request_id),
        version=signed_version(state, command),
    )


def _ship(
    state: LicenceState, command: Ship, policy: Policy, now: datetime, count: ChinaCount | None
) -> list[LicencePayload]:
    terms = _terms(state)
    recorded = state.shipments.get(command.shipment_id)
    if recorded is not None:
        if command.same_shipment(recorded):
            return []  # a repeat: recorded once, answered as then
        raise ShipmentRefused(
            "shipment_id_reused",
            f"shipment {command.shipment_id} is already recorded with {recorded.units:,} units and lab "
            f"report {recorded.lab_report.sha256[:12]}…; a different shipment needs its own id",
        )
    if terms.exporter is None:
        raise ShipmentRefused(
            "no_exporter",
            f"request {terms.request_id} names no exporter, so the 50% rule cannot be checked: "
            "no shipment is accepted under its licence",
        )
    exporter = terms.exporter
    require_exporter_officer(policy, command.actor, exporter.name)
    _signed(state, command, policy)
    terms = _open_for_acts(state, state.status_at(now))
    if state.status is LicenceStatus.SUSPENDED:
        raise ShipmentRefused(
            "suspended",
            f"licence {terms.licence_id} is suspended ({state.suspended_reason}): no shipment is accepted",
        )
    if command.lab_report is None:
        raise ShipmentRefused(
            "no_lab_report",
            "lab_report: every shipment is reviewed by a US third-party test lab before export; "
            "give its report (--lab-report FILE)",
        )
    if command.units > state.units_remaining:
        raise ShipmentRefused(
            "over_licence",
            f"units: {command.units:,} exceeds the {state.units_remaining:,} units remaining on licence "
            f"{terms.licence_id} ({state.units_shipped:,} of {terms.units:,} shipped; items counted by "
            "number have no quantity tolerance)",
        )
    value = command.value_usd
    if value is None and terms.unit_price_usd is not None:
        value = command.units * terms.unit_price_usd
    remaining_value = state.value_remaining_usd
    if value is not None and remaining_value is not None:
        ceiling = (1 + VALUE_TOLERANCE) * max(remaining_value, 0.0)
        if value > ceiling + 0.005:
            raise ShipmentRefused(
                "over_value",
                f"value_usd: {value:,.2f} exceeds 125% of the licensed value remaining on licence "
                f"{terms.licence_id} ({remaining_value:,.2f} USD remaining; at most {ceiling:,.2f})",
            )
    if count is None:
        # Not counted for the exporter yet: a provisional count stands in while validating.
        count = ChinaCount(
            exporter=exporter.name,
            period=period_of(now),
            shipment=f"{terms.request_id}/{command.shipment_id}",
            units=command.units,
            china_before=0,
            us_units=2 * command.units,
        )
    units_left = state.units_remaining - command.units
    shipped = ShipmentRecorded(
        shipment_id=command.shipment_id,
        units=command.units,
        value_usd=value,
        lab_report=command.lab_report,
        declaration=command.declaration,
        import_approval=terms.import_approval if command.declaration is not None else None,
        period=count.period,
        china_count=count,
        units_remaining=units_left,
        value_remaining_usd=None if remaining_value is None or value is None else remaining_value - value,
    )
    events: list[LicencePayload] = [shipped]
    if units_left == 0:
        events.append(LicenceExhausted(units_shipped=terms.units))
    return events


def evolve_licence(state: LicenceState, event: LicencePayload, at: datetime) -> LicenceState:
    """The only way a licence's state changes; it never refuses an event."""
    changes: dict[str, object] = {"version": state.version + 1}
    match event:
        case ShipmentRecorded(shipment_id=shipment_id, units=units, value_usd=value):
            changes |= {
                "units_shipped": state.units_shipped + units,
                "value_shipped_usd": state.value_shipped_usd + (value or 0.0),
                "shipments": {**state.shipments, shipment_id: event},
            }
        case LicenceExhausted():
            changes |= {"status": LicenceStatus.EXHAUSTED, "closed_at": at}
        case LicenceExpired():
            changes |= {"status": LicenceStatus.EXPIRED, "closed_at": at}
        case LicenceSuspended(reason=reason):
            changes |= {"status": LicenceStatus.SUSPENDED, "suspended_reason": reason}
        case LicenceReinstated():
            changes |= {"status": LicenceStatus.VALID, "suspended_reason": None}
        case LicenceRescreened(list_version=version):
            changes |= {"rescreened_with": version}
    return state.model_copy(update=changes)


def fold_licence(terms: LicenceTerms, events: list[tuple[LicencePayload, datetime]]) -> LicenceState:
    state = LicenceState.opened(terms)
    for event, at in events:
        state = evolve_licence(state, event, at)
    return state
