"""The buyers' caps in the event store: a request's claim checked and written in one transaction that
holds its buyer's lock, its release, and `reconcile` holding the rows to what the requests recorded.

Every test that takes `event_store` runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from contextlib import closing
from functools import partial
from pathlib import Path

import pytest

from chipclear.domain.buyer_cap import (
    RULE,
    BuyerCapState,
    BuyerClaim,
    ClaimUnits,
    ReleaseClaim,
    apply_claim,
    apply_release,
    check_claim,
)
from chipclear.domain.commands import Evaluate, Submit, Withdraw
from chipclear.domain.decider import compensations
from chipclear.domain.errors import DomainError
from chipclear.projections import PROJECTIONS
from chipclear.store.protocol import EventStore
from chipclear.store.reconcile import Difference, reconcile
from chipclear.store.sqlite import SQLiteEventStore
from tests.decisions import Run
from tests.domain.test_evidence import rec, request_with
from tests.factories import make_policy
from tests.store.support import ALL_GATES, NOW, RECORDER, Raw, UniqueIds, open_handle, run_threads
from tests.store.test_invoice_registry import StoreWorld

BUYER = "Zhipu AI"


def ask(
    request_id: str, units: int, *, cap: int = 100, partial: bool = False, buyer: str = BUYER
) -> ClaimUnits:
    return ClaimUnits(buyer=buyer, request_id=request_id, units=units, cap=cap, partial=partial)


def give_back(request_id: str, buyer: str = BUYER) -> ReleaseClaim:
    return ReleaseClaim(buyer=buyer, request_id=request_id, reason="withdrawn")


def test_a_claim_within_the_headroom_is_granted_and_a_later_one_replaces_it(event_store: EventStore) -> None:
    first = event_store.claim_buyer_units(ask("r1", 60))
    assert (first.units, first.approved_before, first.cap) == (60, 0, 100)
    second = event_store.claim_buyer_units(ask("r2", 30))
    assert (second.units, second.approved_before) == (30, 60)
    # The same request again (a repeat after a lost workflow task, or a smaller approval) replaces its own.
    again = event_store.claim_buyer_units(ask("r1", 60))
    assert (again.units, again.approved_before) == (60, 30) and first.approved_before == 0
    assert event_store.claim_buyer_units(ask("r1", 20)).units == 20
    assert event_store.buyer_cap(BUYER).claims == {"r1": 20, "r2": 30}


def test_a_claim_above_the_headroom_is_refused_naming_it_and_changes_nothing(event_store: EventStore) -> None:
    event_store.claim_buyer_units(ask("r1", 70))
    with pytest.raises(DomainError, match=rf"remaining headroom of 30 .*{RULE} = 100; 70 already approved"):
        event_store.claim_buyer_units(ask("r2", 31))
    assert event_store.buyer_cap(BUYER).claims == {"r1": 70}


def test_a_partial_claim_takes_what_is_left_and_none_holds_nothing(event_store: EventStore) -> None:
    event_store.claim_buyer_units(ask("r1", 80))
    assert event_store.claim_buyer_units(ask("r2", 50, partial=True)).units == 20
    nothing = event_store.claim_buyer_units(ask("r3", 10, partial=True))
    assert (nothing.units, nothing.approved_before, nothing.headroom) == (0, 100, 0)
    assert event_store.buyer_cap(BUYER).claims == {"r1": 80, "r2": 20}


def test_a_release_gives_back_once_and_ends_the_requests_claims(event_store: EventStore) -> None:
    event_store.claim_buyer_units(ask("r1", 60))
    assert event_store.release_buyer_units(give_back("r1")) == 60
    assert event_store.release_buyer_units(give_back("r1")) == 0
    assert event_store.claim_buyer_units(ask("r2", 100)).approved_before == 0  # the headroom came back
    with pytest.raises(DomainError, match="already released its export approval"):
        event_store.claim_buyer_units(ask("r1", 1, partial=True))
    # A request that ended before it claimed gives back nothing, and may claim no more either.
    assert event_store.release_buyer_units(give_back("r-early")) == 0
    with pytest.raises(DomainError, match="already released"):
        event_store.claim_buyer_units(ask("r-early", 1))
    assert event_store.buyer_cap(BUYER).released == {"r1": 60, "r-early": 0}


def test_one_cap_per_buyer_however_its_name_is_written(event_store: EventStore) -> None:
    event_store.claim_buyer_units(ask("r1", 60, buyer="ByteDance Ltd."))
    assert event_store.claim_buyer_units(ask("r2", 60, buyer="BYTEDANCE LTD", partial=True)).units == 40
    assert event_store.claim_buyer_units(ask("r3", 60, buyer="Tencent Holdings Ltd.")).approved_before == 0
    assert event_store.buyer_cap("bytedance ltd.").claims == {"r1": 60, "r2": 40}


def test_racing_claims_of_one_buyer_never_exceed_its_cap(event_store: EventStore) -> None:
    """Twelve requests of one buyer (on four handles, as on four workers) claim at once; two other
    buyers claim beside them. Each claim sees the ones before it."""
    racers = 12
    handles = [event_store, *(open_handle(event_store) for _ in range(3))]
    start = threading.Barrier(racers + 2)
    granted: dict[str, int] = {}
    before: list[int] = []
    lock = threading.Lock()

    def claim(n: int) -> None:
        start.wait(timeout=30)
        try:
            got = handles[n % len(handles)].claim_buyer_units(
                ask(f"race-{n}", 10, cap=75, partial=n % 2 == 0)
            )
        except DomainError:
            return
        with lock:
            granted[got.request_id] = got.units
            if got.units:
                before.append(got.approved_before)

    def other(buyer: str) -> None:
        start.wait(timeout=30)
        handles[1].claim_buyer_units(ask(f"other-{buyer}", 75, cap=75, buyer=buyer))

    try:
        threads = [partial(claim, n) for n in range(racers)] + [
            partial(other, b) for b in ("Other A", "Other B")
        ]
        assert run_threads(threads) == []
    finally:
        for handle in handles[1:]:
            handle.close()
    # Seven claims of 10 fit under the cap of 75, whichever seven come first; the 5 left go to the first
    # claim after them that takes part of what it asks (the even ones), if one comes after. If all six of
    # those came among the first seven, 5 units are rightly left: every later claim wants all 10.
    grants = sorted(units for units in granted.values() if units)
    assert grants in ([10] * 7, [5] + [10] * 7), granted
    if grants == [10] * 7:
        assert all(granted.get(f"race-{n}") == 10 for n in range(0, racers, 2)), granted
    # Each grant saw the ones before it: the totals they saw are all different, from 0 up.
    assert len(before) == len(set(before)) and min(before) == 0
    assert event_store.buyer_cap(BUYER).claims == {rid: units for rid, units in granted.items() if units}
    assert event_store.buyer_cap("Other A").claims == {"other-Other A": 75}


def test_the_stores_cap_follows_the_domains_model(event_store: EventStore) -> None:
    """Random claims (all or nothing, and partial) and releases over three buyers: the store answers as
    the pure model (`apply_claim`/`apply_release`) does, step by step, and holds what it holds."""
    rng = random.Random(19)
    buyers = ["Buyer One", "BUYER ONE", "Buyer Two", "Buyer Three"]
    model: dict[str, BuyerCapState] = {}
    for step in range(150):
        buyer = rng.choice(buyers)
        key = buyer.lower()
        request_id = f"r{rng.randrange(20)}-{key.split()[-1]}"
        state = model.get(key, BuyerCapState())
        if rng.random() < 0.2:
            back = give_back(request_id, buyer)
            state, units = apply_release(state, back)
            assert event_store.release_buyer_units(back) == units, step
        else:
            command = ask(request_id, rng.randint(1, 60), cap=120, partial=rng.random() < 0.5, buyer=buyer)
            expected = _outcome(partial(check_claim, state, command))
            assert _outcome(partial(event_store.claim_buyer_units, command)) == expected, step
            if not isinstance(expected, str):
                state = apply_claim(state, expected)
        model[key] = state
    for key, state in model.items():
        stored = event_store.buyer_cap(key)
        assert (stored.claims, stored.released) == (state.claims, state.released), key


def _outcome(claim: Callable[[], BuyerClaim]) -> BuyerClaim | str:
    """The grant, or the refusal's words."""
    try:
        return claim()
    except DomainError as refused:
        return str(refused)


