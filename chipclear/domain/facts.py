"""Facts from outside one request: what the decider needs to know but cannot compute alone.

A gate says which facts a command needs (`needs`); the workflow fetches them through activities
(screening list, the buyer's cap, the invoice registry, the allocation ledger) and hands them to
`decide` in one piece, so the decider stays pure and is called once per command. Some facts are the
answers to acts on the world (a claim, a reservation, a release): a command the rules refuse is
dry-run first with `provisional` facts, so it never takes or gives anything.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from chipclear.domain.allocation import Release, Released, Reservation, Reserve
from chipclear.domain.buyer_cap import BuyerClaim, ClaimUnits, ReleaseClaim
from chipclear.domain.evidence import InvoiceOwner
from chipclear.domain.screening import ScreenedParty, ScreeningMatch


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScreenParties(_Model):
    """Screen these parties against the restricted-party list in force."""

    parties: list[ScreenedParty]
    threshold: float


class Screening(_Model):
    """The screening's answer, list version included."""

    list_version: str
    threshold: float
    parties: list[ScreenedParty]
    matches: list[ScreeningMatch]


class RegisterInvoices(_Model):
    """Register these invoice keys to the request (an invoice counts for one request only)."""

    request_id: str
    buyer: str
    keys: list[str]


class ReleaseInvoices(_Model):
    request_id: str


class FactsWanted(_Model):
    """What a command needs from outside before it can be decided; every field None: nothing."""

    screening: ScreenParties | None = None
    buyer_claim: ClaimUnits | None = None
    invoices: RegisterInvoices | None = None
    reservation: Reserve | None = None
    release_allocation: Release | None = None
    release_buyer_claim: ReleaseClaim | None = None
    release_invoices: ReleaseInvoices | None = None

    def __bool__(self) -> bool:
        return any(value is not None for value in self.__dict__.values())

    def missing(self, known: Facts) -> FactsWanted:
        """Only what `known` does not answer yet."""
        return FactsWanted.model_validate(
            {name: value for name, value in self.__dict__.items() if getattr(known, _ANSWER[name]) is None}
        )

    def merged(self, other: FactsWanted) -> FactsWanted:
        return self.model_copy(
            update={name: value for name, value in other.__dict__.items() if value is not None}
        )


class Facts(_Model):
    """The answers: each field answers the FactsWanted field of the same meaning."""

    screening: Screening | None = None
    buyer_claim: BuyerClaim | None = None
    invoice_owners: dict[str, InvoiceOwner] | None = None
    reservation: Reservation | None = None
    allocation_released: Released | None = None
    buyer_units_released: int | None = None
    invoices_released: int | None = None

    def merged(self, other: Facts) -> Facts:
        return self.model_copy(
            update={name: value for name, value in other.__dict__.items() if value is not None}
        )


_ANSWER = {
    "screening": "screening",
    "buyer_claim": "buyer_claim",
    "invoices": "invoice_owners",
    "reservation": "reservation",
    "release_allocation": "allocation_released",
    "release_buyer_claim": "buyer_units_released",
    "release_invoices": "invoices_released",
}
NONE = Facts()


def provisional(wanted: FactsWanted) -> Facts:
    """Answers as if the world said yes to everything: a claim granted in full, every invoice free,
    nothing found by screening. A validator decides with these, so a command fails validation only
    for a rule of its own, and the world is asked only once the rules let the command through."""
    claim = wanted.buyer_claim
    invoices = wanted.invoices
    return Facts(
        screening=(
            Screening(
                list_version="provisional", threshold=wanted.screening.threshold, parties=[], matches=[]
            )
            if wanted.screening
            else None
        ),
        buyer_claim=(
            BuyerClaim(
                buyer=claim.buyer,
                request_id=claim.request_id,
                units=claim.units,
                cap=claim.cap,
                approved_before=0,
            )
            if claim
            else None
        ),
        invoice_owners=(
            dict.fromkeys(invoices.keys, InvoiceOwner(request_id=invoices.request_id, buyer=invoices.buyer))
            if invoices
            else None
        ),
    )
