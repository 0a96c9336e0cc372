"""Driving one request through the pure decider, command by command, as the workflow does: ask `needs`
which outside facts the command wants, answer them from a `World`, decide once, fold.

The world is made of the same pure parts the real owners run (the allocation ledger, the buyer's cap,
an invoice registry), so by default everyone says yes: screening finds nothing (list "test-list"), the
buyer's claim is granted in full with nothing approved before, every invoice registers to the request
asking, and batch "B1" grants every reservation in full. A test changes the world to make it say
otherwise: `World(matches=[...])`, `world.claimed_elsewhere(70_000)`, `World(ledger=LedgerState())`,
`world.register(...)`; or passes `facts=` to decide with exactly those facts and ask nobody.

Decider tests subclass `Run` only to give `now` their own default.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import pytest

from chipclear.domain.allocation import (
    BatchSpec,
    LedgerState,
    OpenBatch,
    Release,
    Released,
    Reservation,
    UnitsGranted,
    decide_ledger,
    evolve_ledger,
)
from chipclear.domain.buyer_cap import BuyerCapState, BuyerClaim, apply_claim, apply_release, check_claim
from chipclear.domain.commands import (
    AddEvidence,
    Command,
    Decide,
    Evaluate,
    PersonAct,
    RequestInfo,
    Respond,
    Submit,
    Withdraw,
)
from chipclear.domain.decider import decide, needs
from chipclear.domain.errors import DomainError
from chipclear.domain.events import Event
from chipclear.domain.evidence import InvoiceOwner
from chipclear.domain.facts import NONE, Facts, FactsWanted, Screening, provisional
from chipclear.domain.models import MAX_UNITS, ProcurementRecord, invoice_key
from chipclear.domain.names import normalise_buyer
from chipclear.domain.policy import Policy
from chipclear.domain.screening import ScreeningMatch
from chipclear.domain.state import RequestState, evolve, fold
from tests import keys

# The reviewers tests.factories.make_policy names for each gate.
REVIEWER = {"us-export": "alice", "cn-import": "wang", "domestic-quota": "wang"}
LIST_VERSION = "test-list"
BATCH = "B1"
BUYER = "ByteDance Ltd."  # the buyer of tests.factories.make_request
OPENED = datetime(2026, 1, 1, tzinfo=UTC)  # when the default world's batch opened
FREED = "(ended unlicensed)"  # the owner the event store names for an invoice a request freed
# Commands a person sends: the workflow dry-runs them with provisional facts before asking the world.
HUMAN = (Decide, AddEvidence, Withdraw, RequestInfo, Respond)


class Ids:
    """A counter-based `new_id`: deterministic event ids."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"evt-{next(self._counter):06d}"


def ledger_with(*batches: BatchSpec, at: datetime = OPENED) -> LedgerState:
    """An allocation ledger with these batches open (none: every reservation queues)."""
    state = LedgerState()
    for batch in batches:
        for event in decide_ledger(state, OpenBatch(batch=batch, actor="wang"), at):
            state = evolve_ledger(state, event)
    return state


def default_ledger() -> LedgerState:
    return ledger_with(BatchSpec(batch_id=BATCH, capacity=100 * MAX_UNITS))


