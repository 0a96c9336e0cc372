"""The import request as an applicant files it, and the vocabulary shared by every gate.

Validation lives here, not in the CLI, so a request is rejected with the same message whether it
arrives from a file, a test or a client library.
"""

from __future__ import annotations

import re
from datetime import UTC, date
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictInt,
    model_serializer,
    model_validator,
)

from chipclear.domain.countries import is_country
from chipclear.domain.limits import MAX_RECORDS, cut
from chipclear.domain.names import normalise_buyer

# Every instant in an event is kept in UTC, so the state folded from a live event and from its stored
# copy are identical, whatever time zone the caller used.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(lambda moment: moment.astimezone(UTC))]

REQUEST_ID_PATTERN = r"^[A-Za-z0-9._-]{3,64}$"
MAX_UNITS = 1_000_000
# The largest data centre holds a few hundred thousand accelerators; a count beyond this is a typo or
# an attack (2**70 would overflow every sum the domestic-quota gate makes), never a fact.
MAX_INSTALLED = 100_000_000
# Any unit price above this (per accelerator, in US dollars) is a typo: an H200 sells for about 30,000.
MAX_UNIT_PRICE_USD = 10_000_000.0
# Invoices and deliveries: none before the first AI accelerators were sold (2000 is a generous floor),
# none after this century. A date in the future within these bounds is judged by the domestic-quota gate
# against the workflow's time (evidence that does not count), not refused here: a model has no clock.
EARLIEST_DATE = date(2000, 1, 1)
LATEST_DATE = date(2099, 12, 31)
# Streams the event store keeps beside the requests' own (the ledger's, the screening lists').
RESERVED_STREAMS = frozenset({"allocation", "screening-lists", "policies"})


# A gate's name: lower-case words joined by hyphens ("us-export"). The route of gates a request walks
# is data in the policy, so a gate is named, never enumerated here.
GATE_NAME_PATTERN = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"
GateName = Annotated[str, Field(pattern=GATE_NAME_PATTERN, max_length=40)]


class Status(StrEnum):
    """Where a request stands outside any gate. At a gate, the gate names its own status
    (`us_export_review`, `cn_import_queued`, …): see chipclear.domain.gates."""

    SUBMITTED = "submitted"
    LICENSED = "licensed"
    DENIED = "denied"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({Status.LICENSED, Status.DENIED, Status.WITHDRAWN, Status.EXPIRED})


def is_final(status: str | None) -> bool:
    return status in FINAL_STATUSES


class PartyKind(StrEnum):
    PRIVATE = "private"
    STATE_OWNED = "state_owned"
    GOVERNMENT = "government"
    MILITARY = "military"
    CRITICAL_INFRASTRUCTURE = "critical_infrastructure"
    UNIVERSITY = "university"


class Product(StrEnum):
    H200 = "H200"