# -- reconcile ------------------------------------------------------------------------------------------

CAPPED = make_policy("auto", us_export={"max_units_per_buyer": 100_000})


def played(store: EventStore, request_id: str, units: int, *, withdraw: bool = False) -> Run:
    """A request run as the workflow runs it, against the store's buyers' caps: approved for export (its
    claim taken), then licensed; or withdrawn after its export approval, and compensated (its claim
    given back)."""
    run = Run(CAPPED, now=NOW, world=StoreWorld(store=store), new_id=UniqueIds())
    run.send(Submit(request=request_with(rec(f"INV-{request_id}"), request_id=request_id, units=units)))
    if withdraw:
        run.send(Evaluate(gate=ALL_GATES[0]))  # approved for export: its claim taken
        run.send(Withdraw(reason="order cancelled"))
        for command in compensations(run.state):
            run.send(command)
    else:
        for gate in ALL_GATES:
            run.send(Evaluate(gate=gate))
    store.append(run.request_id, 0, run.history)
    return run


@pytest.fixture
def capped(event_store: EventStore) -> EventStore:
    played(event_store, "req-lic", 40_000)
    played(event_store, "req-wd", 30_000, withdraw=True)
    assert reconcile(event_store, unique_invoices=False) == []
    return event_store


def tamper(store: EventStore, sql: str, params: tuple[object, ...] = ()) -> None:
    raw = Raw(store)
    with closing(raw.conn):
        raw.execute(sql, params)


