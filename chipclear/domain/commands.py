"""Commands: what someone (or the workflow itself) asks a request to do.

A command is a request, not a fact; `decide` turns it into events or refuses it with a DomainError.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from chipclear.domain.buyer_cap import BuyerClaim
from chipclear.domain.evidence import InvoiceOwner
from chipclear.domain.models import MAX_UNITS, Attachment, Gate, ImportRequest, ProcurementRecord, Text
from chipclear.domain.screening import ScreenedParty, ScreeningMatch

Reason = Annotated[str, Field(min_length=1, max_length=2000)]


class _Command(Text):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Submit(_Command):
    kind: Literal["submit"] = "submit"
    request: ImportRequest
    actor: str = "applicant"
    # Set by the workflow: the invoice registry's answer for the request's own records.
    invoice_owners: dict[str, InvoiceOwner] | None = None


class Evaluate(_Command):
    """Apply the policy's rules at a gate the request has just entered."""

    kind: Literal["evaluate"] = "evaluate"
    gate: Gate
    # us-export in auto mode with a per-buyer cap: what the buyer's cap owner granted (the workflow
    # claims first, then evaluates).
    buyer_claim: BuyerClaim | None = None


class Decide(_Command):
    kind: Literal["decide"] = "decide"
    gate: Gate
    reviewer: Annotated[str, Field(min_length=1, max_length=100)]
    approve: bool
    units: Annotated[int, Field(ge=1, le=MAX_UNITS)] | None = None
    reason: str | None = None
    conditions: list[Reason] = Field(default_factory=list)
    # Set by the workflow, never by a reviewer: the per-buyer cap claim that backs a us-export approval.
    buyer_claim: BuyerClaim | None = None


class RecordScreening(_Command):
    """The restricted-party screening's result, as the screening activity returned it."""

    kind: Literal["record_screening"] = "record_screening"
    list_version: str
    threshold: float
    parties: list[ScreenedParty]
    matches: list[ScreeningMatch]


class RequestInfo(_Command):
    """An officer asks the applicant for more information; the review waits for the answer."""

    kind: Literal["request_info"] = "request_info"
    gate: Gate
    reviewer: Annotated[str, Field(min_length=1, max_length=100)]
    question: Reason


class Respond(_Command):
    kind: Literal["respond"] = "respond"
    text: Reason
    attachments: Annotated[list[Attachment], Field(max_length=20)] = Field(default_factory=list)
    actor: str = "applicant"


class Escalate(_Command):
    """The review SLA passed: raised by the workflow's timer, not by a person."""

    kind: Literal["escalate"] = "escalate"
    gate: Gate


class AddEvidence(_Command):
    kind: Literal["add_evidence"] = "add_evidence"
    records: Annotated[list[ProcurementRecord], Field(max_length=1_000)]
    actor: str = "applicant"
    # Set by the workflow, never by the applicant: the invoice registry's answer for these records.
    invoice_owners: dict[str, InvoiceOwner] | None = None


class Withdraw(_Command):
    kind: Literal["withdraw"] = "withdraw"
    reason: Reason
    actor: str = "applicant"


class Expire(_Command):
    kind: Literal["expire"] = "expire"
    gate: Gate
    cause: Literal["information_request"] | None = None


class RecordAllocation(_Command):
    """The allocation ledger's answer for this request: units granted (maybe fewer), or queued."""

    kind: Literal["record_allocation"] = "record_allocation"
    outcome: Literal["granted", "partial", "queued"]
    batch_id: str | None = None
    units: int = 0
    requested: int
    reason: str | None = None
    position: int | None = None


class RecordRelease(_Command):
    """Units (or a queue place) handed back to the ledger when the request ends without a licence."""

    kind: Literal["record_release"] = "record_release"
    batch_id: str | None
    units: int
    reason: str


class RecordExportRelease(_Command):
    """Compensation: the request ended unlicensed, so its US approval's units go back to the buyer."""

    kind: Literal["record_export_release"] = "record_export_release"
    units: int
    reason: str


Command = Annotated[
    Submit
    | Evaluate
    | Decide
    | RecordScreening
    | RequestInfo
    | Respond
    | Escalate
    | AddEvidence
    | Withdraw
    | Expire
    | RecordAllocation
    | RecordRelease
    | RecordExportRelease,
    Field(discriminator="kind"),
]
