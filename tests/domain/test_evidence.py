"""Domestic procurement evidence: judged record by record, invoices unique across requests, the
quota and public-hub computation, and licence validity. Pure: the event store's real registry under
the decider is tested in tests/store/test_invoice_registry.py, evidence files in tests/cli/test_files.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from chipclear.domain.commands import AddEvidence, Compensate, Decide, Evaluate, Submit, Withdraw
from chipclear.domain.decider import compensations, needs
from chipclear.domain.events import (
    DomesticQuotaAssessed,
    EvidenceAdded,
    EvidenceRejected,
    LicenseIssued,
    PublicHubShare,
    RequestSubmitted,
)
from chipclear.domain.evidence import (
    InvoiceOwner,
    RejectedRecord,
    hub_shortfall,
    judge,
    registrable,
    required_units,
    rule_problem,
)
from chipclear.domain.facts import NONE, Facts, FactsWanted, RegisterInvoices, ReleaseInvoices
from chipclear.domain.gates import domestic_quota
from chipclear.domain.gates.domestic_quota import DomesticQuotaSlice
from chipclear.domain.models import ImportRequest, ProcurementRecord, Status, invoice_key
from chipclear.domain.policy import DEFAULT_ROUTE, CalendarPeriod, Policy, load_policy
from chipclear.domain.sections import DomesticQuotaSection
from chipclear.domain.state import RequestState
from tests import decisions
from tests.decisions import World, only, types
from tests.factories import make_policy, make_request

NOW = datetime(2026, 2, 1, 9, 30, tzinfo=UTC)
_, _, DOMESTIC_QUOTA = DEFAULT_ROUTE
TODAY = NOW.date()
BUYER = "ByteDance Ltd."
OTHER_BUYER = "Alibaba Cloud Computing Co., Ltd."

VENDORS: dict[str, Any] = {
    "Huawei": {"domestic": True, "products": ["Ascend 910B", "Ascend 910C"]},
    "Cambricon": {"domestic": True, "products": ["MLU370", "MLU590"]},
    "Moore Threads": {"domestic": True},  # any product
    "NVIDIA": {"domestic": False},
}
# The vendor list alone, the registry alone, both (as in the bundled default policy), and neither.
VENDOR_LIST = make_policy("manual", domestic_quota={"vendors": VENDORS})
REGISTRY = make_policy("manual", domestic_quota={"unique_invoices": True})
BOTH = make_policy("manual", domestic_quota={"vendors": VENDORS, "unique_invoices": True})
PLAIN = make_policy("manual")


# -- helpers ----------------------------------------------------------------------------------------


def rules(policy: Policy) -> DomesticQuotaSection:
    """The domestic-quota gate's section of `policy`: the rules evidence is judged by."""
    return domestic_quota.GATE.section(policy)


def part(run: decisions.Run) -> DomesticQuotaSlice:
    """The domestic-quota gate's slice of the request's state."""
    return domestic_quota.GATE.slice(run.state)


def rec(
    invoice: str = "HW-2026-0001",
    *,
    vendor: str = "Huawei",
    product: str = "Ascend 910C",
    units: int = 10_000,
    **extra: Any,
) -> ProcurementRecord:
    return ProcurementRecord.model_validate(
        {"vendor": vendor, "product": product, "units": units, "invoice": invoice, **extra}
    )


def record_doc(record: ProcurementRecord) -> dict[str, Any]:
    return record.model_dump(mode="json", exclude_none=True)


def request_with(*records: ProcurementRecord, **overrides: Any) -> ImportRequest:
    return make_request(domestic_procurement=[record_doc(r) for r in records], **overrides)


def dated(field_name: str, when: date) -> ProcurementRecord:
    """The default record with `invoice_date` or `delivered_on` set."""
    return rec().model_copy(update={field_name: when})


def judged(
    records: Sequence[ProcurementRecord],
    policy: Policy,
    *,
    owners: dict[str, InvoiceOwner] | None = None,
    already: Sequence[ProcurementRecord] = (),
    request_id: str = "req-1",
    buyer: str = BUYER,
    today: date = TODAY,
) -> tuple[list[ProcurementRecord], list[RejectedRecord]]:
    return judge(
        list(records),
        request_id=request_id,
        buyer=buyer,
        already=list(already),
        rules=rules(policy),
        today=today,
        owners=owners,
    )


def only_reason(rejected: list[RejectedRecord]) -> str:
    assert len(rejected) == 1, rejected
    return rejected[0].reason


