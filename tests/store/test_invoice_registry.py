"""The invoice registry's conformance suite: an invoice counts for one request, first come first served.

Every test that takes `event_store` runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from functools import partial

from chipclear.domain.evidence import InvoiceOwner
from chipclear.store.protocol import EventStore
from tests.store.support import open_handle, run_threads

BUYER, OTHER_BUYER = "Alpha Compute Ltd.", "Beta Cloud Co."


def test_registering_again_for_the_same_request_changes_nothing(event_store: EventStore) -> None:
    keys = ["huawei|hw1", "huawei|hw2"]
    answer = event_store.register_invoices("req-a", BUYER, keys)
    assert answer == dict.fromkeys(keys, InvoiceOwner(request_id="req-a", buyer=BUYER))
    assert event_store.register_invoices("req-a", BUYER, keys) == answer
    assert event_store.register_invoices("req-a", BUYER, [*reversed(keys), keys[0]]) == answer
    assert event_store.register_invoices("req-a", BUYER, []) == {}


def test_first_come_first_served(event_store: EventStore) -> None:
    a = InvoiceOwner(request_id="req-a", buyer=BUYER)
    b = InvoiceOwner(request_id="req-b", buyer=OTHER_BUYER)
    assert event_store.register_invoices("req-a", BUYER, ["k1", "k2"]) == {"k1": a, "k2": a}
    assert event_store.register_invoices("req-b", OTHER_BUYER, ["k2", "k3"]) == {"k2": a, "k3": b}
    assert event_store.register_invoices("req-a", BUYER, ["k3"]) == {"k3": b}


def test_a_released_invoice_is_free_for_its_own_buyer_only(event_store: EventStore) -> None:
    key = "huawei|hw9001"
    assert event_store.register_invoices("req-a1", "ByteDance Ltd.", [key])[key].request_id == "req-a1"
    assert event_store.release_invoices("req-a1") == 1
    assert event_store.release_invoices("req-a1") == 0  # freeing what is free changes nothing
    assert event_store.release_invoices("req-never") == 0
    # Another buyer still cannot count it: the purchase was ByteDance's.
    stranger = event_store.register_invoices("req-b1", "Kuaishou Technology", [key])[key]
    assert stranger == InvoiceOwner(request_id="(ended unlicensed)", buyer="ByteDance Ltd.")
    # The same buyer (however its name is written) may count it for another request.
    assert event_store.register_invoices("req-a2", "BYTEDANCE LTD", [key])[key].request_id == "req-a2"
    assert event_store.register_invoices("req-a3", "ByteDance Ltd.", [key])[key].request_id == "req-a2"


def test_racing_registrations_give_each_invoice_to_exactly_one_request(event_store: EventStore) -> None:
    """Eight requests (on four handles, as on four workers) claim the same fifty invoices at once."""
    keys = [f"huawei|hw{n:04d}" for n in range(50)]
    racers = 8
    handles = [event_store, *(open_handle(event_store) for _ in range(3))]
    start = threading.Barrier(racers)
    answers: dict[int, dict[str, InvoiceOwner]] = {}

    def race(n: int) -> None:
        mine = list(keys)
        random.Random(n).shuffle(mine)  # overlapping sets in different orders: no deadlock either
        start.wait(timeout=30)
        answers[n] = handles[n % len(handles)].register_invoices(f"req-{n}", f"Buyer {n}", mine)

    try:
        assert run_threads([partial(race, n) for n in range(racers)]) == []
    finally:
        for handle in handles[1:]:
            handle.close()
    owners = {key: answers[0][key] for key in keys}
    assert all(answer == owners for answer in answers.values())  # everyone was told the same owner
    winners = Counter(owner.request_id for owner in owners.values())
    assert sum(winners.values()) == len(keys)
    assert all(owner.buyer == f"Buyer {owner.request_id.removeprefix('req-')}" for owner in owners.values())
