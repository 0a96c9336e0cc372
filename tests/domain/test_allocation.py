"""The pure allocation ledger (buyer names, reserve, open batch, release, idempotency and invariants),
and the cn-import gate that records its answers."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chipclear.domain.allocation import (
    BatchOpened,
    BatchSpec,
    LedgerEvent,
    LedgerState,
    OpenBatch,
    QueueLeft,
    Release,
    RequestQueued,
    RequestsSettled,
    Reservation,
    Reserve,
    UnitsGranted,
    UnitsReleased,
    decide_ledger,
    evolve_ledger,
    fold_ledger,
    settle,
)
from chipclear.domain.commands import (
    Compensate,
    Decide,
    Evaluate,
    Expire,
    RecordAllocation,
    Submit,
    Withdraw,
)
from chipclear.domain.decider import compensations, needs
from chipclear.domain.errors import DomainError
from chipclear.domain.events import AllocationGranted, AllocationQueued, AllocationReleased, GateApproved
from chipclear.domain.facts import FactsWanted
from chipclear.domain.gates import cn_import
from chipclear.domain.gates.cn_import import AllocationRecord
from chipclear.domain.models import Status
from chipclear.domain.names import normalise_buyer
from chipclear.domain.policy import DEFAULT_ROUTE, Policy
from chipclear.domain.settling import SETTLED_PER_RUN, Carried
from tests import decisions
from tests.decisions import BATCH, BUYER, World, ledger_with, only
from tests.decisions import types as event_types
from tests.factories import make_policy, make_request

NOW = datetime(2026, 1, 28, tzinfo=UTC)
Command = Reserve | Release | OpenBatch


# -- helpers ----------------------------------------------------------------------------------------


def apply(
    state: LedgerState, command: Command, now: datetime = NOW
) -> tuple[list[LedgerEvent], LedgerState, Reservation | None]:
    """decide_ledger, then evolve_ledger over its events (on a copy: the fold is in place, and the
    tests compare before with after); the answer for a Reserve."""
    before = state.model_copy(deep=True)
    events = decide_ledger(state, command, now)
    assert state == before  # deciding changes nothing
    new = state.model_copy(deep=True)
    for event in events:
        new = evolve_ledger(new, event)
    assert new.version == state.version + len(events)
    answer = new.answer(command.request_id, command.units) if isinstance(command, Reserve) else None
    return events, new, answer


def fold(events: Sequence[LedgerEvent]) -> LedgerState:
    state = LedgerState()
    for event in events:
        state = evolve_ledger(state, event)
    return state


def types(events: Sequence[LedgerEvent]) -> list[str]:
    return [event.type for event in events]


def batch(batch_id: str = "b1", capacity: int = 100, **fields: object) -> OpenBatch:
    return OpenBatch(
        batch=BatchSpec.model_validate({"batch_id": batch_id, "capacity": capacity, **fields}), actor="wang"
    )


def reserve(request_id: str, buyer: str, units: int) -> Reserve:
    return Reserve(request_id=request_id, buyer=buyer, units=units, workflow_id=f"wf-{request_id}")


def release(request_id: str, reason: str = "withdrawn") -> Release:
    return Release(request_id=request_id, reason=reason)


def ledger(*commands: Command, now: datetime = NOW) -> LedgerState:
    state = LedgerState()
    for command in commands:
        _, state, _ = apply(state, command, now)
    return state


def grants(events: Sequence[LedgerEvent]) -> list[UnitsGranted]:
    return [event for event in events if isinstance(event, UnitsGranted)]


# -- normalise_buyer --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("ByteDance Ltd.", "ByteDance"),
        ("ByteDance", "bytedance"),
        ("ByteDance Ltd.", "bytedance"),
        ("Alibaba Group Holding Limited", "Alibaba"),
        ("Tencent Holdings Ltd.", "TENCENT"),
        ("  ByteDance,   LTD  ", "bytedance"),
        ("ByteDance (Ltd.)", "BYTEDANCE!"),
        ("Baidu, Inc.", "baidu"),
        ("JD.com, Inc.", "jd.com"),
    ],
)
def test_normalise_buyer_equal(one, other):
    assert normalise_buyer(one) == normalise_buyer(other)


def test_normalise_buyer_examples():
    assert normalise_buyer("ByteDance Ltd.") == "bytedance"
    assert normalise_buyer("Alibaba Group Holding Limited") == "alibaba"
    assert normalise_buyer("Tencent Holdings Ltd.") == "tencent"


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("JD.com, Inc.", "ByteDance"),
        ("Alibaba", "Tencent"),
        ("ByteDance Ltd.", "Byte"),
    ],
)
def test_normalise_buyer_different(one, other):
    assert normalise_buyer(one) != normalise_buyer(other)


@pytest.mark.parametrize("name", ["Holding Ltd.", "Group Limited", "Tech Co.", "Inc"])
def test_normalise_buyer_only_legal_words_is_not_emptied(name):
    key = normalise_buyer(name)
    assert key != ""
    assert key == normalise_buyer(name.upper())


# -- reserve ----------------------------------------------------------------------------------------


def test_reserve_granted_in_full():
    state = ledger(batch("b1", 100))
    events, state, answer = apply(state, reserve("r1", "ByteDance Ltd.", 40))
    assert events == [
        UnitsGranted(
            request_id="r1",
            buyer="ByteDance Ltd.",
            batch_id="b1",
            units=40,
            requested=40,
            workflow_id="wf-r1",
        )
    ]
    assert answer == Reservation(request_id="r1", outcome="granted", batch_id="b1", units=40, requested=40)
    assert state.batches["b1"].allocated == 40
    assert state.batches["b1"].free == 60
    assert state.batches["b1"].by_buyer == {"bytedance": 40}
    assert state.allocations["r1"].units == 40
    assert state.queue == []


def test_reserve_partial_because_of_remaining_capacity():
    state = ledger(batch("b1", 100), reserve("r1", "Tencent", 70))
    events, state, answer = apply(state, reserve("r2", "Alibaba", 50))
    [granted] = grants(events)
    assert types(events) == ["UnitsGranted"]
    assert (granted.units, granted.requested, granted.from_queue) == (30, 50, False)
    assert granted.reason is not None
    assert "b1" in granted.reason
    assert "30" in granted.reason
    assert "left" in granted.reason
    assert answer is not None
    assert answer.outcome == "partial"
    assert (answer.batch_id, answer.units, answer.requested) == ("b1", 30, 50)
    assert answer.reason is not None
    assert "b1" in answer.reason
    assert state.batches["b1"].free == 0


def test_reserve_partial_because_of_per_company_cap():
    state = ledger(batch("b1", 1000, per_company_cap=60), reserve("r1", "ByteDance", 20))
    events, state, answer = apply(state, reserve("r2", "BYTEDANCE LTD", 100))
    [granted] = grants(events)
    assert (granted.units, granted.requested) == (40, 100)
    assert granted.reason is not None
    assert "cap" in granted.reason
    assert "60" in granted.reason
    assert answer is not None
    assert answer.outcome == "partial"
    assert answer.units == 40
    assert state.batches["b1"].by_buyer == {"bytedance": 60}
    # The cap is per company: another buyer still gets up to the cap.
    _, state, answer = apply(state, reserve("r3", "Tencent", 100))
    assert answer is not None
    assert (answer.outcome, answer.units) == ("partial", 60)


def test_reserve_partial_answer_keeps_the_recorded_reason():
    """The answer a requester gets (state.answer) should say why it got fewer units: the ledger records
    the reason in UnitsGranted, but the answer rebuilds a generic one from the allocation."""
    state = ledger(batch("b1", 1000, per_company_cap=60))
    events, _, answer = apply(state, reserve("r1", "ByteDance", 100))
    [granted] = grants(events)
    assert answer is not None
    assert answer.reason == granted.reason  # the cap, not a generic "gave 60 of 100"


def test_reserve_queued_when_no_capacity_in_arrival_order():
    state = ledger(batch("b1", 10), reserve("r1", "Tencent", 10))
    events, state, answer = apply(state, reserve("r2", "Alibaba", 5))
    assert events == [RequestQueued(request_id="r2", buyer="Alibaba", units=5, workflow_id="wf-r2", seq=1)]
    assert answer == Reservation(request_id="r2", outcome="queued", requested=5, position=1)
    events, state, answer = apply(state, reserve("r3", "Baidu", 7))
    assert types(events) == ["RequestQueued"]
    assert answer == Reservation(request_id="r3", outcome="queued", requested=7, position=2)
    _, state, answer = apply(state, reserve("r4", "JD.com, Inc.", 1))
    assert answer is not None
    assert answer.position == 3
    assert [e.request_id for e in state.ordered_queue()] == ["r2", "r3", "r4"]
    assert state.batches["b1"].allocated == 10


def test_reserve_queued_with_no_batch_at_all():
    _, _, answer = apply(LedgerState(), reserve("r1", "ByteDance", 5))
    assert answer == Reservation(request_id="r1", outcome="queued", requested=5, position=1)


def test_priority_only_batch_queues_others_and_grants_priority_buyers():
    state = ledger(batch("b1", 100, priority=["ByteDance"], eligible="priority"))
    events, state, answer = apply(state, reserve("r1", "Tencent", 10))
    assert types(events) == ["RequestQueued"]
    assert answer is not None
    assert answer.outcome == "queued"
    events, state, answer = apply(state, reserve("r2", "ByteDance Ltd.", 10))
    assert types(events) == ["UnitsGranted"]
    assert answer is not None
    assert (answer.outcome, answer.batch_id, answer.units) == ("granted", "b1", 10)
    assert state.batches["b1"].by_buyer == {"bytedance": 10}
    assert [e.request_id for e in state.queue] == ["r1"]


def test_eligible_all_batch_grants_everyone():
    state = ledger(batch("b1", 100, priority=["ByteDance"], eligible="all"))
    _, _, answer = apply(state, reserve("r1", "Tencent", 10))
    assert answer is not None
    assert answer.outcome == "granted"


@pytest.mark.parametrize("closes_at", [NOW, NOW - timedelta(seconds=1), NOW - timedelta(days=3)])
def test_closed_batch_grants_nothing(closes_at):
    state = ledger(batch("b1", 100, closes_at=closes_at))
    events, state, answer = apply(state, reserve("r1", "ByteDance", 10))
    assert types(events) == ["RequestQueued"]
    assert answer is not None
    assert answer.outcome == "queued"
    assert state.batches["b1"].allocated == 0


def test_batch_open_until_closes_at():
    state = ledger(batch("b1", 100, closes_at=NOW + timedelta(seconds=1)))
    _, _, answer = apply(state, reserve("r1", "ByteDance", 10))
    assert answer is not None
    assert answer.outcome == "granted"


def test_reserve_picks_the_batch_with_most_room():
    state = ledger(batch("b1", 10), batch("b2", 50), batch("b3", 30))
    _, state, answer = apply(state, reserve("r1", "ByteDance", 100))
    assert answer is not None
    assert (answer.outcome, answer.batch_id, answer.units) == ("partial", "b2", 50)
    _, state, answer = apply(state, reserve("r2", "Tencent", 100))
    assert answer is not None
    assert (answer.batch_id, answer.units) == ("b3", 30)
    # A request one batch can satisfy in full goes to the first that can, in opening order.
    _, _, answer = apply(state, reserve("r3", "Baidu", 5))
    assert answer is not None
    assert (answer.outcome, answer.batch_id) == ("granted", "b1")


def test_reserve_room_accounts_for_cap_and_eligibility():
    state = ledger(
        batch("b1", 500, per_company_cap=20),
        batch("b2", 100, priority=["Alibaba"], eligible="priority"),
        batch("b3", 40),
    )
    _, _, answer = apply(state, reserve("r1", "ByteDance", 100))
    assert answer is not None
    assert (answer.batch_id, answer.units) == ("b3", 40)
    _, _, answer = apply(state, reserve("r2", "Alibaba Group", 100))
    assert answer is not None
    assert (answer.batch_id, answer.units) == ("b2", 100)


# -- idempotency ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "units", "outcome"),
    [
        ([batch("b1", 100)], 10, "granted"),
        ([batch("b1", 100)], 150, "partial"),
        ([batch("b1", 100, per_company_cap=5)], 10, "partial"),
        ([batch("b1", 10), reserve("r0", "Tencent", 10)], 10, "queued"),
        ([batch("b1", 10), reserve("r0", "Tencent", 10), reserve("q1", "Baidu", 3)], 10, "queued"),
    ],
)
def test_reserve_again_same_answer_no_events(setup, units, outcome):
    state = ledger(*setup)
    command = reserve("r1", "ByteDance", units)
    _, state, first = apply(state, command)
    assert first is not None
    assert first.outcome == outcome
    for again in (command, reserve("r1", "ByteDance", units + 1), reserve("r1", "Alibaba", 1)):
        events, after, answer = apply(state, again)
        assert events == []
        assert after == state
        assert answer == first
    assert sum(a.request_id == "r1" for a in state.allocations.values()) <= 1
    assert sum(e.request_id == "r1" for e in state.queue) <= 1


def test_reserve_again_when_queued_keeps_position():
    state = ledger(batch("b1", 1), reserve("r0", "Tencent", 1), reserve("r1", "Baidu", 3))
    _, state, first = apply(state, reserve("r2", "Alibaba", 3))
    assert first is not None
    assert first.position == 2
    events, _, answer = apply(state, reserve("r2", "Alibaba", 3))
    assert events == []
    assert answer == first


def test_reserve_after_release_answers_released():
    state = ledger(batch("b1", 100), reserve("r1", "ByteDance", 10), release("r1"))
    events, after, answer = apply(state, reserve("r1", "ByteDance", 10))
    assert events == []
    assert after == state
    assert answer == Reservation(request_id="r1", outcome="released", requested=10)
    assert after.batches["b1"].allocated == 0


def test_reserve_after_leaving_queue_answers_released():
    state = ledger(reserve("r1", "ByteDance", 10), release("r1"))
    events, _, answer = apply(state, reserve("r1", "ByteDance", 10))
    assert events == []
    assert answer is not None
    assert answer.outcome == "released"
    # Not even a new batch brings it back.
    events, state, _ = apply(state, batch("b1", 100))
    assert types(events) == ["BatchOpened"]
    assert state.allocations == {}


# -- open batch -------------------------------------------------------------------------------------


def test_open_batch_records_spec_and_time():
    spec = BatchSpec(batch_id="b1", capacity=100, priority=["ByteDance"], per_company_cap=30)
    events, state, _ = apply(LedgerState(), OpenBatch(batch=spec, actor="wang"))
    assert events == [BatchOpened(batch=spec, opened_at=NOW)]
    opened = state.batches["b1"]
    assert (opened.capacity, opened.allocated, opened.free, opened.opened_at) == (100, 0, 100, NOW)
    assert opened.is_priority("bytedance")
    assert opened.is_priority(normalise_buyer("ByteDance Ltd."))


def test_open_batch_duplicate_id_raises():
    state = ledger(batch("b1", 100))
    with pytest.raises(DomainError, match="b1"):
        decide_ledger(state, batch("b1", 5), NOW)


def test_open_batch_serves_queue_priority_first_then_fifo():
    state = ledger(
        reserve("r1", "Tencent", 10),
        reserve("r2", "ByteDance Ltd.", 10),
        reserve("r3", "Alibaba", 10),
        reserve("r4", "bytedance", 10),
        reserve("r5", "Baidu", 10),
    )
    assert [e.request_id for e in state.ordered_queue()] == ["r1", "r2", "r3", "r4", "r5"]
    events, state, _ = apply(state, batch("b1", 35, priority=["ByteDance"]))
    assert types(events) == ["BatchOpened", "UnitsGranted", "UnitsGranted", "UnitsGranted", "UnitsGranted"]
    served = [(g.request_id, g.units, g.requested) for g in grants(events)]
    assert served == [("r2", 10, 10), ("r4", 10, 10), ("r1", 10, 10), ("r3", 5, 10)]
    assert all(g.from_queue for g in grants(events))
    assert grants(events)[-1].reason is not None
    assert [e.request_id for e in state.queue] == ["r5"]
    assert state.position("r5") == 1
    answer = state.answer("r3", 10)
    assert answer is not None
    assert (answer.outcome, answer.batch_id, answer.units, answer.requested) == ("partial", "b1", 5, 10)
    assert state.batches["b1"].free == 0


def test_open_batch_priority_reorders_waiting_queue():
    state = ledger(reserve("r1", "Tencent", 10), reserve("r2", "Alibaba Group", 10))
    assert state.position("r2") == 2
    events, state, _ = apply(state, batch("b1", 1, priority=["Alibaba"], eligible="priority"))
    assert [(g.request_id, g.units, g.from_queue) for g in grants(events)] == [("r2", 1, True)]
    assert [e.request_id for e in state.queue] == ["r1"]
    # A later Alibaba request now waits ahead of the earlier Tencent one.
    _, state, answer = apply(state, reserve("r3", "alibaba", 5))
    assert answer == Reservation(request_id="r3", outcome="queued", requested=5, position=1)
    assert state.position("r1") == 2


def test_priority_of_a_closed_batch_does_not_jump_the_queue():
    """ordered_queue: "Priority buyers (of any open batch) first, then everyone else; each tier by
    arrival." Once the batch that named ByteDance has closed, ByteDance should wait its turn."""
    state = ledger(
        batch("b1", 10, priority=["ByteDance"], closes_at=NOW + timedelta(days=1)),
        reserve("r1", "Tencent", 10),
        reserve("r2", "Alibaba", 5),
        reserve("r3", "ByteDance", 5),
    )
    assert [e.request_id for e in state.ordered_queue()] == ["r3", "r2"]  # b1 still open: fine
    later = NOW + timedelta(days=2)
    assert not state.batches["b1"].is_open(later)
    events, _, _ = apply(state, batch("b2", 5), now=later)
    assert [g.request_id for g in grants(events)] == ["r2"]  # a closed batch confers no priority


