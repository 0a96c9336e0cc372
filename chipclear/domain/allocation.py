"""The Chinese import allocation ledger: batches of units, priority buyers, a queue, releases.

Pure, like the request decider: the ledger workflow serialises commands and calls `decide_ledger`,
the event store folds the ledger's events with `evolve_ledger`, and property tests run both without a
server. Invariant, always: for every batch, capacity = allocated + free, and no request holds more than
one reservation.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from chipclear.domain.errors import DomainError
from chipclear.domain.models import MAX_UNITS, UtcDatetime
from chipclear.domain.names import normalise_buyer
from chipclear.domain.payload import EventPayload
from chipclear.domain.people import require_signature
from chipclear.domain.policy import Policy
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
    opened_at: UtcDatetime
    allocated: int = 0
    by_buyer: dict[str, int] = Field(default_factory=dict)  # normalised buyer -> units held

    @property
    def free(self) -> int:
        return self.capacity - self.allocated

    def is_priority(self, buyer_key: str) -> bool:
        return buyer_key in {normalise_buyer(name) for name in self.priority}

    def is_open(self, now: datetime) -> bool:
        return self.closes_at is None or now < self.closes_at

    def room_for(self, buyer_key: str, now: datetime) -> int:
        """Units this batch could still give this buyer (0 if closed, ineligible, full or capped)."""
        if not self.is_open(now) or (self.eligible == "priority" and not self.is_priority(buyer_key)):
            return 0
        room = self.free
        if self.per_company_cap is not None:
            room = min(room, self.per_company_cap - self.by_buyer.get(buyer_key, 0))
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

    @property
    def buyer_key(self) -> str:
        return normalise_buyer(self.buyer)


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


LedgerEvent = Annotated[
    BatchOpened | UnitsGranted | RequestQueued | UnitsReleased | QueueLeft, Field(discriminator="type")
]


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


class LedgerState(BaseModel):
    batches: dict[str, Batch] = Field(default_factory=dict)  # in opening order
    allocations: dict[str, Allocation] = Field(default_factory=dict)
    queue: list[QueueEntry] = Field(default_factory=list)
    released: dict[str, Released] = Field(default_factory=dict)  # request id -> what it gave back
    next_seq: int = 1
    version: int = 0  # events in the ledger stream

    def position(self, request_id: str) -> int | None:
        for index, entry in enumerate(self.ordered_queue(), start=1):
            if entry.request_id == request_id:
                return index
        return None

    def ordered_queue(self, now: datetime | None = None) -> list[QueueEntry]:
        """Priority buyers (of any batch still open at `now`) first, then everyone; each tier by arrival."""
        priority = {
            normalise_buyer(name)
            for batch in self.batches.values()
            if now is None or batch.is_open(now)
            for name in batch.priority
        }
        return sorted(self.queue, key=lambda e: (e.buyer_key not in priority, e.seq))

    def answer(self, request_id: str, requested: int) -> Reservation | None:
        """What the ledger already said to this request, if anything: the idempotency guard."""
        held = self.allocations.get(request_id)
        if held is not None:
            return _granted_answer(held)
        if request_id in self.released:
            return Reservation(request_id=request_id, outcome="released", requested=requested)
        position = self.position(request_id)
        if position is not None:
            units = next(e.units for e in self.queue if e.request_id == request_id)
            return Reservation(request_id=request_id, outcome="queued", requested=units, position=position)
        return None


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
    batches = dict(state.batches)
    allocations = dict(state.allocations)
    queue = list(state.queue)
    released = dict(state.released)
    next_seq = state.next_seq
    match event:
        case BatchOpened(batch=spec, opened_at=opened_at):
            batches[spec.batch_id] = Batch(**spec.model_dump(), opened_at=opened_at)
        case UnitsGranted() as granted:
            batch = batches[granted.batch_id]
            key = normalise_buyer(granted.buyer)
            batches[granted.batch_id] = batch.model_copy(
                update={
                    "allocated": batch.allocated + granted.units,
                    "by_buyer": batch.by_buyer | {key: batch.by_buyer.get(key, 0) + granted.units},
                }
            )
            allocations[granted.request_id] = Allocation.model_validate(granted, from_attributes=True)
            queue = [e for e in queue if e.request_id != granted.request_id]
        case RequestQueued() as queued:
            queue.append(QueueEntry.model_validate(queued, from_attributes=True))
            next_seq = max(next_seq, queued.seq + 1)
        case UnitsReleased(request_id=request_id, batch_id=batch_id, units=units):
            held = allocations.pop(request_id)
            batch = batches[batch_id]
            key = normalise_buyer(held.buyer)
            remaining = batch.by_buyer.get(key, 0) - units
            by_buyer = {k: v for k, v in batch.by_buyer.items() if k != key}
            if remaining:
                by_buyer[key] = remaining
            batches[batch_id] = batch.model_copy(
                update={"allocated": batch.allocated - units, "by_buyer": by_buyer}
            )
            released[request_id] = Released(batch_id=batch_id, units=units)
        case QueueLeft(request_id=request_id):
            queue = [e for e in queue if e.request_id != request_id]
            released[request_id] = Released(batch_id=None, units=0)
    return state.model_copy(
        update={
            "batches": batches,
            "allocations": allocations,
            "queue": queue,
            "released": released,
            "next_seq": next_seq,
            "version": state.version + 1,
        }
    )


def fold_ledger(events: Iterable[object]) -> LedgerState:
    """The ledger's state from its stored events (stream `allocation`), as the workflow holds it."""
    state = LedgerState()
    for event in events:
        if not isinstance(event, BatchOpened | UnitsGranted | RequestQueued | UnitsReleased | QueueLeft):
            raise TypeError(f"not a ledger event: {type(event).__name__}")
        state = evolve_ledger(state, event)
    return state


