"""Policy: the rules each gate applies, versioned and loaded from TOML.

Rules change faster than code (there is no official domestic ratio yet), so every threshold lives in a
file, and every decision event names the policy version it was made under.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import os
import re
import tomllib
from datetime import datetime, timedelta
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic_core import to_jsonable_python

from chipclear.domain import input_gate, registry
from chipclear.domain.input_gate import check_plain
from chipclear.domain.limits import MAX_POLICY_BYTES, cut, cut_text
from chipclear.domain.models import GateName
from chipclear.domain.signing import RESERVED_ACTORS, PublicKeyText


def _iso_duration(value: Any) -> Any:
    # Only ISO 8601 text is accepted: a bare number would silently mean seconds.
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str) or not value.startswith("P"):
        raise ValueError(f"expected an ISO 8601 duration such as 'P30D' or 'PT2S', got {value!r}")
    return value


# No rule of a trade-compliance process runs longer than a licence's life: a deadline past this is a
# typo (and `P999999999D` would overflow the first date computed from it, failing every workflow task).
LONGEST = timedelta(days=3653)


def _bounded(value: timedelta) -> timedelta:
    if value > LONGEST:
        raise ValueError(f"{value.days} days is longer than the 10 years (3653 days) a policy may set")
    return value


IsoDuration = Annotated[
    timedelta, BeforeValidator(_iso_duration), Field(gt=timedelta(0)), AfterValidator(_bounded)
]


class GateMode(StrEnum):
    MANUAL = "manual"  # a reviewer decides; rules only deny
    AUTO = "auto"  # rules decide alone: demos and benchmarks


class GateSection(BaseModel):
    """What every gate's policy section says: its mode, its deadline and (optionally) a review SLA.

    A gate's module extends this with its own rules; the section's key in the file is the gate's name
    with underscores (`[us_export]` for `us-export`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: GateMode = GateMode.MANUAL
    # Escalate when undecided by then; time waiting for the applicant's answer is not counted.
    review_sla: IsoDuration | None = None

    @property
    def deadline(self) -> timedelta:
        """How long the gate may stay open before the request expires there."""
        raise NotImplementedError


class ReviewSection(GateSection):
    """A gate decided by review: it expires if undecided by its decision deadline."""

    decision_deadline: IsoDuration = timedelta(days=90)

    @property
    def deadline(self) -> timedelta:
        return self.decision_deadline


class VendorRule(BaseModel):
    """A vendor the policy knows: whether its accelerators count as domestic, and which products."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    domestic: bool
    products: tuple[Annotated[str, Field(min_length=1)], ...] = ()  # empty: any product of the vendor


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
            years, months, days = (
                (int(part or 0) for part in found.groups()) if len(value) < 40 else (0, 0, 0)
            )
            if not (years or months or days):
                raise ValueError(f"a period must be longer than nothing, got {cut(value)}")
            if (12 * years + months) * 31 + days > LONGEST.days:
                raise ValueError(f"{value} is longer than the 10 years a policy may set")
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


class Person(BaseModel):
    """Someone who signs acts: `gates` they may decide (none: they act for applicants only) and the
    public key their signatures are checked against. In the file: `[reviewers.alice]`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    gates: frozenset[GateName] = frozenset()
    # Exporters this person acts for: they record its shipments under a licence and declare its US
    # end-user shipments (the 50% rule). Names as the requests write them, compared as company names.
    exporters: frozenset[Annotated[str, Field(min_length=1, max_length=200)]] = frozenset()
    # `ed25519:<base64>`; `file:keys/alice.pub` in the file is read (under $CHIPCLEAR_HOME) when loaded.
    key: PublicKeyText | None = None
    # Keys this person signed with before (rotated out): `audit verify` still accepts their past acts;
    # no new act is accepted under them.
    retired_keys: tuple[PublicKeyText, ...] = ()


class Duties(BaseModel):
    """Separation of duties: who may not decide what, whatever their gates say."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    distinct_reviewers: bool = True  # one person decides at most one gate of a request
    submitter_may_decide: bool = False  # the person who submitted a request decides none of its gates
    # An us-export approval above this many units takes effect only when a second reviewer approves.
    four_eyes_above: Annotated[int, Field(ge=1)] | None = None


class Recorder(BaseModel):
    """The worker's key: it seals every stored event and signs checkpoints. Listed here (several
    while a key is rotated) so that `audit verify` trusts no key it finds in the store itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    keys: tuple[PublicKeyText, ...] = ()


def section_key(gate: str) -> str:
    """The policy file's key for a gate's section: `us-export` -> `us_export`."""
    return gate.replace("-", "_")


DEFAULT_ROUTE = ("us-export", "cn-import", "domestic-quota")
_FIXED_KEYS = frozenset(
    {"version", "route", "reviewers", "duties", "recorder", "licence_validity", "sections"}
)