def test_open_batch_serves_non_priority_with_cap():
    state = ledger(
        reserve("r1", "Tencent", 50), reserve("r2", "Tencent Holdings", 50), reserve("r3", "Baidu", 50)
    )
    events, state, _ = apply(state, batch("b1", 200, per_company_cap=60))
    served = [(g.request_id, g.units) for g in grants(events)]
    assert served == [("r1", 50), ("r2", 10), ("r3", 50)]
    assert state.batches["b1"].by_buyer == {"tencent": 60, "baidu": 50}
    assert state.queue == []


def test_open_batch_queue_ineligible_stays_queued():
    state = ledger(reserve("r1", "Tencent", 5), reserve("r2", "ByteDance", 5))
    events, state, _ = apply(state, batch("b1", 100, priority=["ByteDance"], eligible="priority"))
    assert [g.request_id for g in grants(events)] == ["r2"]
    assert [e.request_id for e in state.queue] == ["r1"]
    assert state.position("r1") == 1


def test_open_closed_batch_serves_nothing():
    state = ledger(reserve("r1", "Tencent", 5))
    events, state, _ = apply(state, batch("b1", 100, closes_at=NOW - timedelta(hours=1)))
    assert types(events) == ["BatchOpened"]
    assert [e.request_id for e in state.queue] == ["r1"]


