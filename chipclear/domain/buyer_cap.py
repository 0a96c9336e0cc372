"""The per-buyer cap on US export approvals, across all of a buyer's requests.

Two requests of one buyer decided at the same moment must not both see the same headroom and together
exceed the cap, so the check and the claim are one step inside one owner per buyer (an entity workflow
that serialises them). This module is that owner's pure logic.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from chipclear.domain.errors import DomainError
from chipclear.domain.models import MAX_UNITS
from chipclear.domain.names import normalise_buyer
from chipclear.domain.settling import Carried

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
    buyer_key: str | None = None
    claims: dict[str, int] = Field(default_factory=dict)  # request id -> units approved for export
    released: dict[str, int] = Field(default_factory=dict)  # request id -> units handed back
    # Units of requests that hold their licence, settled out of `claims` (`settle_cap`): they count
    # against the cap for good, no longer by name.
    settled: int = 0

    def held_by_others(self, request_id: str) -> int:
        return self.settled + sum(units for other, units in self.claims.items() if other != request_id)


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


def settle_cap(state: BuyerCapState, carried: Carried, licensed: Container[str]) -> BuyerCapState:
    """The state the next run need carry (chipclear.domain.settling): the claims of carried-in requests
    that now hold their licence become part of `settled`, and carried-in releases are dropped."""
    licences, given_back = carried.settleable(state.claims, state.released, licensed)
    if not licences and not given_back:
        return state
    gone, dropped = set(licences), set(given_back)
    claims = {rid: units for rid, units in state.claims.items() if rid not in gone}
    released = {rid: units for rid, units in state.released.items() if rid not in dropped}
    settled = state.settled + sum(state.claims[rid] for rid in licences)
    return state.model_copy(update={"claims": claims, "released": released, "settled": settled})