def mine(
    *records: ProcurementRecord, request_id: str = "req-1", buyer: str = BUYER
) -> dict[str, InvoiceOwner]:
    return {invoice_key(r): InvoiceOwner(request_id=request_id, buyer=buyer) for r in records}


@dataclass
class Run(decisions.Run):
    now: datetime = NOW


# -- 1. the policy's rules, one by one --------------------------------------------------------------


def test_a_listed_domestic_vendor_and_product_is_accepted() -> None:
    good = rec()
    assert rule_problem(good, rules(VENDOR_LIST), TODAY) is None
    assert judged([good], VENDOR_LIST) == ([good], [])


def test_unknown_vendor_names_the_policy_key_and_lists_domestic_vendors() -> None:
    problem = rule_problem(rec(vendor="Acme Chips"), rules(VENDOR_LIST), TODAY)
    assert problem == (
        "vendor 'Acme Chips' is not in domestic_quota.vendors (domestic: Cambricon, Huawei, Moore Threads)"
    )
    accepted, rejected = judged([rec(vendor="Acme Chips")], VENDOR_LIST)
    assert accepted == []
    assert only_reason(rejected) == problem
    assert "NVIDIA" not in problem  # only domestic vendors are offered


def test_known_foreign_vendor_is_not_domestic() -> None:
    nvidia = rec("NV-1", vendor="NVIDIA Corporation", product="H20")
    problem = rule_problem(nvidia, rules(VENDOR_LIST), TODAY)
    assert problem == "vendor 'NVIDIA' is not a domestic vendor (domestic_quota.vendors)"
    accepted, rejected = judged([nvidia], VENDOR_LIST)
    assert accepted == [] and rejected == [RejectedRecord(record=nvidia, reason=problem)]


def test_product_not_in_the_vendors_list() -> None:
    problem = rule_problem(rec(product="Ascend 920"), rules(VENDOR_LIST), TODAY)
    assert problem == "product 'Ascend 920' is not a known Huawei product (Ascend 910B, Ascend 910C)"
    # Product names are compared without regard to case; a vendor without a product list takes any.
    assert rule_problem(rec(product="ascend 910c"), rules(VENDOR_LIST), TODAY) is None
    assert rule_problem(rec(vendor="Moore Threads", product="Anything"), rules(VENDOR_LIST), TODAY) is None


@pytest.mark.parametrize(
    "vendor",
    ["Huawei", "HUAWEI", "huawei", "Huawei Co., Ltd.", "Huawei Technologies Co., Ltd.", " huawei, inc. "],
)
def test_vendor_matched_regardless_of_case_punctuation_and_legal_form(vendor: str) -> None:
    assert rule_problem(rec(vendor=vendor), rules(VENDOR_LIST), TODAY) is None
    assert invoice_key(rec(vendor=vendor)) == "huawei|hw20260001"


def test_similar_but_different_vendor_is_unknown() -> None:
    problem = rule_problem(rec(vendor="Huaweii"), rules(VENDOR_LIST), TODAY)
    assert problem is not None and problem.startswith("vendor 'Huaweii' is not in domestic_quota.vendors")


@pytest.mark.parametrize("field_name", ["invoice_date", "delivered_on"])
def test_dates_in_the_future_are_rejected(field_name: str) -> None:
    tomorrow = TODAY + timedelta(days=1)
    future = dated(field_name, tomorrow)
    assert rule_problem(future, rules(VENDOR_LIST), TODAY) == f"{field_name} 2026-02-02 is in the future"
    # The date rule applies with or without a vendor list.
    assert rule_problem(future, rules(PLAIN), TODAY) == f"{field_name} 2026-02-02 is in the future"
    assert only_reason(judged([future], VENDOR_LIST)[1]) == f"{field_name} 2026-02-02 is in the future"


@pytest.mark.parametrize("field_name", ["invoice_date", "delivered_on"])
def test_today_and_the_past_are_accepted(field_name: str) -> None:
    for when in (TODAY, TODAY - timedelta(days=400)):
        assert rule_problem(dated(field_name, when), rules(VENDOR_LIST), TODAY) is None


def test_today_is_relative_to_the_decision_date() -> None:
    dated = rec(invoice_date="2026-03-01")
    assert rule_problem(dated, rules(VENDOR_LIST), date(2026, 2, 28)) is not None
    assert rule_problem(dated, rules(VENDOR_LIST), date(2026, 3, 1)) is None