@dataclass
class World:
    """Everything outside one request that a command may ask about, answering as its owner would."""

    matches: list[ScreeningMatch] = field(default_factory=list)  # what screening finds
    list_version: str = LIST_VERSION
    ledger: LedgerState = field(default_factory=default_ledger)
    caps: dict[str, BuyerCapState] = field(default_factory=dict)  # one owner per buyer (normalised)
    invoices: dict[str, InvoiceOwner] = field(default_factory=dict)  # invoice key -> owner
    asked: list[FactsWanted] = field(default_factory=list)  # every question, in order

    # -- changing the world ----------------------------------------------------------------------
    def claimed_elsewhere(self, units: int, *, buyer: str = BUYER, request_id: str = "req-elsewhere") -> None:
        """Another request of `buyer` already holds `units` of its cap."""
        key = normalise_buyer(buyer)
        claim = BuyerClaim(buyer=buyer, request_id=request_id, units=units, cap=units, approved_before=0)
        self.caps[key] = apply_claim(self.caps.get(key, BuyerCapState()), claim)

    def register(self, *records: ProcurementRecord, request_id: str, buyer: str = BUYER) -> None:
        """These invoices already belong to `request_id`."""
        for record in records:
            self.invoices[invoice_key(record)] = InvoiceOwner(request_id=request_id, buyer=buyer)

    def open_batch(self, batch: BatchSpec, at: datetime) -> list[UnitsGranted]:
        """A batch opens and serves the queue; the grants it made."""
        events = decide_ledger(self.ledger, OpenBatch(batch=batch, actor="wang"), at)
        for event in events:
            self.ledger = evolve_ledger(self.ledger, event)
        return [event for event in events if isinstance(event, UnitsGranted)]

    def reservation(self, request_id: str) -> Reservation | None:
        """What the ledger says to `request_id` now (a later grant, once a batch serves the queue)."""
        return self.ledger.answer(request_id, 0)

    # -- answering ---------------------------------------------------------------------------------
    def answer(self, wanted: FactsWanted, now: datetime) -> Facts:
        """Each wanted fact, in the workflow's order. An owner's refusal (no headroom) is a DomainError."""
        self.asked.append(wanted)
        return self.respond(wanted, now)

    def respond(self, wanted: FactsWanted, now: datetime) -> Facts:
        facts = Facts()
        if wanted.invoices is not None:
            asking = wanted.invoices
            for key in sorted(set(asking.keys)):
                owner = self.invoices.get(key)
                # A freed invoice counts again for its own buyer only, as in the event store.
                free_again = (
                    owner is not None
                    and owner.request_id == FREED
                    and normalise_buyer(owner.buyer) == normalise_buyer(asking.buyer)
                )
                if owner is None or free_again:
                    self.invoices[key] = InvoiceOwner(request_id=asking.request_id, buyer=asking.buyer)
            facts = facts.merged(Facts(invoice_owners={key: self.invoices[key] for key in asking.keys}))
        if wanted.screening is not None:
            screened = Screening(
                list_version=self.list_version,
                threshold=wanted.screening.threshold,
                parties=wanted.screening.parties,
                matches=list(self.matches),
            )
            facts = facts.merged(Facts(screening=screened))
        if wanted.buyer_claim is not None:
            claim = wanted.buyer_claim
            key = normalise_buyer(claim.buyer)
            owner_state = self.caps.get(key, BuyerCapState())
            granted = check_claim(owner_state, claim)
            self.caps[key] = apply_claim(owner_state, granted)
            facts = facts.merged(Facts(buyer_claim=granted))
        if wanted.reservation is not None:
            reserve = wanted.reservation.model_copy(
                update={"workflow_id": f"wf-{wanted.reservation.request_id}"}
            )
            for event in decide_ledger(self.ledger, reserve, now):
                self.ledger = evolve_ledger(self.ledger, event)
            answer = self.ledger.answer(reserve.request_id, reserve.units)
            assert answer is not None
            facts = facts.merged(Facts(reservation=answer))
        if wanted.release_allocation is not None:
            release: Release = wanted.release_allocation
            for event in decide_ledger(self.ledger, release, now):
                self.ledger = evolve_ledger(self.ledger, event)
            given = self.ledger.released.get(release.request_id, Released(batch_id=None, units=0))
            facts = facts.merged(Facts(allocation_released=given))
        if wanted.release_buyer_claim is not None:
            back = wanted.release_buyer_claim
            key = normalise_buyer(back.buyer)
            self.caps[key], units = apply_release(self.caps.get(key, BuyerCapState()), back)
            facts = facts.merged(Facts(buyer_units_released=units))
        if wanted.release_invoices is not None:
            request_id = wanted.release_invoices.request_id
            freed = [key for key, owner in self.invoices.items() if owner.request_id == request_id]
            for key in freed:
                self.invoices[key] = self.invoices[key].model_copy(update={"request_id": FREED})
            facts = facts.merged(Facts(invoices_released=len(freed)))
        return facts

    def held_by(self, buyer: str = BUYER) -> dict[str, int]:
        """The claims the buyer's cap owner holds, by request."""
        return dict(self.caps.get(normalise_buyer(buyer), BuyerCapState()).claims)


