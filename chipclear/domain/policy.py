"""Policy: the rules each gate applies, versioned and loaded from TOML.

Rules change faster than code (there is no official domestic ratio yet), so every threshold lives in a
file, and every decision event names the policy version it was made under.
"""

from __future__ import annotations

import tomllib
from datetime import timedelta
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from chipclear.domain.models import Gate, PartyKind


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


class DomesticQuotaPolicy(_Section):
    required_ratio: Annotated[float, Field(ge=0)] = 1.0
    deny_state_funded: bool = True
    evidence_deadline: IsoDuration = timedelta(days=60)


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Annotated[str, Field(min_length=1, max_length=64)]
    us_export: UsExportPolicy = UsExportPolicy()
    cn_import: CnImportPolicy = CnImportPolicy()
    domestic_quota: DomesticQuotaPolicy = DomesticQuotaPolicy()
    reviewers: dict[str, frozenset[Gate]] = Field(default_factory=dict)

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