def test_invoice_keys_normalise_case_and_punctuation_per_vendor() -> None:
    assert invoice_key(rec("HW-2026-001")) == invoice_key(rec("hw 2026 001")) == "huawei|hw2026001"
    assert invoice_key(rec("HW_2026/001", vendor="Huawei Co., Ltd.")) == "huawei|hw2026001"
    other_vendor = rec("HW-2026-001", vendor="Cambricon", product="MLU370")
    assert invoice_key(other_vendor) == "cambricon|hw2026001"
    assert invoice_key(other_vendor) != invoice_key(rec("HW-2026-001"))


def test_invoice_repeated_within_one_batch_is_rejected() -> None:
    first, again = rec("HW-2026-001"), rec("hw 2026 001", units=5)
    other_vendor = rec("HW-2026-001", vendor="Cambricon", product="MLU370")
    accepted, rejected = judged([first, again, other_vendor], VENDOR_LIST)
    assert accepted == [first, other_vendor]
    assert rejected == [RejectedRecord(record=again, reason="already submitted for this request")]


def test_invoice_already_in_the_requests_evidence_is_rejected() -> None:
    accepted, rejected = judged(
        [rec("hw 2026 001"), rec("HW-2026-002")], VENDOR_LIST, already=[rec("HW-2026-001")]
    )
    assert [r.invoice for r in accepted] == ["HW-2026-002"]
    assert only_reason(rejected) == "already submitted for this request"


def test_a_rejected_record_does_not_block_a_corrected_copy_in_the_same_batch() -> None:
    wrong, corrected = rec("HW-9", product="Ascend 999"), rec("HW-9")
    accepted, rejected = judged([wrong, corrected], VENDOR_LIST)
    assert accepted == [corrected]
    assert [r.record for r in rejected] == [wrong]
    assert registrable([wrong, corrected], already=[], rules=rules(VENDOR_LIST), today=TODAY) == [
        "huawei|hw9"
    ]


def test_without_a_vendor_list_every_vendor_counts() -> None:
    records = [rec("A-1", vendor="Acme Chips", product="X"), rec("NV-1", vendor="NVIDIA", product="H20")]
    for record in records:
        assert rule_problem(record, rules(PLAIN), TODAY) is None
        assert rule_problem(record, rules(REGISTRY), TODAY) is None
    assert judged(records, PLAIN) == (records, [])


def test_registrable_skips_rule_failures_and_duplicates() -> None:
    records = [
        rec("HW-1"),
        rec("hw 1"),  # the same invoice
        rec("NV-1", vendor="NVIDIA", product="H20"),  # not domestic
        rec("HW-2", invoice_date="2026-02-02"),  # future
        rec("HW-3"),  # already in the evidence
        rec("HW-1", vendor="Cambricon", product="MLU370"),
    ]
    keys = registrable(records, already=[rec("HW-3")], rules=rules(VENDOR_LIST), today=TODAY)
    assert keys == ["huawei|hw1", "cambricon|hw1"]


def test_bundled_default_policy_judges_evidence() -> None:
    policy = load_policy()
    assert rules(policy).unique_invoices and rules(policy).vendors
    assert rule_problem(rec(vendor="Huawei Technologies Co., Ltd."), rules(policy), TODAY) is None
    assert rule_problem(rec(vendor="Alibaba T-Head", product="PPU"), rules(policy), TODAY) is None
    nvidia = rule_problem(rec(vendor="NVIDIA", product="H20"), rules(policy), TODAY)
    assert nvidia == "vendor 'NVIDIA' is not a domestic vendor (domestic_quota.vendors)"
    unknown = rule_problem(rec(vendor="Acme"), rules(policy), TODAY)
    assert unknown is not None and "Huawei" in unknown and "NVIDIA" not in unknown


# -- 2. the invoice registry's answer, through judge ------------------------------------------------


def test_invoice_owned_by_this_request_is_accepted() -> None:
    good = rec()
    assert judged([good], BOTH, owners=mine(good)) == ([good], [])
    # The buyer name the registry recorded may be spelt differently; the request id decides.
    assert judged([good], BOTH, owners=mine(good, buyer="BYTEDANCE")) == ([good], [])


@pytest.mark.parametrize("spelling", [BUYER, "BYTEDANCE", "ByteDance Limited", "bytedance, inc."])
def test_invoice_owned_by_another_request_of_the_same_buyer(spelling: str) -> None:
    good = rec()
    accepted, rejected = judged([good], BOTH, owners=mine(good, request_id="req-0", buyer=spelling))
    assert accepted == []
    assert only_reason(rejected) == "already counts for request req-0"


def test_invoice_owned_by_another_buyers_request() -> None:
    good = rec()
    accepted, rejected = judged([good], BOTH, owners=mine(good, request_id="req-0", buyer=OTHER_BUYER))
    assert accepted == []
    reason = only_reason(rejected)
    assert reason == "registered to another buyer's request"
    assert "req-0" not in reason  # another buyer's request id is not disclosed


