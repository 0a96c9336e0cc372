"""What a buyer's cap and an exporter stop carrying from run to run (chipclear.domain.settling), and what
they keep."""

from __future__ import annotations

import pytest

from chipclear.domain.buyer_cap import (
    BuyerCapState,
    ClaimUnits,
    ReleaseClaim,
    apply_claim,
    apply_release,
    check_claim,
    settle_cap,
)
from chipclear.domain.errors import DomainError
from chipclear.domain.exporter import (
    ChinaShipmentCounted,
    CountChinaShipment,
    ExporterState,
    UsShipmentsDeclared,
    carried_counts,
    check_count,
    evolve_exporter,
    settle_exporter,
)
from chipclear.domain.settling import SETTLED_PER_RUN, Carried

BUYER = "Tencent Holdings Ltd."
EXPORTER, PERIOD = "NVIDIA Corporation", "2026Q1"


def claimed(state: BuyerCapState, request_id: str, units: int, cap: int = 100) -> BuyerCapState:
    command = ClaimUnits(buyer=BUYER, request_id=request_id, units=units, cap=cap)
    return apply_claim(state, check_claim(state, command))


def released(state: BuyerCapState, request_id: str) -> BuyerCapState:
    return apply_release(state, ReleaseClaim(buyer=BUYER, request_id=request_id, reason="withdrawn"))[0]


def carried(state: BuyerCapState) -> Carried:
    return Carried.of(state.claims, state.released)


def test_a_licensed_claim_counts_for_good_without_its_name_and_releases_are_dropped() -> None:
    state = claimed(claimed(claimed(BuyerCapState(), "r1", 30), "r2", 20), "r3", 10)
    state = released(state, "r3")
    run = carried(state)
    state = claimed(state, "r4", 15)  # claimed in this run: carried once more, whatever it becomes
    settled = settle_cap(state, run, licensed={"r1", "r4"})
    assert settled.claims == {"r2": 20, "r4": 15} and settled.released == {} and settled.settled == 30
    # The headroom is the same before and after: the settled units still count against the cap.
    for request_id in ("r5", "r2"):
        assert settled.held_by_others(request_id) == state.held_by_others(request_id)
    with pytest.raises(DomainError, match="remaining headroom of 35"):
        check_claim(settled, ClaimUnits(buyer=BUYER, request_id="r5", units=36, cap=100))


def test_a_claim_not_yet_licensed_is_carried_so_its_release_still_gives_units_back() -> None:
    state = claimed(BuyerCapState(), "r1", 30)
    settled = settle_cap(state, carried(state), licensed=set())
    assert settled == state
    back, units = apply_release(settled, ReleaseClaim(buyer=BUYER, request_id="r1", reason="denied"))
    assert units == 30 and back.held_by_others("r9") == 0


def test_nothing_carried_in_nothing_settled() -> None:
    state = released(claimed(BuyerCapState(), "r1", 30), "r1")
    assert settle_cap(state, Carried(), licensed={"r1"}) is state


def test_a_run_settles_at_most_its_share() -> None:
    state = BuyerCapState()
    for i in range(SETTLED_PER_RUN + 5):
        state = claimed(state, f"r{i}", 1, cap=10 * SETTLED_PER_RUN)
    run = carried(state)
    licensed = set(state.claims)
    assert run.to_ask(state.claims) == list(state.claims)  # every holder is asked about
    once = settle_cap(state, run, licensed)
    assert (len(once.claims), once.settled) == (5, SETTLED_PER_RUN)
    twice = settle_cap(once, run, licensed)
    assert (twice.claims, twice.settled) == ({}, SETTLED_PER_RUN + 5)


# -- an exporter's counts -----------------------------------------------------------------------------


def _count(state: ExporterState, shipment: str, units: int, period: str = PERIOD) -> ExporterState:
    command = CountChinaShipment(exporter=EXPORTER, period=period, shipment=shipment, units=units)
    count = check_count(state, command)
    assert count is not None
    return evolve_exporter(state, ChinaShipmentCounted(**count.model_dump()), actor="licence:r1")


def _declared(units: int, period: str = PERIOD) -> ExporterState:
    declared = UsShipmentsDeclared(exporter=EXPORTER, period=period, units=units)
    return evolve_exporter(ExporterState(), declared, actor="officer")


def test_an_exporters_carried_counts_leave_their_names_and_keep_their_units() -> None:
    state = _count(_count(_declared(1_000), "r1/s1", 100), "r1/s2", 50)
    carried = carried_counts(state)
    state = _count(state, "r2/s1", 25)  # counted in this run: carried once more
    settled = settle_exporter(state, carried)
    quarter = settled.quarter(PERIOD)
    assert set(quarter.counted) == {"r2/s1"} and quarter.settled == 2 and quarter.shipments == 3
    assert quarter.china_units == 175 and settled.version == state.version
    # The room left is the same, and a repeat of the count of this run still gets its first answer.
    with pytest.raises(DomainError, match="at most 500"):
        check_count(
            settled, CountChinaShipment(exporter=EXPORTER, period=PERIOD, shipment="r3/s1", units=326)
        )
    assert (
        check_count(settled, CountChinaShipment(exporter=EXPORTER, period=PERIOD, shipment="r2/s1", units=25))
        is None
    )
    assert settle_exporter(settled, carried) is settled  # nothing more to settle


def test_licensed_holders_behind_a_run_of_unlicensed_ones_are_still_settled() -> None:
    """More than a run's share of holders still under review, carried from run to run, must not keep
    the licensed ones behind them from ever being asked about."""
    state = BuyerCapState()
    for i in range(SETTLED_PER_RUN + 300):
        state = claimed(state, f"r{i}", 1, cap=10 * SETTLED_PER_RUN)
    run = carried(state)
    licensed = {f"r{i}" for i in range(SETTLED_PER_RUN, SETTLED_PER_RUN + 300)}  # the last 300 only
    settled = settle_cap(state, run, licensed)
    assert settled.settled == 300 and len(settled.claims) == SETTLED_PER_RUN