# -- release ----------------------------------------------------------------------------------------


def test_release_gives_units_back():
    state = ledger(batch("b1", 100, per_company_cap=50), reserve("r1", "ByteDance", 30))
    events, state, _ = apply(state, release("r1", "licence denied"))
    assert events == [UnitsReleased(request_id="r1", batch_id="b1", units=30, reason="licence denied")]
    b1 = state.batches["b1"]
    assert (b1.allocated, b1.free, b1.capacity) == (0, 100, 100)
    assert b1.capacity == b1.allocated + b1.free
    assert b1.by_buyer == {}
    assert "r1" not in state.allocations
    assert state.released["r1"].batch_id == "b1"
    assert state.released["r1"].units == 30


def test_release_keeps_other_holdings_of_same_buyer():
    state = ledger(batch("b1", 100), reserve("r1", "ByteDance", 30), reserve("r2", "ByteDance Ltd", 20))
    _, state, _ = apply(state, release("r1"))
    assert state.batches["b1"].by_buyer == {"bytedance": 20}
    assert state.batches["b1"].allocated == 20


def test_release_serves_queue_from_freed_units():
    state = ledger(
        batch("b1", 50, priority=["Alibaba"]),
        reserve("r1", "ByteDance", 50),
        reserve("r2", "Tencent", 20),
        reserve("r3", "Alibaba", 20),
        reserve("r4", "Baidu", 20),
    )
    assert [e.request_id for e in state.ordered_queue()] == ["r3", "r2", "r4"]
    events, state, _ = apply(state, release("r1"))
    assert types(events) == ["UnitsReleased", "UnitsGranted", "UnitsGranted", "UnitsGranted"]
    assert [(g.request_id, g.units, g.from_queue) for g in grants(events)] == [
        ("r3", 20, True),
        ("r2", 20, True),
        ("r4", 10, True),
    ]
    b1 = state.batches["b1"]
    assert (b1.allocated, b1.free) == (50, 0)
    assert state.queue == []
    answer = state.answer("r4", 20)
    assert answer is not None
    assert (answer.outcome, answer.units) == ("partial", 10)