def test_invoice_missing_from_the_registrys_answer() -> None:
    good, other = rec("HW-1"), rec("HW-2")
    accepted, rejected = judged([good, other], BOTH, owners=mine(good))
    assert accepted == [good]
    assert only_reason(rejected) == "not registered yet; send it again"


def test_rule_problems_come_before_the_registry() -> None:
    nvidia = rec("NV-1", vendor="NVIDIA", product="H20")
    owners = mine(nvidia, request_id="req-0", buyer=OTHER_BUYER)
    assert "not a domestic vendor" in only_reason(judged([nvidia], BOTH, owners=owners)[1])


def test_owners_none_skips_the_registry() -> None:
    good = rec()
    assert judged([good], VENDOR_LIST, owners=None) == ([good], [])


# -- 3. the decider ---------------------------------------------------------------------------------


def test_every_policy_judges_evidence_record_by_record() -> None:
    """Without a vendor list or a registry, a record still fails on its dates or a repeated invoice."""
    records = [
        rec("NV-1", vendor="NVIDIA", product="H20", units=5_000),  # no vendor list: counts
        rec("A-1", vendor="Acme", product="X", units=7_000, invoice_date="2027-01-01"),
    ]
    run = Run(PLAIN)
    events = run.send(Submit(request=request_with(*records)))
    assert types(events) == ["RequestSubmitted", "EvidenceAdded", "EvidenceRejected", "GateOpened"]
    assert only(events, RequestSubmitted).route == DEFAULT_ROUTE
    assert part(run).evidence == records[:1]
    assert part(run).rejected_evidence == [
        RejectedRecord(record=records[1], reason="invoice_date 2027-01-01 is in the future")
    ]
    assert run.world.asked == []  # no registry in this policy: nobody is asked


@pytest.mark.parametrize("policy", [REGISTRY, BOTH], ids=["registry", "both"])
def test_submit_asks_the_registry_for_the_requests_invoices(policy: Policy) -> None:
    request = request_with(rec("HW-1"), rec("NV-1", vendor="NVIDIA", product="H20"))
    wanted = needs(RequestState(), Submit(request=request), policy, NOW)
    # Only invoices that pass the policy's own rules are registered: NVIDIA's is refused first.
    keys = ["huawei|hw1"] if policy is BOTH else ["huawei|hw1", "nvidia|nv1"]
    assert wanted == FactsWanted(
        invoices=RegisterInvoices(request_id=request.request_id, buyer=BUYER, keys=keys)
    )
    assert needs(RequestState(), Submit(request=request), VENDOR_LIST, NOW) == FactsWanted()


def test_submit_without_invoice_owners_is_refused_when_invoices_are_unique() -> None:
    for policy in (REGISTRY, BOTH):
        Run(policy).refuse(
            Submit(request=make_request()),
            "invoices have not been checked against the invoice registry",
            facts=NONE,
        )


def test_submit_without_records_needs_no_owners() -> None:
    request = make_request(domestic_procurement=[])
    assert needs(RequestState(), Submit(request=request), BOTH, NOW) == FactsWanted()
    run = Run(BOTH)
    events = run.send(Submit(request=request), facts=NONE)
    assert types(events) == ["RequestSubmitted", "GateOpened"]
    assert part(run).evidence == []


def test_submit_judges_the_requests_own_records() -> None:
    good = rec("HW-1", units=30_000)
    nvidia = rec("NV-1", vendor="NVIDIA", product="H20", units=5_000)
    taken = rec("HW-2", units=20_000)
    unregistered = rec("HW-3", units=1_000)
    request = request_with(good, nvidia, taken, unregistered)
    owners = mine(good, request_id=request.request_id) | mine(taken, request_id="req-0", buyer=OTHER_BUYER)
    run = Run(BOTH)
    events = run.send(Submit(request=request), facts=Facts(invoice_owners=owners))

    assert types(events) == ["RequestSubmitted", "EvidenceAdded", "EvidenceRejected", "GateOpened"]
    assert only(events, EvidenceAdded).records == [good]
    assert only(events, EvidenceRejected).records == [
        RejectedRecord(
            record=nvidia, reason="vendor 'NVIDIA' is not a domestic vendor (domestic_quota.vendors)"
        ),
        RejectedRecord(record=taken, reason="registered to another buyer's request"),
        RejectedRecord(record=unregistered, reason="not registered yet; send it again"),
    ]
    assert [event.actor for event in events[:3]] == ["applicant"] * 3
    state = run.state
    assert state.status == "us_export_review"
    assert part(run).evidence == [good]
    assert [r.record.invoice for r in part(run).rejected_evidence] == ["NV-1", "HW-2", "HW-3"]
    # The request itself keeps every record as filed.
    assert state.request is not None and len(state.request.domestic_procurement) == 4