class Policy(BaseModel):
    """Every rule a request is decided by. Recorded whole in each request's history, every value
    written out, so a replay never reads a default of the code that replays it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Annotated[str, Field(min_length=1, max_length=64)]
    # The gates a request walks, in order; recorded with each request when it is submitted.
    route: Annotated[tuple[GateName, ...], Field(min_length=1)] = DEFAULT_ROUTE
    reviewers: dict[str, Person] = Field(default_factory=dict)
    duties: Duties = Duties()
    recorder: Recorder = Recorder()
    licence_validity: CalendarPeriod = CalendarPeriod(years=4)
    # One section per gate of the route, typed by the gate's own model (see chipclear.domain.gates).
    sections: dict[str, SerializeAsAny[GateSection]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _gather_sections(cls, raw: Any) -> Any:
        """Each gate's section, from the key the file uses for it, validated by that gate's model."""
        if not isinstance(raw, dict) or "sections" in raw:
            return raw
        route = raw.get("route", DEFAULT_ROUTE)
        if not isinstance(route, list | tuple) or not all(isinstance(g, str) for g in route):
            return raw  # the field validator names the problem
        fixed = {key: value for key, value in raw.items() if key in _FIXED_KEYS}
        sections: dict[str, Any] = {}
        for gate in route:
            model = section_model(gate)
            section = raw.get(section_key(gate), {})
            if not isinstance(section, GateSection):
                try:
                    section = model.model_validate(section)
                except ValidationError as exc:
                    raise ValueError(describe_validation_error(exc, prefix=section_key(gate))) from None
            sections[gate] = section
        known = _FIXED_KEYS | {section_key(gate) for gate in route}
        unknown = sorted(set(raw) - known)
        if unknown:
            gates = ", ".join(route)
            raise ValueError(f"{unknown[0]}: unknown key (no gate of the route [{gates}] has that section)")
        return {**fixed, "sections": sections}

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        if len(set(self.route)) != len(self.route):
            raise ValueError(f"route: a gate is listed twice ({', '.join(self.route)})")
        for reviewer, person in self.reviewers.items():
            if reviewer in RESERVED_ACTORS:
                raise ValueError(f"reviewers.{reviewer}: the name is reserved for the system's own acts")
            strangers = sorted(person.gates - set(self.route))
            if strangers:
                route = ", ".join(self.route)
                raise ValueError(f"reviewers.{reviewer}: gate {strangers[0]!r} is not on the route ({route})")
        return self

    @model_serializer(mode="wrap")
    def _flat(self, handler: Any) -> dict[str, Any]:
        """Written back in the file's own shape, one top-level key per gate section."""
        dumped: dict[str, Any] = handler(self)
        sections = dumped.pop("sections")
        return dumped | {section_key(gate): section for gate, section in sections.items()}

    def section(self, gate: str) -> GateSection:
        try:
            return self.sections[gate]
        except KeyError:
            raise KeyError(f"gate {gate!r} is not on this policy's route ({', '.join(self.route)})") from None

    def mode(self, gate: str) -> GateMode:
        return self.section(gate).mode

    def may_decide(self, reviewer: str, gate: str) -> bool:
        person = self.reviewers.get(reviewer)
        return person is not None and gate in person.gates

    def person(self, name: str) -> Person | None:
        return self.reviewers.get(name)

    def unkeyed_reviewers(self) -> list[str]:
        """Reviewers of a manual gate with no key: nobody could sign for them, so a worker refuses."""
        manual = {gate for gate in self.route if self.mode(gate) is GateMode.MANUAL}
        return sorted(name for name, p in self.reviewers.items() if p.key is None and p.gates & manual)

    def with_section(self, gate: str, **changes: Any) -> Policy:
        """A copy with some of one gate's rules changed (benchmarks, tests)."""
        section = self.section(gate).model_copy(update=changes)
        return self.model_copy(update={"sections": {**self.sections, gate: section}})


def section_model(gate: str) -> type[GateSection]:
    try:
        return registry.section_model(gate)
    except KeyError:
        known = ", ".join(sorted(registry.registered()))
        raise ValueError(f"route: unknown gate {gate!r} (known gates: {known})") from None


class PolicyError(ValueError):
    """A policy file that cannot be read or breaks the schema; the message names the field."""


def require_keys(policy: Policy) -> Policy:
    """A worker's check: every reviewer of a manual gate has a key, or nobody could sign for them."""
    unkeyed = policy.unkeyed_reviewers()
    if unkeyed:
        names = ", ".join(unkeyed)
        raise PolicyError(
            f"policy {policy.version}: reviewers of a manual gate without a key: {names} "
            '(give each `key = "ed25519:..."` or `key = "file:keys/NAME.pub"`; `chipclear keys new NAME`)'
        )
    return policy


BUNDLED = ("default", "auto")


def bundled_policy_path(name: str) -> Path:
    return Path(str(resources.files("chipclear") / "policies" / f"{name}.toml"))