def test_release_queued_request_leaves_queue():
    state = ledger(
        batch("b1", 10), reserve("r1", "Tencent", 10), reserve("r2", "Baidu", 5), reserve("r3", "JD", 5)
    )
    events, state, _ = apply(state, release("r2", "withdrawn"))
    assert events == [QueueLeft(request_id="r2", reason="withdrawn")]
    assert [e.request_id for e in state.queue] == ["r3"]
    assert state.position("r3") == 1
    assert state.released["r2"].batch_id is None
    assert state.released["r2"].units == 0
    assert state.batches["b1"].allocated == 10


@pytest.mark.parametrize(
    "setup",
    [
        [batch("b1", 100), reserve("r1", "ByteDance", 10), release("r1")],
        [reserve("r1", "ByteDance", 10), release("r1")],
        [batch("b1", 100)],
        [],
    ],
)
def test_release_twice_or_unknown_emits_nothing(setup):
    state = ledger(*setup)
    events, after, _ = apply(state, release("r1"))
    assert events == []
    assert after == state


# -- properties -------------------------------------------------------------------------------------

BUYER_FORMS = {
    "bytedance": ["ByteDance", "ByteDance Ltd.", "BYTEDANCE", "bytedance inc", "ByteDance Co., Ltd."],
    "alibaba": ["Alibaba", "Alibaba Group Holding Limited", "ALIBABA GROUP", "alibaba"],
    "tencent": ["Tencent", "Tencent Holdings Ltd.", "TENCENT", "tencent holdings"],
    "baidu": ["Baidu", "Baidu, Inc.", "BAIDU", "baidu inc."],
    "jd com": ["JD.com", "JD.com, Inc.", "jd.com", "JD.COM LIMITED"],
}
KEYS = sorted(BUYER_FORMS)
REQUEST_IDS = [f"r{i:02d}" for i in range(30)]
# Mostly a few ids, so that repeats, releases and re-reserves really meet earlier requests.
request_ids = st.sampled_from(REQUEST_IDS[:8]) | st.sampled_from(REQUEST_IDS)
BATCH_IDS = [f"b{i}" for i in range(6)]