def test_submit_where_no_record_counts_still_submits() -> None:
    nvidia = rec("NV-1", vendor="NVIDIA", product="H20")
    run = Run(VENDOR_LIST)
    events = run.send(Submit(request=request_with(nvidia)))
    assert types(events) == ["RequestSubmitted", "EvidenceRejected", "GateOpened"]
    assert part(run).evidence == [] and len(part(run).rejected_evidence) == 1


def test_submit_with_a_vendor_list_only_ignores_owners() -> None:
    good = rec("HW-1")
    request = request_with(good)
    run = Run(VENDOR_LIST)
    # No registry in this policy: an owners answer, even a hostile one, changes nothing.
    hostile = mine(good, request_id="req-0", buyer=OTHER_BUYER)
    events = run.send(Submit(request=request), facts=Facts(invoice_owners=hostile))
    assert only(events, EvidenceAdded).records == [good]
    assert part(run).evidence == [good]


def test_add_evidence_without_owners_is_refused_when_invoices_are_unique() -> None:
    run = Run(REGISTRY)
    run.send(Submit(request=make_request(domestic_procurement=[])))
    run.refuse(
        AddEvidence(records=[rec("HW-5")]), "not been checked against the invoice registry", facts=NONE
    )


def test_add_evidence_registers_only_what_passes_the_rules() -> None:
    run = Run(BOTH)
    run.send(Submit(request=make_request(domestic_procurement=[rec("HW-1").model_dump()])))
    command = AddEvidence(records=[rec("HW-1"), rec("NV-1", vendor="NVIDIA", product="H20"), rec("HW-2")])
    assert needs(run.state, command, BOTH, NOW) == FactsWanted(
        invoices=RegisterInvoices(request_id=run.request_id, buyer=BUYER, keys=["huawei|hw2"])
    )
    assert needs(run.state, command, VENDOR_LIST, NOW) == FactsWanted()


def test_add_evidence_where_no_record_counts_is_refused_with_every_reason() -> None:
    run = Run(BOTH)
    run.send(Submit(request=make_request(domestic_procurement=[])))
    nvidia = rec("NV-1", vendor="NVIDIA", product="H20")
    future = rec("HW-7", delivered_on="2026-02-02")
    taken = rec("HW-8")
    run.world.register(taken, request_id="req-0", buyer=BUYER)
    error = run.refuse(AddEvidence(records=[nvidia, future, taken]), "no record counts")
    message = str(error)
    assert "invoice 'NV-1': vendor 'NVIDIA' is not a domestic vendor" in message
    assert "invoice 'HW-7': delivered_on 2026-02-02 is in the future" in message
    assert "invoice 'HW-8': already counts for request req-0" in message


def test_add_evidence_some_good_some_bad_at_domestic_quota() -> None:
    first = rec("HW-1", units=20_000)
    run = Run(BOTH)
    request = request_with(first, units=50_000)
    run.send(Submit(request=request))
    run.to(DOMESTIC_QUOTA)
    assessed = only(run.send(Evaluate(gate=DOMESTIC_QUOTA)), DomesticQuotaAssessed)
    assert (assessed.domestic_units, assessed.shortfall) == (20_000, 30_000)

    good = rec("HW-2", units=25_000)
    nvidia = rec("NV-1", vendor="NVIDIA", product="H20", units=40_000)
    stranger = rec("HW-3", units=40_000)
    run.world.register(stranger, request_id="req-x", buyer=OTHER_BUYER)
    events = run.send(AddEvidence(records=[good, nvidia, stranger]))

    assert types(events) == ["EvidenceAdded", "EvidenceRejected", "DomesticQuotaAssessed"]
    assert only(events, EvidenceAdded).records == [good]
    assert [r.record for r in only(events, EvidenceRejected).records] == [nvidia, stranger]
    assessed = only(events, DomesticQuotaAssessed)
    assert assessed.domestic_units == 45_000  # 20,000 + 25,000; the rejected 80,000 do not count
    assert assessed.required_units == 50_000 and assessed.shortfall == 5_000
    assert part(run).evidence == [first, good]
    assert part(run).assessment == assessed
    run.refuse(Decide(gate=DOMESTIC_QUOTA, reviewer="wang", approve=True), "short by 5000")


