"""The domestic-quota gate and the compensations of a request that ends unlicensed, against a real dev
server and a real SQLite event store.

A shortfall that more evidence cures (auto and manual), a shortfall the evidence deadline ends (units
back to the ledger), withdrawal at every gate with exactly the compensations it owes, a release retried
after the ledger already took the units back, and the invoice registry across requests and buyers.
Requests are driven as users drive them; open ones are cleaned up by withdrawal, never by terminating.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client

from activities.allocation import AllocationActivities
from chipclear import client as ops
from chipclear.contracts import ReleaseResult, ledger_id, ledger_stream
from chipclear.domain.allocation import Release, Released, UnitsReleased
from chipclear.domain.commands import AddEvidence, Withdraw
from chipclear.domain.events import (
    AllocationReleased,
    DomesticQuotaAssessed,
    EvidenceAdded,
    EvidenceRejected,
    ExportApprovalReleased,
    GateApproved,
    LicenseIssued,
    RequestExpired,
    RequestWithdrawn,
)
from chipclear.domain.gates import cn_import, domestic_quota, us_export
from chipclear.domain.models import ProcurementRecord, Status, invoice_key
from chipclear.domain.policy import CalendarPeriod, Policy
from chipclear.domain.state import RequestState
from chipclear.projections import get_request
from chipclear.store.sqlite import SQLiteEventStore
from tests.conftest import running_worker
from tests.factories import make_policy, make_request
from tests.workflows.support import assert_store_matches, at_gate, decision, start, wait_for
from tests.workflows.test_allocation_workflow import allocation_policy, ledger, open_batch
from tests.workflows.test_us_export_workflow import payloads, replay, stored_of

# Long enough for any step of a test, short enough that a request a failed test leaves open ends itself.
SAFETY_DEADLINE = "PT60S"


# -- helpers -------------------------------------------------------------------------------------
def record(
    invoice: str, units: int, vendor: str = "Huawei", product: str = "Ascend 910C", **extra: Any
) -> ProcurementRecord:
    return ProcurementRecord(vendor=vendor, product=product, units=units, invoice=invoice, **extra)


def evidence(*records: ProcurementRecord) -> list[dict[str, Any]]:
    """Records as a request document carries them."""
    return [r.model_dump(mode="json", exclude_none=True) for r in records]


def types(store: SQLiteEventStore, request_id: str) -> list[str]:
    return [event.type for event in store.read_stream(request_id)]


def quota(state: RequestState) -> domestic_quota.DomesticQuotaSlice:
    return domestic_quota.GATE.slice(state)


def allocation(state: RequestState) -> cn_import.AllocationRecord | None:
    return cn_import.GATE.slice(state).allocation


def has_assessment(state: RequestState) -> bool:
    return state.gate == "domestic-quota" and quota(state).assessment is not None


def allocated(state: RequestState) -> bool:
    return state.gate == "cn-import" and allocation(state) is not None


def assert_licence_valid_for_the_policy_period(
    store: SQLiteEventStore, request_id: str, policy: Policy
) -> None:
    [issued] = stored_of(store, request_id, "LicenseIssued")
    assert isinstance(issued.data, LicenseIssued)
    assert policy.licence_validity == CalendarPeriod(years=4)
    valid_until = issued.data.valid_until
    assert valid_until is not None
    assert valid_until == policy.licence_validity.after(issued.occurred_at)
    assert valid_until.year == issued.occurred_at.year + 4
    assert abs(valid_until - issued.occurred_at - timedelta(days=4 * 365 + 1)) <= timedelta(days=1)
    state = get_request(store, request_id)
    assert state is not None and state.licence_valid_until == valid_until


class FlakyRelease:
    """The real `release_units`, but its first attempt fails *after* the ledger recorded the release."""

    def __init__(self, client: Client) -> None:
        self.real = AllocationActivities(client)
        self.attempts: dict[str, list[int]] = {}

    @activity.defn(name="release_units")
    async def release_units(self, command: Release) -> ReleaseResult:
        result = await self.real.release_units(command)
        attempt = activity.info().attempt
        self.attempts.setdefault(command.request_id, []).append(attempt)
        if attempt == 1:
            raise RuntimeError("connection lost after the ledger answered")
        return result


# -- 1. a shortfall, more evidence, the quota met ---------------------------------------------------
@pytest.mark.parametrize("mode", ["auto", "manual"])
async def test_shortfall_then_more_evidence_meets_the_quota(
    client: Client, store: SQLiteEventStore, mode: str
) -> None:
    policy = make_policy(
        mode,
        us_export={"decision_deadline": SAFETY_DEADLINE},
        cn_import={"decision_deadline": SAFETY_DEADLINE},
        domestic_quota={"required_ratio": 1.5, "evidence_deadline": SAFETY_DEADLINE},
    )
    request = make_request(units=40_000, domestic_procurement=evidence(record("HW-SF-1", 10_000)))
    rid = request.request_id
    async with running_worker(client, store, policy) as worker:
        handle = await start(client, store, worker, request)
        if mode == "manual":
            await wait_for(client, rid, at_gate("us-export"))
            await ops.update(client, rid, decision("us-export", "alice"))
            await ops.update(client, rid, decision("cn-import", "wang"))

        short = await wait_for(client, rid, has_assessment)
        assert short.status == "domestic_quota_review"
        assessment = quota(short).assessment
        assert assessment is not None
        assert (assessment.domestic_units, assessment.required_units) == (10_000, 60_000)
        assert assessment.shortfall == 50_000
        [stored_short] = payloads(store, rid, DomesticQuotaAssessed)
        assert stored_short.shortfall == 50_000 and stored_short.imported_units == 40_000

        if mode == "manual":
            # While short, the reviewer cannot approve; the refusal names the shortfall.
            with pytest.raises(ops.Rejected, match=r"10000 domestic units < 60000 required.*short by 50000"):
                await ops.update(client, rid, decision("domestic-quota", "wang"))
            assert len(store.read_stream(rid)) == short.version

        more = await ops.update(client, rid, AddEvidence(records=[record("HW-SF-2", 50_000)]))
        if mode == "auto":
            assert more.events == ["EvidenceAdded", "DomesticQuotaAssessed", "GateApproved", "LicenseIssued"]
            assert more.status == Status.LICENSED
        else:
            assert more.events == ["EvidenceAdded", "DomesticQuotaAssessed"]
            assert more.status == "domestic_quota_review"
            approved = await ops.update(client, rid, decision("domestic-quota", "wang"))
            assert approved.events == ["GateApproved", "LicenseIssued"]
            assert approved.status == Status.LICENSED
        result = await handle.result()

    assert result.status == Status.LICENSED and result.units_approved == 40_000
    assessments = payloads(store, rid, DomesticQuotaAssessed)
    assert [(a.domestic_units, a.shortfall) for a in assessments] == [(10_000, 50_000), (60_000, 0)]
    [domestic] = [
        e
        for e in stored_of(store, rid, "GateApproved")
        if isinstance(e.data, GateApproved) and e.data.gate == "domestic-quota"
    ]
    assert isinstance(domestic.data, GateApproved) and domestic.data.units_approved == 40_000
    if mode == "auto":
        assert domestic.data.rule == "domestic_quota.mode = auto" and domestic.actor == "policy"
    else:
        assert domestic.data.rule is None and domestic.actor == "wang"
    assert_licence_valid_for_the_policy_period(store, rid, policy)
    # A licensed request gives nothing back.
    assert "AllocationReleased" not in types(store, rid)
    assert "ExportApprovalReleased" not in types(store, rid)
    assert types(store, rid)[-4:] == [
        "EvidenceAdded",
        "DomesticQuotaAssessed",
        "GateApproved",
        "LicenseIssued",
    ]
    assert_store_matches(store, rid, result)
    await replay(handle)


# -- 2. a shortfall the deadline ends: the units go back -----------------------------------------
async def test_shortfall_until_the_deadline_expires_and_releases_the_units(
    client: Client, store: SQLiteEventStore
) -> None:
    policy = allocation_policy(
        cn_import={"mode": "auto", "decision_deadline": SAFETY_DEADLINE},
        domestic_quota={"evidence_deadline": "PT3S"},
    )
    request = make_request(units=500, domestic_procurement=evidence(record("HW-EX-1", 100)))
    rid = request.request_id
    async with running_worker(client, store, policy) as worker:
        queue = worker.task_queue
        await open_batch(client, queue, batch_id="E1", capacity=1_000)
        handle = await start(client, store, worker, request)
        result = await handle.result()
        book = await ledger(client, store, queue)

    assert result.status == Status.EXPIRED
    assert types(store, rid) == [
        *PREFIX,
        *TO_DOMESTIC_QUOTA,
        "RequestExpired",
        "AllocationReleased",
        "ExportApprovalReleased",
    ]
    # Held for the shortfall (read from the store: the live state is gone once the deadline passes).
    [short] = payloads(store, rid, DomesticQuotaAssessed)
    assert (short.imported_units, short.domestic_units, short.shortfall) == (500, 100, 400)
    [expired_event] = stored_of(store, rid, "RequestExpired")
    assert isinstance(expired_event.data, RequestExpired)
    assert expired_event.data.gate == "domestic-quota" and expired_event.actor == "deadline"
    assert expired_event.occurred_at >= expired_event.data.deadline
    [released] = payloads(store, rid, AllocationReleased)
    assert (released.batch_id, released.units) == ("E1", 500)
    assert "expired" in released.reason
    [unused] = payloads(store, rid, ExportApprovalReleased)
    assert unused.units == 500 and "expired" in unused.reason

    # The ledger has the units back, once.
    assert book.batches["E1"].allocated == 0
    assert rid not in book.allocations
    assert book.released[rid] == Released(batch_id="E1", units=500)
    ledger_events = store.read_stream(ledger_stream(ledger_id(worker.task_queue)))
    assert [e.type for e in ledger_events] == ["BatchOpened", "UnitsGranted", "UnitsReleased"]
    assert [
        (e.data.request_id, e.data.units) for e in ledger_events if isinstance(e.data, UnitsReleased)
    ] == [(rid, 500)]
    final = get_request(store, rid)
    assert final is not None
    held = allocation(final)
    assert held is not None and held.released
    assert us_export.GATE.slice(final).export_released
    assert_store_matches(store, rid, result)
    await replay(handle)


# -- 3. withdrawal at each gate, with exactly the compensations it owes ---------------------------
PREFIX = ["RequestSubmitted", "EvidenceAdded", "GateOpened"]  # the request's own records count at once
# From us-export's approval to a domestic-quota assessment, with units allocated on the way.
TO_DOMESTIC_QUOTA = [
    "GateApproved",
    "GateOpened",
    "AllocationGranted",
    "GateApproved",
    "GateOpened",
    "DomesticQuotaAssessed",
]
WITHDRAWALS: dict[str, tuple[str, bool, list[str]]] = {
    "us-export": ("us-export", True, [*PREFIX, "RequestWithdrawn"]),
    "cn-import-granted": (
        "cn-import",
        True,
        [
            *PREFIX,
            "GateApproved",
            "GateOpened",
            "AllocationGranted",
            "RequestWithdrawn",
            "AllocationReleased",
            "ExportApprovalReleased",
        ],
    ),
    "cn-import-queued": (
        "cn-import",
        False,
        [
            *PREFIX,
            "GateApproved",
            "GateOpened",
            "AllocationQueued",
            "RequestWithdrawn",
            "AllocationReleased",
            "ExportApprovalReleased",
        ],
    ),
    "domestic-quota": (
        "domestic-quota",
        True,
        [
            *PREFIX,
            *TO_DOMESTIC_QUOTA,
            "RequestWithdrawn",
            "AllocationReleased",
            "ExportApprovalReleased",
        ],
    ),
}


@pytest.mark.parametrize("case", list(WITHDRAWALS))
async def test_withdrawal_at_each_gate_compensates_exactly_what_is_held(
    client: Client, store: SQLiteEventStore, case: str
) -> None:
    gate, with_batch, expected = WITHDRAWALS[case]
    policy = make_policy(
        "manual",
        us_export={"decision_deadline": SAFETY_DEADLINE},
        cn_import={"allocate_from_batches": True, "decision_deadline": SAFETY_DEADLINE},
        domestic_quota={"evidence_deadline": SAFETY_DEADLINE},
    )
    request = make_request(units=500)
    rid = request.request_id
    async with running_worker(client, store, policy) as worker:
        queue = worker.task_queue
        if with_batch:
            await open_batch(client, queue, batch_id="W1", capacity=1_000)
        handle = await start(client, store, worker, request)
        await wait_for(client, rid, at_gate("us-export"))
        if gate != "us-export":
            await ops.update(client, rid, decision("us-export", "alice"))
            held = await wait_for(client, rid, allocated)
            reserved = allocation(held)
            assert reserved is not None
            if with_batch:
                assert (reserved.outcome, reserved.units) == ("granted", 500)
                assert (await ledger(client, store, queue)).batches["W1"].allocated == 500
            else:
                assert held.status == "cn_import_queued"
                assert (await ledger(client, store, queue)).position(rid) == 1
        if gate == "domestic-quota":
            await ops.update(client, rid, decision("cn-import", "wang"))
            await wait_for(client, rid, has_assessment)

        withdrawn = await ops.update(client, rid, Withdraw(reason="order cancelled"))
        assert withdrawn.events == ["RequestWithdrawn"] and withdrawn.status == Status.WITHDRAWN
        result = await handle.result()
        book = await ledger(client, store, queue)

    assert result.status == Status.WITHDRAWN and result.outcome_reason == "order cancelled"
    assert types(store, rid) == expected
    [gone] = payloads(store, rid, RequestWithdrawn)
    assert gone.gate == gate
    releases = payloads(store, rid, AllocationReleased)
    unused = payloads(store, rid, ExportApprovalReleased)
    final = get_request(store, rid)
    assert final is not None
    given_back, unused_recorded = allocation(final), us_export.GATE.slice(final).export_released
    assert book.queue == [] and rid not in book.allocations
    if gate == "us-export":
        # Nothing was reserved and no US approval exists: nothing to give back.
        assert releases == [] and unused == []
        assert given_back is None and not unused_recorded
        assert book.batches["W1"].allocated == 0 and rid not in book.released
    elif with_batch:
        assert [(r.batch_id, r.units) for r in releases] == [("W1", 500)]
        assert [u.units for u in unused] == [500]
        assert book.batches["W1"].allocated == 0
        assert book.released[rid] == Released(batch_id="W1", units=500)
    else:
        # Only queued: it leaves the queue, and no batch exists to give units back to.
        assert [(r.batch_id, r.units) for r in releases] == [(None, 0)]
        assert [u.units for u in unused] == [500]
        assert book.batches == {} and book.released[rid] == Released(batch_id=None, units=0)
    if gate != "us-export":
        assert given_back is not None and given_back.released and unused_recorded
    assert_store_matches(store, rid, result)
    await replay(handle)


# -- 4. a release retried after the ledger already took the units back ---------------------------
async def test_a_retried_release_gives_the_units_back_once(client: Client, store: SQLiteEventStore) -> None:
    flaky = FlakyRelease(client)
    policy = allocation_policy(cn_import={"decision_deadline": SAFETY_DEADLINE})
    donor = make_request(units=500)
    other = make_request(units=300)
    async with running_worker(client, store, policy, replace=[flaky.release_units]) as worker:
        queue = worker.task_queue
        await open_batch(client, queue, batch_id="R1", capacity=1_000)
        donor_handle = await start(client, store, worker, donor)
        await wait_for(client, donor.request_id, allocated)
        other_handle = await start(client, store, worker, other)
        await wait_for(client, other.request_id, allocated)
        assert (await ledger(client, store, queue)).batches["R1"].allocated == 800

        await ops.update(client, donor.request_id, Withdraw(reason="order cancelled"))
        result = await donor_handle.result()
        book = await ledger(client, store, queue)
        assert flaky.attempts == {donor.request_id: [1, 2]}
        # Down by the donor's 500 exactly once: the other request's 300 are still held.
        assert book.batches["R1"].allocated == 300
        assert book.released[donor.request_id] == Released(batch_id="R1", units=500)
        assert set(book.allocations) == {other.request_id}

        await ops.update(client, other.request_id, Withdraw(reason="test over"))  # as a user ends it
        assert (await other_handle.result()).status == Status.WITHDRAWN
        assert (await ledger(client, store, queue)).batches["R1"].allocated == 0

    assert result.status == Status.WITHDRAWN
    assert types(store, donor.request_id)[-3:] == [
        "RequestWithdrawn",
        "AllocationReleased",
        "ExportApprovalReleased",
    ]
    [released] = payloads(store, donor.request_id, AllocationReleased)
    assert (released.batch_id, released.units) == ("R1", 500)
    assert len(payloads(store, donor.request_id, ExportApprovalReleased)) == 1
    ledger_events = store.read_stream(ledger_stream(ledger_id(queue)))
    releases = [e.data for e in ledger_events if isinstance(e.data, UnitsReleased)]
    assert [(r.request_id, r.units) for r in releases] == [(donor.request_id, 500), (other.request_id, 300)]
    assert flaky.attempts[other.request_id] == [1, 2]
    assert store.verify().ok
    assert_store_matches(store, donor.request_id, result)
    await replay(donor_handle)
    await replay(other_handle)


# -- 5. the invoice registry through the real server ---------------------------------------------
async def test_an_invoice_counts_for_one_request_of_one_buyer(
    client: Client, store: SQLiteEventStore
) -> None:
    policy = make_policy(
        "auto",
        domestic_quota={"unique_invoices": True, "evidence_deadline": SAFETY_DEADLINE},
    )
    first = make_request(units=40_000, domestic_procurement=evidence(record("HW-7001", 60_000)))
    second = make_request(
        units=40_000,
        domestic_procurement=evidence(
            record("HW-7001", 60_000), record("CB-1", 10_000, vendor="Cambricon", product="MLU370")
        ),
    )
    # Another buyer, the same invoice written differently: one key.
    stranger = make_request(
        units=10_000,
        buyer={"name": "Kuaishou Technology", "country": "CN", "kind": "private"},
        domestic_procurement=evidence(record("hw 7001", 60_000)),
    )
    a, b, c = first.request_id, second.request_id, stranger.request_id
    taken = f"invoice 'HW-7001': already counts for request {a}"
    async with running_worker(client, store, policy) as worker:
        first_handle = await start(client, store, worker, first)
        assert (await first_handle.result()).status == Status.LICENSED
        second_handle = await start(client, store, worker, second)
        stranger_handle = await start(client, store, worker, stranger)
        short = await wait_for(client, b, has_assessment)
        assessment = quota(short).assessment
        assert assessment is not None
        assert (assessment.domestic_units, assessment.shortfall) == (10_000, 30_000)
        await wait_for(client, c, has_assessment)

        # The first request counted the invoice; the second's copy is refused and does not count.
        assert [r.invoice for r in quota(short).evidence] == ["CB-1"]
        [refused] = payloads(store, b, EvidenceRejected)
        assert [(r.record.invoice, r.reason) for r in refused.records] == [
            ("HW-7001", f"already counts for request {a}")
        ]
        [counted] = payloads(store, b, EvidenceAdded)
        assert [r.invoice for r in counted.records] == ["CB-1"]
        [assessed] = payloads(store, b, DomesticQuotaAssessed)
        assert (assessed.domestic_units, assessed.required_units, assessed.shortfall) == (
            10_000,
            40_000,
            30_000,
        )
        assert types(store, b)[:4] == ["RequestSubmitted", "EvidenceAdded", "EvidenceRejected", "GateOpened"]

        # Another buyer cannot use it at all.
        [foreign] = payloads(store, c, EvidenceRejected)
        assert [(r.record.invoice, r.reason) for r in foreign.records] == [
            ("hw 7001", "registered to another buyer's request")
        ]
        assert payloads(store, c, EvidenceAdded) == []
        [foreign_assessed] = payloads(store, c, DomesticQuotaAssessed)
        assert (foreign_assessed.domestic_units, foreign_assessed.shortfall) == (0, 10_000)

        # Evidence of which nothing counts is refused whole, with each reason; nothing is stored.
        before = store.read_stream(b)
        future = record("HW-7003", 30_000, invoice_date="2098-01-01")
        for records, reason in (
            ([record("HW-7001", 60_000)], taken),
            ([future], "invoice 'HW-7003': invoice_date 2098-01-01 is in the future"),
        ):
            with pytest.raises(ops.Rejected) as refusal:
                await ops.update(client, b, AddEvidence(records=records))
            assert str(refusal.value) == f"no record counts ({reason})"
            assert store.read_stream(b) == before
            live = await ops.live_state(client, b)
            assert (
                live is not None
                and live.version == len(before)
                and quota(live).evidence == quota(short).evidence
            )

        # Good and bad together: the good one counts, the bad one is listed back with its reason.
        mixed = await ops.update(
            client, b, AddEvidence(records=[record("HW-7001", 60_000), record("HW-7002", 30_000)])
        )
        assert mixed.rejected == [taken]
        assert mixed.events == [
            "EvidenceAdded",
            "EvidenceRejected",
            "DomesticQuotaAssessed",
            "GateApproved",
            "LicenseIssued",
        ]
        assert mixed.status == Status.LICENSED
        second_result = await second_handle.result()

        await ops.update(client, c, Withdraw(reason="test over"))  # as a user ends it
        stranger_result = await stranger_handle.result()

    assert second_result.status == Status.LICENSED
    *_, added = payloads(store, b, EvidenceAdded)
    assert [r.invoice for r in added.records] == ["HW-7002"]
    *_, refused_again = payloads(store, b, EvidenceRejected)
    assert [r.record.invoice for r in refused_again.records] == ["HW-7001"]
    assert [(x.domestic_units, x.shortfall) for x in payloads(store, b, DomesticQuotaAssessed)] == [
        (10_000, 30_000),
        (40_000, 0),
    ]
    final = get_request(store, b)
    assert final is not None and [r.invoice for r in quota(final).evidence] == ["CB-1", "HW-7002"]
    assert [r.record.invoice for r in quota(final).rejected_evidence] == ["HW-7001", "HW-7001"]
    # The registry still holds the invoice for the first request alone (asking again changes nothing).
    key = invoice_key(first.domestic_procurement[0])
    assert invoice_key(stranger.domestic_procurement[0]) == key  # written differently, one invoice
    assert store.register_invoices(c, "Kuaishou Technology", [key])[key].request_id == a
    assert stranger_result.status == Status.WITHDRAWN
    assert types(store, c)[-2:] == ["RequestWithdrawn", "ExportApprovalReleased"]
    assert_store_matches(store, b, second_result)
    assert_store_matches(store, c, stranger_result)
    for handle in (first_handle, second_handle, stranger_handle):
        await replay(handle)


async def test_a_withdrawn_request_frees_its_invoices_for_the_same_buyer(
    client: Client, store: SQLiteEventStore
) -> None:
    policy = make_policy(
        "manual", domestic_quota={"unique_invoices": True, "evidence_deadline": SAFETY_DEADLINE}
    )
    first = make_request(units=10_000, domestic_procurement=evidence(record("HW-8101", 10_000)))
    refiled = make_request(units=10_000, domestic_procurement=evidence(record("HW-8101", 10_000)))
    stranger = make_request(
        units=10_000,
        buyer={"name": "Kuaishou Technology", "country": "CN", "kind": "private"},
        domestic_procurement=evidence(record("HW-8101", 10_000)),
    )
    async with running_worker(client, store, policy) as worker:
        handle = await start(client, store, worker, first)
        await wait_for(client, first.request_id, at_gate("us-export"))
        await ops.update(client, first.request_id, Withdraw(reason="refiling with the right site"))
        assert (await handle.result()).status == Status.WITHDRAWN
        # The invoice never backed a licence: the same buyer's new request counts it, a stranger not.
        handles = []
        for request in (refiled, stranger):
            handles.append(await start(client, store, worker, request))
            await wait_for(client, request.request_id, at_gate("us-export"))
        refiled_state = get_request(store, refiled.request_id)
        stranger_state = get_request(store, stranger.request_id)
        for request, each in zip((refiled, stranger), handles, strict=True):
            await ops.update(client, request.request_id, Withdraw(reason="test over"))  # as a user ends it
            assert (await each.result()).status == Status.WITHDRAWN
    assert refiled_state is not None and [r.invoice for r in quota(refiled_state).evidence] == ["HW-8101"]
    assert stranger_state is not None and quota(stranger_state).evidence == []
    assert [r.reason for r in quota(stranger_state).rejected_evidence] == [
        "registered to another buyer's request"
    ]