def buyer_names() -> st.SearchStrategy[str]:
    return st.sampled_from(KEYS).flatmap(lambda key: st.sampled_from(BUYER_FORMS[key]))


open_batches = st.builds(
    BatchSpec,
    batch_id=st.sampled_from(BATCH_IDS),
    capacity=st.integers(1, 500),
    priority=st.lists(buyer_names(), max_size=4),
    per_company_cap=st.none() | st.integers(1, 300),
    eligible=st.sampled_from(["all", "priority"]),
    closes_at=st.sampled_from([None, None, None, NOW - timedelta(hours=1), NOW + timedelta(days=1)]),
).map(lambda batch: OpenBatch(batch=batch, actor="wang"))
reserves = st.builds(
    lambda request_id, buyer, units: reserve(request_id, buyer, units),
    request_ids,
    buyer_names(),
    st.integers(1, 300),
)
releases = st.builds(lambda request_id: release(request_id), st.sampled_from(REQUEST_IDS[:8]))
commands = st.lists(
    st.sampled_from([open_batches, open_batches, reserves, reserves, reserves, releases, releases]).flatmap(
        lambda s: s
    ),
    min_size=5,
    max_size=50,
)


def check_invariants(state: LedgerState) -> None:
    for batch_id, held in state.batches.items():
        in_batch = [a for a in state.allocations.values() if a.batch_id == batch_id]
        assert held.allocated == sum(a.units for a in in_batch) == held.capacity - held.free
        assert 0 <= held.allocated <= held.capacity
        by_key: Counter[str] = Counter()
        for allocation in in_batch:
            by_key[normalise_buyer(allocation.buyer)] += allocation.units
        assert held.by_buyer == {k: v for k, v in by_key.items() if v}, batch_id
        if held.per_company_cap is not None:
            assert all(units <= held.per_company_cap for units in held.by_buyer.values()), batch_id
        if held.eligible == "priority":
            assert all(held.is_priority(key) for key in held.by_buyer), batch_id
    queued = [e.request_id for e in state.queue]
    assert len(queued) == len(set(queued))
    assert not set(queued) & set(state.allocations)
    assert not set(queued) & set(state.released)
    assert not set(state.allocations) & set(state.released)
    assert all(key == a.request_id and 1 <= a.units <= a.requested for key, a in state.allocations.items())
    # Maximally served: whatever still waits has no room in any batch.
    for entry in state.queue:
        for held in state.batches.values():
            assert held.room_for(entry.buyer_key, NOW) == 0, (entry.request_id, held.batch_id)
    assert sorted(state.ordered_queue(), key=lambda e: e.seq) == sorted(state.queue, key=lambda e: e.seq)
    assert [state.position(e.request_id) for e in state.ordered_queue()] == list(
        range(1, len(state.queue) + 1)
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands)
def test_ledger_invariants_hold_for_any_interleaving(commands):
    state = LedgerState()
    history: list[LedgerEvent] = []
    granted_count: Counter[str] = Counter()
    for command in commands:
        try:
            events, new, answer = apply(state, command)
        except DomainError:
            assert isinstance(command, OpenBatch)
            assert command.batch.batch_id in state.batches
            continue

        # Grants served from the queue follow the queue's order: priority tier first, then arrival.
        from_queue = [e for e in grants(events) if e.from_queue]
        if from_queue:
            mid = state.model_copy(deep=True)
            for event in events:
                if isinstance(event, UnitsGranted):
                    break
                mid = evolve_ledger(mid, event)
            order = [e.request_id for e in mid.ordered_queue(NOW)]
            served = [g.request_id for g in from_queue]
            assert served == [rid for rid in order if rid in set(served)]
            assert isinstance(command, OpenBatch | Release)
        for event in events:
            if isinstance(event, UnitsGranted):
                granted_count[event.request_id] += 1
                assert 1 <= event.units <= event.requested
                assert (event.reason is None) == (event.units == event.requested)
        assert all(count == 1 for count in granted_count.values()), granted_count

        if isinstance(command, Reserve):
            assert answer is not None
            known = state.answer(command.request_id, command.units)
            if known is not None:
                assert events == []
                assert answer == known
            else:
                assert len(events) == 1
                assert isinstance(events[0], UnitsGranted | RequestQueued)
            # Asking again changes nothing and gives the same answer.
            again_events, again_state, again = apply(new, command)
            assert again_events == []
            assert again_state == new
            assert again == answer
        if isinstance(command, Release) and command.request_id in new.released:
            assert command.request_id not in new.allocations
            assert all(e.request_id != command.request_id for e in new.queue)

        history.extend(events)
        state = new
        check_invariants(state)

    assert fold(history) == state
    # A request granted at most once across the whole history, and only while it held nothing.
    per_request: defaultdict[str, list[str]] = defaultdict(list)
    for event in history:
        if isinstance(event, UnitsGranted | RequestQueued | UnitsReleased | QueueLeft):
            per_request[event.request_id].append(event.type)
    for request_id, kinds in per_request.items():
        assert kinds.count("UnitsGranted") <= 1, request_id
        assert kinds.count("RequestQueued") <= 1, request_id
        assert kinds.count("UnitsReleased") + kinds.count("QueueLeft") <= 1, request_id
        if "UnitsReleased" in kinds or "QueueLeft" in kinds:
            assert kinds[-1] in {"UnitsReleased", "QueueLeft"}, (request_id, kinds)


PRIORITY = "Priority Holdings"


