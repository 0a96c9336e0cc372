"""Policy: the rules each gate applies, versioned and loaded from TOML.

Rules change faster than code (there is no official domestic ratio yet), so every threshold lives in a
file, and every decision event names the policy version it was made under.
"""

from __future__ import annotations

import calendar
import re
import tomllib
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_serializer,
    model_validator,
)

from chipclear.domain.models import Gate, PartyKind
from chipclear.domain.names import normalise_buyer


def _iso_duration(value: Any) -> Any:
    # Only ISO 8601 text is accepted: a bare number would silently mean seconds.
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str) or not value.startswith("P"):
        raise ValueError(f"expected an ISO 8601 duration such as 'P30D' or 'PT2S', got {value!r}")
    return value


IsoDuration = Annotated[timedelta, BeforeValidator(_iso_duration), Field(gt=timedelta(0))]


class GateMode(StrEnum):
    MANUAL = "manual"  # a reviewer decides; rules only deny
    AUTO = "auto"  # rules decide alone: demos and benchmarks


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: GateMode = GateMode.MANUAL


class UsExportPolicy(_Section):
    max_units_per_request: Annotated[int, Field(ge=1)] = 75_000
    # Over all of one buyer's requests; None: no cap across requests.
    max_units_per_buyer: Annotated[int, Field(ge=1)] | None = None
    excluded_end_user_kinds: frozenset[PartyKind] = frozenset({PartyKind.MILITARY})
    decision_deadline: IsoDuration = timedelta(days=90)
    # The features below are off unless the file turns them on, so a request whose recorded policy
    # predates them replays exactly as it ran.
    screening: bool = False  # restricted-party screening of every party before review
    screening_threshold: Annotated[float, Field(ge=50, le=100)] = 90.0
    # Escalate when undecided by then; time waiting for the applicant's answer is not counted.
    review_sla: IsoDuration | None = None
    info_deadline: IsoDuration = timedelta(days=10)  # how long the applicant has to answer
    default_conditions: tuple[Annotated[str, Field(min_length=1, max_length=2000)], ...] = ()


class CnImportPolicy(_Section):
    excluded_buyer_kinds: frozenset[PartyKind] = frozenset(
        {
            PartyKind.MILITARY,
            PartyKind.GOVERNMENT,
            PartyKind.CRITICAL_INFRASTRUCTURE,
            PartyKind.STATE_OWNED,
        }
    )
    decision_deadline: IsoDuration = timedelta(days=90)
    # Off unless the file says so: a request whose recorded policy predates allocation batches must
    # replay exactly as it ran.
    allocate_from_batches: bool = False


class VendorRule(BaseModel):
    """A vendor the policy knows: whether its accelerators count as domestic, and which products."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    domestic: bool
    products: tuple[Annotated[str, Field(min_length=1)], ...] = ()  # empty: any product of the vendor


class DomesticQuotaPolicy(_Section):
    required_ratio: Annotated[float, Field(ge=0)] = 1.0
    deny_state_funded: bool = True
    evidence_deadline: IsoDuration = timedelta(days=60)
    # Off unless the file says so, like the us-export features: a request recorded under an older
    # policy replays as it ran.
    # Public computing hubs: domestic share of the data centre's accelerators after import, > this.
    min_domestic_share: Annotated[float, Field(gt=0, lt=1)] | None = None
    # The vendors evidence may name (empty: any vendor counts, as before vendor lists existed).
    vendors: dict[str, VendorRule] = Field(default_factory=dict)
    # An invoice counts once, for one request of one buyer, across all requests.
    unique_invoices: bool = False

    def vendor(self, name: str) -> tuple[str, VendorRule] | None:
        """The vendor rule for `name`, matched without regard to case, punctuation or legal form."""
        return self._vendors_by_key.get(normalise_buyer(name))

    @cached_property
    def _vendors_by_key(self) -> dict[str, tuple[str, VendorRule]]:
        # Once per policy, not once per record judged: evidence is judged several times per update.
        return {normalise_buyer(listed): (listed, rule) for listed, rule in reversed(self.vendors.items())}


class CalendarPeriod(BaseModel):
    """A period in calendar terms (`P4Y`: four years to the day), unlike a fixed timedelta."""

    model_config = ConfigDict(frozen=True)
    years: int = 0
    months: int = 0
    days: int = 0

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, str):
            found = re.fullmatch(r"P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)D)?", value)
            if not found or value == "P":
                raise ValueError(
                    f"expected an ISO 8601 period in years, months, days such as 'P4Y', got {value!r}"
                )
            years, months, days = (int(part or 0) for part in found.groups())
            if not (years or months or days):
                raise ValueError(f"a period must be longer than nothing, got {value!r}")
            return {"years": years, "months": months, "days": days}
        return value

    @model_serializer
    def _text(self) -> str:
        return "P" + "".join(
            f"{n}{unit}" for n, unit in ((self.years, "Y"), (self.months, "M"), (self.days, "D")) if n
        )

    def after(self, moment: datetime) -> datetime:
        """`moment` plus this period; 29 February plus a year is 28 February."""
        month_index = moment.month - 1 + self.months + 12 * self.years
        year, month = moment.year + month_index // 12, month_index % 12 + 1
        day = min(moment.day, calendar.monthrange(year, month)[1])
        return moment.replace(year=year, month=month, day=day) + timedelta(days=self.days)


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Annotated[str, Field(min_length=1, max_length=64)]
    us_export: UsExportPolicy = UsExportPolicy()
    cn_import: CnImportPolicy = CnImportPolicy()
    domestic_quota: DomesticQuotaPolicy = DomesticQuotaPolicy()
    reviewers: dict[str, frozenset[Gate]] = Field(default_factory=dict)
    licence_validity: CalendarPeriod = CalendarPeriod(years=4)

    def mode(self, gate: Gate) -> GateMode:
        return self.section(gate).mode

    def section(self, gate: Gate) -> _Section:
        match gate:
            case Gate.US_EXPORT:
                return self.us_export
            case Gate.CN_IMPORT:
                return self.cn_import
            case Gate.DOMESTIC_QUOTA:
                return self.domestic_quota

    def deadline(self, gate: Gate) -> timedelta:
        match gate:
            case Gate.US_EXPORT:
                return self.us_export.decision_deadline
            case Gate.CN_IMPORT:
                return self.cn_import.decision_deadline
            case Gate.DOMESTIC_QUOTA:
                return self.domestic_quota.evidence_deadline

    def may_decide(self, reviewer: str, gate: Gate) -> bool:
        return gate in self.reviewers.get(reviewer, frozenset())


class PolicyError(ValueError):
    """A policy file that cannot be read or breaks the schema; the message names the field."""


BUNDLED = ("default", "auto")


def bundled_policy_path(name: str) -> Path:
    return Path(str(resources.files("chipclear") / "policies" / f"{name}.toml"))


def load_policy(path: str | Path | None = None) -> Policy:
    """Load a policy file; `None` means the bundled default, a bare bundled name (`auto`) is allowed."""
    if path is None or str(path) in BUNDLED:
        path = bundled_policy_path(str(path or "default"))
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PolicyError(f"policy file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"policy file {path} is not valid TOML: {exc}") from exc
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError(f"policy file {path}: {describe_validation_error(exc)}") from exc


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming the field, the value and what is allowed."""
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(document)"
        value = error.get("input")
        shown = "" if isinstance(value, dict | list) else f" (got {value!r})"
        lines.append(f"{field}: {error['msg']}{shown}")
    return "; ".join(lines)
