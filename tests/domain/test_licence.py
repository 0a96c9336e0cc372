"""A licence's rules, pure: the depletion ledger (a property test), value tolerance, expiry, suspension,
who may act, and the exporter's 50% rule."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chipclear.domain.errors import DomainError
from chipclear.domain.exporter import (
    ChinaShipmentCounted,
    CountChinaShipment,
    DeclareUsShipments,
    ExporterState,
    check_count,
    counted,
    decide_declaration,
    evolve_exporter,
    period_of,
)
from chipclear.domain.licence import (
    ExpireLicence,
    LabReport,
    LicenceExhausted,
    LicenceExpired,
    LicencePayload,
    LicenceState,
    LicenceStatus,
    LicenceTerms,
    ReinstateLicence,
    Ship,
    ShipmentRecorded,
    ShipmentRefused,
    SuspendLicence,
    decide_licence,
    evolve_licence,
    licence_stream,
    needs_count,
)
from chipclear.domain.models import Exporter
from chipclear.domain.signing import sign_act
from tests import keys
from tests.factories import make_policy

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
POLICY = make_policy("auto")
REPORT = LabReport(name="r.pdf", size=10, sha256="cd" * 32, lab="UL", report_id="UL-7")


def opened(
    units: int = 1_000, price: float | None = 32_000.0, exporter: str | None = "NVIDIA Corporation"
) -> LicenceState:
    terms = LicenceTerms(
        request_id="req-1",
        licence_id="LIC-1",
        buyer="ByteDance Ltd.",
        exporter=Exporter(name=exporter) if exporter else None,
        units=units,
        unit_price_usd=price,
        issued_at=NOW,
        valid_until=NOW + timedelta(days=4 * 365),
        request_version=10,
    )
    return LicenceState.opened(terms)


def signed(
    command: Ship | SuspendLicence | ReinstateLicence, version: int
) -> Ship | SuspendLicence | ReinstateLicence:
    signature = sign_act(
        keys.private(command.actor), licence_stream("req-1"), version, command.model_dump(mode="json")
    )
    return command.model_copy(update={"signature": signature})


def ship(state: LicenceState, shipment: str, units: int, **fields: object) -> list[LicencePayload]:
    """Decided with the provisional count (the exporter's own rule is tested below)."""
    command = signed(
        Ship(actor="sam", shipment_id=shipment, units=units, **({"lab_report": REPORT} | fields)), 0
    )
    if shipment not in state.shipments and state.terms is not None and state.terms.exporter is not None:
        assert needs_count(state, command, NOW) is not None
    return list(decide_licence(state, command, POLICY, NOW))


def apply(state: LicenceState, events: Sequence[LicencePayload]) -> LicenceState:
    for event in events:
        state = evolve_licence(state, event, NOW)
    return state


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.integers(1, 400)), min_size=1, max_size=25))
def test_the_depletion_ledger_never_goes_below_zero_and_counts_nothing_twice(attempts):
    """Shipments under ids that repeat (a retried call, or a reused id with other units): what the ledger
    holds is exactly the sum of the distinct shipments it accepted, never more than licensed."""
    state = opened(units=1_000, price=None)
    accepted: dict[str, int] = {}
    for number, units in attempts:
        shipment = f"S{number}"
        repeat = accepted.get(shipment)
        fits = state.status is LicenceStatus.VALID and units <= state.units_remaining
        if (repeat is not None and repeat != units) or (repeat is None and not fits):
            with pytest.raises(DomainError):
                ship(state, shipment, units)
            continue
        events = ship(state, shipment, units)
        if repeat is not None:
            assert events == []  # a repeat: recorded once
        else:
            accepted[shipment] = units
        state = apply(state, events)
        assert state.units_remaining >= 0
        assert state.units_shipped == sum(accepted.values()) == sum(s.units for s in state.shipments.values())
        assert (state.status is LicenceStatus.EXHAUSTED) == (state.units_remaining == 0)


def test_every_rule_names_itself():
    state = opened(units=100)
    with pytest.raises(ShipmentRefused, match="lab_report") as lab:
        ship(state, "A", 10, lab_report=None)
    assert lab.value.reason == "no_lab_report"
    with pytest.raises(ShipmentRefused, match="no quantity tolerance") as over:
        ship(state, "A", 101)
    assert over.value.reason == "over_licence"
    # Value: up to 125% of what remains (100 x 32,000 = 3.2 M; at most 4.0 M), never above.
    assert isinstance(ship(state, "A", 10, value_usd=4_000_000.0)[0], ShipmentRecorded)
    with pytest.raises(ShipmentRefused, match="exceeds 125%") as value:
        ship(state, "A", 10, value_usd=4_000_001.0)
    assert value.value.reason == "over_value"
    with pytest.raises(DomainError, match="does not act for exporter"):
        decide_licence(
            state, signed(Ship(actor="chen", shipment_id="A", units=1, lab_report=REPORT), 0), POLICY, NOW
        )
    with pytest.raises(ShipmentRefused, match="names no exporter"):
        ship(opened(exporter=None), "A", 1)


