"""Commands: what someone (or the workflow itself) asks a request to do.

A command is a request, not a fact; `decide` turns it into events or refuses it with a DomainError.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from chipclear.domain.models import MAX_UNITS, Gate, ImportRequest, ProcurementRecord

Reason = Annotated[str, Field(min_length=1, max_length=2000)]


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Submit(_Command):
    kind: Literal["submit"] = "submit"
    request: ImportRequest
    actor: str = "applicant"


class Evaluate(_Command):
    """Apply the policy's rules at a gate the request has just entered."""

    kind: Literal["evaluate"] = "evaluate"
    gate: Gate


class Decide(_Command):
    kind: Literal["decide"] = "decide"
    gate: Gate
    reviewer: Annotated[str, Field(min_length=1, max_length=100)]
    approve: bool
    units: Annotated[int, Field(ge=1, le=MAX_UNITS)] | None = None
    reason: str | None = None
    conditions: list[Reason] = Field(default_factory=list)


class AddEvidence(_Command):
    kind: Literal["add_evidence"] = "add_evidence"
    records: list[ProcurementRecord]
    actor: str = "applicant"


class Withdraw(_Command):
    kind: Literal["withdraw"] = "withdraw"
    reason: Reason
    actor: str = "applicant"


class Expire(_Command):
    kind: Literal["expire"] = "expire"
    gate: Gate


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


Command = Annotated[
    Submit | Evaluate | Decide | AddEvidence | Withdraw | Expire | RecordAllocation | RecordRelease,
    Field(discriminator="kind"),
]
