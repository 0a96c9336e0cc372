"""`chipclear batch show`'s document of one batch, from a ledger that has settled some of its requests."""

from __future__ import annotations

from datetime import UTC, datetime

from chipclear.cli.batch import batch_detail
from chipclear.domain.allocation import (
    BatchSpec,
    LedgerState,
    OpenBatch,
    Release,
    Reserve,
    decide_ledger,
    evolve_ledger,
    settle,
)
from chipclear.domain.settling import Carried

NOW = datetime(2026, 1, 28, tzinfo=UTC)


def _apply(state: LedgerState, command: Reserve | Release | OpenBatch) -> LedgerState:
    for event in decide_ledger(state, command, NOW):
        state = evolve_ledger(state, event)
    return state


def _reserve(request_id: str, buyer: str, units: int) -> Reserve:
    return Reserve(request_id=request_id, buyer=buyer, units=units, workflow_id=f"wf-{request_id}")


def test_units_per_buyer_keep_settled_grants_and_the_requests_are_those_still_held() -> None:
    state = _apply(LedgerState(), OpenBatch(batch=BatchSpec(batch_id="B1", capacity=100), actor="wang"))
    for command in (
        _reserve("r1", "ByteDance Ltd.", 30),
        _reserve("r2", "ByteDance", 20),
        _reserve("r3", "Baidu Inc.", 10),
        _reserve("r4", "Kuaishou", 5),
    ):
        state = _apply(state, command)
    state = _apply(state, Release(request_id="r4", reason="withdrawn"))
    for event in settle(
        state, Carried.of(state.allocations, state.released), licensed={"r1", "r3"}
    ):  # r1, r3 licensed; r4 gone
        state = evolve_ledger(state, event)
    detail = batch_detail(state, "B1")
    assert detail["allocated"] == 60
    assert detail["allocations"] == [
        {"buyer": "baidu", "units": 10, "requests": []},  # settled: named by its key, its units kept
        {"buyer": "ByteDance", "units": 50, "requests": [{"request_id": "r2", "units": 20}]},
    ]
    assert sum(row["units"] for row in detail["allocations"]) == detail["allocated"]