def test_add_evidence_at_an_earlier_gate_only_records_it() -> None:
    run = Run(VENDOR_LIST)
    run.send(Submit(request=make_request(domestic_procurement=[])))
    events = run.send(AddEvidence(records=[rec("HW-1"), rec("NV-1", vendor="NVIDIA", product="H20")]))
    assert types(events) == ["EvidenceAdded", "EvidenceRejected"]


def test_add_evidence_in_auto_mode_approves_once_accepted_evidence_suffices() -> None:
    policy = make_policy("auto", domestic_quota={"vendors": VENDORS, "unique_invoices": True})
    run = Run(policy)
    request = make_request(domestic_procurement=[], units=10_000)
    run.send(Submit(request=request))
    run.to(DOMESTIC_QUOTA)
    good, nvidia = rec("HW-1", units=10_000), rec("NV-1", vendor="NVIDIA", product="H20", units=50_000)
    events = run.send(AddEvidence(records=[good, nvidia]))
    assert types(events) == [
        "EvidenceAdded",
        "EvidenceRejected",
        "DomesticQuotaAssessed",
        "GateApproved",
        "LicenseIssued",
    ]
    assert run.state.status == Status.LICENSED


def test_evidence_outside_the_route_is_refused() -> None:
    run = Run(make_policy("manual", route=("us-export", "cn-import")))
    run.send(Submit(request=make_request(domestic_procurement=[])))
    run.refuse(AddEvidence(records=[rec("HW-1")]), "no gate of this request's route takes add_evidence")


# -- 3b. compensation: an unlicensed request frees its invoices ---------------------------------------


def compensation_frees_invoices_for_their_buyer_only(world: World) -> None:
    """An unlicensed request's invoices count again for its own buyer only. `world` is the test's own
    registry here, and the event store's real one in tests/store/test_invoice_registry.py."""
    first = Run(BOTH, world=world)
    first.send(Submit(request=request_with(rec("HW-1"), request_id="req-first")))
    first.send(Withdraw(reason="project cancelled"))
    command = Compensate(gate=DOMESTIC_QUOTA, reason="request withdrawn: project cancelled")
    assert command in compensations(first.state)
    assert needs(first.state, command, BOTH, NOW) == FactsWanted(
        release_invoices=ReleaseInvoices(request_id="req-first")
    )
    assert first.send(command) == []  # the registry keeps the record; the request's history needs none
    assert world.asked[-1] == FactsWanted(release_invoices=ReleaseInvoices(request_id="req-first"))

    other = request_with(
        rec("HW-1"), request_id="req-other", buyer={"name": OTHER_BUYER, "country": "CN", "kind": "private"}
    )
    stranger = Run(BOTH, world=world)
    stranger.send(Submit(request=other))
    assert part(stranger).evidence == []  # still the first buyer's purchase
    again = Run(BOTH, world=world)
    again.send(Submit(request=request_with(rec("HW-1"), request_id="req-again")))
    assert part(again).evidence == [rec("HW-1")]


def test_compensation_frees_an_unlicensed_requests_invoices_for_its_buyer_only() -> None:
    compensation_frees_invoices_for_their_buyer_only(World())


def test_without_a_registry_compensation_asks_nothing() -> None:
    run = Run(VENDOR_LIST)
    run.send(Submit(request=request_with(rec("HW-1"))))
    run.send(Withdraw(reason="project cancelled"))
    command = Compensate(gate=DOMESTIC_QUOTA, reason="x")
    assert needs(run.state, command, VENDOR_LIST, NOW) == FactsWanted()
    assert run.send(command) == []


# -- 4. the computation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ratio", "imported", "required"),
    [
        (1.1, 50_000, 55_000),
        (1.0, 50_000, 50_000),
        (0.3333, 50_000, 16_665),
        (0.3333, 50_001, 16_666),
        (0.7, 10, 7),
        (2.675, 1_000, 2_675),
        (0.1, 3, 1),
        (0.0, 50_000, 0),
    ],
)
def test_required_units_use_exact_decimals(ratio: float, imported: int, required: int) -> None:
    assert required_units(ratio, imported) == required


@given(st.integers(0, 100_000).map(lambda n: n / 10_000), st.integers(0, 1_000_000))
def test_required_units_is_the_exact_decimal_ceiling(ratio: float, imported: int) -> None:
    exact = Fraction(Decimal(str(ratio))) * imported
    got = required_units(ratio, imported)
    assert got >= exact > got - 1 or (exact == 0 and got == 0)


def _share_exceeds(min_share: float, domestic: int, total: int) -> bool:
    return total > 0 and Fraction(domestic, total) > Fraction(Decimal(str(min_share)))


