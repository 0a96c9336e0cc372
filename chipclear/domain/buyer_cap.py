"""The per-buyer cap on US export approvals, across all of a buyer's requests.

Two requests of one buyer decided at the same moment must not both see the same headroom and together
exceed the cap, so the check and the claim are one step: one store transaction that holds the buyer's
lock (chipclear.store.sql_buyer_caps). This module is that step's pure rule, and the whole cap's
semantics in `apply_claim`/`apply_release`, which the store's rows follow.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from chipclear.domain.errors import DomainError
from chipclear.domain.models import MAX_UNITS
from chipclear.domain.names import normalise_buyer

RULE = "us_export.max_units_per_buyer"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClaimUnits(_Model):
    """Claim `units` of the buyer's headroom for one request; a later claim by it replaces the earlier."""

    buyer: str
    request_id: str
    units: Annotated[int, Field(ge=1, le=MAX_UNITS)]
    cap: Annotated[int, Field(ge=1)]  # from the request's own policy
    partial: bool = False  # True: grant what headroom is left (auto mode); False: all or refuse


class ReleaseClaim(_Model):
    buyer: str
    request_id: str
    reason: str


class BuyerClaim(_Model):
    """What the owner granted: recorded on the approval so an auditor can redo the sum."""

    buyer: str
    request_id: str
    units: int  # 0 only for a partial claim that found no headroom
    cap: int
    approved_before: int  # units held by the buyer's other requests at the moment of the claim

    @property
    def total(self) -> int:
        return self.approved_before + self.units

    @property
    def headroom(self) -> int:
        return max(0, self.cap - self.approved_before)


class BuyerCapState(_Model):
    """A buyer's cap, or the part of it one claim is checked against: the store reads only the claiming
    request's own row and the sum of the others (`held_elsewhere`), never every claim."""

    buyer_key: str | None = None
    claims: dict[str, int] = Field(default_factory=dict)  # request id -> units approved for export
    released: dict[str, int] = Field(default_factory=dict)  # request id -> units handed back
    # Units held by the buyer's requests not named in `claims`.
    held_elsewhere: int = 0

    def held_by_others(self, request_id: str) -> int:
        return self.held_elsewhere + sum(units for other, units in self.claims.items() if other != request_id)

    @property
    def held(self) -> int:
        return self.held_elsewhere + sum(self.claims.values())


def check_claim(state: BuyerCapState, command: ClaimUnits) -> BuyerClaim:
    """The grant `command` would get, or DomainError naming the headroom; changes nothing."""
    if command.request_id in state.released:
        raise DomainError(f"request {command.request_id} has already released its export approval")
    before = state.held_by_others(command.request_id)
    headroom = max(0, command.cap - before)
    if command.units > headroom and not command.partial:
        raise DomainError(
            f"units: {command.units} exceeds the remaining headroom of {headroom} for buyer "
            f"{command.buyer!r} ({RULE} = {command.cap}; {before} already approved over its other "
            "requests)"
        )
    return BuyerClaim(
        buyer=command.buyer,
        request_id=command.request_id,
        units=min(command.units, headroom),
        cap=command.cap,
        approved_before=before,
    )


def apply_claim(state: BuyerCapState, claim: BuyerClaim) -> BuyerCapState:
    claims = dict(state.claims)
    if claim.units:
        claims[claim.request_id] = claim.units
    else:
        claims.pop(claim.request_id, None)
    return state.model_copy(update={"claims": claims, "buyer_key": normalise_buyer(claim.buyer)})


def apply_release(state: BuyerCapState, command: ReleaseClaim) -> tuple[BuyerCapState, int]:
    """Hand a request's units back; releasing twice gives back nothing the second time."""
    if command.request_id in state.released:
        return state, 0
    claims = dict(state.claims)
    units = claims.pop(command.request_id, 0)
    released = {**state.released, command.request_id: units}
    return state.model_copy(update={"claims": claims, "released": released}), units
