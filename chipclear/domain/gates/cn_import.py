"""Chinese import review: excluded buyer kinds, and units only from an allocation batch.

The allocation ledger (one entity workflow) owns the batches and serialises every reservation, so no
batch is ever over-allocated; its answer is a fact this gate records. A request the ledger cannot
serve yet waits in its queue (status `cn_import_queued`) until a batch opens or units come back.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from chipclear.domain.allocation import Release, Reservation, Reserve
from chipclear.domain.commands import Command, Compensate, Decide, Evaluate, RecordAllocation
from chipclear.domain.errors import DomainError
from chipclear.domain.events import AllocationGranted, AllocationQueued, AllocationReleased, Event, GateDenied
from chipclear.domain.facts import FactsWanted
from chipclear.domain.gates.base import LEDGER_ACTOR, By, Context, GateRules, Payload, approval, require_at
from chipclear.domain.policy import GateMode, Policy
from chipclear.domain.sections import CN_IMPORT, CnImportSection
from chipclear.domain.state import GateSlice, RequestState

NAME = CN_IMPORT


class AllocationRecord(BaseModel):
    """Where the request stands with the allocation ledger."""

    outcome: Literal["granted", "partial", "queued"]
    batch_id: str | None = None
    units: int = 0
    requested: int = 0
    reason: str | None = None
    position: int | None = None  # when queued: place at the time of queueing
    released: bool = False


class CnImportSlice(GateSlice):
    allocation: AllocationRecord | None = None

    def unit_limit(self) -> int | None:
        held = self.allocation
        return held.units if held is not None and held.outcome != "queued" else None

    def labels(self) -> dict[str, str]:
        held = self.allocation
        return {"batch": held.batch_id} if held is not None and held.batch_id else {}

    def document(self, state: RequestState) -> dict[str, Any]:
        return {"allocation": self.allocation.model_dump() if self.allocation else None}

    def describe(self, state: RequestState) -> list[str]:
        held = self.allocation
        if held is None:
            return []
        if held.outcome == "queued":
            where = f"queued for allocation, position {held.position}" if held.position else "queued"
        else:
            where = f"{held.units} of {held.requested} units allocated from batch {held.batch_id}"
            where += f" ({held.reason})" if held.reason else ""
        return [f"allocation: {where}" + (" (released)" if held.released else "")]


class CnImport(GateRules[CnImportSection, CnImportSlice]):
    name = NAME
    section_model = CnImportSection
    slice_model = CnImportSlice
    commands = (RecordAllocation,)

    def status(self, state: RequestState) -> str:
        held = self.slice(state).allocation
        return "cn_import_queued" if held is not None and held.outcome == "queued" else "cn_import_review"

    def statuses(self) -> tuple[str, ...]:
        return ("cn_import_review", "cn_import_queued")

    def denial(self, state: RequestState, policy: Policy) -> GateDenied | None:
        assert state.request is not None
        excluded = self.section(policy).excluded_buyer_kinds
        return self.excluded_kind("buyer", state.request.buyer.kind, excluded, "excluded_buyer_kinds")

    def awaiting_allocation(self, state: RequestState, policy: Policy) -> bool:
        held = self.slice(state).allocation
        return self.section(policy).allocate_from_batches and (held is None or held.outcome == "queued")

    def needs(self, ctx: Context, command: Command) -> FactsWanted:
        state, policy = ctx.state, ctx.policy
        match command:
            case Evaluate():
                if (
                    self.section(policy).allocate_from_batches
                    and self.slice(state).allocation is None
                    and self.denial(state, policy) is None
                ):
                    assert state.request_id is not None and state.buyer is not None
                    # The ledger signals a later grant to the requesting workflow, which fills its id in.
                    return FactsWanted(
                        reservation=Reserve(
                            request_id=state.request_id,
                            buyer=state.buyer,
                            units=state.units_in_play,
                            workflow_id="",
                        )
                    )
            case Compensate():
                held = self.slice(state).allocation
                if held is not None and not held.released:
                    assert state.request_id is not None
                    return FactsWanted(
                        release_allocation=Release(request_id=state.request_id, reason=command.reason)
                    )
        return FactsWanted()

    def on_enter(self, ctx: Context) -> list[Payload]:
        if not self.section(ctx.policy).allocate_from_batches:
            return super().on_enter(ctx)
        answer = ctx.facts.reservation
        if answer is None:
            raise DomainError("the allocation ledger has not answered for this request yet")
        return self._allocated(ctx, answer)

    def handle(self, ctx: Context, command: Command) -> list[Payload]:
        assert isinstance(command, RecordAllocation)
        require_at(ctx.state, NAME)
        if not self.section(ctx.policy).allocate_from_batches:
            raise DomainError(
                f"{self.rule_prefix}.allocate_from_batches is off: this request takes no allocation"
            )
        if not self.awaiting_allocation(ctx.state, ctx.policy):
            raise DomainError("units are already allocated to this request")
        return self._allocated(ctx, command.reservation)

    def _allocated(self, ctx: Context, answer: Reservation) -> list[Payload]:
        if answer.outcome in ("queued", "released"):
            if self.slice(ctx.state).allocation is not None:
                raise DomainError("request is already queued for allocation")
            # The ledger's answer is the ledger's act, whichever command brought it in.
            return [By(LEDGER_ACTOR, AllocationQueued(position=answer.position))]
        if answer.batch_id is None or answer.units < 1:
            raise DomainError("a granted allocation names its batch and at least one unit")
        granted = AllocationGranted(
            batch_id=answer.batch_id, units=answer.units, requested=answer.requested, reason=answer.reason
        )
        payloads: list[Payload] = [By(LEDGER_ACTOR, granted)]
        if ctx.policy.mode(NAME) is GateMode.AUTO:
            units = min(ctx.state.units_in_play, answer.units)
            payloads += approval(ctx, self, units, by_policy=True)
        return payloads

    def approve(self, ctx: Context, command: Decide, units: int) -> list[Payload]:
        if self.awaiting_allocation(ctx.state, ctx.policy):
            held = self.slice(ctx.state).allocation
            where = held.position if held else None
            raise DomainError(
                "no units allocated yet"
                + (f" (queued at position {where})" if where else "")
                + "; cn-import can approve only units from an allocation batch"
            )
        return super().approve(ctx, command, units)

    def compensate(self, ctx: Context, reason: str) -> list[Payload]:
        """The ledger took the units (or the queue place) back; recorded once."""
        given = ctx.facts.allocation_released
        held = self.slice(ctx.state).allocation
        if given is None or held is None or held.released:
            return []
        return [
            By(LEDGER_ACTOR, AllocationReleased(batch_id=given.batch_id, units=given.units, reason=reason))
        ]

    def evolve(self, part: CnImportSlice, event: Event, state: RequestState) -> CnImportSlice:
        match event.data:
            case AllocationGranted(batch_id=batch_id, units=units, requested=requested, reason=reason):
                outcome: Literal["granted", "partial"] = "partial" if units < requested else "granted"
                record = AllocationRecord(
                    outcome=outcome, batch_id=batch_id, units=units, requested=requested, reason=reason
                )
                return part.model_copy(update={"allocation": record})
            case AllocationQueued(position=position):
                record = AllocationRecord(outcome="queued", requested=state.units_in_play, position=position)
                return part.model_copy(update={"allocation": record})
            case AllocationReleased():
                assert part.allocation is not None
                return part.model_copy(
                    update={"allocation": part.allocation.model_copy(update={"released": True})}
                )
        return part


GATE = CnImport()
