"""The Chinese import allocation ledger: batches of units, priority buyers, a queue, releases.

Pure, like the request decider: the ledger workflow serialises commands and calls `decide_ledger`,
the event store folds the ledger's events with `evolve_ledger`, and property tests run both without a
server. Invariant, always: for every batch, capacity = allocated + free, and no request holds more than
one reservation.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Container, Iterable, Iterator
from datetime import datetime
from operator import attrgetter
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from chipclear.domain.errors import DomainError
from chipclear.domain.models import MAX_UNITS, UtcDatetime
from chipclear.domain.names import normalise_buyer
from chipclear.domain.payload import EventPayload
from chipclear.domain.people import require_signature
from chipclear.domain.policy import Policy
from chipclear.domain.settling import Carried
from chipclear.domain.signing import ActorSignedAct

LEDGER_STREAM = "allocation"


class BatchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    batch_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
    capacity: Annotated[int, Field(ge=1, le=100 * MAX_UNITS)]
    priority: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=list)
    per_company_cap: Annotated[int, Field(ge=1)] | None = None
    eligible: Literal["all", "priority"] = "all"
    closes_at: UtcDatetime | None = None


class Batch(BatchSpec):
    # Not frozen, unlike its spec: the ledger folds each grant and release into its batch in place
    # (see `evolve_ledger`).
    model_config = ConfigDict(frozen=False)

    opened_at: UtcDatetime
    allocated: int = 0
    by_buyer: dict[str, int] = Field(default_factory=dict)  # normalised buyer -> units held
    # The priority names normalised once, in the order given (a dict: ordered, and O(1) to ask).
    _priority_keys: dict[str, None] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        self._priority_keys = dict.fromkeys(normalise_buyer(name) for name in self.priority)

    @property
    def free(self) -> int:
        return self.capacity - self.allocated

    @property
    def priority_keys(self) -> Iterable[str]:
        return self._priority_keys.keys()

    def is_priority(self, buyer_key: str) -> bool:
        return buyer_key in self._priority_keys

    def is_open(self, now: datetime) -> bool:
        return self.closes_at is None or now < self.closes_at

    def room_for(self, buyer_key: str, now: datetime, *, taken: int = 0, held: int = 0) -> int:
        """Units this batch could still give this buyer (0 if closed, ineligible, full or capped).

        `taken` and `held`: units the batch, and this buyer in it, gained (or, negative, gave back) by
        events decided but not yet folded in (see `_Draft`)."""
        if not self.is_open(now) or (self.eligible == "priority" and not self.is_priority(buyer_key)):
            return 0
        room = self.free - taken
        if self.per_company_cap is not None:
            room = min(room, self.per_company_cap - self.by_buyer.get(buyer_key, 0) - held)
        return max(room, 0)


class Allocation(BaseModel):
    request_id: str
    buyer: str
    batch_id: str
    units: int
    requested: int
    reason: str | None = None  # why fewer than requested


class QueueEntry(BaseModel):
    request_id: str
    buyer: str
    units: int
    workflow_id: str
    seq: int  # arrival order: first come, first served within a tier
    _buyer_key: str = PrivateAttr(default="")  # normalised once, on entry: the queue's order asks often

    def model_post_init(self, context: Any, /) -> None:
        self._buyer_key = normalise_buyer(self.buyer)

    @property
    def buyer_key(self) -> str:
        return self._buyer_key


# -- events -------------------------------------------------------------------------------------------
class LedgerPayload(EventPayload):
    """What every event of the allocation ledger's own stream is (not a request's)."""


class BatchOpened(LedgerPayload):
    batch: BatchSpec
    opened_at: UtcDatetime


class UnitsGranted(LedgerPayload):
    request_id: str
    buyer: str
    batch_id: str
    units: int
    requested: int
    workflow_id: str
    reason: str | None = None  # why fewer than requested
    from_queue: bool = False


class RequestQueued(LedgerPayload):
    request_id: str
    buyer: str
    units: int
    workflow_id: str
    seq: int


class UnitsReleased(LedgerPayload):
    request_id: str
    batch_id: str
    units: int
    reason: str


class QueueLeft(LedgerPayload):
    request_id: str
    reason: str


class RequestsSettled(LedgerPayload):
    """Requests the ledger stops carrying from run to run: each holds its licence (its units are spent
    for good) or has given its units back. Every batch's totals keep their units; their grants and
    releases stay in the store. Without it the carried state grew by every request ever served, and a
    continue-as-new input reaches Temporal's 2 MB limit after some 13,600 requests."""

    request_ids: list[str]
    licensed: int  # how many of them hold their licence; the rest had given their units back


