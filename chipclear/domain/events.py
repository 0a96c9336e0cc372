"""Events: the only way a request's state changes, and the legal record kept for years.

An event's meaning is never edited in place: a new shape gets a new type (or an upcaster), because
stored events outlive every release of this code.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, computed_field

from chipclear.domain.allocation import (
    BatchOpened,
    LedgerPayload,
    QueueLeft,
    RequestQueued,
    RequestsSettled,
    UnitsGranted,
    UnitsReleased,
)
from chipclear.domain.buyer_cap import BuyerClaim
from chipclear.domain.evidence import RejectedRecord
from chipclear.domain.exporter import ChinaShipmentCounted, ExporterPayload, UsShipmentsDeclared
from chipclear.domain.licence import (
    LicenceExhausted,
    LicenceExpired,
    LicencePayload,
    LicenceReinstated,
    LicenceRescreened,
    LicenceSuspended,
    ShipmentRecorded,
)
from chipclear.domain.models import Attachment, GateName, ImportRequest, ProcurementRecord, UtcDatetime
from chipclear.domain.payload import EventPayload
from chipclear.domain.screening import ScreenedParty, ScreeningMatch


class _GateEvent(EventPayload):
    """Something that happened at one gate of the request's route."""

    gate: GateName


class RequestSubmitted(EventPayload):
    request: ImportRequest
    # The gates this request walks, in order, as the policy named them when it was submitted: a route
    # changed later changes no request already under way.
    route: tuple[GateName, ...]


class GateOpened(_GateEvent):
    deadline: UtcDatetime
    review_due: UtcDatetime | None = None  # the review SLA, when the policy sets one


class PartiesScreened(EventPayload):
    """Every party checked against a restricted-party list; any match holds the request.

    Schema 2: each party carries its country and the invisible characters its name hid
    (`suspicious`); each match the listed entry's id and type, the words that carried it and the
    folds (homoglyph, pinyin, leet, …) it needed. A schema-1 event is read with those empty."""

    SCHEMA_VERSION: ClassVar[int] = 2
    list_version: str
    threshold: float
    parties: list[ScreenedParty]
    matches: list[ScreeningMatch]


class PartiesRescreened(EventPayload):
    """A new list in force screened the request's parties again (the re-screening workflow asked). A
    match holds the request at its gate until a reviewer clears it with a reason; at a gate the rules
    decide alone, it denies the request there."""

    list_version: str
    threshold: float
    parties: list[ScreenedParty]
    matches: list[ScreeningMatch]


class ScreeningHoldCleared(EventPayload):
    """A reviewer found the re-screening match a false positive; the request moves on."""

    list_version: str
    reason: str


class InformationRequested(_GateEvent):
    question: str
    due: UtcDatetime


class InformationProvided(_GateEvent):
    text: str
    attachments: list[Attachment] = Field(default_factory=list)


class ReviewEscalated(_GateEvent):
    """The review SLA passed without a decision: someone above the officer should look."""

    due: UtcDatetime


class GateApproved(_GateEvent):
    units_approved: int
    conditions: list[str] = Field(default_factory=list)
    note: str | None = None
    rule: str | None = None  # set when the policy, not a reviewer, decided
    buyer_claim: BuyerClaim | None = None  # us-export: the buyer's cap as it stood, with this approval


class ApprovalProposed(_GateEvent):
    """A reviewer approved more units than one person may (`[duties] four_eyes_above`): it takes effect
    only when a second, different reviewer approves too."""

    units: int
    conditions: list[str] = Field(default_factory=list)
    note: str | None = None


class GateDenied(_GateEvent):
    reason: str
    rule: str | None = None


class EvidenceAdded(EventPayload):
    records: list[ProcurementRecord]


class EvidenceRejected(EventPayload):
    """Records that do not count, each with the reason: the buyer can correct and send them again."""

    records: list[RejectedRecord]


