"""The pure decider: every transition, every refusal and the invariants, with no server at all."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st

from chipclear.domain.commands import (
    AddEvidence,
    Command,
    Decide,
    Evaluate,
    Expire,
    Submit,
    Withdraw,
)
from chipclear.domain.decider import decide
from chipclear.domain.errors import DomainError
from chipclear.domain.events import (
    DomesticQuotaAssessed,
    Event,
    EvidenceAdded,
    GateApproved,
    GateDenied,
    GateOpened,
    LicenseIssued,
    RequestExpired,
    RequestSubmitted,
    RequestWithdrawn,
)
from chipclear.domain.models import MAX_UNITS, Gate, ImportRequest, PartyKind, ProcurementRecord, Status
from chipclear.domain.policy import GateMode, Policy
from chipclear.domain.state import RequestState, evolve, fold
from tests import decisions
from tests.decisions import REVIEWER, Ids, types
from tests.factories import make_policy, make_request

NOW = datetime(2026, 2, 1, tzinfo=UTC)
# Licences are valid for the default licence_validity, P4Y, from the moment they are issued.
FOUR_YEARS_ON = datetime(2030, 2, 1, tzinfo=UTC)


def issued(run: Any, units: int) -> LicenseIssued:
    return LicenseIssued(licence_id=f"LIC-{run.state.request_id}", units=units, valid_until=FOUR_YEARS_ON)


GATES = list(Gate)
MODES = ["manual", "auto"]
FINAL = [Status.LICENSED, Status.DENIED, Status.WITHDRAWN, Status.EXPIRED]


# -- helpers ----------------------------------------------------------------------------------------


@dataclass
class Run(decisions.Run):
    now: datetime = NOW


def evidence(*invoices: str, units: int = 10_000) -> list[ProcurementRecord]:
    return [
        ProcurementRecord(vendor="Huawei", product="Ascend 910C", units=units, invoice=i) for i in invoices
    ]


def submitted(policy: Policy, request: ImportRequest | None = None) -> Run:
    run = Run(policy)
    run.send(Submit(request=request or make_request()))
    return run


def at_gate(gate: Gate, policy: Policy, request: ImportRequest | None = None) -> Run:
    """Submitted and moved to `gate` the way the workflow does: Evaluate, then (manual) a reviewer."""
    run = submitted(policy, request)
    for earlier in GATES[: GATES.index(gate)]:
        run.send(Evaluate(gate=earlier))
        if run.state.gate is earlier:
            run.send(Decide(gate=earlier, reviewer=REVIEWER[earlier], approve=True))
    assert run.state.gate is gate, run.state.status
    return run


def licensed(policy: Policy | None = None) -> Run:
    run = at_gate(Gate.DOMESTIC_QUOTA, policy or make_policy("manual"))
    run.send(Evaluate(gate=Gate.DOMESTIC_QUOTA))
    run.send(Decide(gate=Gate.DOMESTIC_QUOTA, reviewer="wang", approve=True))
    assert run.state.status is Status.LICENSED
    return run


def final_run(status: Status) -> Run:
    match status:
        case Status.LICENSED:
            return licensed()
        case Status.DENIED:
            run = at_gate(Gate.CN_IMPORT, make_policy("manual"))
            run.send(Decide(gate=Gate.CN_IMPORT, reviewer="wang", approve=False, reason="end use unclear"))
        case Status.WITHDRAWN:
            run = at_gate(Gate.US_EXPORT, make_policy("manual"))
            run.send(Withdraw(reason="project cancelled"))
        case Status.EXPIRED:
            run = at_gate(Gate.US_EXPORT, make_policy("manual"))
            run.send(Expire(gate=Gate.US_EXPORT), at=NOW + timedelta(days=90))
        case _:
            raise AssertionError(status)
    assert run.state.status is status
    return run


def end_user(kind: str) -> dict[str, Any]:
    return {"name": "End User Co.", "country": "CN", "kind": kind}


# -- Submit -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sections", "deadline"),
    [
        ({}, timedelta(days=90)),
        ({"us_export": {"decision_deadline": "PT2S"}}, timedelta(seconds=2)),
        ({"us_export": {"decision_deadline": "P7D"}}, timedelta(days=7)),
    ],
)
@pytest.mark.parametrize("mode", MODES)
def test_submit_records_request_and_opens_us_export(mode, sections, deadline):
    policy = make_policy(mode, **sections)
    request = make_request()
    run = Run(policy)
    events = run.send(Submit(request=request))
    assert types(events) == ["RequestSubmitted", "GateOpened"]
    assert events[0].data == RequestSubmitted(request=request)
    assert events[1].data == GateOpened(gate=Gate.US_EXPORT, deadline=NOW + deadline)
    assert [e.version for e in events] == [1, 2]
    assert {e.stream_id for e in events} == {request.request_id}
    assert {e.actor for e in events} == {"applicant"}
    assert run.state.status is Status.US_EXPORT_REVIEW
    assert run.state.units_requested == request.units
    assert run.state.units_approved is None
    assert run.state.deadline == NOW + deadline
    assert run.state.evidence == request.domestic_procurement


def test_submit_actor_is_recorded():
    run = Run(make_policy())
    events = run.send(Submit(request=make_request(), actor="bytedance-legal"))
    assert {e.actor for e in events} == {"bytedance-legal"}


# -- Evaluate ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gate", "expected"),
    [
        (Gate.US_EXPORT, []),
        (Gate.CN_IMPORT, []),
        (Gate.DOMESTIC_QUOTA, ["DomesticQuotaAssessed"]),
    ],
)
def test_evaluate_manual_leaves_the_decision_to_a_reviewer(gate, expected):
    run = at_gate(gate, make_policy("manual"))
    events = run.send(Evaluate(gate=gate))
    assert types(events) == expected
    assert run.state.gate is gate
    if gate is Gate.DOMESTIC_QUOTA:
        assert events[0].data == DomesticQuotaAssessed(
            imported_units=50_000,
            domestic_units=60_000,
            required_ratio=1.0,
            required_units=50_000,
            shortfall=0,
        )
        assert events[0].actor == "policy"
        assert run.state.assessment == events[0].data


@pytest.mark.parametrize(
    ("gate", "expected", "next_gate", "deadline"),
    [
        (Gate.US_EXPORT, ["GateApproved", "GateOpened"], Gate.CN_IMPORT, timedelta(days=90)),
        (Gate.CN_IMPORT, ["GateApproved", "GateOpened"], Gate.DOMESTIC_QUOTA, timedelta(days=60)),
        (Gate.DOMESTIC_QUOTA, ["DomesticQuotaAssessed", "GateApproved", "LicenseIssued"], None, None),
    ],
)
def test_evaluate_auto_approves_and_moves_on(gate, expected, next_gate, deadline):
    policy = make_policy("auto")
    run = at_gate(gate, policy)
    events = run.send(Evaluate(gate=gate))
    assert types(events) == expected
    assert {e.actor for e in events} == {"policy"}
    approved = next(e.data for e in events if isinstance(e.data, GateApproved))
    assert approved == GateApproved(
        gate=gate, units_approved=50_000, rule=f"{gate.value.replace('-', '_')}.mode = auto"
    )
    assert run.state.gates[gate].outcome == "approved"
    assert run.state.gates[gate].decided_by == "policy"
    if next_gate is not None:
        assert events[-1].data == GateOpened(gate=next_gate, deadline=NOW + deadline)
        assert run.state.gate is next_gate
    else:
        assert events[-1].data == LicenseIssued(
            licence_id=f"LIC-{run.state.request_id}", units=50_000, valid_until=FOUR_YEARS_ON
        )
        assert run.state.status is Status.LICENSED
        assert run.state.licence_id == f"LIC-{run.state.request_id}"
        assert run.state.units_approved == 50_000


def test_evaluate_auto_domestic_quota_with_shortfall_waits_for_evidence():
    run = at_gate(Gate.DOMESTIC_QUOTA, make_policy("auto"), make_request(domestic_procurement=[]))
    events = run.send(Evaluate(gate=Gate.DOMESTIC_QUOTA))
    assert types(events) == ["DomesticQuotaAssessed"]
    assert isinstance(events[0].data, DomesticQuotaAssessed)
    assert events[0].data.shortfall == 50_000
    assert run.state.gate is Gate.DOMESTIC_QUOTA


@pytest.mark.parametrize(
    ("units", "approved", "note"),
    [
        (100_000, 75_000, "capped at us_export.max_units_per_request = 75000"),
        (75_000, 75_000, None),
        (10, 10, None),
    ],
)
def test_evaluate_auto_us_export_caps_units(units, approved, note):
    run = submitted(make_policy("auto"), make_request(units=units))
    events = run.send(Evaluate(gate=Gate.US_EXPORT))
    assert isinstance(events[0].data, GateApproved)
    assert events[0].data.units_approved == approved
    assert events[0].data.note == note
    assert run.state.units_approved == approved
    assert run.state.units_requested == units


def test_evaluate_auto_us_export_uses_the_policy_cap():
    run = submitted(make_policy("auto", us_export={"max_units_per_request": 1_000}))
    events = run.send(Evaluate(gate=Gate.US_EXPORT))
    assert isinstance(events[0].data, GateApproved)
    assert events[0].data.units_approved == 1_000
    assert events[0].data.note == "capped at us_export.max_units_per_request = 1000"


# -- Decide -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gate", "expected"),
    [
        (Gate.US_EXPORT, ["GateApproved", "GateOpened"]),
        (Gate.CN_IMPORT, ["GateApproved", "GateOpened"]),
        (Gate.DOMESTIC_QUOTA, ["GateApproved", "LicenseIssued"]),
    ],
)
def test_decide_approve_by_allowed_reviewer(gate, expected):
    run = at_gate(gate, make_policy("manual"))
    run.send(Evaluate(gate=gate))
    reviewer = REVIEWER[gate]
    events = run.send(Decide(gate=gate, reviewer=reviewer, approve=True, reason="looks fine"))
    assert types(events) == expected
    assert {e.actor for e in events} == {reviewer}
    assert events[0].data == GateApproved(gate=gate, units_approved=50_000, note="looks fine")
    record = run.state.gates[gate]
    assert (record.outcome, record.decided_by, record.units_approved) == ("approved", reviewer, 50_000)
    assert record.decided_at == NOW
    if gate.next is not None:
        assert isinstance(events[1].data, GateOpened)
        assert events[1].data.gate is gate.next
        assert events[1].data.deadline == NOW + run.policy.deadline(gate.next)
        assert run.state.gate is gate.next
    else:
        assert events[1].data == LicenseIssued(
            licence_id=f"LIC-{run.state.request_id}", units=50_000, valid_until=FOUR_YEARS_ON
        )
        assert run.state.status is Status.LICENSED


@pytest.mark.parametrize("gate", GATES)
def test_decide_deny_by_allowed_reviewer(gate):
    run = at_gate(gate, make_policy("manual"))
    reviewer = REVIEWER[gate]
    events = run.send(Decide(gate=gate, reviewer=reviewer, approve=False, reason="  end use unclear  "))
    assert types(events) == ["GateDenied"]
    assert events[0].data == GateDenied(gate=gate, reason="end use unclear")
    assert events[0].actor == reviewer
    assert run.state.status is Status.DENIED
    assert run.state.outcome_reason == "end use unclear"
    assert run.state.gates[gate].outcome == "denied"
    assert run.state.gates[gate].decided_by == reviewer


def test_decide_domestic_quota_without_prior_evaluate_records_the_assessment():
    run = at_gate(Gate.DOMESTIC_QUOTA, make_policy("manual"))
    events = run.send(Decide(gate=Gate.DOMESTIC_QUOTA, reviewer="wang", approve=True, units=40_000))
    assert types(events) == ["DomesticQuotaAssessed", "GateApproved", "LicenseIssued"]
    assert isinstance(events[0].data, DomesticQuotaAssessed)
    assert events[0].data.imported_units == 40_000
    assert events[0].data.required_units == 40_000


def test_decide_us_export_default_units_are_capped():
    run = submitted(make_policy("manual"), make_request(units=90_000))
    events = run.send(Decide(gate=Gate.US_EXPORT, reviewer="alice", approve=True))
    assert isinstance(events[0].data, GateApproved)
    assert events[0].data.units_approved == 75_000


def test_fewer_units_are_carried_forward_and_never_exceeded():
    run = submitted(make_policy("manual"))
    run.send(Decide(gate=Gate.US_EXPORT, reviewer="alice", approve=True, units=30_000))
    assert run.state.units_approved == 30_000
    assert run.state.units_in_play == 30_000
    run.refuse(
        Decide(gate=Gate.CN_IMPORT, reviewer="wang", approve=True, units=30_001),
        r"units: 30001 exceeds the 30000 units still requested",
    )
    run.send(Decide(gate=Gate.CN_IMPORT, reviewer="wang", approve=True, units=20_000))
    assessed = run.send(Evaluate(gate=Gate.DOMESTIC_QUOTA))
    assert isinstance(assessed[0].data, DomesticQuotaAssessed)
    assert assessed[0].data.imported_units == 20_000
    run.refuse(
        Decide(gate=Gate.DOMESTIC_QUOTA, reviewer="wang", approve=True, units=20_001),
        r"units: 20001 exceeds the 20000 units still requested",
    )
    events = run.send(Decide(gate=Gate.DOMESTIC_QUOTA, reviewer="wang", approve=True))
    assert events[-1].data == LicenseIssued(
        licence_id=f"LIC-{run.state.request_id}", units=20_000, valid_until=FOUR_YEARS_ON
    )
    assert run.state.units_approved == 20_000
    assert run.state.units_requested == 50_000


def test_conditions_accumulate_into_the_licence():
    run = submitted(make_policy("manual"))
    run.send(Decide(gate=Gate.US_EXPORT, reviewer="alice", approve=True, conditions=["no re-export"]))
    run.send(Decide(gate=Gate.CN_IMPORT, reviewer="wang", approve=True, conditions=["quarterly report"]))
    assert run.state.conditions == ["no re-export", "quarterly report"]
    events = run.send(
        Decide(
            gate=Gate.DOMESTIC_QUOTA,
            reviewer="wang",
            approve=True,
            conditions=["no re-export", "on-site audit"],
        )
    )
    licence = events[-1].data
    assert isinstance(licence, LicenseIssued)
    assert licence.conditions == ["no re-export", "quarterly report", "on-site audit"]
    assert run.state.conditions == licence.conditions


# -- AddEvidence ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("gate", [Gate.US_EXPORT, Gate.CN_IMPORT])
def test_add_evidence_at_an_earlier_gate_only_records_it(gate, mode):
    run = at_gate(gate, make_policy(mode), make_request(domestic_procurement=[]))
    records = evidence("HW-1", "HW-2")
    events = run.send(AddEvidence(records=records))
    assert types(events) == ["EvidenceAdded"]
    assert events[0].data == EvidenceAdded(records=records)
    assert events[0].actor == "applicant"
    assert run.state.evidence == records
    assert run.state.gate is gate


def test_add_evidence_at_domestic_quota_manual_reassesses():
    run = at_gate(Gate.DOMESTIC_QUOTA, make_policy("manual"), make_request(domestic_procurement=[]))
    run.send(Evaluate(gate=Gate.DOMESTIC_QUOTA))
    events = run.send(AddEvidence(records=evidence("HW-1", "HW-2", units=25_000)))
    assert types(events) == ["EvidenceAdded", "DomesticQuotaAssessed"]
    assert events[1].data == DomesticQuotaAssessed(
        imported_units=50_000, domestic_units=50_000, required_ratio=1.0, required_units=50_000, shortfall=0
    )
    assert run.state.gate is Gate.DOMESTIC_QUOTA  # a reviewer still decides


@pytest.mark.parametrize(
    ("units", "expected"),
    [
        (25_000, ["EvidenceAdded", "DomesticQuotaAssessed", "GateApproved", "LicenseIssued"]),
        (20_000, ["EvidenceAdded", "DomesticQuotaAssessed"]),
    ],
)
def test_add_evidence_at_domestic_quota_auto(units, expected):
    run = at_gate(Gate.DOMESTIC_QUOTA, make_policy("auto"), make_request(domestic_procurement=[]))
    run.send(Evaluate(gate=Gate.DOMESTIC_QUOTA))
    events = run.send(AddEvidence(records=evidence("HW-1", "HW-2", units=units)))
    assert types(events) == expected
    assessment = events[1].data
    assert isinstance(assessment, DomesticQuotaAssessed)
    assert assessment.domestic_units == 2 * units
    assert assessment.shortfall == max(0, 50_000 - 2 * units)
    if "LicenseIssued" in expected:
        assert run.state.status is Status.LICENSED
        assert run.state.units_approved == 50_000
    else:
        assert run.state.gate is Gate.DOMESTIC_QUOTA


# -- Withdraw and Expire ----------------------------------------------------------------------------


@pytest.mark.parametrize("gate", GATES)
def test_withdraw_at_each_gate(gate):
    run = at_gate(gate, make_policy("manual"))
    events = run.send(Withdraw(reason="project cancelled", actor="bytedance-legal"))
    assert types(events) == ["RequestWithdrawn"]
    assert events[0].data == RequestWithdrawn(gate=gate, reason="project cancelled")
    assert events[0].actor == "bytedance-legal"
    assert run.state.status is Status.WITHDRAWN
    assert run.state.outcome_reason == "project cancelled"
    assert run.state.gates[gate].outcome == "withdrawn"


@pytest.mark.parametrize("after", [timedelta(0), timedelta(seconds=1), timedelta(days=400)])
@pytest.mark.parametrize("gate", GATES)
def test_expire_at_or_after_the_deadline(gate, after):
    run = at_gate(gate, make_policy("manual"))
    deadline = run.state.deadline
    assert deadline == NOW + run.policy.deadline(gate)
    events = run.send(Expire(gate=gate), at=deadline + after)
    assert types(events) == ["RequestExpired"]
    assert events[0].data == RequestExpired(gate=gate, deadline=deadline)
    assert events[0].actor == "deadline"
    assert run.state.status is Status.EXPIRED
    assert run.state.gates[gate].outcome == "expired"
    assert run.state.gates[gate].decided_by == "deadline"
    assert run.state.outcome_reason is not None and str(gate) in run.state.outcome_reason


# -- refusals ---------------------------------------------------------------------------------------


def test_submit_twice_is_refused():
    run = submitted(make_policy())
    run.refuse(Submit(request=make_request()), r"was already submitted")


@pytest.mark.parametrize(
    "command",
    [
        Evaluate(gate=Gate.US_EXPORT),
        Decide(gate=Gate.US_EXPORT, reviewer="alice", approve=True),
        AddEvidence(records=evidence("HW-9")),
        Withdraw(reason="changed our mind"),
        Expire(gate=Gate.US_EXPORT),
    ],
    ids=lambda c: c.kind,
)
def test_any_command_before_submit_is_refused(command):
    Run(make_policy()).refuse(command, r"has not been submitted", at=NOW + timedelta(days=1000))


@pytest.mark.parametrize(
    ("gate", "command"),
    [
        (Gate.US_EXPORT, Evaluate(gate=Gate.CN_IMPORT)),
        (Gate.US_EXPORT, Decide(gate=Gate.CN_IMPORT, reviewer="wang", approve=True)),
        (Gate.US_EXPORT, Expire(gate=Gate.DOMESTIC_QUOTA)),
        (Gate.CN_IMPORT, Evaluate(gate=Gate.US_EXPORT)),
        (Gate.CN_IMPORT, Decide(gate=Gate.US_EXPORT, reviewer="alice", approve=True)),
        (Gate.DOMESTIC_QUOTA, Decide(gate=Gate.CN_IMPORT, reviewer="wang", approve=False, reason="x")),
        (Gate.DOMESTIC_QUOTA, Expire(gate=Gate.US_EXPORT)),
    ],
)
def test_command_for_the_wrong_gate_is_refused(gate, command):
    run = at_gate(gate, make_policy("manual"))
    run.refuse(command, rf"request is at {gate}, not at gate {command.gate}", at=NOW + timedelta(days=1000))


@pytest.mark.parametrize(
    ("gate", "reviewer", "allowed"),
    [
        (Gate.US_EXPORT, "wang", "alice"),
        (Gate.CN_IMPORT, "alice", "wang"),
        (Gate.DOMESTIC_QUOTA, "alice", "wang"),
        (Gate.US_EXPORT, "mallory", "alice"),
        (Gate.DOMESTIC_QUOTA, "mallory", "wang"),
    ],
)
@pytest.mark.parametrize("approve", [True, False])
def test_reviewer_not_allowed_for_the_gate_is_refused(gate, reviewer, allowed, approve):
    run = at_gate(gate, make_policy("manual"))
    error = run.refuse(
        Decide(gate=gate, reviewer=reviewer, approve=approve, reason=None if approve else "no"),
        rf"reviewer '{reviewer}' may not decide gate {gate}",
    )
    assert f"[reviewers] allows: {allowed}" in str(error)
    assert run.policy.version in str(error)


def test_reviewer_refused_when_nobody_may_decide():
    policy = make_policy("manual").model_copy(update={"reviewers": {"bob": frozenset({Gate.CN_IMPORT})}})
    run = submitted(policy)
    run.refuse(Decide(gate=Gate.US_EXPORT, reviewer="alice", approve=True), r"allows: nobody")


@pytest.mark.parametrize("gate", GATES)
def test_units_above_those_still_requested_are_refused(gate):
    run = at_gate(gate, make_policy("manual"))
    run.refuse(
        Decide(gate=gate, reviewer=REVIEWER[gate], approve=True, units=50_001),
        r"units: 50001 exceeds the 50000 units still requested",
    )


def test_us_export_units_above_the_cap_are_refused():
    run = submitted(make_policy("manual"), make_request(units=100_000))
    run.refuse(
        Decide(gate=Gate.US_EXPORT, reviewer="alice", approve=True, units=75_001),
        r"units: 75001 exceeds us_export.max_units_per_request = 75000",
    )
    run.send(Decide(gate=Gate.US_EXPORT, reviewer="alice", approve=True, units=75_000))


@pytest.mark.parametrize("reason", [None, "", "   "])
@pytest.mark.parametrize("gate", GATES)
def test_deny_without_reason_is_refused(gate, reason):
    run = at_gate(gate, make_policy("manual"))
    run.refuse(Decide(gate=gate, reviewer=REVIEWER[gate], approve=False, reason=reason), r"needs a reason")


@pytest.mark.parametrize(
    "extra",
    [{"units": 10}, {"conditions": ["no re-export"]}, {"units": 10, "conditions": ["x"]}],
)
@pytest.mark.parametrize("gate", GATES)
def test_deny_with_units_or_conditions_is_refused(gate, extra):
    run = at_gate(gate, make_policy("manual"))
    run.refuse(
        Decide(gate=gate, reviewer=REVIEWER[gate], approve=False, reason="no", **extra),
        r"a denial takes a reason only, not units or conditions",
    )


@pytest.mark.parametrize("mode", MODES)
def test_domestic_quota_approval_with_shortfall_is_refused(mode):
    request = make_request(domestic_procurement=evidence("HW-1", units=30_000))
    run = at_gate(Gate.DOMESTIC_QUOTA, make_policy(mode), request)
    run.send(Evaluate(gate=Gate.DOMESTIC_QUOTA))
    run.refuse(
        Decide(gate=Gate.DOMESTIC_QUOTA, reviewer="wang", approve=True),
        r"domestic quota not met: 30000 domestic units < 50000 required .*short by 20000",
    )
    # Approving no more than the domestic purchases cover is allowed.
    events = run.send(Decide(gate=Gate.DOMESTIC_QUOTA, reviewer="wang", approve=True, units=30_000))
    assert types(events) == ["DomesticQuotaAssessed", "GateApproved", "LicenseIssued"]


@pytest.mark.parametrize("gate", GATES)
def test_duplicate_invoice_against_existing_evidence_is_refused(gate):
    run = at_gate(gate, make_policy("manual"))  # the request carries invoice HW-2026-0001
    run.refuse(
        AddEvidence(records=evidence("NEW-1", "hw-2026-0001")),
        r"invoice 'hw-2026-0001' was already submitted for this request",
    )


def test_duplicate_invoice_against_evidence_added_earlier_is_refused():
    run = submitted(make_policy("manual"))
    run.send(AddEvidence(records=evidence("SMIC-7")))
    run.refuse(AddEvidence(records=evidence("smic-7")), r"invoice 'smic-7' was already submitted")


def test_duplicate_invoice_within_the_batch_is_refused():
    run = submitted(make_policy("manual"))
    run.refuse(AddEvidence(records=evidence("X-1", "x-1")), r"invoice 'x-1' was already submitted")


def test_empty_evidence_is_refused():
    run = submitted(make_policy("manual"))
    run.refuse(AddEvidence(records=[]), r"records: at least one procurement record is needed")


@pytest.mark.parametrize("early", [timedelta(seconds=1), timedelta(days=30)])
@pytest.mark.parametrize("gate", GATES)
def test_expire_before_the_deadline_is_refused(gate, early):
    run = at_gate(gate, make_policy("manual"))
    assert run.state.deadline is not None
    run.refuse(Expire(gate=gate), r"deadline .* has not passed", at=run.state.deadline - early)


def _commands_on_a_final_request() -> list[Command]:
    commands: list[Command] = []
    for gate in GATES:
        commands += [
            Evaluate(gate=gate),
            Decide(gate=gate, reviewer=REVIEWER[gate], approve=True),
            Decide(gate=gate, reviewer=REVIEWER[gate], approve=False, reason="no"),
            Expire(gate=gate),
        ]
    return [*commands, AddEvidence(records=evidence("LATE-1")), Withdraw(reason="too late")]


@pytest.mark.parametrize("command", _commands_on_a_final_request(), ids=repr)
@pytest.mark.parametrize("status", FINAL)
def test_any_command_on_a_final_request_is_refused(status, command):
    run = final_run(status)
    run.refuse(command, rf"request is already final \(status {status}\)", at=NOW + timedelta(days=1000))


@pytest.mark.parametrize("status", FINAL)
def test_submit_on_a_final_request_is_refused(status):
    run = final_run(status)
    run.refuse(Submit(request=make_request()), r"was already submitted")


# -- rule denials -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_military_end_user_denied_at_us_export(mode):
    run = submitted(make_policy(mode), make_request(end_user=end_user("military")))
    events = run.send(Evaluate(gate=Gate.US_EXPORT))
    assert types(events) == ["GateDenied"]
    denied = events[0].data
    assert isinstance(denied, GateDenied)
    assert denied.rule == "us_export.excluded_end_user_kinds"
    assert "us_export.excluded_end_user_kinds" in denied.reason
    assert "military" in denied.reason
    assert events[0].actor == "policy"
    assert run.state.status is Status.DENIED
    assert run.state.gates[Gate.US_EXPORT].decided_by == "policy"


@pytest.mark.parametrize("mode", MODES)
def test_military_buyer_without_end_user_is_denied_at_us_export(mode):
    request = make_request(buyer={"name": "PLA Unit 61398", "country": "CN", "kind": "military"})
    run = submitted(make_policy(mode), request)
    events = run.send(Evaluate(gate=Gate.US_EXPORT))
    assert isinstance(events[0].data, GateDenied)
    assert events[0].data.rule == "us_export.excluded_end_user_kinds"


@pytest.mark.parametrize("mode", MODES)
def test_non_military_end_user_passes_us_export_rules(mode):
    request = make_request(end_user=end_user("university"))
    run = submitted(make_policy(mode), request)
    events = run.send(Evaluate(gate=Gate.US_EXPORT))
    assert "GateDenied" not in types(events)


@pytest.mark.parametrize("kind", ["state_owned", "government", "critical_infrastructure"])
@pytest.mark.parametrize("mode", MODES)
def test_excluded_buyer_kinds_denied_at_cn_import(mode, kind):
    request = make_request(buyer={"name": "Buyer Co.", "country": "CN", "kind": kind})
    run = submitted(make_policy(mode), request)
    first = run.send(Evaluate(gate=Gate.US_EXPORT))
    assert "GateDenied" not in types(first)
    if run.state.gate is Gate.US_EXPORT:
        run.send(Decide(gate=Gate.US_EXPORT, reviewer="alice", approve=True))
    events = run.send(Evaluate(gate=Gate.CN_IMPORT))
    assert types(events) == ["GateDenied"]
    denied = events[0].data
    assert isinstance(denied, GateDenied)
    assert denied.rule == "cn_import.excluded_buyer_kinds"
    assert "cn_import.excluded_buyer_kinds" in denied.reason
    assert kind in denied.reason
    assert run.state.status is Status.DENIED


@pytest.mark.parametrize("mode", MODES)
def test_state_funded_data_centre_denied_at_domestic_quota(mode):
    request = make_request(data_center={"name": "Gov Cloud 1", "province": "Beijing", "state_funded": True})
    run = at_gate(Gate.DOMESTIC_QUOTA, make_policy(mode), request)
    events = run.send(Evaluate(gate=Gate.DOMESTIC_QUOTA))
    assert types(events) == ["GateDenied"]
    denied = events[0].data
    assert isinstance(denied, GateDenied)
    assert denied.rule == "domestic_quota.deny_state_funded"
    assert "domestic_quota.deny_state_funded" in denied.reason
    assert run.state.status is Status.DENIED


@pytest.mark.parametrize("mode", MODES)
def test_state_funded_data_centre_allowed_when_policy_says_so(mode):
    request = make_request(data_center={"name": "Gov Cloud 1", "province": "Beijing", "state_funded": True})
    policy = make_policy(mode, domestic_quota={"deny_state_funded": False})
    run = at_gate(Gate.DOMESTIC_QUOTA, policy, request)
    events = run.send(Evaluate(gate=Gate.DOMESTIC_QUOTA))
    assert "GateDenied" not in types(events)


# -- envelope: policy version, actor, versions, stream id -------------------------------------------


def _full_manual_history() -> Run:
    run = submitted(make_policy("manual"))
    run.send(Evaluate(gate=Gate.US_EXPORT))
    run.send(AddEvidence(records=evidence("SMIC-1"), actor="buyer-portal"))
    run.send(Decide(gate=Gate.US_EXPORT, reviewer="alice", approve=True, units=40_000))
    run.send(Evaluate(gate=Gate.CN_IMPORT))
    run.send(Decide(gate=Gate.CN_IMPORT, reviewer="wang", approve=True, conditions=["report"]))
    run.send(Evaluate(gate=Gate.DOMESTIC_QUOTA))
    run.send(Decide(gate=Gate.DOMESTIC_QUOTA, reviewer="wang", approve=True))
    return run


def _auto_history() -> Run:
    run = submitted(make_policy("auto"), make_request(domestic_procurement=[], units=80_000))
    for gate in GATES:
        run.send(Evaluate(gate=gate))
    run.send(AddEvidence(records=evidence("HW-1", units=75_000)))
    return run


def _expired_history() -> Run:
    run = at_gate(Gate.CN_IMPORT, make_policy("manual"))
    run.send(Expire(gate=Gate.CN_IMPORT), at=NOW + timedelta(days=91))
    return run


def _denied_history() -> Run:
    run = submitted(make_policy("auto"), make_request(end_user=end_user("military")))
    run.send(Evaluate(gate=Gate.US_EXPORT))
    return run


HISTORIES: dict[str, Callable[[], Run]] = {
    "manual": _full_manual_history,
    "auto": _auto_history,
    "expired": _expired_history,
    "denied": _denied_history,
}


@pytest.mark.parametrize("build", HISTORIES.values(), ids=HISTORIES.keys())
def test_every_event_carries_policy_version_stream_id_and_contiguous_versions(build):
    run = build()
    assert run.state.is_final
    request_id = run.state.request_id
    assert [e.version for e in run.history] == list(range(1, len(run.history) + 1))
    assert {e.stream_id for e in run.history} == {request_id}
    assert {e.policy_version for e in run.history} == {run.policy.version}
    assert len({e.event_id for e in run.history}) == len(run.history)
    assert run.state.policy_version == run.policy.version
    assert run.state.version == len(run.history)


def test_actors_of_a_manual_history():
    run = _full_manual_history()
    actors = [(e.type, e.actor) for e in run.history]
    assert actors == [
        ("RequestSubmitted", "applicant"),
        ("GateOpened", "applicant"),
        ("EvidenceAdded", "buyer-portal"),
        ("GateApproved", "alice"),
        ("GateOpened", "alice"),
        ("GateApproved", "wang"),
        ("GateOpened", "wang"),
        ("DomesticQuotaAssessed", "policy"),
        ("GateApproved", "wang"),
        ("LicenseIssued", "wang"),
    ]


def test_actors_of_policy_and_deadline_decisions():
    auto = submitted(make_policy("auto"))
    for gate in GATES:
        events = auto.send(Evaluate(gate=gate))
        assert {e.actor for e in events} == {"policy"}
    expired = _expired_history()
    assert expired.history[-1].actor == "deadline"


def test_decide_numbers_events_after_the_state_version():
    run = at_gate(Gate.CN_IMPORT, make_policy("manual"))
    version = run.state.version
    events = decide(
        run.state,
        Decide(gate=Gate.CN_IMPORT, reviewer="wang", approve=True),
        run.policy,
        NOW,
        new_id=Ids(),
    )
    assert [e.version for e in events] == [version + 1, version + 2]
    assert [e.event_id for e in events] == ["evt-000001", "evt-000002"]


# -- fold -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", HISTORIES.values(), ids=HISTORIES.keys())
def test_fold_equals_step_by_step_evolution(build):
    run = build()
    assert fold(run.history) == run.state
    middle = len(run.history) // 2
    assert fold(run.history[middle:], fold(run.history[:middle])) == run.state


# -- property test ----------------------------------------------------------------------------------

records_strategy = st.lists(
    st.builds(
        ProcurementRecord,
        vendor=st.sampled_from(["Huawei", "Cambricon", "Hygon"]),
        product=st.just("Ascend 910C"),
        units=st.integers(min_value=1, max_value=80_000),
        invoice=st.sampled_from(["INV-1", "inv-1", "INV-2", "INV-3", "HW-2026-0001", "INV-4", "inv-4"]),
    ),
    min_size=0,
    max_size=3,
)

# None stands for "the gate the request is at when the step runs", so most steps hit the right gate.
gate_choice = st.none() | st.sampled_from(GATES)


@dataclass(frozen=True)
class Step:
    """One generated command, resolved against the state when it runs."""

    kind: str
    gate: Gate | None = None
    reviewer: str | None = None  # None: the reviewer the policy allows for the gate
    approve: bool = True
    units: int | None = None
    reason: str | None = None
    conditions: tuple[str, ...] = ()
    records: tuple[ProcurementRecord, ...] = ()
    advance: timedelta = timedelta(0)

    def command(self, state: RequestState) -> Command:
        gate = self.gate or state.gate or Gate.US_EXPORT
        match self.kind:
            case "evaluate":
                return Evaluate(gate=gate)
            case "decide":
                return Decide(
                    gate=gate,
                    reviewer=self.reviewer or REVIEWER[gate],
                    approve=self.approve,
                    units=self.units,
                    reason=self.reason,
                    conditions=list(self.conditions),
                )
            case "evidence":
                return AddEvidence(records=list(self.records))
            case "withdraw":
                return Withdraw(reason="changed our mind")
            case "expire":
                return Expire(gate=gate)
        raise AssertionError(self.kind)


steps_strategy = st.one_of(
    st.builds(Step, kind=st.just("evaluate"), gate=gate_choice),
    st.builds(
        Step,
        kind=st.just("decide"),
        gate=gate_choice,
        reviewer=st.none() | st.sampled_from(["alice", "wang", "mallory"]),
        approve=st.sampled_from([True, True, True, False]),
        units=st.none() | st.integers(min_value=1, max_value=100_000) | st.integers(1, MAX_UNITS),
        reason=st.none() | st.sampled_from(["", "ok", "end use unclear"]),
        conditions=st.lists(st.sampled_from(["no re-export", "quarterly report"]), max_size=2).map(tuple),
    ),
    st.builds(Step, kind=st.just("evidence"), records=records_strategy.map(tuple)),
    st.builds(
        Step,
        kind=st.just("expire"),
        gate=gate_choice,
        advance=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=120)),
    ),
    # Withdrawal ends everything, so it is drawn rarely to leave room for longer histories.
    st.builds(Step, kind=st.sampled_from(["withdraw", *["evaluate"] * 9])),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    units=st.integers(min_value=1, max_value=MAX_UNITS) | st.integers(min_value=1, max_value=100_000),
    mode=st.sampled_from(MODES),
    buyer_kind=st.sampled_from([PartyKind.PRIVATE, PartyKind.UNIVERSITY, *PartyKind]),
    state_funded=st.sampled_from([False, False, True]),
    steps=st.lists(steps_strategy, max_size=20),
)
def test_invariants_hold_for_random_command_sequences(units, mode, buyer_kind, state_funded, steps):
    policy = make_policy(mode)
    request = make_request(
        units=units,
        buyer={"name": "Buyer Co.", "country": "CN", "kind": buyer_kind.value},
        data_center={"name": "DC", "province": "Anhui", "state_funded": state_funded},
    )
    new_id = Ids()
    now = NOW
    state = RequestState()
    history: list[Event] = []
    for event in decide(state, Submit(request=request), policy, now, new_id=new_id):
        state = evolve(state, event)
        history.append(event)

    for step in steps:
        now += step.advance
        command = step.command(state)
        before = state
        try:
            events = decide(state, command, policy, now, new_id=new_id)
        except DomainError:
            continue
        assert not before.is_final, f"{command!r} was accepted on a final request ({before.status})"
        previous_units = state.units_approved
        for event in events:
            assert event.stream_id == request.request_id
            assert event.policy_version == policy.version
            state = evolve(state, event)
            history.append(event)
            assert isinstance(state.status, Status)
            assert state.units_requested == units
            if state.units_approved is not None:
                assert state.units_approved <= state.units_requested
                assert state.units_approved <= policy.us_export.max_units_per_request
                if previous_units is not None:
                    assert state.units_approved <= previous_units, "units_approved increased"
                previous_units = state.units_approved

    hypothesis_event(f"ends {state.status}")
    assert [e.version for e in history] == list(range(1, len(history) + 1))
    assert state.version == len(history)
    assert fold(history) == state
    if state.status is Status.LICENSED:
        assert state.licence_id == f"LIC-{request.request_id}"
        assert state.units_approved is not None
    if state.is_final:
        final = state
        for step in steps:
            with pytest.raises(DomainError):
                decide(state, step.command(state), policy, now + timedelta(days=1000), new_id=new_id)
        with pytest.raises(DomainError):
            decide(state, Submit(request=request), policy, now, new_id=new_id)
        assert state == final


# -- bugs found in the domain code (these fail until the decider is fixed) ---------------------------


@pytest.mark.parametrize(
    ("ratio", "imported", "required"), [(1.1, 50_000, 55_000), (1.1, 100, 110), (0.07, 100, 7)]
)
def test_required_units_are_not_inflated_by_float_rounding(ratio, imported, required):
    policy = make_policy("manual", domestic_quota={"required_ratio": ratio})
    request = make_request(units=imported, domestic_procurement=evidence("HW-1", units=required))
    run = at_gate(Gate.DOMESTIC_QUOTA, policy, request)
    events = run.send(Evaluate(gate=Gate.DOMESTIC_QUOTA))
    assessment = events[0].data
    assert isinstance(assessment, DomesticQuotaAssessed)
    assert (assessment.required_units, assessment.shortfall) == (required, 0)


def test_reviewer_decision_in_an_auto_gate_is_not_labelled_as_a_policy_rule():
    # Auto mode, but the evidence falls short, so a reviewer approves fewer units by hand.
    request = make_request(domestic_procurement=evidence("HW-1", units=30_000))
    run = at_gate(Gate.DOMESTIC_QUOTA, make_policy("auto"), request)
    run.send(Evaluate(gate=Gate.DOMESTIC_QUOTA))
    events = run.send(Decide(gate=Gate.DOMESTIC_QUOTA, reviewer="wang", approve=True, units=30_000))
    approved = next(e for e in events if isinstance(e.data, GateApproved))
    assert approved.actor == "wang"
    assert isinstance(approved.data, GateApproved)
    assert approved.data.rule is None  # a reviewer decided, not the policy


def test_policy_approval_after_evidence_is_not_attributed_to_the_applicant():
    policy = make_policy("auto")
    assert policy.mode(Gate.DOMESTIC_QUOTA) is GateMode.AUTO
    run = at_gate(Gate.DOMESTIC_QUOTA, policy, make_request(domestic_procurement=[]))
    run.send(Evaluate(gate=Gate.DOMESTIC_QUOTA))
    events = run.send(AddEvidence(records=evidence("HW-1", units=50_000)))
    assert types(events) == ["EvidenceAdded", "DomesticQuotaAssessed", "GateApproved", "LicenseIssued"]
    approved = events[2].data
    assert isinstance(approved, GateApproved)
    record = run.state.gates[Gate.DOMESTIC_QUOTA]
    assert record.decided_by == "policy"
    assert {e.actor for e in events[2:]} == {"policy"}


@pytest.mark.parametrize(
    ("overrides", "gate", "rule"),
    [
        (
            {"buyer": {"name": "China Mobile", "country": "CN", "kind": "state_owned"}},
            Gate.CN_IMPORT,
            "cn_import.excluded_buyer_kinds",
        ),
        (
            {"data_center": {"name": "Hub", "province": "Ningxia", "state_funded": True}},
            Gate.DOMESTIC_QUOTA,
            "domestic_quota.deny_state_funded",
        ),
    ],
)
def test_no_reviewer_can_approve_what_a_rule_denies(overrides, gate, rule):
    """The decider does not rely on the workflow having run Evaluate first."""
    policy = make_policy("manual")
    state = RequestState()
    ids = iter(range(1_000))
    reviewers = {Gate.US_EXPORT: "alice", Gate.CN_IMPORT: "wang", Gate.DOMESTIC_QUOTA: "wang"}

    def send(command: Submit | Decide) -> None:
        nonlocal state
        for event in decide(state, command, policy, NOW, new_id=lambda: str(next(ids))):
            state = evolve(state, event)

    send(Submit(request=make_request(**overrides)))
    for earlier in list(Gate)[: list(Gate).index(gate)]:
        send(Decide(gate=earlier, reviewer=reviewers[earlier], approve=True))
    with pytest.raises(DomainError, match=rule):
        send(Decide(gate=gate, reviewer=reviewers[gate], approve=True))