# -- decisions ----------------------------------------------------------------------------------------
def _best_grant(state: LedgerState, buyer: str, units: int, now: datetime) -> tuple[str, int] | None:
    """The batch (in opening order) that can give this buyer the most, up to `units`."""
    key = normalise_buyer(buyer)
    best: tuple[str, int] | None = None
    for batch in state.batches.values():
        room = min(batch.room_for(key, now), units)
        if room > 0 and (best is None or room > best[1]):
            best = (batch.batch_id, room)
            if room == units:
                break
    return best


def _grant(
    state: LedgerState, asked: Reserve | QueueEntry, now: datetime, *, from_queue: bool
) -> UnitsGranted | None:
    """Units for a newcomer (`Reserve`) or a request waiting in the queue, from the best batch."""
    best = _best_grant(state, asked.buyer, asked.units, now)
    if best is None:
        return None
    batch_id, granted = best
    reason = None
    if granted < asked.units:
        batch = state.batches[batch_id]
        key = normalise_buyer(asked.buyer)
        capped = batch.per_company_cap is not None and batch.room_for(key, now) < batch.free
        reason = (
            f"per-company cap of {batch.per_company_cap} in batch {batch_id}"
            if capped
            else f"batch {batch_id} had only {granted} units left"
        )
    # The grant names the request as it asked (id, buyer, workflow) and what it gets of what it asked.
    asker = asked.model_dump(include={"request_id", "buyer", "workflow_id"})
    return UnitsGranted(
        **asker, batch_id=batch_id, units=granted, requested=asked.units, reason=reason, from_queue=from_queue
    )


def serve_queue(state: LedgerState, now: datetime) -> list[LedgerEvent]:
    """Grant queued requests from free capacity: priority buyers first, each tier by arrival."""
    events: list[LedgerEvent] = []
    current = state
    for entry in state.ordered_queue(now):
        granted = _grant(current, entry, now, from_queue=True)
        if granted is not None:
            events.append(granted)
            current = evolve_ledger(current, granted)
    return events


def decide_ledger(
    state: LedgerState, command: Reserve | Release | OpenBatch, now: datetime
) -> list[LedgerEvent]:
    match command:
        case OpenBatch(batch=spec):
            if spec.batch_id in state.batches:
                raise DomainError(f"batch {spec.batch_id!r} is already open")
            opened = BatchOpened(batch=spec, opened_at=now)
            return [opened, *serve_queue(evolve_ledger(state, opened), now)]
        case Reserve():
            if state.answer(command.request_id, command.units) is not None:
                return []  # already answered: the same answer again, nothing new recorded
            # Every command ends with the queue served as far as capacity allows, so whatever still
            # waits has no room anywhere: granting a newcomer from the room left never overtakes it.
            granted = _grant(state, command, now, from_queue=False)
            if granted is not None:
                return [granted]
            return [RequestQueued(**command.model_dump(), seq=state.next_seq)]
        case Release(request_id=request_id, reason=reason):
            held = state.allocations.get(request_id)
            if held is not None:
                released = UnitsReleased(
                    request_id=request_id, batch_id=held.batch_id, units=held.units, reason=reason
                )
                return [released, *serve_queue(evolve_ledger(state, released), now)]
            if any(entry.request_id == request_id for entry in state.queue):
                return [QueueLeft(request_id=request_id, reason=reason)]
            return []  # nothing held: releasing twice is harmless