class PublicHubShare(BaseModel):
    """A public computing hub's domestic share after the import: (installed domestic + domestic
    evidence delivered there) / (that + installed foreign + imported)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    installed_domestic: int
    installed_foreign: int
    domestic_added: int
    imported_units: int
    share_after: float
    min_share: float
    shortfall: int  # more domestic units needed for the share to exceed min_share


class DomesticQuotaAssessed(EventPayload):
    """The computation behind a domestic-quota verdict, kept so an auditor can redo it by hand."""

    imported_units: int
    domestic_units: int
    required_ratio: float
    required_units: int
    shortfall: int  # the larger of the ratio's shortfall and the public hub's
    public_hub: PublicHubShare | None = None


class LicenseIssued(EventPayload):
    licence_id: str
    units: int  # the smallest quantity any gate approved
    conditions: list[str] = Field(default_factory=list)
    valid_until: UtcDatetime  # issue time + policy licence_validity


class RequestWithdrawn(EventPayload):
    gate: GateName | None
    reason: str


class RequestExpired(_GateEvent):
    deadline: UtcDatetime
    # None: the gate's decision deadline; "information_request": the applicant never answered.
    cause: Literal["information_request"] | None = None


class ExportApprovalReleased(EventPayload):
    """The request ended without a licence: its US export approval goes unused, its units back to
    the buyer's headroom."""

    units: int
    reason: str


class ScreeningListLoaded(EventPayload):
    """A restricted-party list became the one screenings use (stream `screening-lists`)."""

    version: str
    sha256: str
    source: str
    entries: int
    names: int
    # sha256 of the parsed entries as stored: `audit verify` proves the list in force is the one loaded.
    entries_sha256: str | None = None


class PolicyRecorded(EventPayload):
    """A worker started under a policy version not seen before (stream `policies`): the version label
    is bound to this content hash for good, so a different file can never be passed off under it."""

    version: str
    sha256: str  # of the policy's canonical JSON (chipclear.domain.policy.content_hash)


class AllocationGranted(EventPayload):
    batch_id: str
    units: int
    requested: int
    reason: str | None = None  # why fewer than requested


class AllocationQueued(EventPayload):
    position: int | None


class AllocationReleased(EventPayload):
    batch_id: str | None  # None: the request only left the queue
    units: int
    reason: str


EventData = Annotated[
    RequestSubmitted
    | GateOpened
    | PartiesScreened
    | PartiesRescreened
    | ScreeningHoldCleared
    | InformationRequested
    | InformationProvided
    | ReviewEscalated
    | ExportApprovalReleased
    | ScreeningListLoaded
    | GateApproved
    | ApprovalProposed
    | GateDenied
    | EvidenceAdded
    | EvidenceRejected
    | DomesticQuotaAssessed
    | LicenseIssued
    | RequestWithdrawn
    | RequestExpired
    | AllocationGranted
    | AllocationQueued
    | AllocationReleased
    | PolicyRecorded
    | BatchOpened
    | UnitsGranted
    | RequestQueued
    | UnitsReleased
    | QueueLeft
    | RequestsSettled
    | ShipmentRecorded
    | LicenceExhausted
    | LicenceSuspended
    | LicenceReinstated
    | LicenceExpired
    | LicenceRescreened
    | UsShipmentsDeclared
    | ChinaShipmentCounted,
    Field(discriminator="type"),
]
EVENT_DATA: TypeAdapter[EventData] = TypeAdapter(EventData)
# Every event of a request's own stream: the union above, less the screening lists', the ledger's, the
# licences' and the exporters' (derived, so a new request event is projected without being listed twice).
REQUEST_EVENT_TYPES = frozenset(
    model.model_fields["type"].default
    for model in get_args(get_args(EventData)[0])
    if not issubclass(
        model, ScreeningListLoaded | PolicyRecorded | LedgerPayload | LicencePayload | ExporterPayload
    )
)


def schema_versions() -> dict[str, int]:
    """Each event type's current schema version."""
    return {
        model.model_fields["type"].default: model.SCHEMA_VERSION for model in get_args(get_args(EventData)[0])
    }


class Event(BaseModel):
    """An event as the decider emits it; the store adds position, recorded_at and the hash chain."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    stream_id: str
    version: Annotated[int, Field(ge=1)]
    data: EventData
    occurred_at: UtcDatetime
    policy_version: str
    actor: str
    # The signed act of a person that caused this event (the command as sent, with its signature), or
    # None for what the system did by rule. Chained with the event, so `audit verify` checks the
    # signature again and the act cannot be swapped for another.
    act: dict[str, Any] | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def type(self) -> str:
        return self.data.type

    def data_json(self) -> dict[str, Any]:
        """The payload as stored: JSON-ready, without the `type` key that has a column of its own."""
        dumped = self.data.model_dump(mode="json")
        dumped.pop("type")
        return dumped

    @staticmethod
    def parse_data(type_: str, data: dict[str, Any]) -> EventData:
        return EVENT_DATA.validate_python({**data, "type": type_})


class StoredEvent(Event):
    position: int
    recorded_at: datetime
    prev_hash: str
    hash: str