@settings(max_examples=300, deadline=None)
@given(
    min_share=st.one_of(
        st.integers(1, 9_999).map(lambda n: n / 10_000),
        st.floats(min_value=0.001, max_value=0.999, allow_nan=False, allow_infinity=False),
    ),
    domestic=st.integers(0, 5_000_000),
    foreign=st.integers(0, 5_000_000),
)
@example(min_share=0.5, domestic=0, foreign=0)
@example(min_share=0.5, domestic=10, foreign=10)
@example(min_share=0.5, domestic=11, foreign=10)
@example(min_share=1 / 3, domestic=1, foreign=2)
def test_hub_shortfall_is_the_smallest_sufficient_addition(
    min_share: float, domestic: int, foreign: int
) -> None:
    total = domestic + foreign
    d = hub_shortfall(min_share, domestic, total)
    assert d >= 0
    assert _share_exceeds(min_share, domestic + d, total + d)
    if d > 0:
        assert not _share_exceeds(min_share, domestic + d - 1, total + d - 1)


@pytest.mark.parametrize(
    ("min_share", "domestic", "total", "expected"),
    [
        (0.5, 70_000, 150_000, 10_001),
        (0.5, 60_000, 100_000, 0),  # already above
        (0.5, 50_000, 100_000, 1),  # exactly at the minimum is not above it
        (0.5, 0, 0, 1),
        (0.6, 0, 100, 151),
    ],
)
def test_hub_shortfall_examples(min_share: float, domestic: int, total: int, expected: int) -> None:
    assert hub_shortfall(min_share, domestic, total) == expected


def hub_request(**data_center: Any) -> ImportRequest:
    site = {"name": "Wuhu Cluster 3", "province": "Anhui", "public_computing_hub": True, **data_center}
    return make_request(units=50_000, data_center=site, domestic_procurement=[])


def assessed_at_quota(
    policy: Policy, request: ImportRequest, records: list[ProcurementRecord]
) -> DomesticQuotaAssessed:
    run = Run(policy)
    run.send(Submit(request=request))
    run.to(DOMESTIC_QUOTA)
    run.send(AddEvidence(records=records))
    assessed = part(run).assessment
    assert assessed is not None
    return assessed


HUB = make_policy("manual", domestic_quota={"min_domestic_share": 0.5})


def test_public_hub_share_counts_only_evidence_delivered_there() -> None:
    records = [
        rec("HW-1", units=40_000),  # no site named: delivered to the request's data centre
        rec("HW-2", units=20_000, data_center="wuhu cluster 3"),  # named, in another case
        rec("HW-3", units=20_000, data_center="Shenzhen Campus 1"),  # elsewhere
    ]
    assessed = assessed_at_quota(
        HUB, hub_request(installed_domestic=10_000, installed_foreign=30_000), records
    )
    # The ratio counts every domestic unit: 80,000 >= 1.0 x 50,000.
    assert (assessed.domestic_units, assessed.required_units) == (80_000, 50_000)
    # The hub: (10,000 + 60,000) / (70,000 + 30,000 + 50,000) = 0.4667; needs d > 10,000.
    assert assessed.public_hub == PublicHubShare(
        installed_domestic=10_000,
        installed_foreign=30_000,
        domestic_added=60_000,
        imported_units=50_000,
        share_after=0.4667,
        min_share=0.5,
        shortfall=10_001,
    )
    assert assessed.shortfall == 10_001  # the hub's, larger than the ratio's 0


def test_ratio_shortfall_wins_when_larger_than_the_hubs() -> None:
    records = [rec("HW-1", units=20_000)]
    assessed = assessed_at_quota(HUB, hub_request(installed_domestic=200_000, installed_foreign=0), records)
    assert assessed.public_hub is not None and assessed.public_hub.shortfall == 0
    assert assessed.public_hub.share_after == round(220_000 / 270_000, 4)
    assert assessed.shortfall == 30_000


def test_hub_shortfall_larger_of_two_when_both_short() -> None:
    records = [rec("HW-1", units=10_000)]
    assessed = assessed_at_quota(HUB, hub_request(installed_domestic=0, installed_foreign=100_000), records)
    # ratio: 50,000 - 10,000 = 40,000; hub: (10,000 + d) / (160,000 + d) > 0.5 -> d = 140,001
    assert assessed.public_hub is not None and assessed.public_hub.shortfall == 140_001
    assert assessed.shortfall == 140_001


