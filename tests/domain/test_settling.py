"""What an entity (the allocation ledger, an exporter) stops carrying from run to run
(chipclear.domain.settling), and what it keeps."""

from __future__ import annotations

import pytest

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

EXPORTER, PERIOD = "NVIDIA Corporation", "2026Q1"


def test_only_requests_carried_in_are_settled_licences_first() -> None:
    run = Carried.of(held=["r1", "r2", "r3"], released=["r4"])
    held = {"r1": 30, "r2": 20, "r5": 15}  # r3 gave back during the run; r5 was answered in it
    released = {"r3": 10, "r4": 5}
    licences, given_back = run.settleable(held, released, licensed={"r1", "r5"})
    assert licences == ["r1"]  # r5 is not carried in: a repeat of its call must get its first answer
    assert given_back == ["r4"]  # r3 gave back in this run: carried once more
    assert run.any_given_back(released) and not Carried.of([], ["r9"]).any_given_back(released)


def test_a_run_settles_at_most_its_share() -> None:
    ids = [f"r{i}" for i in range(SETTLED_PER_RUN + 5)]
    held = dict.fromkeys(ids, 1)
    run = Carried.of(ids, [])
    assert run.to_ask(held) == ids  # every holder is asked about
    licences, _ = run.settleable(held, {}, licensed=set(ids))
    assert licences == ids[:SETTLED_PER_RUN]
    rest = {rid: 1 for rid in ids if rid not in set(licences)}
    assert run.settleable(rest, {}, licensed=set(ids))[0] == ids[SETTLED_PER_RUN:]


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
    ids = [f"r{i}" for i in range(SETTLED_PER_RUN + 300)]
    run = Carried.of(ids, [])
    licensed = set(ids[SETTLED_PER_RUN:])  # the last 300 only
    licences, _ = run.settleable(dict.fromkeys(ids, 1), {}, licensed)
    assert licences == ids[SETTLED_PER_RUN:]