LedgerEvent = Annotated[
    BatchOpened | UnitsGranted | RequestQueued | UnitsReleased | QueueLeft | RequestsSettled,
    Field(discriminator="type"),
]
LEDGER_EVENTS = get_args(get_args(LedgerEvent)[0])  # the union's classes, for isinstance


# -- commands and answers -----------------------------------------------------------------------------
class Reserve(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    request_id: str
    buyer: Annotated[str, Field(min_length=1)]
    units: Annotated[int, Field(ge=1, le=MAX_UNITS)]
    workflow_id: str


class Release(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    request_id: str
    reason: Annotated[str, Field(min_length=1)]


class OpenBatch(ActorSignedAct):
    """An import reviewer opens a batch: a person's signed act on the ledger's stream."""

    batch: BatchSpec


# The gate whose units the ledger allocates: its reviewers, and only they, open batches.
ALLOCATING_GATE = "cn-import"


def require_opener(state: LedgerState, command: OpenBatch, policy: Policy, stream: str) -> None:
    """Only a reviewer of the allocating gate opens a batch, signed for the ledger as it stands."""
    act = command.model_dump(mode="json")
    require_signature(policy, command.actor, act, command.signature, stream=stream, version=state.version)
    if not policy.may_decide(command.actor, ALLOCATING_GATE):
        raise DomainError(
            f"{command.actor!r} may not open allocation batches: only a reviewer of {ALLOCATING_GATE} may "
            f"(policy {policy.version} [reviewers])"
        )


class Reservation(BaseModel):
    """The answer to `reserve`, identical every time the same request asks."""

    request_id: str
    outcome: Literal["granted", "partial", "queued", "released"]
    batch_id: str | None = None
    units: int = 0
    requested: int
    reason: str | None = None
    position: int | None = None  # 1-based place in the queue when queued


# -- state --------------------------------------------------------------------------------------------
class Released(BaseModel):
    batch_id: str | None  # None: the request only left the queue
    units: int


_seq = attrgetter("seq")


class LedgerState(BaseModel):
    """The ledger as its events leave it. `evolve_ledger` folds an event into it in place, so a fold
    costs the same with 40 requests waiting as with 4,000.

    Beside the fields (all that is carried from run to run, and shown), indexes built from them
    whenever a state is made and kept up by `evolve_ledger`: a request's place in the queue is a
    bisection, not a sort. Every index is a function of the fields alone, so two states with the same
    fields are equal however each was reached.
    """

    batches: dict[str, Batch] = Field(default_factory=dict)  # in opening order
    allocations: dict[str, Allocation] = Field(default_factory=dict)
    queue: list[QueueEntry] = Field(default_factory=list)  # in arrival order (ascending seq)
    released: dict[str, Released] = Field(default_factory=dict)  # request id -> what it gave back
    next_seq: int = 1
    version: int = 0  # events in the ledger stream

    _waiting: dict[str, QueueEntry] = PrivateAttr(default_factory=dict)  # request id -> its entry
    _by_seq: dict[int, QueueEntry] = PrivateAttr(default_factory=dict)
    # The priority buyers of every batch (open or not), in the order their batches named them.
    _priority: dict[str, None] = PrivateAttr(default_factory=dict)
    # The waiting entries' seqs, ascending: those of priority buyers, and the rest.
    _first: list[int] = PrivateAttr(default_factory=list)
    _rest: list[int] = PrivateAttr(default_factory=list)

    def model_post_init(self, context: Any, /) -> None:
        for batch in self.batches.values():
            self._priority.update(dict.fromkeys(batch.priority_keys))
        for entry in self.queue:
            self._waiting[entry.request_id] = entry
            self._by_seq[entry.seq] = entry
        self._sort_tiers()

    def _sort_tiers(self) -> None:
        self._first = sorted(e.seq for e in self.queue if e.buyer_key in self._priority)
        self._rest = sorted(e.seq for e in self.queue if e.buyer_key not in self._priority)

    def _tier(self, entry: QueueEntry) -> list[int]:
        return self._first if entry.buyer_key in self._priority else self._rest

    def _open(self, batch: Batch) -> None:
        self.batches[batch.batch_id] = batch
        named = [key for key in batch.priority_keys if key not in self._priority]
        if named:  # some waiting buyers may move up a tier: rare (a batch opening), so a plain re-sort
            self._priority.update(dict.fromkeys(named))
            self._sort_tiers()

    def _join_queue(self, entry: QueueEntry) -> None:
        self.queue.append(entry)
        self._waiting[entry.request_id] = entry
        self._by_seq[entry.seq] = entry
        insort(self._tier(entry), entry.seq)  # at the end: a newcomer's seq is the highest

    def _leave_queue(self, request_id: str) -> None:
        entry = self._waiting.pop(request_id, None)
        if entry is None:
            return
        index = bisect_left(self.queue, entry.seq, key=_seq)
        if index < len(self.queue) and self.queue[index].request_id == request_id:
            del self.queue[index]
        else:  # a carried queue out of arrival order (never written so, but kept correct)
            self.queue = [e for e in self.queue if e.request_id != request_id]
        tier = self._tier(entry)
        del tier[bisect_left(tier, entry.seq)]
        del self._by_seq[entry.seq]

    def position(self, request_id: str) -> int | None:
        """The request's 1-based place in `ordered_queue()`, or None when it is not waiting."""
        entry = self._waiting.get(request_id)
        if entry is None:
            return None
        if entry.buyer_key in self._priority:
            return bisect_left(self._first, entry.seq) + 1
        return len(self._first) + bisect_left(self._rest, entry.seq) + 1

    def ordered_queue(self, now: datetime | None = None) -> list[QueueEntry]:
        """Priority buyers (of any batch still open at `now`) first, then everyone; each tier by arrival."""
        return list(_in_order(self, self.batches, now))

    def answer(self, request_id: str, requested: int) -> Reservation | None:
        """What the ledger already said to this request, if anything: the idempotency guard."""
        held = self.allocations.get(request_id)
        if held is not None:
            return _granted_answer(held)
        if request_id in self.released:
            return Reservation(request_id=request_id, outcome="released", requested=requested)
        entry = self._waiting.get(request_id)
        if entry is not None:
            return Reservation(
                request_id=request_id,
                outcome="queued",
                requested=entry.units,
                position=self.position(request_id),
            )
        return None


def _in_order(state: LedgerState, batches: dict[str, Batch], now: datetime | None) -> Iterator[QueueEntry]:
    """The waiting requests in queue order, priority taken from `batches` (those open at `now`).

    From the kept tiers when that priority is the ledger's own (every batch open: the usual case);
    otherwise sorted afresh, by the names normalised on entry."""
    priority: dict[str, None] = {}
    for batch in batches.values():
        if now is None or batch.is_open(now):
            priority.update(dict.fromkeys(batch.priority_keys))
    if priority.keys() == state._priority.keys():
        for seq in (*state._first, *state._rest):
            yield state._by_seq[seq]
    else:
        yield from sorted(state.queue, key=lambda e: (e.buyer_key not in priority, e.seq))


def _granted_answer(held: Allocation) -> Reservation:
    partial = held.units < held.requested
    return Reservation(
        request_id=held.request_id,
        outcome="partial" if partial else "granted",
        batch_id=held.batch_id,
        units=held.units,
        requested=held.requested,
        reason=(held.reason or f"batch {held.batch_id} gave {held.units} of {held.requested}")
        if partial
        else None,
    )


def evolve_ledger(state: LedgerState, event: LedgerEvent) -> LedgerState:
    """Fold one event into `state`, in place, and return it: no copy of the ledger per event.

    The workflow, the store's readers and the tests fold a ledger they own; whoever needs the state
    before the event as well keeps a copy first (`state.model_copy(deep=True)`)."""
    match event:
        case BatchOpened(batch=spec, opened_at=opened_at):
            state._open(Batch(**spec.model_dump(), opened_at=opened_at))
        case UnitsGranted() as granted:
            batch = state.batches[granted.batch_id]
            key = normalise_buyer(granted.buyer)
            batch.allocated += granted.units
            batch.by_buyer[key] = batch.by_buyer.get(key, 0) + granted.units
            state.allocations[granted.request_id] = Allocation.model_validate(granted, from_attributes=True)
            state._leave_queue(granted.request_id)
        case RequestQueued() as queued:
            state._join_queue(QueueEntry.model_validate(queued, from_attributes=True))
            state.next_seq = max(state.next_seq, queued.seq + 1)
        case UnitsReleased(request_id=request_id, batch_id=batch_id, units=units):
            held = state.allocations.pop(request_id)
            batch = state.batches[batch_id]
            key = normalise_buyer(held.buyer)
            remaining = batch.by_buyer.pop(key, 0) - units
            if remaining:
                batch.by_buyer[key] = remaining  # last, as the ledger has always written it
            batch.allocated -= units
            state.released[request_id] = Released(batch_id=batch_id, units=units)
        case QueueLeft(request_id=request_id):
            state._leave_queue(request_id)
            state.released[request_id] = Released(batch_id=None, units=0)
        case RequestsSettled(request_ids=request_ids):
            for request_id in request_ids:
                state.allocations.pop(request_id, None)
                state.released.pop(request_id, None)
    state.version += 1
    return state


def fold_ledger(events: Iterable[object]) -> LedgerState:
    """The ledger's state from its stored events (stream `allocation`), as the workflow holds it."""
    state = LedgerState()
    for event in events:
        if not isinstance(event, LEDGER_EVENTS):
            raise TypeError(f"not a ledger event: {type(event).__name__}")
        state = evolve_ledger(state, event)
    return state


# -- decisions ----------------------------------------------------------------------------------------
class _Draft:
    """The batches as they will stand once the events decided so far are folded in: the scratch pad of
    one decision, so that deciding neither copies nor changes the ledger it reads."""

    def __init__(self, batches: dict[str, Batch]) -> None:
        self.batches = batches
        self._taken: dict[str, int] = {}  # batch id -> units granted (or, negative, released) so far
        self._held: dict[tuple[str, str], int] = {}  # (batch id, buyer key) -> the same, per buyer

    def room_for(self, batch: Batch, key: str, now: datetime) -> int:
        taken = self._taken.get(batch.batch_id, 0)
        return batch.room_for(key, now, taken=taken, held=self._held.get((batch.batch_id, key), 0))

    def free(self, batch: Batch) -> int:
        return batch.free - self._taken.get(batch.batch_id, 0)

    def take(self, batch_id: str, key: str, units: int) -> None:
        self._taken[batch_id] = self._taken.get(batch_id, 0) + units
        self._held[batch_id, key] = self._held.get((batch_id, key), 0) + units

    def any_room(self, now: datetime) -> bool:
        return any(batch.is_open(now) and self.free(batch) > 0 for batch in self.batches.values())


def _best_grant(draft: _Draft, key: str, units: int, now: datetime) -> tuple[Batch, int] | None:
    """The batch (in opening order) that can give this buyer the most, up to `units`."""
    best: tuple[Batch, int] | None = None
    for batch in draft.batches.values():
        room = min(draft.room_for(batch, key, now), units)
        if room > 0 and (best is None or room > best[1]):
            best = (batch, room)
            if room == units:
                break
    return best


def _grant(
    draft: _Draft, asked: Reserve | QueueEntry, now: datetime, *, from_queue: bool
) -> UnitsGranted | None:
    """Units for a newcomer (`Reserve`) or a request waiting in the queue, from the best batch; the
    grant is taken from `draft`."""
    key = asked.buyer_key if isinstance(asked, QueueEntry) else normalise_buyer(asked.buyer)
    best = _best_grant(draft, key, asked.units, now)
    if best is None:
        return None
    batch, granted = best
    reason = None
    if granted < asked.units:
        capped = batch.per_company_cap is not None and draft.room_for(batch, key, now) < draft.free(batch)
        reason = (
            f"per-company cap of {batch.per_company_cap} in batch {batch.batch_id}"
            if capped
            else f"batch {batch.batch_id} had only {granted} units left"
        )
    draft.take(batch.batch_id, key, granted)
    # The grant names the request as it asked (id, buyer, workflow) and what it gets of what it asked.
    return UnitsGranted(
        request_id=asked.request_id,
        buyer=asked.buyer,
        workflow_id=asked.workflow_id,
        batch_id=batch.batch_id,
        units=granted,
        requested=asked.units,
        reason=reason,
        from_queue=from_queue,
    )


def serve_queue(state: LedgerState, now: datetime, draft: _Draft | None = None) -> list[LedgerEvent]:
    """Grant queued requests from free capacity: priority buyers first, each tier by arrival.

    `draft`: the batches as the events decided before these leave them (a batch just opened, units
    just released); the ledger's own when None."""
    draft = draft or _Draft(state.batches)
    events: list[LedgerEvent] = []
    if not draft.any_room(now):
        return events
    for entry in _in_order(state, draft.batches, now):
        granted = _grant(draft, entry, now, from_queue=True)
        if granted is not None:
            events.append(granted)
            if not draft.any_room(now):
                break  # nothing left anywhere: the rest of the queue waits, unasked
    return events


def decide_ledger(
    state: LedgerState, command: Reserve | Release | OpenBatch, now: datetime
) -> list[LedgerEvent]:
    """The events a command causes. Reads `state`, never changes it (the workflow's validators call
    this too): what the events will change is drafted aside (`_Draft`)."""
    match command:
        case OpenBatch(batch=spec):
            if spec.batch_id in state.batches:
                raise DomainError(f"batch {spec.batch_id!r} is already open")
            opened = BatchOpened(batch=spec, opened_at=now)
            draft = _Draft({**state.batches, spec.batch_id: Batch(**spec.model_dump(), opened_at=now)})
            return [opened, *serve_queue(state, now, draft)]
        case Reserve():
            if state.answer(command.request_id, command.units) is not None:
                return []  # already answered: the same answer again, nothing new recorded
            # Every command ends with the queue served as far as capacity allows, so whatever still
            # waits has no room anywhere: granting a newcomer from the room left never overtakes it.
            granted = _grant(_Draft(state.batches), command, now, from_queue=False)
            if granted is not None:
                return [granted]
            return [RequestQueued(**command.model_dump(), seq=state.next_seq)]
        case Release(request_id=request_id, reason=reason):
            held = state.allocations.get(request_id)
            if held is not None:
                released = UnitsReleased(
                    request_id=request_id, batch_id=held.batch_id, units=held.units, reason=reason
                )
                draft = _Draft(state.batches)
                draft.take(held.batch_id, normalise_buyer(held.buyer), -held.units)
                return [released, *serve_queue(state, now, draft)]
            if request_id in state._waiting:
                return [QueueLeft(request_id=request_id, reason=reason)]
            return []  # nothing held: releasing twice is harmless


def settle(state: LedgerState, carried: Carried, licensed: Container[str]) -> list[LedgerEvent]:
    """What the ledger may stop carrying as it continues as new (chipclear.domain.settling): requests it
    carried in that now hold their licence (`licensed`, as the store's projection says) or have given
    their units back since.

    A request that ended without a licence keeps its allocation until its `Release` (right after it
    ends) gives the units back: settled earlier, the release would find nothing and the units would never
    return to their batch.
    """
    licences, given_back = carried.settleable(state.allocations, state.released, licensed)
    if not licences and not given_back:
        return []
    return [RequestsSettled(request_ids=[*licences, *given_back], licensed=len(licences))]
