"""The policy sections of the built-in gates: what a policy file says of each, read by these models.

They live apart from the gates' rules (chipclear.domain.gates) so that reading a policy imports neither
the rules nor the events and facts they use: the registry hands a policy these models until the gates
are imported (chipclear.domain.registry), and a command that only reads a policy (`chipclear screening
check`, for its threshold) starts without them (docs/performance.md, "CLI start-up"). Each gate's module
names its model as its `section_model`. A plug-in gate keeps its section beside its rules.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from typing import Annotated

from pydantic import Field

from chipclear.domain.models import PartyKind
from chipclear.domain.names import normalise_buyer
from chipclear.domain.policy import GateSection, IsoDuration, ReviewSection, VendorRule

US_EXPORT, CN_IMPORT, DOMESTIC_QUOTA = "us-export", "cn-import", "domestic-quota"


class UsExportSection(ReviewSection):
    max_units_per_request: Annotated[int, Field(ge=1)] = 75_000
    # Over all of one buyer's requests; None: no cap across requests.
    max_units_per_buyer: Annotated[int, Field(ge=1)] | None = None
    excluded_end_user_kinds: frozenset[PartyKind] = frozenset({PartyKind.MILITARY})
    # Restricted-party screening of every party before review: on unless a policy turns it off.
    screening: bool = True
    screening_threshold: Annotated[float, Field(ge=50, le=100)] = 90.0
    info_deadline: IsoDuration = timedelta(days=10)  # how long the applicant has to answer
    default_conditions: tuple[Annotated[str, Field(min_length=1, max_length=2000)], ...] = ()


class CnImportSection(ReviewSection):
    excluded_buyer_kinds: frozenset[PartyKind] = frozenset(
        {
            PartyKind.MILITARY,
            PartyKind.GOVERNMENT,
            PartyKind.CRITICAL_INFRASTRUCTURE,
            PartyKind.STATE_OWNED,
        }
    )
    # Units come from allocation batches (`chipclear batch open`): on unless a policy turns it off.
    allocate_from_batches: bool = True


class DomesticQuotaSection(GateSection):
    required_ratio: Annotated[float, Field(ge=0)] = 1.0
    deny_state_funded: bool = True
    # A request short of domestic evidence waits this long, then expires.
    evidence_deadline: IsoDuration = timedelta(days=60)
    # Public computing hubs: domestic share of the data centre's accelerators after import, > this.
    min_domestic_share: Annotated[float, Field(gt=0, lt=1)] | None = None
    # The vendors evidence may name (empty: any vendor counts).
    vendors: dict[str, VendorRule] = Field(default_factory=dict)
    # An invoice counts once, for one request of one buyer, across all requests: on unless a policy
    # turns it off.
    unique_invoices: bool = True

    @property
    def deadline(self) -> timedelta:
        return self.evidence_deadline

    def vendor(self, name: str) -> tuple[str, VendorRule] | None:
        """The vendor rule for `name`, matched without regard to case, punctuation or legal form."""
        return self._vendors_by_key.get(normalise_buyer(name))

    @cached_property
    def _vendors_by_key(self) -> dict[str, tuple[str, VendorRule]]:
        # Once per policy, not once per record judged: evidence is judged several times per update.
        return {normalise_buyer(listed): (listed, rule) for listed, rule in reversed(self.vendors.items())}


# The built-in gates' sections by gate name, in the default route's order.
BUILT_IN_SECTIONS: dict[str, type[GateSection]] = {
    US_EXPORT: UsExportSection,
    CN_IMPORT: CnImportSection,
    DOMESTIC_QUOTA: DomesticQuotaSection,
}