def waiting_order(state: LedgerState, first_tier: set[str]) -> list[str]:
    """The queue's order computed afresh from the fields (not the ledger's own indexes), given the ids
    of the requests whose buyer is a priority buyer."""
    ordered = sorted(state.queue, key=lambda e: (e.request_id not in first_tier, e.seq))
    return [e.request_id for e in ordered]


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rush=st.integers(2_000, 4_000),
    capacity=st.integers(500, 3_000),
    cap=st.none() | st.integers(50, 400),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_rush_of_thousands_keeps_order_and_capacity(rush, capacity, cap, seed):
    """Thousands of reservations one after another, as a rush reaches the ledger, folded in place: never
    over capacity or a company's cap; every queued answer's position is its place in arrival order
    within its tier; units given back and a new batch serve the waiting in exactly that order; and
    the fold of the events, or the state read back from JSON, is the state the decisions built."""
    rnd = random.Random(seed)
    state = LedgerState()
    history: list[LedgerEvent] = []

    def run(command: Command) -> list[LedgerEvent]:
        events = decide_ledger(state, command, NOW)
        for event in events:
            assert evolve_ledger(state, event) is state
        history.extend(events)
        return events

    run(batch("b1", capacity, per_company_cap=cap, priority=[PRIORITY]))
    names = [f"Rush Buyer {i} Co., Ltd." for i in range(40)] + [f"{PRIORITY} Ltd."]
    first_tier: set[str] = set()
    waiting: Counter[bool] = Counter()
    for index in range(rush):
        command = reserve(f"r{index}", rnd.choice(names), rnd.randint(1, 9))
        first = normalise_buyer(command.buyer) == normalise_buyer(PRIORITY)
        if first:
            first_tier.add(command.request_id)
        [event] = run(command)
        answer = state.answer(command.request_id, command.units)
        assert answer is not None
        if isinstance(event, RequestQueued):
            # Nobody leaves during the rush: a newcomer waits behind its whole tier.
            waiting[first] += 1
            assert answer.position == (waiting[True] if first else waiting[True] + waiting[False])
    held = state.batches["b1"]
    assert held.allocated == sum(a.units for a in state.allocations.values()) <= capacity
    assert cap is None or max(held.by_buyer.values()) <= cap
    assert len(state.allocations) + len(state.queue) == rush
    assert [e.request_id for e in state.ordered_queue()] == waiting_order(state, first_tier)
    assert [state.position(rid) for rid in waiting_order(state, first_tier)] == list(
        range(1, len(state.queue) + 1)
    )

    # Units given back, and requests leaving the queue: whatever is served, is served in queue order.
    for request_id in rnd.sample([f"r{i}" for i in range(rush)], 300):
        order = waiting_order(state, first_tier)
        served = [g.request_id for g in grants(run(release(request_id))) if g.from_queue]
        assert served == [rid for rid in order if rid in set(served)]
        assert state.batches["b1"].allocated <= capacity
    assert [e.request_id for e in state.ordered_queue()] == waiting_order(state, first_tier)

    order = waiting_order(state, first_tier)
    served = [g.request_id for g in grants(run(batch("b2", rush * 9))) if g.from_queue]
    assert served == order  # room for all: every waiting request, in queue order
    assert state.queue == []
    assert fold(history) == state
    assert LedgerState.model_validate_json(state.model_dump_json()) == state


# -- the cn-import gate: the ledger's answer is a fact the request records -----------------------------

US_EXPORT, CN_IMPORT, DOMESTIC_QUOTA = DEFAULT_ROUTE


@dataclass
class Run(decisions.Run):
    now: datetime = NOW


def batches(mode: str = "manual") -> Policy:
    return make_policy(mode, cn_import={"allocate_from_batches": True})


def at_cn_import(mode: str = "manual", world: World | None = None, **request: object) -> Run:
    """Submitted and approved at us-export (by alice, or by the rules in auto mode)."""
    run = Run(batches(mode), world=world or World())
    run.send(Submit(request=make_request(**request)))
    run.to(CN_IMPORT)
    return run


def allocation(run: Run) -> AllocationRecord | None:
    return cn_import.GATE.slice(run.state).allocation


def test_evaluate_at_cn_import_reserves_the_units_still_in_play():
    run = Run(batches())
    run.send(Submit(request=make_request(units=50_000)))
    run.send(Decide(gate=US_EXPORT, reviewer="alice", approve=True, units=40_000))
    assert needs(run.state, Evaluate(gate=CN_IMPORT), run.policy, NOW) == FactsWanted(
        reservation=Reserve(request_id=run.request_id, buyer=BUYER, units=40_000, workflow_id="")
    )
    # Without batches, or when a rule denies the request anyway, the ledger is not asked.
    assert needs(run.state, Evaluate(gate=CN_IMPORT), make_policy("manual"), NOW) == FactsWanted()
    state_owned = at_cn_import(buyer={"name": "China Mobile", "country": "CN", "kind": "state_owned"})
    assert needs(state_owned.state, Evaluate(gate=CN_IMPORT), state_owned.policy, NOW) == FactsWanted()
    assert event_types(state_owned.send(Evaluate(gate=CN_IMPORT))) == ["GateDenied"]
    assert state_owned.world.ledger.allocations == {}


def test_a_grant_in_full_is_recorded_and_a_reviewer_decides():
    run = at_cn_import("manual")
    events = run.send(Evaluate(gate=CN_IMPORT))
    assert event_types(events) == ["AllocationGranted"]
    assert events[0].data == AllocationGranted(batch_id=BATCH, units=50_000, requested=50_000)
    assert events[0].actor == "allocation-ledger"  # the ledger's answer, whichever command asked
    assert allocation(run) == AllocationRecord(
        outcome="granted", batch_id=BATCH, units=50_000, requested=50_000
    )
    assert run.state.status == "cn_import_review"
    assert run.state.labels == {"batch": BATCH}
    assert run.world.ledger.allocations[run.request_id].units == 50_000
    approved = only(run.send(Decide(gate=CN_IMPORT, reviewer="wang", approve=True)), GateApproved)
    assert approved.units_approved == 50_000


