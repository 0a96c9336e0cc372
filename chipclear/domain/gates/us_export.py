"""US export clearance: restricted-party screening, end-use exclusions, the per-request and per-buyer
caps, questions to the applicant, and the standing licence conditions.

Screening and the buyer's cap are facts from outside the request: the screening list in force, and the
units the buyer's other requests already hold (claimed in one store transaction that holds the buyer's
lock, so two requests decided at the same instant cannot both take the same headroom).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from chipclear.domain import events
from chipclear.domain.buyer_cap import RULE as BUYER_CAP_RULE
from chipclear.domain.buyer_cap import BuyerClaim, ClaimUnits, ReleaseClaim
from chipclear.domain.commands import ClearScreeningHold, Command, Compensate, Decide, Evaluate, Rescreen
from chipclear.domain.errors import DomainError
from chipclear.domain.facts import FactsWanted, ScreenParties
from chipclear.domain.gates.base import POLICY_ACTOR, By, Context, GateRules, Payload, approval, require_open
from chipclear.domain.policy import GateMode, Policy
from chipclear.domain.registry import gate_of
from chipclear.domain.screening import parties_of
from chipclear.domain.sections import US_EXPORT, UsExportSection
from chipclear.domain.state import GateSlice, RequestState

NAME = US_EXPORT


class UsExportSlice(GateSlice):
    screening: events.PartiesScreened | None = None
    buyer_claim: BuyerClaim | None = None  # the per-buyer cap claim behind the approval
    export_released: bool = False  # the approval went unused and its units back to the buyer
    # A match when a new list was in force, not yet cleared by a reviewer: it holds the request at
    # whatever gate it stands, every approval refused until then.
    rescreen_hold: events.PartiesRescreened | None = None
    rescreened_with: str | None = None  # the last list the parties were screened again against

    @property
    def held(self) -> bool:
        """A restricted-party match holds the request for an officer."""
        return self.screening is not None and bool(self.screening.matches)

    def flags(self) -> list[str]:
        return ["held"] if self.held or self.rescreen_hold is not None else []

    def document(self, state: RequestState) -> dict[str, Any]:
        screened = self.screening
        return {
            "on_hold": state.gate == NAME and self.held,
            "screening": screened.model_dump(mode="json", exclude={"type"}) if screened else None,
            "buyer_claim": self.buyer_claim.model_dump() if self.buyer_claim else None,
            "export_released": self.export_released,
            "rescreen_hold": self.rescreen_hold.model_dump(mode="json", exclude={"type"})
            if self.rescreen_hold
            else None,
            "rescreened_with": self.rescreened_with,
        }

    def describe(self, state: RequestState) -> list[str]:
        lines: list[str] = []
        if (hold := self.rescreen_hold) is not None and not state.is_final:
            lines.append(
                f"HOLD re-screening: {len(hold.matches)} match(es) on list {hold.list_version} - no approval "
                f"at any gate until a {NAME} reviewer clears it with a reason (chipclear clear-hold)"
            )
            lines += [
                f"  {m.role} {m.party_name!r} ~ {m.entry_name!r} (score {m.score:g}, {m.source})"
                for m in hold.matches
            ]
        screened, holding = self.screening, state.gate == NAME and self.held
        if screened is not None and screened.matches:
            lines.append(
                ("HOLD " if holding else "")
                + f"screening: {len(screened.matches)} match(es) on list {screened.list_version}"
                + (" - only an officer's decision with a written reason moves it on" if holding else "")
            )
            lines += [
                f"  {m.role} {m.party_name!r} ~ {m.entry_name!r} (as {m.matched_name!r}, score {m.score:g}, "
                f"{m.source})" + (f": {why}" if (why := m.explanation()) else "")
                for m in screened.matches
            ]
        elif screened is not None:
            parties = len(screened.parties)
            lines.append(
                f"screening: clear ({parties} {'party' if parties == 1 else 'parties'}, "
                f"list {screened.list_version}, threshold {screened.threshold:g})"
            )
        if screened is not None:
            lines += [
                f"  suspicious: {p.role} {p.name!r}: {', '.join(p.suspicious)}"
                for p in screened.parties
                if p.suspicious
            ]
        if self.buyer_claim is not None:
            claim = self.buyer_claim
            if self.export_released:
                # Said as what happened, not as a standing total: the cap no longer counts these units.
                lines.append(
                    f"buyer cap: this request's {claim.units} approved units went back to {claim.buyer}'s "
                    f"cap when it ended unused (at approval {claim.total} of {claim.cap} were approved, "
                    f"{claim.total - claim.units} without them)"
                )
            else:
                lines.append(
                    f"buyer cap: {claim.buyer} has {claim.total} of {claim.cap} units approved "
                    f"({claim.units} by this request)"
                )
        return lines


class UsExport(GateRules[UsExportSection, UsExportSlice]):
    name = NAME
    section_model = UsExportSection
    slice_model = UsExportSlice
    four_eyes = True

    commands = (Rescreen, ClearScreeningHold)

    def info_deadline(self, policy: Policy) -> timedelta | None:
        return self.section(policy).info_deadline

    def holds(self, state: RequestState) -> str | None:
        hold = self.slice(state).rescreen_hold
        if hold is None:
            return None
        return (
            f"the request is held by re-screening against list {hold.list_version} ({_hits(hold.matches)}); "
            f"a {NAME} reviewer clears a false positive first (chipclear clear-hold --reason)"
        )

    def denial(self, state: RequestState, policy: Policy) -> events.GateDenied | None:
        assert state.request is not None
        kind, excluded = state.request.effective_end_user.kind, self.section(policy).excluded_end_user_kinds
        return self.excluded_kind("end user", kind, excluded, "excluded_end_user_kinds")

    def max_units(self, policy: Policy) -> int | None:
        return self.section(policy).max_units_per_request

    def standing_conditions(self, policy: Policy) -> tuple[str, ...]:
        return self.section(policy).default_conditions

    # -- facts ---------------------------------------------------------------------------------------
    def needs(self, ctx: Context, command: Command) -> FactsWanted:
        state, policy, known = ctx.state, ctx.policy, ctx.facts
        section = self.section(policy)
        match command:
            case Evaluate():
                if self.denial(state, policy) is not None:
                    return FactsWanted()
                if section.screening and known.screening is None:
                    assert state.request is not None
                    return FactsWanted(
                        screening=ScreenParties(
                            parties=parties_of(state.request), threshold=section.screening_threshold
                        )
                    )
                held = known.screening is not None and bool(known.screening.matches)
                if section.mode is GateMode.AUTO and not held:
                    return FactsWanted(
                        buyer_claim=self._claim(state, policy, self._units(state, policy), True)
                    )
            case Decide(approve=True, units=units):
                wanted = units or self._units(state, policy)
                record = state.gates.get(NAME)
                if record is not None and record.proposal is not None:
                    wanted = min(
                        wanted, record.proposal.units
                    )  # the second of four eyes: no more than proposed
                return FactsWanted(buyer_claim=self._claim(state, policy, wanted, False))
            case Rescreen():
                if section.screening and not state.is_final and known.screening is None:
                    assert state.request is not None
                    return FactsWanted(
                        screening=ScreenParties(
                            parties=parties_of(state.request), threshold=section.screening_threshold
                        )
                    )
            case Compensate():
                if section.max_units_per_buyer is not None and not self.slice(state).export_released:
                    assert state.request_id is not None and state.buyer is not None
                    return FactsWanted(
                        release_buyer_claim=ReleaseClaim(
                            buyer=state.buyer, request_id=state.request_id, reason=command.reason
                        )
                    )
        return FactsWanted()

    def _claim(self, state: RequestState, policy: Policy, units: int, partial: bool) -> ClaimUnits | None:
        cap = self.section(policy).max_units_per_buyer
        if cap is None:
            return None
        assert state.request_id is not None and state.buyer is not None
        return ClaimUnits(
            buyer=state.buyer, request_id=state.request_id, units=units, cap=cap, partial=partial
        )

    def _units(self, state: RequestState, policy: Policy) -> int:
        """What an approval covers unless an officer says otherwise: capped per request."""
        return min(state.units_in_play, self.section(policy).max_units_per_request)

    # -- rules ---------------------------------------------------------------------------------------
    def on_enter(self, ctx: Context) -> list[Payload]:
        section = self.section(ctx.policy)
        payloads: list[Payload] = []
        held = False
        if section.screening:
            found = ctx.facts.screening
            if found is None:
                raise DomainError("restricted-party screening has not run for this request yet")
            payloads.append(events.PartiesScreened.model_validate(found, from_attributes=True))
            held = bool(found.matches)
            if held and section.mode is GateMode.AUTO:
                best = max(found.matches, key=lambda match: match.score)
                reason = (
                    f"{best.role} {best.party_name!r} matches {best.entry_name!r} on the {best.source} "
                    f"(score {best.score:g} >= {self.rule_prefix}.screening_threshold {found.threshold:g}, "
                    f"list {found.list_version})"
                )
                return [
                    *payloads,
                    events.GateDenied(gate=NAME, rule=f"{self.rule_prefix}.screening", reason=reason),
                ]
        if section.mode is not GateMode.AUTO or held:
            return payloads  # an officer decides; a match holds the request for one
        return payloads + self._auto_approval(ctx)

    def _auto_approval(self, ctx: Context) -> list[Payload]:
        state, section = ctx.state, self.section(ctx.policy)
        units = self._units(state, ctx.policy)
        cap = section.max_units_per_request
        note = (
            f"capped at {self.rule_prefix}.max_units_per_request = {cap}"
            if units < state.units_in_play
            else None
        )
        claim = ctx.facts.buyer_claim
        if section.max_units_per_buyer is not None:
            if claim is None or claim.request_id != state.request_id or claim.units > units:
                raise DomainError(f"an automatic export approval needs a claim against {BUYER_CAP_RULE}")
            if claim.units == 0:
                reason = (
                    f"buyer {claim.buyer!r} has no headroom left under {BUYER_CAP_RULE} = {claim.cap} "
                    f"({claim.approved_before} units already approved over its other requests)"
                )
                return [By(POLICY_ACTOR, events.GateDenied(gate=NAME, rule=BUYER_CAP_RULE, reason=reason))]
            if claim.units < units:
                units = claim.units
                note = f"capped at the buyer's remaining headroom under {BUYER_CAP_RULE} = {claim.cap}"
        else:
            claim = None
        return approval(ctx, self, units, by_policy=True, note=note, extra={"buyer_claim": claim})

    def check_approval(self, ctx: Context, command: Decide) -> None:
        state, section = ctx.state, self.section(ctx.policy)
        part = self.slice(state)
        if section.screening and part.screening is None:
            raise DomainError("restricted-party screening has not run for this request yet")
        if part.held and not (command.reason and command.reason.strip()):
            assert part.screening is not None
            hits = ", ".join(sorted({m.entry_name for m in part.screening.matches}))
            raise DomainError(
                f"reason: the request is held by restricted-party screening (matches: {hits}); "
                "an approval needs a written reason"
            )

    def approve(self, ctx: Context, command: Decide, units: int) -> list[Payload]:
        self.check_approval(ctx, command)
        state, section = ctx.state, self.section(ctx.policy)
        claim = ctx.facts.buyer_claim
        if section.max_units_per_buyer is not None:
            # The workflow claims the units from the buyer's cap first; without a matching claim
            # nobody has checked the buyer's other requests.
            if claim is None or claim.request_id != state.request_id or claim.units != units:
                raise DomainError(f"units: {units} have not been claimed against {BUYER_CAP_RULE}")
        else:
            claim = None
        note = command.reason.strip() if command.reason else None
        return approval(
            ctx,
            self,
            units,
            by_policy=False,
            conditions=command.conditions,
            note=note,
            extra={"buyer_claim": claim},
        )

    def handle(self, ctx: Context, command: Command) -> list[Payload]:
        state, section = ctx.state, self.section(ctx.policy)
        require_open(state)
        match command:
            case Rescreen():
                if not section.screening:
                    return []  # the policy screens no one: nothing to screen again
                found = ctx.facts.screening
                if found is None:
                    raise DomainError("the parties have not been screened against the new list yet")
                part = self.slice(state)
                if found.list_version in {
                    part.rescreened_with,
                    part.screening and part.screening.list_version,
                }:
                    return []  # screened against this very list already: once is enough
                rescreened = events.PartiesRescreened.model_validate(found, from_attributes=True)
                if not found.matches or state.gate is None:
                    return [rescreened]
                if gate_of(state.gate).section(ctx.policy).mode is GateMode.AUTO:
                    # Where the rules decide alone, a listed party is refused there and then.
                    reason = f"re-screening against list {found.list_version}: {_hits(found.matches)}"
                    denied = events.GateDenied(
                        gate=state.gate, rule=f"{self.rule_prefix}.screening", reason=reason
                    )
                    return [rescreened, By(POLICY_ACTOR, denied)]
                return [rescreened]
            case ClearScreeningHold(reviewer=reviewer, reason=reason):
                hold = self.slice(state).rescreen_hold
                if hold is None:
                    raise DomainError("the request is not held by re-screening: nothing to clear")
                if not ctx.policy.may_decide(reviewer, NAME):
                    raise DomainError(
                        f"reviewer {reviewer!r} may not clear a screening hold: only a {NAME} reviewer "
                        f"(policy {ctx.policy.version} [reviewers])"
                    )
                return [events.ScreeningHoldCleared(list_version=hold.list_version, reason=reason)]
        raise DomainError(f"{NAME} does not take {command.kind}")

    def compensate(self, ctx: Context, reason: str) -> list[Payload]:
        """The approval goes unused: recorded once, its units already back with the buyer's cap."""
        record = ctx.state.gates.get(NAME)
        if record is None or record.outcome != "approved" or record.units_approved is None:
            return []
        if self.slice(ctx.state).export_released:
            return []
        return [events.ExportApprovalReleased(units=record.units_approved, reason=reason)]

    def evolve(self, part: UsExportSlice, event: events.Event, state: RequestState) -> UsExportSlice:
        match event.data:
            case events.PartiesScreened():
                return part.model_copy(update={"screening": event.data})
            case events.GateApproved(gate=gate, buyer_claim=claim) if gate == NAME and claim is not None:
                return part.model_copy(update={"buyer_claim": claim})
            case events.ExportApprovalReleased():
                return part.model_copy(update={"export_released": True})
            case events.PartiesRescreened(list_version=version, matches=matches):
                hold = event.data if matches else part.rescreen_hold
                return part.model_copy(update={"rescreen_hold": hold, "rescreened_with": version})
            case events.ScreeningHoldCleared():
                return part.model_copy(update={"rescreen_hold": None})
        return part


GATE = UsExport()


def on_hold(state: RequestState) -> bool:
    """Held at us-export by a restricted-party match until an officer decides."""
    return state.gate == NAME and GATE.slice(state).held


def _hits(matches: list[Any]) -> str:
    """`buyer 'Sugon' matches 'Sugon' (Entity List, score 100)`, for each party that matched."""
    return "; ".join(
        f"{m.role} {m.party_name!r} matches {m.entry_name!r} ({m.source}, score {m.score:g})" for m in matches
    )