def test_a_licence_past_its_validity_ships_nothing_and_expires_by_its_timer():
    state = opened()
    later = NOW + timedelta(days=5 * 365)
    command = signed(Ship(actor="sam", shipment_id="A", units=1, lab_report=REPORT), 0)
    with pytest.raises(ShipmentRefused, match="expired on") as refused:
        decide_licence(state, command, POLICY, later)
    assert refused.value.reason == "expired"
    assert state.status_at(later) is LicenceStatus.EXPIRED
    with pytest.raises(DomainError, match="valid until"):
        decide_licence(state, ExpireLicence(), POLICY, NOW)
    [expired] = decide_licence(state, ExpireLicence(), POLICY, later)
    assert isinstance(expired, LicenceExpired)
    assert apply(state, [expired]).status is LicenceStatus.EXPIRED


def test_suspension_is_the_licensing_reviewers_and_holds_every_shipment():
    state = opened()
    with pytest.raises(DomainError, match="not a us-export reviewer"):
        decide_licence(state, signed(SuspendLicence(actor="sam", reason="x"), state.version), POLICY, NOW)
    suspended = apply(
        state,
        decide_licence(
            state, signed(SuspendLicence(actor="alice", reason="KYC"), state.version), POLICY, NOW
        ),
    )
    assert suspended.status is LicenceStatus.SUSPENDED
    with pytest.raises(ShipmentRefused, match="suspended") as refused:
        ship(suspended, "A", 1)
    assert refused.value.reason == "suspended"
    # A suspension's signature counts once: signed for an older version, it is stale.
    with pytest.raises(DomainError, match="moved on"):
        decide_licence(
            suspended, signed(ReinstateLicence(actor="alice", reason="ok"), state.version), POLICY, NOW
        )
    back = apply(
        suspended,
        decide_licence(
            suspended, signed(ReinstateLicence(actor="alice", reason="ok"), suspended.version), POLICY, NOW
        ),
    )
    assert back.status is LicenceStatus.VALID


def test_the_last_units_use_the_licence_up():
    state = apply(opened(units=10), ship(opened(units=10), "A", 4))
    events = ship(state, "B", 6)
    assert [type(e) for e in events] == [ShipmentRecorded, LicenceExhausted]
    done = apply(state, events)
    with pytest.raises(ShipmentRefused, match="exhausted"):
        ship(done, "C", 1)
    assert ship(done, "B", 6) == []  # a repeat of a recorded shipment still answers, recording nothing


# -- the exporter's 50% rule -------------------------------------------------------------------------
def declared(units: int, period: str = "2026Q4") -> ExporterState:
    command = DeclareUsShipments(actor="sam", exporter="NVIDIA Corporation", period=period, units=units)
    return evolve_exporter(ExporterState(), decide_declaration(ExporterState(), command), "sam")


def count(state: ExporterState, shipment: str, units: int, period: str = "2026Q4") -> ExporterState:
    command = CountChinaShipment(exporter="NVIDIA Corp.", period=period, shipment=shipment, units=units)
    found = check_count(state, command)
    assert found is not None
    return evolve_exporter(state, ChinaShipmentCounted(**found.model_dump()), "licence")


def test_china_shipments_stay_at_or_below_half_of_us_shipments_per_quarter():
    state = count(count(declared(1_000), "a", 300), "b", 200)  # exactly 50%: allowed
    command = CountChinaShipment(exporter="NVIDIA", period="2026Q4", shipment="c", units=1)
    with pytest.raises(DomainError, match=r"to 501 units, above 50% of its 1,000 units .*at most 500"):
        check_count(state, command)
    # Another quarter has its own room (none declared: none at all).
    with pytest.raises(DomainError, match="above 50% of its 0 units"):
        check_count(state, command.model_copy(update={"period": "2027Q1"}))
    # The same shipment counted again answers as the first time.
    again = CountChinaShipment(exporter="NVIDIA", period="2026Q4", shipment="a", units=300)
    assert check_count(state, again) is None
    assert counted(state, again).china_before == 0
    with pytest.raises(DomainError, match="counted once"):
        counted(state, again.model_copy(update={"units": 301}))


def test_another_exporters_count_is_refused_and_periods_are_quarters():
    with pytest.raises(DomainError, match="is not"):
        check_count(declared(10), CountChinaShipment(exporter="Dell", period="2026Q4", shipment="x", units=1))
    assert period_of(datetime(2026, 1, 1, tzinfo=UTC)) == "2026Q1"
    assert period_of(datetime(2026, 12, 31, tzinfo=UTC)) == "2026Q4"
    # A later declaration for the quarter replaces the earlier, which the event keeps.
    state = declared(1_000)
    command = DeclareUsShipments(actor="sam", exporter="NVIDIA Corporation", period="2026Q4", units=1_500)
    event = decide_declaration(state, command)
    assert event.previous == 1_000
    assert evolve_exporter(state, event, "sam").quarter("2026Q4").us_units == 1_500