def nul_at(value: object, path: str = "") -> str | None:
    """Where (a dotted path) a NUL character sits in plain data, if anywhere."""
    if isinstance(value, str):
        return (path or "value") if "\x00" in value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = nul_at(str(key), path) if isinstance(key, str) else None
        found = found or nul_at(item, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


def refuse_nul(model: BaseModel) -> None:
    """A NUL character is refused in every text an applicant or officer sends: PostgreSQL cannot store
    one, and no legitimate name, reason or invoice number holds it. Checked where text comes in (a
    command, a workflow's input, a file read by the CLI), not on every parse of stored data."""
    where = nul_at(model.model_dump(mode="json"))
    if where is not None:
        raise ValueError(f"{where}: contains a NUL character (\\x00)")


class Text(BaseModel):
    """A model that brings user text in: no NUL anywhere, in named fields or extra ones."""

    @model_validator(mode="after")
    def _refuse_nul(self) -> Text:
        refuse_nul(self)
        return self


def _iso_date(value: Any) -> Any:
    # An integer would be read as seconds since 1970 and a boolean as 1970-01-01: only a date or its
    # ISO 8601 text (`2026-01-15`) is a date.
    if isinstance(value, date | str):
        return value
    raise ValueError(f"expected an ISO 8601 date such as '2026-01-15', got {cut(value)}")


BoundedDate = Annotated[date, BeforeValidator(_iso_date), Field(ge=EARLIEST_DATE, le=LATEST_DATE)]


def _country(code: str) -> str:
    if not is_country(code):
        raise ValueError(f"{cut(code)} is not an ISO 3166-1 alpha-2 country code (e.g. CN, US, SG)")
    return code


Country = Annotated[
    str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2"), AfterValidator(_country)
]
Count = Annotated[StrictInt, Field(ge=0, le=MAX_INSTALLED)]


class _Strict(BaseModel):
    # Unknown fields are an error: a misspelt `unit` must not silently drop the quantity.
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


NonEmpty = Annotated[str, Field(min_length=1, max_length=200)]


class Party(_Strict):
    name: NonEmpty
    country: Country
    kind: PartyKind


class DataCenter(_Strict):
    name: NonEmpty
    province: NonEmpty
    state_funded: StrictBool = False
    # Public computing hubs must run a majority of domestic accelerators (policy min_domestic_share);
    # what is installed today is what the share after import is computed from.
    public_computing_hub: StrictBool = False
    installed_domestic: Count = 0
    installed_foreign: Count = 0


class ProcurementRecord(_Strict):
    """One domestic accelerator purchase offered as evidence for the domestic-quota gate.

    The named fields are the contract; other fields a buyer's procurement system exports (an order
    number, a note) are kept as they came, so the record is the buyer's own. Those are bounded like
    every field (see `_bounded_extras`): a few short plain values, never a place to hide a megabyte.
    """

    model_config = ConfigDict(extra="allow", frozen=True, str_strip_whitespace=True)

    vendor: NonEmpty
    product: NonEmpty
    units: Annotated[StrictInt, Field(ge=1, le=10 * MAX_UNITS)]
    invoice: NonEmpty
    invoice_date: BoundedDate | None = None
    delivered_on: BoundedDate | None = None
    data_center: NonEmpty | None = None  # where the accelerators were delivered, if not the request's

    @model_validator(mode="after")
    def _bounded_extras(self) -> ProcurementRecord:
        extras = self.model_extra or {}
        if len(extras) > MAX_EXTRA_FIELDS:
            raise ValueError(
                f"more than {MAX_EXTRA_FIELDS} fields besides the named ones ({', '.join(extras)})"
            )
        for name, value in extras.items():
            if not EXTRA_FIELD_NAME.fullmatch(name):
                raise ValueError(f"{cut(name)}: an extra field's name is lower-case letters, digits and _")
            if not isinstance(value, str | int | None) or isinstance(value, bool):
                raise ValueError(f"{name}: an extra field holds text or a whole number, not {cut(value)}")
            if isinstance(value, str) and len(value) > MAX_EXTRA_TEXT:
                raise ValueError(f"{name}: {len(value)} characters is over the limit of {MAX_EXTRA_TEXT}")
            if isinstance(value, int) and abs(value) > 2**53:
                raise ValueError(f"{name}: {cut(value)} is too large")
        return self


# A procurement system's own fields: an order number, a short note; at most this many, this long.
MAX_EXTRA_FIELDS = 8
MAX_EXTRA_TEXT = 1_000
EXTRA_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


class Attachment(_Strict):
    """A file an applicant sent, pinned by its digest; the file itself stays in the team's records."""

    name: NonEmpty
    size: Annotated[StrictInt, Field(ge=0, le=2**53)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Exporter(_Strict):
    """The company that exports the accelerators under the licence (most often from the US). Its
    shipments to China count, per quarter, against half of what it ships to US end users (the 50% rule),
    across every licence it holds."""

    name: NonEmpty
    country: Country = "US"


class ImportRequest(_Strict):
    request_id: Annotated[str, Field(pattern=REQUEST_ID_PATTERN)]
    buyer: Party
    # Every request filed names its exporter (`chipclear submit` refuses one without); the field is
    # optional on the wire only because requests started before it existed must still replay.
    exporter: Exporter | None = None
    end_user: Party | None = None
    # Every party the goods pass through on the way; each is screened like the buyer and end user.
    consignees: Annotated[list[Party], Field(max_length=50)] = Field(default_factory=list)
    end_use: Annotated[str, Field(min_length=1, max_length=2000)]
    product: Product = Product.H200
    units: Annotated[StrictInt, Field(ge=1, le=MAX_UNITS)]
    unit_price_usd: (
        Annotated[float, Field(gt=0, le=MAX_UNIT_PRICE_USD, allow_inf_nan=False, strict=True)] | None
    ) = None
    data_center: DataCenter
    domestic_procurement: Annotated[list[ProcurementRecord], Field(max_length=MAX_RECORDS)] = Field(
        default_factory=list
    )

    @model_validator(mode="after")
    def _own_stream(self) -> ImportRequest:
        if self.request_id in RESERVED_STREAMS:
            raise ValueError(f"request_id: {self.request_id!r} is reserved for the event store's own use")
        return self

    @model_validator(mode="after")
    def _unique_invoices(self) -> ImportRequest:
        duplicate = first_duplicate_invoice(self.domestic_procurement)
        if duplicate is not None:
            raise ValueError(f"domestic_procurement: invoice {duplicate!r} appears more than once")
        return self

    @model_serializer(mode="wrap")
    def _without_absent_exporter(self, handler: SerializerFunctionWrapHandler) -> Any:
        # A request filed before the exporter field existed dumps as it did then: the bytes its
        # applicant signed, and its stored events' hashes, stay the same.
        dumped = handler(self)
        if isinstance(dumped, dict) and dumped.get("exporter", 0) is None:
            del dumped["exporter"]
        return dumped

    @property
    def effective_end_user(self) -> Party:
        return self.end_user or self.buyer


def invoice_key(record: ProcurementRecord) -> str:
    """Invoice numbers are unique per vendor: `huawei|hw20260017` for "HW-2026-0017" from "Huawei Co."."""
    number = re.sub(r"[\W_]+", "", record.invoice.casefold())
    return f"{normalise_buyer(record.vendor)}|{number}"


def first_duplicate_invoice(records: list[ProcurementRecord]) -> str | None:
    """An invoice listed twice: the same number from the same vendor (numbers are the vendor's, so two
    vendors may share one), whatever the case, punctuation or legal form."""
    seen: set[str] = set()
    for record in records:
        key = invoice_key(record)
        if key in seen:
            return record.invoice
        seen.add(key)
    return None
