"""Domestic-quota verification: domestic accelerator purchases must cover the import.

The buyer proves domestic purchases (vendor, product, units, invoice). Each record is judged on its own
(chipclear.domain.evidence); an invoice counts once across every request, which the invoice registry
(a fact from outside) decides. Domestic units must reach ratio x imported units, a public computing hub
must stay majority domestic, and state-funded data centres take no foreign chips at all. A shortfall
holds the request until more evidence arrives or the evidence deadline passes.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from chipclear.domain.commands import AddEvidence, Command, Compensate, Decide, Submit
from chipclear.domain.errors import DomainError
from chipclear.domain.events import (
    DomesticQuotaAssessed,
    Event,
    EvidenceAdded,
    EvidenceRejected,
    GateDenied,
    PublicHubShare,
)
from chipclear.domain.evidence import (
    RejectedRecord,
    hub_shortfall,
    judge,
    local_today,
    registrable,
    required_units,
)
from chipclear.domain.facts import FactsWanted, RegisterInvoices, ReleaseInvoices
from chipclear.domain.gates.base import Context, GateRules, Payload, approval, require_open
from chipclear.domain.models import ProcurementRecord
from chipclear.domain.policy import GateMode, Policy
from chipclear.domain.sections import DOMESTIC_QUOTA, DomesticQuotaSection
from chipclear.domain.state import GateSlice, RequestState

NAME = DOMESTIC_QUOTA


class DomesticQuotaSlice(GateSlice):
    evidence: list[ProcurementRecord] = Field(default_factory=list)
    rejected_evidence: list[RejectedRecord] = Field(default_factory=list)
    assessment: DomesticQuotaAssessed | None = None

    def document(self, state: RequestState) -> dict[str, Any]:
        return {
            "domestic_quota": self.assessment.model_dump(exclude={"type"}) if self.assessment else None,
            "rejected_evidence": [r.model_dump(mode="json") for r in self.rejected_evidence],
            "evidence_records": len(self.evidence),
        }

    def describe(self, state: RequestState) -> list[str]:
        lines: list[str] = []
        a = self.assessment
        if a is not None:
            lines.append(
                f"domestic quota: {a.domestic_units} domestic units vs {a.required_units} required "
                f"(ratio {a.required_ratio} x {a.imported_units}); shortfall {a.shortfall}"
            )
            if a.public_hub is not None:
                hub = a.public_hub
                lines.append(
                    f"  public computing hub: domestic share after import {hub.share_after:.1%} "
                    f"(must exceed {hub.min_share:.0%}); short by {hub.shortfall}"
                )
            if a.shortfall and state.gate == NAME and state.deadline is not None:
                lines.append(
                    f"waiting for evidence of {a.shortfall} more domestic units until "
                    f"{state.deadline.isoformat()[:19]}; then the request expires"
                )
        lines += [f"  not counted: invoice {r.record.invoice!r}: {r.reason}" for r in self.rejected_evidence]
        return lines


class DomesticQuota(GateRules[DomesticQuotaSection, DomesticQuotaSlice]):
    name = NAME
    section_model = DomesticQuotaSection
    slice_model = DomesticQuotaSlice
    commands = (AddEvidence,)

    def denial(self, state: RequestState, policy: Policy) -> GateDenied | None:
        assert state.request is not None
        site = state.request.data_center
        if self.section(policy).deny_state_funded and site.state_funded:
            rule = f"{self.rule_prefix}.deny_state_funded"
            return GateDenied(
                gate=NAME, rule=rule, reason=f"data centre {site.name!r} is state-funded ({rule})"
            )
        return None

    # -- facts ---------------------------------------------------------------------------------------
    def needs(self, ctx: Context, command: Command) -> FactsWanted:
        state, section = ctx.state, self.section(ctx.policy)
        if not section.unique_invoices:
            return FactsWanted()
        match command:
            case Submit(request=request):
                records, already, request_id, buyer = (
                    request.domestic_procurement,
                    [],
                    request.request_id,
                    request.buyer.name,
                )
            case AddEvidence(records=records):
                assert state.request_id is not None and state.buyer is not None
                already, request_id, buyer = self.slice(state).evidence, state.request_id, state.buyer
            case Compensate():
                assert state.request_id is not None
                return FactsWanted(release_invoices=ReleaseInvoices(request_id=state.request_id))
            case _:
                return FactsWanted()
        # Only invoices that pass the policy's own rules are registered: refused evidence takes none.
        keys = registrable(records, already=already, rules=section, today=local_today(ctx.now))
        if not keys:
            return FactsWanted()
        return FactsWanted(invoices=RegisterInvoices(request_id=request_id, buyer=buyer, keys=keys))

    # -- rules ---------------------------------------------------------------------------------------
    def on_submit(self, ctx: Context) -> list[Payload]:
        """The request's own records are judged like any evidence sent later; those that count follow."""
        request = ctx.state.request
        assert request is not None
        if not request.domestic_procurement:
            return []
        accepted, rejected = self._judge(ctx, request.domestic_procurement, already=[])
        payloads: list[Payload] = [EvidenceAdded(records=accepted)] if accepted else []
        return payloads + ([EvidenceRejected(records=rejected)] if rejected else [])

    def on_enter(self, ctx: Context) -> list[Payload]:
        part = self.slice(ctx.state)
        assessment = assess(ctx.state, part.evidence, self.section(ctx.policy))
        if ctx.policy.mode(NAME) is GateMode.AUTO and assessment.shortfall == 0:
            return [assessment, *approval(ctx, self, ctx.state.units_in_play, by_policy=True)]
        return [assessment]

    def approve(self, ctx: Context, command: Decide, units: int) -> list[Payload]:
        state = ctx.state
        current = self.slice(state)
        assessment = assess(
            state.model_copy(update={"units_approved": units}), current.evidence, self.section(ctx.policy)
        )
        if assessment.shortfall:
            raise DomainError(f"domestic quota not met: {shortfall_reason(assessment)}")
        payloads: list[Payload] = [assessment] if assessment != current.assessment else []
        return payloads + super().approve(ctx, command, units)

    def handle(self, ctx: Context, command: Command) -> list[Payload]:
        assert isinstance(command, AddEvidence)
        state = ctx.state
        require_open(state)
        if not command.records:
            raise DomainError("records: at least one procurement record is needed")
        part = self.slice(state)
        accepted, rejected = self._judge(ctx, list(command.records), already=part.evidence)
        if not accepted:
            reasons = "; ".join(f"invoice {r.record.invoice!r}: {r.reason}" for r in rejected)
            raise DomainError(f"no record counts ({reasons})")
        payloads: list[Payload] = [EvidenceAdded(records=accepted)]
        payloads += [EvidenceRejected(records=rejected)] if rejected else []
        if state.gate == NAME:
            assessment = assess(state, part.evidence + accepted, self.section(ctx.policy))
            payloads.append(assessment)
            if ctx.policy.mode(NAME) is GateMode.AUTO and assessment.shortfall == 0:
                payloads += approval(ctx, self, state.units_in_play, by_policy=True)
        return payloads

    def _judge(
        self, ctx: Context, records: list[ProcurementRecord], *, already: list[ProcurementRecord]
    ) -> tuple[list[ProcurementRecord], list[RejectedRecord]]:
        section = self.section(ctx.policy)
        owners = ctx.facts.invoice_owners
        if section.unique_invoices and owners is None:
            if registrable(records, already=already, rules=section, today=local_today(ctx.now)):
                raise DomainError("the invoices have not been checked against the invoice registry")
            owners = {}
        request = ctx.state.request
        assert request is not None
        return judge(
            records,
            request_id=request.request_id,
            buyer=request.buyer.name,
            already=already,
            rules=section,
            today=local_today(ctx.now),
            owners=owners if section.unique_invoices else None,
        )

    def evolve(self, part: DomesticQuotaSlice, event: Event, state: RequestState) -> DomesticQuotaSlice:
        match event.data:
            case EvidenceAdded(records=records):
                return part.model_copy(update={"evidence": part.evidence + records})
            case EvidenceRejected(records=rejected):
                return part.model_copy(update={"rejected_evidence": part.rejected_evidence + rejected})
            case DomesticQuotaAssessed():
                return part.model_copy(update={"assessment": event.data})
        return part