@dataclass
class Run:
    """A request driven command by command, keeping its history and checking every step's envelope."""

    policy: Policy
    now: datetime
    state: RequestState = field(default_factory=RequestState)
    history: list[Event] = field(default_factory=list)
    new_id: Ids = field(default_factory=Ids)
    world: World = field(default_factory=World)

    @property
    def request_id(self) -> str:
        assert self.state.request_id is not None
        return self.state.request_id

    def facts(self, command: Command, at: datetime | None = None) -> Facts:
        """What the workflow learns before deciding `command`: `needs`, asked again after each answer.
        A person's command is first dry-run with provisional facts, so one the rules refuse asks nothing."""
        when = self.now if at is None else at
        known = NONE
        while wanted := needs(self.state, command, self.policy, when, known):
            if isinstance(command, HUMAN):
                trial = provisional(wanted).merged(known)
                decide(self.state, command, trial, self.policy, when, new_id=lambda: "validation")
            known = known.merged(self.world.answer(wanted, when))
        return known

    def send(
        self, command: Command, at: datetime | None = None, facts: Facts | None = None, *, sign: bool = True
    ) -> list[Event]:
        """Decide `command` with the world's answers (or exactly `facts`, asking nobody) and fold it.
        A person's act is signed first, unless it already is or `sign=False` (an unsigned act)."""
        when = self.now if at is None else at
        before = self.state
        if sign and isinstance(command, PersonAct):  # signed as the client signs it, at the version it sees
            stream = command.request.request_id if isinstance(command, Submit) else before.request_id
            if stream is not None:  # before a submission there is no request to sign for
                command = keys.signed_for(command, before.version, stream)
        known = self.facts(command, when) if facts is None else facts
        events = decide(before, command, known, self.policy, when, new_id=self.new_id)
        versions = [event.version for event in events]
        assert versions == list(range(before.version + 1, before.version + 1 + len(events)))
        for event in events:
            assert event.policy_version == self.policy.version
            assert event.occurred_at == when
            assert event.stream_id == (before.request_id or event.stream_id)
            self.state = evolve(self.state, event)
        self.history.extend(events)
        assert fold(self.history) == self.state  # the live fold and a fresh one agree
        return events

    def refuse(
        self,
        command: Command,
        match: str,
        at: datetime | None = None,
        facts: Facts | None = None,
        *,
        sign: bool = True,
    ) -> DomainError:
        """The command is refused with `match` in the message, and nothing changes."""
        before, length = self.state, len(self.history)
        with pytest.raises(DomainError, match=match) as info:
            self.send(command, at, facts, sign=sign)
        assert self.state == before
        assert len(self.history) == length
        return info.value

    def to(self, gate: str) -> None:
        """Move on to `gate` as the workflow does: along the request's route, Evaluate each gate before
        it, then (when the rules leave it to one) its reviewer approves."""
        route = self.state.route
        for earlier in route[: route.index(gate)]:
            if self.state.gate == earlier:
                self.send(Evaluate(gate=earlier))
            if self.state.gate == earlier:
                self.send(Decide(gate=earlier, reviewer=REVIEWER[earlier], approve=True))
        assert self.state.gate == gate, self.state.status


def types(events: Sequence[Event]) -> list[str]:
    return [event.type for event in events]


T = TypeVar("T")


def only(events: Sequence[Event], kind: type[T]) -> T:
    """The one event payload of `kind` among `events`."""
    found = [event.data for event in events if isinstance(event.data, kind)]
    assert len(found) == 1, types(events)
    return found[0]