def _read_key_files(raw: dict[str, Any], home: Path | None) -> None:
    """`key = "file:keys/alice.pub"`: the public key is read now, so the policy recorded with each
    request holds the key itself, never a path that may later hold another. A file not there (yet)
    leaves the person without a key: a worker refuses such a policy for a manual gate's reviewer."""
    for table in (raw.get("reviewers") or {}).values():
        if isinstance(table, dict) and str(table.get("key", "")).startswith("file:"):
            table["key"] = _read_public(table["key"], home)
            if table["key"] is None:
                del table["key"]
    recorder = raw.get("recorder")
    if isinstance(recorder, dict) and isinstance(recorder.get("keys"), list):
        found = [_read_public(k, home) if str(k).startswith("file:") else k for k in recorder["keys"]]
        recorder["keys"] = [k for k in found if k is not None]


def _read_public(reference: str, home: Path | None) -> str | None:
    relative = Path(reference.removeprefix("file:"))
    target = relative if relative.is_absolute() else (home or Path(".chipclear")) / relative
    try:
        words = target.read_text(encoding="utf-8").split()
    except OSError:
        return None
    return words[-1] if words else ""


def load_policy(path: str | Path | None = None, *, home: Path | None = None) -> Policy:
    """Load a policy file; `None` means the bundled default, a bare bundled name (`auto`) is allowed.

    `home` is where `file:` keys are read from ($CHIPCLEAR_HOME).
    """
    if path is None or str(path) in BUNDLED:
        path = bundled_policy_path(str(path or "default"))
    path = Path(path)
    shown = cut_text(str(path))
    if not os.path.lexists(path):
        raise PolicyError(f"policy file {shown} does not exist")
    try:
        # Through the input gate: a regular UTF-8 file of bounded size (not a directory, a FIFO,
        # /dev/zero or Latin-1 text), its numbers finite and its text values bounded.
        raw = tomllib.loads(input_gate.read_text(path, limit=MAX_POLICY_BYTES, what="policy file"))
        check_plain(raw, f"policy file {shown}")
        _within_range(raw, f"policy file {shown}")
    except input_gate.InputRefused as exc:
        raise PolicyError(str(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"policy file {shown} is not valid TOML: {exc}") from exc
    _read_key_files(raw, home)
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError(f"policy file {path}: {describe_validation_error(exc)}") from exc


# No count, cap or ratio of a policy is anywhere near this: a larger number is a typo, and 2**70 would
# overflow the sums the gates make.
LARGEST_NUMBER = 10**9


def _within_range(raw: Any, where: str) -> None:
    """Every number of a policy file is finite (check_plain) and within ±LARGEST_NUMBER; each gate's
    section model then applies its own range (a ratio ≥ 0, a threshold 50-100)."""
    stack: list[tuple[str, Any]] = [("", raw)]
    while stack:
        field, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{field}.{key}" if field else key, item) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((f"{field}.{n}", item) for n, item in enumerate(value))
        elif isinstance(value, int | float) and not isinstance(value, bool) and abs(value) > LARGEST_NUMBER:
            raise input_gate.InputRefused(
                f"{where}: {field}: {cut(value)} is out of range (at most {LARGEST_NUMBER})"
            )


def content_hash(policy: Policy) -> str:
    """sha256 of the policy's canonical JSON (every value written out, keys sorted, no white space).

    The canonical form, not the file's bytes: what a request is decided by is the policy as loaded
    (with `file:` keys read in, defaults filled), which is also what each request's history records;
    a comment or a reordered table changes no rule and so no hash, while a changed key file does."""
    canonical = json.dumps(
        to_jsonable_python(_sets_sorted(policy.model_dump())),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _sets_sorted(value: Any) -> Any:
    """The dump with every set as a sorted list: a set's order follows the process's hash seed, so
    without this each worker process would hash the same policy differently."""
    if isinstance(value, set | frozenset):
        items = [_sets_sorted(item) for item in value]
        return sorted(items, key=lambda item: json.dumps(to_jsonable_python(item), sort_keys=True))
    if isinstance(value, dict):
        return {key: _sets_sorted(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_sets_sorted(item) for item in value]
    return value


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming the field, the value and what is allowed."""
    lines = []
    for error in exc.errors():
        if error["type"] == "value_error" and not error["loc"] and not prefix:
            lines.append(str(error["ctx"]["error"]))  # already names its field (a gate's section)
            continue
        field = ".".join(str(part) for part in [*([prefix] if prefix else []), *error["loc"]]) or "(document)"
        value = error.get("input")
        # A value is quoted cut short: a 1 MB name must not come back whole in the message.
        shown = "" if isinstance(value, dict | list) else f" (got {cut(value)})"
        lines.append(f"{cut_text(field, 100)}: {cut_text(str(error['msg']), 200)}{shown}")
    return "; ".join(lines)
