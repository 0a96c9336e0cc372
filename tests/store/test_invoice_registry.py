"""The invoice registry's conformance suite: an invoice counts for one request, first come first served;
and the pure decider judging evidence against the store's real registry, as the workflow does.

Every test that takes `event_store` runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from chipclear.domain.commands import AddEvidence, Evaluate, Submit
from chipclear.domain.events import DomesticQuotaAssessed, EvidenceAdded, EvidenceRejected
from chipclear.domain.evidence import InvoiceOwner, RejectedRecord
from chipclear.domain.facts import Facts, FactsWanted
from chipclear.domain.models import ImportRequest, invoice_key
from chipclear.domain.policy import Policy
from chipclear.store.protocol import EventStore
from tests.decisions import World, only
from tests.domain import test_evidence as evidence
from tests.domain.test_evidence import BOTH, DOMESTIC_QUOTA, NOW, Run, only_reason, part, rec, request_with
from tests.factories import make_request
from tests.store.support import Raw, open_handle, run_threads

BUYER, OTHER_BUYER = "Alpha Compute Ltd.", "Beta Cloud Co."


def test_registering_again_for_the_same_request_changes_nothing(event_store: EventStore) -> None:
    keys = ["huawei|hw1", "huawei|hw2"]
    answer = event_store.register_invoices("req-a", BUYER, keys)
    assert answer == dict.fromkeys(keys, InvoiceOwner(request_id="req-a", buyer=BUYER))
    assert event_store.register_invoices("req-a", BUYER, keys) == answer
    assert event_store.register_invoices("req-a", BUYER, list(reversed(keys))) == answer
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
    # What everyone was told is what the registry holds: every invoice once, with that owner.
    raw = Raw(event_store)
    with closing(raw.conn):
        rows = raw.execute("SELECT invoice_key, request_id, buyer FROM invoices").fetchall()
    assert sorted(key for key, _, _ in rows) == sorted(keys)
    assert {key: InvoiceOwner(request_id=owner, buyer=buyer) for key, owner, buyer in rows} == owners


# -- the decider with the store's real registry ------------------------------------------------------


@dataclass
class StoreWorld(World):
    """The decider's world (tests.decisions) with the event store's real invoice registry and buyers'
    caps in place of the test's own."""

    store: EventStore | None = None

    def respond(self, wanted: FactsWanted, now: datetime) -> Facts:
        assert self.store is not None
        facts = Facts()
        if wanted.invoices is not None:
            asking = wanted.invoices
            owners = self.store.register_invoices(asking.request_id, asking.buyer, asking.keys)
            facts = facts.merged(Facts(invoice_owners=owners))
        if wanted.buyer_claim is not None:
            facts = facts.merged(Facts(buyer_claim=self.store.claim_buyer_units(wanted.buyer_claim)))
        if wanted.release_buyer_claim is not None:
            back = self.store.release_buyer_units(wanted.release_buyer_claim)
            facts = facts.merged(Facts(buyer_units_released=back))
        if wanted.release_invoices is not None:
            freed = self.store.release_invoices(wanted.release_invoices.request_id)
            facts = facts.merged(Facts(invoices_released=freed))
        answered = ("invoices", "release_invoices", "buyer_claim", "release_buyer_claim")
        rest = wanted.model_copy(update=dict.fromkeys(answered))
        return facts.merged(super().respond(rest, now))


def submit_with_registry(
    store: EventStore, policy: Policy, request: ImportRequest, now: datetime = NOW
) -> Run:
    """What the workflow does: ask needs, register the invoices worth registering, Submit with the answer."""
    run = Run(policy, now=now, world=StoreWorld(store=store))
    run.send(Submit(request=request))
    return run


def test_compensation_frees_an_unlicensed_requests_invoices_for_its_buyer_only(
    event_store: EventStore,
) -> None:
    evidence.compensation_frees_invoices_for_their_buyer_only(StoreWorld(store=event_store))


def test_same_invoice_for_two_requests_of_one_buyer_counts_once(event_store: EventStore) -> None:
    shared = rec("HW-2026-0042", units=60_000)
    first = submit_with_registry(event_store, BOTH, request_with(shared, request_id="req-first"))
    assert part(first).evidence == [shared]

    # The same buyer, spelt differently, files the same invoice (written differently) again.
    again = rec("hw 2026 0042", vendor="Huawei Co., Ltd.", units=60_000)
    extra = rec("HW-2026-0043", units=15_000)
    second_request = request_with(
        again,
        extra,
        request_id="req-second",
        buyer={"name": "BYTEDANCE", "country": "CN", "kind": "private"},
    )
    second = submit_with_registry(event_store, BOTH, second_request)
    assert part(second).evidence == [extra]
    assert part(second).rejected_evidence == [
        RejectedRecord(record=again, reason="already counts for request req-first")
    ]
    second.to(DOMESTIC_QUOTA)
    assessed = only(second.send(Evaluate(gate=DOMESTIC_QUOTA)), DomesticQuotaAssessed)
    assert assessed.domestic_units == 15_000
    assert assessed.shortfall == 35_000

    # The first request still counts it, and asking again answers the same.
    again_owners = event_store.register_invoices("req-first", evidence.BUYER, [invoice_key(shared)])
    assert again_owners == {"huawei|hw20260042": InvoiceOwner(request_id="req-first", buyer=evidence.BUYER)}


def test_same_invoice_for_two_buyers_is_rejected_for_the_second(event_store: EventStore) -> None:
    shared = rec("HW-2026-0042", units=60_000)
    submit_with_registry(event_store, BOTH, request_with(shared, request_id="req-first"))
    other = request_with(
        shared,
        request_id="req-other",
        buyer={"name": evidence.OTHER_BUYER, "country": "CN", "kind": "private"},
    )
    run = submit_with_registry(event_store, BOTH, other)
    assert part(run).evidence == []
    assert [r.reason for r in part(run).rejected_evidence] == ["registered to another buyer's request"]


def test_evidence_added_later_goes_through_the_registry_too(event_store: EventStore) -> None:
    first = submit_with_registry(event_store, BOTH, request_with(rec("HW-1"), request_id="req-a"))
    second = submit_with_registry(
        event_store, BOTH, make_request(request_id="req-b", domestic_procurement=[])
    )
    events = second.send(AddEvidence(records=[rec("HW-1"), rec("HW-2")]))
    assert only(events, EvidenceAdded).records == [rec("HW-2")]
    assert only_reason(only(events, EvidenceRejected).records) == "already counts for request req-a"
    # HW-2 now belongs to req-b: req-a cannot add it.
    first.refuse(AddEvidence(records=[rec("HW-2")]), "already counts for request req-b")


def test_records_refused_by_the_rules_are_not_registered(event_store: EventStore) -> None:
    nvidia = rec("NV-1", vendor="NVIDIA", product="H20")
    submit_with_registry(event_store, BOTH, request_with(nvidia, rec("HW-1"), request_id="req-a"))
    owners = event_store.register_invoices("req-b", evidence.BUYER, [invoice_key(nvidia)])
    assert owners == {invoice_key(nvidia): InvoiceOwner(request_id="req-b", buyer=evidence.BUYER)}
