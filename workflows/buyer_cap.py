"""The per-buyer cap on US export approvals: one small entity workflow per buyer.

Claims are Updates whose handlers never await, so Temporal runs them one at a time: two requests of
one buyer approved at the same instant cannot both see the same headroom. The validator refuses a claim
above the headroom before it enters history, naming the headroom.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from chipclear import contracts
    from chipclear.domain import buyer_cap as cap
    from chipclear.domain.settling import Carried
    from workflows.entity import (
        Stateful,
        domain_refusals,
        history_is_long,
        licensed_to_settle,
        live_then_continue,
    )

# Patch: the buyer's cap settles (stops carrying) what is settled before it continues as new.
BUYER_CAP_SETTLES = "buyer-cap-settles"


@workflow.defn(name=contracts.BUYER_CAP_WORKFLOW)
class BuyerCapWorkflow(Stateful[cap.BuyerCapState]):
    @workflow.init
    def __init__(self, input: contracts.BuyerCapInput) -> None:
        self._state = input.state or cap.BuyerCapState()
        # What this run may settle as it ends (chipclear.domain.settling).
        self._carried = Carried.of(self._state.claims, self._state.released)

    @workflow.run
    async def run(self, input: contracts.BuyerCapInput) -> None:
        await workflow.wait_condition(lambda: history_is_long(input.history_limit))
        state = self._state
        licensed = await licensed_to_settle(self._carried, state.claims, state.released, BUYER_CAP_SETTLES)
        if licensed is not None:
            # From the state as it is now: a claim answered while the store was asked is kept.
            self._state = cap.settle_cap(self._state, self._carried, licensed)
        await live_then_continue(input, lambda: self._state)

    @workflow.update(name=contracts.BUYER_CAP_CLAIM)
    def claim(self, command: cap.ClaimUnits) -> cap.BuyerClaim:
        claim = self._check(command)
        self._state = cap.apply_claim(self._state, claim)
        return claim

    @claim.validator
    def _validate_claim(self, command: cap.ClaimUnits) -> None:
        self._check(command)

    @workflow.update(name=contracts.BUYER_CAP_RELEASE)
    def release(self, command: cap.ReleaseClaim) -> contracts.ReleasedUnits:
        self._state, units = cap.apply_release(self._state, command)
        return contracts.ReleasedUnits(request_id=command.request_id, units=units)

    def _check(self, command: cap.ClaimUnits) -> cap.BuyerClaim:
        with domain_refusals():
            return cap.check_claim(self._state, command)