def test_a_grant_in_auto_mode_approves_at_once():
    run = at_cn_import("auto")
    events = run.send(Evaluate(gate=CN_IMPORT))
    assert event_types(events) == ["AllocationGranted", "GateApproved", "GateOpened"]
    assert [event.actor for event in events] == ["allocation-ledger", "policy", "policy"]
    assert run.state.gate == DOMESTIC_QUOTA


@pytest.mark.parametrize("mode", ["manual", "auto"])
def test_a_partial_grant_cuts_the_units_in_play(mode):
    run = at_cn_import(mode, World(ledger=ledger_with(BatchSpec(batch_id=BATCH, capacity=30_000))))
    events = run.send(Evaluate(gate=CN_IMPORT))
    granted = only(events, AllocationGranted)
    assert (granted.units, granted.requested) == (30_000, 50_000)
    assert granted.reason == f"batch {BATCH} had only 30000 units left"
    record = allocation(run)
    assert record is not None and record.outcome == "partial"
    if mode == "manual":
        assert run.state.units_in_play == 30_000
        run.refuse(
            Decide(gate=CN_IMPORT, reviewer="wang", approve=True, units=40_000),
            "units: 40000 exceeds the 30000 units still requested",
        )
        run.send(Decide(gate=CN_IMPORT, reviewer="wang", approve=True))
    assert run.state.units_approved == 30_000
    assert run.state.gate == DOMESTIC_QUOTA


@pytest.mark.parametrize("mode", ["manual", "auto"])
def test_a_request_the_ledger_cannot_serve_waits_in_its_queue(mode):
    run = at_cn_import(mode, World(ledger=ledger_with()))
    events = run.send(Evaluate(gate=CN_IMPORT))
    assert event_types(events) == ["AllocationQueued"]
    assert only(events, AllocationQueued).position == 1
    assert run.state.status == "cn_import_queued"
    assert run.state.gate == CN_IMPORT
    assert needs(run.state, Evaluate(gate=CN_IMPORT), run.policy, NOW) == FactsWanted()  # asked once
    run.refuse(
        Decide(gate=CN_IMPORT, reviewer="wang", approve=True),
        r"no units allocated yet \(queued at position 1\); cn-import can approve only units from an "
        "allocation batch",
    )
    # A denial needs no units.
    run.send(Decide(gate=CN_IMPORT, reviewer="wang", approve=False, reason="no batch this year"))
    assert run.state.status == Status.DENIED


@pytest.mark.parametrize("mode", ["manual", "auto"])
def test_a_later_grant_from_the_ledger_is_recorded(mode):
    run = at_cn_import(mode, World(ledger=ledger_with()))
    run.send(Evaluate(gate=CN_IMPORT))
    [granted] = run.world.open_batch(BatchSpec(batch_id="B2", capacity=80_000), NOW + timedelta(days=3))
    assert (granted.request_id, granted.units, granted.from_queue) == (run.request_id, 50_000, True)
    answer = run.world.reservation(run.request_id)
    assert answer is not None
    events = run.send(RecordAllocation(reservation=answer))
    assert only(events, AllocationGranted) == AllocationGranted(batch_id="B2", units=50_000, requested=50_000)
    assert events[0].actor == "allocation-ledger"
    if mode == "manual":
        assert event_types(events) == ["AllocationGranted"]
        assert run.state.status == "cn_import_review"
    else:
        assert event_types(events) == ["AllocationGranted", "GateApproved", "GateOpened"]
        assert {event.actor for event in events[1:]} == {"policy"}
        assert run.state.gate == DOMESTIC_QUOTA


def test_record_allocation_refusals():
    granted = Reservation(request_id="x", outcome="granted", batch_id="B9", units=10, requested=10)
    early = Run(batches())
    early.send(Submit(request=make_request()))
    early.refuse(RecordAllocation(reservation=granted), "request is at us-export, not at gate cn-import")

    run = at_cn_import("manual")
    run.send(Evaluate(gate=CN_IMPORT))
    run.refuse(RecordAllocation(reservation=granted), "units are already allocated to this request")

    queued = at_cn_import("manual", World(ledger=ledger_with()))
    queued.send(Evaluate(gate=CN_IMPORT))
    again = Reservation(request_id=queued.request_id, outcome="queued", requested=50_000, position=1)
    queued.refuse(RecordAllocation(reservation=again), "already queued for allocation")
    empty = granted.model_copy(update={"batch_id": None, "units": 0})
    queued.refuse(RecordAllocation(reservation=empty), "names its batch and at least one unit")

    off = Run(make_policy("manual"))
    off.send(Submit(request=make_request()))
    off.to(CN_IMPORT)
    off.refuse(RecordAllocation(reservation=granted), "allocate_from_batches is off: this request takes no")


def test_compensation_gives_the_units_back_once():
    run = at_cn_import("manual")
    run.send(Evaluate(gate=CN_IMPORT))
    run.send(Withdraw(reason="project cancelled"))
    command = Compensate(gate=CN_IMPORT, reason="request withdrawn: project cancelled")
    assert command in compensations(run.state)
    assert needs(run.state, command, run.policy, NOW) == FactsWanted(
        release_allocation=Release(request_id=run.request_id, reason=command.reason)
    )
    events = run.send(command)
    assert event_types(events) == ["AllocationReleased"]
    assert events[0].data == AllocationReleased(batch_id=BATCH, units=50_000, reason=command.reason)
    assert events[0].actor == "allocation-ledger"  # the ledger took them back
    assert run.world.ledger.batches[BATCH].allocated == 0
    record = allocation(run)
    assert record is not None and record.released
    assert needs(run.state, command, run.policy, NOW) == FactsWanted()
    assert run.send(command) == []


def test_compensation_of_a_queued_request_leaves_the_queue():
    run = at_cn_import("manual", World(ledger=ledger_with()))
    run.send(Evaluate(gate=CN_IMPORT))
    run.send(Expire(gate=CN_IMPORT), at=NOW + timedelta(days=90))
    events = run.send(Compensate(gate=CN_IMPORT, reason="expired"))
    assert events[0].data == AllocationReleased(batch_id=None, units=0, reason="expired")
    assert run.world.ledger.queue == []


