"""The one small protocol every gate implements, and the helpers gates share.

A gate is a module with one `GateRules` object: its name, its policy section, its slice of a request's
state, and its rules. The decider core (chipclear.domain.decider) knows only this protocol; it never
names a gate. The route a request walks is data (the policy's `route`, recorded with each request).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Generic, TypeVar, cast

from chipclear.domain.commands import Command, Decide
from chipclear.domain.errors import DomainError
from chipclear.domain.events import Event, EventData, GateApproved, GateDenied, GateOpened, LicenseIssued
from chipclear.domain.facts import NONE, Facts, FactsWanted
from chipclear.domain.policy import GateMode, GateSection, Policy, section_key
from chipclear.domain.registry import gate_of
from chipclear.domain.state import GateSlice, RequestState

POLICY_ACTOR = "policy"
LEDGER_ACTOR = "allocation-ledger"


@dataclass(frozen=True)
class By:
    """An event someone other than the command's sender caused: the policy's rules (an approval once
    evidence suffices), or the allocation ledger's answer."""

    actor: str
    data: EventData


Payload = EventData | By

S = TypeVar("S", bound=GateSection)
L = TypeVar("L", bound=GateSlice)


@dataclass(frozen=True)
class Context:
    """What a rule may look at: the request, the policy, the facts fetched for this command, the time."""

    state: RequestState
    policy: Policy
    facts: Facts
    now: datetime


class GateRules(Generic[S, L]):
    """One gate. Subclasses set the class attributes and override the rules that apply to them;
    the defaults describe a gate a reviewer decides, with no rule of its own."""

    name: ClassVar[str]
    section_model: ClassVar[type[GateSection]]
    slice_model: ClassVar[type[GateSlice]] = GateSlice
    commands: ClassVar[tuple[type, ...]] = ()  # gate-specific commands this gate decides
    # Whether `[duties] four_eyes_above` applies: a large approval here needs a second reviewer.
    four_eyes: ClassVar[bool] = False

    # -- reading its own parts ----------------------------------------------------------------------
    def section(self, policy: Policy) -> S:
        return cast(S, policy.section(self.name))

    def slice(self, state: RequestState) -> L:
        found = state.slices.get(self.name)
        return cast(L, found if found is not None else self.slice_model())

    @property
    def rule_prefix(self) -> str:
        """How rules of this gate are named in reasons: `us_export.screening`."""
        return section_key(self.name)

    # -- the protocol: each has a default ------------------------------------------------------------
    def status(self, state: RequestState) -> str:
        """What `status` shows while the request is at this gate."""
        return f"{section_key(self.name)}_review"

    def statuses(self) -> tuple[str, ...]:
        """Every status `status` may return: what `list --status` accepts for this gate."""
        return (f"{section_key(self.name)}_review",)

    def opened(self, policy: Policy, now: datetime) -> GateOpened:
        section = self.section(policy)
        sla = section.review_sla
        return GateOpened(
            gate=self.name, deadline=now + section.deadline, review_due=now + sla if sla else None
        )

    def info_deadline(self, policy: Policy) -> timedelta | None:
        """How long the applicant has to answer a reviewer's question; None: this gate asks none."""
        return None

    def denial(self, state: RequestState, policy: Policy) -> GateDenied | None:
        """A rule that denies the request at this gate whatever anyone says, or None."""
        return None

    def excluded_kind(self, role: str, kind: str, excluded: frozenset[Any], key: str) -> GateDenied | None:
        """For `denial`: the denial for a party whose kind the policy excludes at this gate (`role` names
        the party, `key` the policy's list)."""
        if kind not in excluded:
            return None
        rule = f"{self.rule_prefix}.{key}"
        return GateDenied(gate=self.name, rule=rule, reason=f"{role} kind {kind} is in {rule}")

    def needs(self, ctx: Context, command: Command) -> FactsWanted:
        """Facts from outside that `command` needs at this gate, given those already known (`ctx.facts`)."""
        return FactsWanted()

    def on_submit(self, ctx: Context) -> list[Payload]:
        """Events this gate adds when the request is submitted (before the first gate opens)."""
        return []

    def on_enter(self, ctx: Context) -> list[Payload]:
        """What the rules decide when the request enters this gate (approvals only in auto mode)."""
        if ctx.policy.mode(self.name) is GateMode.AUTO:
            return approval(ctx, self, ctx.state.units_in_play, by_policy=True)
        return []

    def max_units(self, policy: Policy) -> int | None:
        """The most units one approval at this gate may give, or None."""
        return None

    def standing_conditions(self, policy: Policy) -> tuple[str, ...]:
        """Conditions the policy attaches to every approval at this gate."""
        return ()

    def check_approval(self, ctx: Context, command: Decide) -> None:
        """This gate's own preconditions for a reviewer's approval (a four-eyes proposal must meet
        them too); raises DomainError naming the rule."""

    def approve(self, ctx: Context, command: Decide, units: int) -> list[Payload]:
        """A reviewer's approval of `units` (already checked against what is in play): this gate's own
        checks, then the approval. Raises DomainError naming the rule that refuses it."""
        self.check_approval(ctx, command)
        note = command.reason.strip() if command.reason else None
        return approval(ctx, self, units, by_policy=False, conditions=command.conditions, note=note)

    def holds(self, state: RequestState) -> str | None:
        """Why no gate of the route may approve now (a hold this gate keeps on the whole request), or
        None. Checked by the core before every reviewer's approval, at any gate."""
        return None

    def handle(self, ctx: Context, command: Command) -> list[Payload]:
        """A command of this gate's own (`commands`)."""
        raise DomainError(f"gate {self.name} has no command {type(command).__name__}")

    def compensate(self, ctx: Context, reason: str) -> list[Payload]:
        """Once the request ended unlicensed: events recording what this gate gave back."""
        return []

    def evolve(self, part: L, event: Event, state: RequestState) -> L:
        """Fold one event into this gate's slice; most events do not concern it."""
        return part