def assess(
    state: RequestState, evidence: list[ProcurementRecord], section: DomesticQuotaSection
) -> DomesticQuotaAssessed:
    ratio = section.required_ratio
    imported = state.units_in_play
    required = required_units(ratio, imported)
    domestic = sum(record.units for record in evidence)
    hub = _public_hub(state, evidence, section, imported)
    shortfall = max(0, required - domestic, hub.shortfall if hub else 0)
    return DomesticQuotaAssessed(
        imported_units=imported,
        domestic_units=domestic,
        required_ratio=ratio,
        required_units=required,
        shortfall=shortfall,
        public_hub=hub,
    )


def shortfall_reason(a: DomesticQuotaAssessed) -> str:
    """Which rule is short, and by how much, in a reviewer's words."""
    parts = []
    if a.domestic_units < a.required_units:
        parts.append(
            f"{a.domestic_units} domestic units < {a.required_units} required "
            f"(ratio {a.required_ratio} x {a.imported_units})"
        )
    if a.public_hub is not None and a.public_hub.shortfall:
        hub = a.public_hub
        parts.append(
            f"the public computing hub's domestic share after import would be {hub.share_after:.2%}, "
            f"not above domestic_quota.min_domestic_share {hub.min_share}"
        )
    return "; ".join(parts) + f"; short by {a.shortfall}"


def _public_hub(
    state: RequestState, evidence: list[ProcurementRecord], section: DomesticQuotaSection, imported: int
) -> PublicHubShare | None:
    """A public computing hub must stay majority domestic after the import (policy min share)."""
    min_share = section.min_domestic_share
    assert state.request is not None
    site = state.request.data_center
    if min_share is None or not site.public_computing_hub:
        return None
    # Evidence counts towards the hub when delivered there (or no site is named on the record).
    added = sum(
        r.units for r in evidence if r.data_center is None or r.data_center.casefold() == site.name.casefold()
    )
    domestic = site.installed_domestic + added
    total = domestic + site.installed_foreign + imported
    return PublicHubShare(
        installed_domestic=site.installed_domestic,
        installed_foreign=site.installed_foreign,
        domestic_added=added,
        imported_units=imported,
        share_after=round(domestic / total, 4) if total else 0.0,
        min_share=min_share,
        shortfall=hub_shortfall(min_share, domestic, total),
    )


GATE = DomesticQuota()