def only(store: EventStore) -> Difference:
    [difference] = reconcile(store, unique_invoices=False)
    assert difference.table == "buyer_claims"
    return difference


def test_the_rows_are_what_the_requests_recorded(capped: EventStore) -> None:
    cap = capped.buyer_cap(request_with().buyer.name)
    assert cap.claims == {"req-lic": 40_000} and cap.released == {"req-wd": 30_000}


def test_units_added_to_a_claim_are_reported(capped: EventStore) -> None:
    tamper(capped, "UPDATE buyer_claims SET units = 90000 WHERE request_id = 'req-lic'")
    assert capped.verify().ok  # the chain does not cover the table: reconcile does
    assert (
        only(capped).problem
        == "buyer_claims row req-lic: holds 90000 units, but the log records a claim of 40000"
    )


def test_a_deleted_claim_is_reported(capped: EventStore) -> None:
    tamper(capped, "DELETE FROM buyer_claims WHERE request_id = 'req-lic'")
    buyer = request_with().buyer.name
    assert (
        only(capped).problem
        == f"a buyer_claims row for req-lic missing: its record holds 40000 units of {buyer}'s cap"
    )


def test_a_release_taken_back_is_reported(capped: EventStore) -> None:
    tamper(capped, "UPDATE buyer_claims SET units = 30000, released = NULL WHERE request_id = 'req-wd'")
    assert only(capped).problem == (
        "buyer_claims row req-wd: holds 30000 and gave back None units, but the log records 30000 given back"
    )


def test_a_claim_no_request_recorded_is_reported(capped: EventStore) -> None:
    """A row that holds headroom for nobody: the buyer's real requests would be refused."""
    capped.claim_buyer_units(ask("req-ghost", 50_000, cap=100_000, buyer=request_with().buyer.name))
    buyer = request_with().buyer.name
    assert only(capped).problem == (
        f"buyer_claims row req-ghost: holds 50000 units of {buyer}'s cap, "
        "but no event records a claim by the request"
    )


def test_a_release_of_an_open_request_is_reported(event_store: EventStore) -> None:
    """A release row blocks the request's claim for good: only a request that has ended may have one."""
    run = Run(CAPPED, now=NOW, world=StoreWorld(store=event_store), new_id=UniqueIds())
    run.send(Submit(request=request_with(rec("INV-open"), request_id="req-open", units=10_000)))
    event_store.append(run.request_id, 0, run.history)
    event_store.release_buyer_units(
        ReleaseClaim(buyer=request_with().buyer.name, request_id="req-x", reason="-")
    )
    assert (
        reconcile(event_store, unique_invoices=False) == []
    )  # no request req-x: holds nothing, gave nothing
    tamper(event_store, "UPDATE buyer_claims SET request_id = 'req-open' WHERE request_id = 'req-x'")
    assert not run.state.is_final  # submitted, at its first gate
    assert (
        only(event_store).problem
        == "buyer_claims row req-open: records a release, but the request's record has not ended"
    )


def test_an_export_carries_the_caps_to_another_store(capped: EventStore, tmp_path: Path) -> None:
    """`store export` / `store import` move the caps with the log, deployments apart, and the imported
    rows still agree with the imported records."""
    capped.claim_buyer_units(ask("req-demo", 5, buyer=request_with().buyer.name), "@demo-queue")
    with closing(SQLiteEventStore(tmp_path / "copy.db", projections=PROJECTIONS, recorder=RECORDER)) as copy:
        summary = copy.load(list(capped.dump()))
        assert summary.buyer_claims == 3
        buyer = request_with().buyer.name
        assert copy.buyer_cap(buyer) == capped.buyer_cap(buyer)
        assert copy.buyer_cap(buyer, "@demo-queue").claims == {"req-demo": 5}
        assert copy.buyer_cap(buyer).claims == {"req-lic": 40_000}  # the demo's claim is not production's
        [stray] = reconcile(copy, unique_invoices=False)  # a claim no request of the log recorded
        assert stray.key == "req-demo"