def test_compensation_without_an_allocation_asks_nothing():
    run = at_cn_import("manual")
    run.send(Withdraw(reason="project cancelled"))  # before the ledger was asked
    command = Compensate(gate=CN_IMPORT, reason="x")
    assert needs(run.state, command, run.policy, NOW) == FactsWanted()
    assert run.send(command) == []


def test_units_one_request_gives_back_serve_the_next_in_the_queue():
    world = World(ledger=ledger_with(BatchSpec(batch_id=BATCH, capacity=50_000)))
    first, second = at_cn_import("manual", world), at_cn_import("manual", world)
    first.send(Evaluate(gate=CN_IMPORT))
    assert event_types(second.send(Evaluate(gate=CN_IMPORT))) == ["AllocationQueued"]
    first.send(Decide(gate=CN_IMPORT, reviewer="wang", approve=False, reason="end use unclear"))
    for command in compensations(first.state):
        first.send(command)
    answer = world.reservation(second.request_id)
    assert answer is not None and (answer.outcome, answer.units) == ("granted", 50_000)
    second.send(RecordAllocation(reservation=answer))
    assert second.state.status == "cn_import_review"
    assert second.state.units_in_play == 50_000


# -- settling: what a run need not carry to the next -------------------------------------------------


def _run_of_four() -> tuple[LedgerState, list[LedgerEvent]]:
    """A ledger whose run began with r1 and r2 granted (the batch full), r3 gone from the queue and r4
    waiting in it; its events."""
    events: list[LedgerEvent] = []
    state = LedgerState()
    for command in (
        batch("b1", 50),
        reserve("r1", "ByteDance Ltd.", 30),
        reserve("r2", "JD.com, Inc.", 20),
        reserve("r3", "Baidu Inc.", 10),
        reserve("r4", "Kuaishou", 90),
        release("r3", "withdrawn"),
    ):
        new, state, _ = apply(state, command)
        events.extend(new)
    return state, events


def test_settling_drops_carried_licences_and_releases_and_keeps_every_total():
    state, events = _run_of_four()
    carried = Carried.of(state.allocations, state.released)
    # In this run: r2 gives its 20 units back, and they go to r4, first in the queue.
    new, state, _ = apply(state, release("r2", "withdrawn"))
    events.extend(new)
    assert state.allocations["r4"].units == 20
    settled = settle(state, carried, licensed={"r1", "r4"})
    assert settled == [RequestsSettled(request_ids=["r1", "r3"], licensed=1)]
    before = state.batches["b1"].model_copy(deep=True)
    for event in settled:
        state = evolve_ledger(state, event)
    # r4 (granted in this run) and r2 (given back in this run) are carried one run more.
    assert set(state.allocations) == {"r4"} and set(state.released) == {"r2"} and state.queue == []
    assert state.batches["b1"] == before  # the totals keep the settled units
    assert state.batches["b1"].allocated == 50 and state.batches["b1"].by_buyer["bytedance"] == 30
    assert fold([*events, *settled]) == state  # the store's readers fold it as the workflow holds it


def test_a_held_allocation_not_yet_licensed_is_carried_on():
    """A request still under review, or one that ended unlicensed and has not given its units back yet:
    its release must find the allocation, or the units would never return to the batch."""
    state, _ = _run_of_four()
    carried = Carried.of(state.allocations, state.released)
    for event in settle(state, carried, licensed=set()):
        state = evolve_ledger(state, event)
    assert set(state.allocations) == {"r1", "r2"}
    _, state, _ = apply(state, release("r1", "denied"))  # its release still finds the units
    assert state.released["r1"].units == 30 and state.allocations["r4"].units == 30


def test_nothing_carried_in_nothing_settled():
    state, _ = _run_of_four()
    assert settle(state, Carried(), licensed={"r1", "r2"}) == []


def test_a_settled_ledger_folds_from_the_store_as_the_workflow_holds_it():
    state, events = _run_of_four()
    settled = settle(state, Carried.of(state.allocations, state.released), licensed={"r1", "r2"})
    for event in settled:
        state = evolve_ledger(state, event)
    assert fold_ledger([*events, *settled]) == state
    assert state.allocations == {} and state.released == {}
    # What is settled keeps none of its idempotency record, so it is only ever done as the run ends,
    # for requests whose workflows have ended (licensed) or ended and given back (released).
    assert state.answer("r1", 30) is None


def test_one_run_settles_at_most_its_share_and_leaves_the_rest_to_the_next():
    state = LedgerState()
    for event in decide_ledger(state, batch("b1", 10_000), NOW):
        state = evolve_ledger(state, event)
    for i in range(SETTLED_PER_RUN + 300):
        for event in decide_ledger(state, reserve(f"r{i}", "ByteDance", 1), NOW):
            state = evolve_ledger(state, event)
    for i in range(200):  # 200 of them gave their unit back
        for event in decide_ledger(state, release(f"r{i}"), NOW):
            state = evolve_ledger(state, event)
    carried = Carried.of(state.allocations, state.released)
    licensed = {f"r{i}" for i in range(200, SETTLED_PER_RUN + 300)}
    [first] = settle(state, carried, licensed)
    assert isinstance(first, RequestsSettled)
    assert len(first.request_ids) == SETTLED_PER_RUN and first.licensed == SETTLED_PER_RUN
    state = evolve_ledger(state, first)
    [second] = settle(state, carried, licensed)  # the next run's turn
    assert isinstance(second, RequestsSettled)
    assert (len(second.request_ids), second.licensed) == (300, 100)
    state = evolve_ledger(state, second)
    assert state.allocations == {} and state.released == {}
    assert state.batches["b1"].allocated == SETTLED_PER_RUN + 100