def approval(
    ctx: Context,
    gate: GateRules[S, L],
    units: int,
    *,
    by_policy: bool,
    conditions: list[str] | tuple[str, ...] = (),
    note: str | None = None,
    extra: dict[str, object] | None = None,
) -> list[Payload]:
    """An approval, then the next gate of the route opens, or after the last the licence is issued."""
    state, policy = ctx.state, ctx.policy
    rule = f"{gate.rule_prefix}.mode = auto" if by_policy else None
    # The policy's standing conditions ride on every approval, first, whoever approves; a condition
    # given twice is one condition.
    conditions = list(dict.fromkeys([*gate.standing_conditions(policy), *conditions]))
    approved = GateApproved.model_validate(
        {
            "gate": gate.name,
            "units_approved": units,
            "conditions": conditions,
            "note": note,
            "rule": rule,
            **(extra or {}),
        }
    )
    following = state.next_gate
    payloads: list[EventData]
    if following is not None:
        payloads = [approved, gate_of(following).opened(policy, ctx.now)]
    else:
        assert state.request_id is not None
        licence = LicenseIssued(
            licence_id=f"LIC-{state.request_id}",
            units=units,
            conditions=list(dict.fromkeys([*state.conditions, *conditions])),
            valid_until=policy.licence_validity.after(ctx.now),
        )
        payloads = [approved, licence]
    return [By(POLICY_ACTOR, p) for p in payloads] if by_policy else list(payloads)


def require_at(state: RequestState, gate: str) -> None:
    require_open(state)
    if state.gate != gate:
        raise DomainError(f"request is at {state.gate or state.status}, not at gate {gate}")


def require_open(state: RequestState) -> None:
    if state.status is None:
        raise DomainError("request has not been submitted")
    if state.is_final:
        raise DomainError(f"request is already final (status {state.status})")


NewId = Callable[[], str]
__all__ = [
    "LEDGER_ACTOR",
    "NONE",
    "POLICY_ACTOR",
    "By",
    "Context",
    "GateRules",
    "NewId",
    "Payload",
    "approval",
]