def test_no_public_hub_assessment_when_not_a_hub_or_no_min_share() -> None:
    records = [rec("HW-1", units=10_000)]
    not_hub = make_request(units=50_000, domestic_procurement=[])
    assert assessed_at_quota(HUB, not_hub, records).public_hub is None
    assessed = assessed_at_quota(PLAIN, hub_request(installed_foreign=100_000), records)
    assert assessed.public_hub is None
    assert assessed.shortfall == 40_000


# -- 5. licence validity ----------------------------------------------------------------------------


def with_validity(period: str) -> Policy:
    return Policy.model_validate({**PLAIN.model_dump(mode="json"), "licence_validity": period})


def licence_at(policy: Policy, now: datetime) -> tuple[LicenseIssued, RequestState]:
    run = Run(policy, now=now)
    run.send(Submit(request=make_request()))
    run.to(DOMESTIC_QUOTA)
    run.send(Evaluate(gate=DOMESTIC_QUOTA))
    events = run.send(Decide(gate=DOMESTIC_QUOTA, reviewer="wang", approve=True))
    return only(events, LicenseIssued), run.state


@pytest.mark.parametrize(
    ("period", "issued", "until"),
    [
        ("P4Y", datetime(2028, 2, 29, 10, 15, tzinfo=UTC), datetime(2032, 2, 29, 10, 15, tzinfo=UTC)),
        ("P4Y", datetime(2027, 2, 28, 8, 0, tzinfo=UTC), datetime(2031, 2, 28, 8, 0, tzinfo=UTC)),
        ("P1Y", datetime(2028, 2, 29, tzinfo=UTC), datetime(2029, 2, 28, tzinfo=UTC)),
        ("P1Y6M", datetime(2026, 8, 31, 12, 0, tzinfo=UTC), datetime(2028, 2, 29, 12, 0, tzinfo=UTC)),
        ("P1Y6M", datetime(2026, 2, 1, tzinfo=UTC), datetime(2027, 8, 1, tzinfo=UTC)),
        ("P30D", datetime(2026, 2, 1, 9, 30, tzinfo=UTC), datetime(2026, 3, 3, 9, 30, tzinfo=UTC)),
        ("P1M", datetime(2026, 1, 31, tzinfo=UTC), datetime(2026, 2, 28, tzinfo=UTC)),
        ("P11M", datetime(2026, 3, 15, tzinfo=UTC), datetime(2027, 2, 15, tzinfo=UTC)),
    ],
)
def test_licence_valid_until_is_issue_time_plus_calendar_period(
    period: str, issued: datetime, until: datetime
) -> None:
    policy = with_validity(period)
    assert policy.licence_validity.after(issued) == until
    licence, state = licence_at(policy, issued)
    assert licence.valid_until == until
    assert state.status == Status.LICENSED
    assert state.licence_valid_until == until


def test_default_licence_validity_is_four_years() -> None:
    assert PLAIN.licence_validity == CalendarPeriod(years=4)
    licence, state = licence_at(PLAIN, NOW)
    assert licence.valid_until == datetime(2030, 2, 1, 9, 30, tzinfo=UTC)
    assert state.licence_valid_until == licence.valid_until


@pytest.mark.parametrize("text", ["P4W", "P", "4Y", "P4Y2W", "PT4H", "P-1Y", "p4y", "", "P4Y4Y"])
def test_calendar_period_parse_errors(text: str) -> None:
    with pytest.raises(ValidationError, match="expected an ISO 8601 period in years, months, days"):
        CalendarPeriod.model_validate(text)


@pytest.mark.parametrize(
    ("text", "fields"),
    [("P4Y", (4, 0, 0)), ("P1Y6M", (1, 6, 0)), ("P30D", (0, 0, 30)), ("P2Y3M4D", (2, 3, 4))],
)
def test_calendar_period_round_trips(text: str, fields: tuple[int, int, int]) -> None:
    period = CalendarPeriod.model_validate(text)
    assert (period.years, period.months, period.days) == fields
    dumped: object = period.model_dump()
    assert dumped == text
    assert period.model_dump_json() == f'"{text}"'
    assert CalendarPeriod.model_validate(period.model_dump()) == period
    policy = with_validity(text)
    assert policy.model_dump(mode="json")["licence_validity"] == text
    assert Policy.model_validate_json(policy.model_dump_json()) == policy


@pytest.mark.parametrize("text", ["P0D", "P0Y0M0D"])
def test_zero_calendar_period_is_refused(text: str) -> None:
    # A licence valid for no time at all would expire as it is issued.
    with pytest.raises(ValidationError, match=f"a period must be longer than nothing, got '{text}'"):
        with_validity(text)
