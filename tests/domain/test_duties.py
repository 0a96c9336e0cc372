"""Separation of duties (`[duties]`) in the pure decider: one person decides at most one gate of a request,
the submitter decides none, and a large us-export approval takes a second reviewer (four eyes). Every
refusal names its rule and changes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from chipclear.domain.buyer_cap import BuyerClaim
from chipclear.domain.commands import Decide, Evaluate, RequestInfo, Respond, Submit
from chipclear.domain.decider import needs
from chipclear.domain.events import ApprovalProposed, GateApproved, GateDenied
from chipclear.domain.facts import NONE, FactsWanted
from chipclear.domain.models import ImportRequest, Status
from chipclear.domain.policy import DEFAULT_ROUTE, Policy
from chipclear.domain.state import Proposal
from tests import decisions, keys
from tests.decisions import BUYER, World, only, types
from tests.domain.test_us_export_decider import hit
from tests.factories import make_policy, make_request

NOW = datetime(2026, 5, 4, tzinfo=UTC)
US_EXPORT, CN_IMPORT, DOMESTIC_QUOTA = DEFAULT_ROUTE
LIMIT = 30_000  # four_eyes_above in these tests; make_request asks for 50,000 units
BUYER_CAP = 200_000

DISTINCT_REVIEWERS = r"one person decides at most one gate \(\[duties\] distinct_reviewers = true\)"
SUBMITTER = r"\(\[duties\] submitter_may_decide = false\)"
FOUR_EYES = r"it takes effect when a second reviewer approves \(\[duties\] four_eyes_above\)"


@dataclass
class Run(decisions.Run):
    now: datetime = NOW


def person(*gates: str) -> dict[str, Any]:
    return {"gates": list(gates)}


def duties_policy(
    duties: dict[str, Any],
    *,
    people: dict[str, list[str]] | None = None,
    us_export: dict[str, Any] | None = None,
) -> Policy:
    """make_policy (alice: us-export, wang: cn-import and domestic-quota) with `duties` and more people:
    li (domestic-quota) and bob (us-export) by default."""
    reviewers = {
        name: {"gates": gates, "key": keys.public(name)}
        for name, gates in (people or {"li": [DOMESTIC_QUOTA], "bob": [US_EXPORT]}).items()
    }
    return make_policy("manual", duties=duties, reviewers=reviewers, us_export=us_export or {})


def submitted(policy: Policy, request: ImportRequest | None = None, *, by: str = "applicant") -> Run:
    run = Run(policy)
    run.send(Submit(actor=by, request=request or make_request()))
    assert run.state.gate == US_EXPORT
    return run


def approve(gate: str, reviewer: str, **fields: Any) -> Decide:
    return Decide(gate=gate, reviewer=reviewer, approve=True, **fields)


def deny(gate: str, reviewer: str) -> Decide:
    return Decide(gate=gate, reviewer=reviewer, approve=False, reason="no")


# -- distinct reviewers ------------------------------------------------------------------------------


def test_one_person_decides_at_most_one_gate_of_a_request():
    run = submitted(duties_policy({"distinct_reviewers": True}))
    run.send(approve(US_EXPORT, "alice"))
    run.send(approve(CN_IMPORT, "wang"))
    assert run.state.gate == DOMESTIC_QUOTA
    assert run.policy.may_decide("wang", DOMESTIC_QUOTA)  # the gates alone would allow it
    error = run.refuse(
        approve(DOMESTIC_QUOTA, "wang"), rf"'wang' already decided gate {CN_IMPORT} of this request"
    )
    assert "distinct_reviewers = true" in str(error)
    run.refuse(deny(DOMESTIC_QUOTA, "wang"), DISTINCT_REVIEWERS)  # nor may they deny it
    run.send(approve(DOMESTIC_QUOTA, "li"))
    assert run.state.status == Status.LICENSED


def test_without_distinct_reviewers_one_person_may_decide_two_gates():
    run = submitted(duties_policy({"distinct_reviewers": False}))
    run.send(approve(US_EXPORT, "alice"))
    run.send(approve(CN_IMPORT, "wang"))
    run.send(approve(DOMESTIC_QUOTA, "wang"))
    assert run.state.status == Status.LICENSED


def test_distinct_reviewers_is_the_default():
    policy = make_policy("manual")
    doc = policy.model_dump() | {"duties": {}}
    assert Policy.model_validate(doc).duties.distinct_reviewers is True
    assert Policy.model_validate(doc).duties.submitter_may_decide is False


# -- the submitter ------------------------------------------------------------------------------------


def test_the_submitter_may_not_decide_their_own_request():
    run = submitted(duties_policy({"distinct_reviewers": True}), by="alice")
    assert run.state.submitted_by == "alice"
    error = run.refuse(
        approve(US_EXPORT, "alice"), rf"'alice' submitted this request and may not decide it {SUBMITTER}"
    )
    assert run.policy.may_decide("alice", US_EXPORT)  # the gates alone would allow it
    run.refuse(deny(US_EXPORT, "alice"), SUBMITTER)
    assert "submitter_may_decide" in str(error)
    run.send(approve(US_EXPORT, "bob"))  # another reviewer of the gate decides it
    assert run.state.gate == CN_IMPORT


def test_the_submitter_may_not_decide_even_without_distinct_reviewers():
    run = submitted(duties_policy({"distinct_reviewers": False}), by="wang")
    run.send(approve(US_EXPORT, "alice"))
    run.refuse(approve(CN_IMPORT, "wang"), r"'wang' submitted this request")


def test_submitter_may_decide_when_the_policy_says_so():
    run = submitted(duties_policy({"submitter_may_decide": True}), by="alice")
    events = run.send(approve(US_EXPORT, "alice"))
    assert types(events) == ["GateApproved", "GateOpened"]
    assert run.state.gates[US_EXPORT].decided_by == "alice"


def test_an_unregistered_submitter_is_no_reviewer_to_exclude():
    run = Run(duties_policy({}))
    run.send(Submit(actor="walk-in", request=make_request()), sign=False)
    run.send(approve(US_EXPORT, "alice"))
    assert run.state.gate == CN_IMPORT


# -- four eyes -----------------------------------------------------------------------------------------


def four_eyes(**us_export: Any) -> Policy:
    return duties_policy({"four_eyes_above": LIMIT}, us_export=us_export)


def test_a_large_approval_is_only_proposed():
    run = submitted(four_eyes())
    assert needs(run.state, approve(US_EXPORT, "alice"), run.policy, NOW) == FactsWanted()
    events = run.send(approve(US_EXPORT, "alice", conditions=["Quarterly audits"], reason="looks fine"))
    assert types(events) == ["ApprovalProposed"]
    proposed = only(events, ApprovalProposed)
    assert (proposed.gate, proposed.units, proposed.conditions, proposed.note) == (
        US_EXPORT,
        50_000,
        ["Quarterly audits"],
        "looks fine",
    )
    assert events[0].actor == "alice" and events[0].act is not None
    # Nothing is decided yet: the request is still in review at us-export.
    assert run.state.gate == US_EXPORT
    assert run.state.status == "us_export_review"
    record = run.state.gates[US_EXPORT]
    assert record.outcome is None and record.decided_by is None
    assert record.proposal == Proposal(by="alice", units=50_000, conditions=["Quarterly audits"])
    assert run.state.units_approved is None


def test_the_proposer_may_not_approve_again():
    run = submitted(four_eyes())
    run.send(approve(US_EXPORT, "alice"))
    run.refuse(approve(US_EXPORT, "alice"), rf"'alice' proposed this approval; {FOUR_EYES}")
    run.refuse(approve(US_EXPORT, "alice", units=LIMIT), r"'alice' proposed this approval")


def test_a_second_reviewer_approves_no_more_than_proposed_with_both_sets_of_conditions():
    run = submitted(four_eyes())
    run.send(approve(US_EXPORT, "alice", units=45_000, conditions=["Quarterly audits", "Site visits"]))
    events = run.send(approve(US_EXPORT, "bob", units=40_000, conditions=["Site visits", "No resale"]))
    assert types(events) == ["GateApproved", "GateOpened"]
    approved = only(events, GateApproved)
    assert approved.units_approved == 40_000
    assert approved.conditions == ["Quarterly audits", "Site visits", "No resale"]
    assert approved.rule is None
    assert {event.actor for event in events} == {"bob"}
    assert run.state.gates[US_EXPORT].decided_by == "bob"
    assert run.state.units_approved == 40_000
    assert run.state.conditions == ["Quarterly audits", "Site visits", "No resale"]
    assert run.state.gate == CN_IMPORT


def test_a_second_approval_without_units_approves_what_was_proposed():
    run = submitted(four_eyes())
    run.send(approve(US_EXPORT, "alice", units=35_000))
    approved = only(run.send(approve(US_EXPORT, "bob")), GateApproved)
    assert approved.units_approved == 35_000


def test_a_second_approval_above_the_proposal_is_refused():
    run = submitted(four_eyes())
    run.send(approve(US_EXPORT, "alice", units=35_000))
    run.refuse(
        approve(US_EXPORT, "bob", units=35_001), r"units: 35001 exceeds the 35000 units 'alice' proposed"
    )


def test_four_eyes_claims_the_buyers_cap_once_for_the_units_approved():
    run = submitted(four_eyes(max_units_per_buyer=BUYER_CAP))
    run.send(approve(US_EXPORT, "alice", units=45_000))
    assert run.world.asked == []  # a proposal changes nothing outside
    assert run.world.held_by() == {}
    wanted = needs(run.state, approve(US_EXPORT, "bob", units=40_000), run.policy, NOW).buyer_claim
    assert wanted is not None and (wanted.units, wanted.partial) == (40_000, False)
    events = run.send(approve(US_EXPORT, "bob", units=40_000))
    claim = BuyerClaim(buyer=BUYER, request_id=run.request_id, units=40_000, cap=BUYER_CAP, approved_before=0)
    assert only(events, GateApproved).buyer_claim == claim
    assert run.world.held_by() == {run.request_id: 40_000}


def test_four_eyes_claims_the_proposed_units_when_the_second_names_none():
    run = submitted(four_eyes(max_units_per_buyer=BUYER_CAP))
    run.send(approve(US_EXPORT, "alice", units=45_000))
    run.send(approve(US_EXPORT, "bob"))
    assert run.world.held_by() == {run.request_id: 45_000}


@pytest.mark.parametrize(("units", "requested"), [(LIMIT, 50_000), (None, LIMIT), (1, 50_000)])
def test_an_approval_at_or_below_the_limit_takes_effect_at_once(units: int | None, requested: int):
    run = submitted(four_eyes(), make_request(units=requested))
    events = run.send(approve(US_EXPORT, "alice", units=units))
    assert types(events) == ["GateApproved", "GateOpened"]
    assert run.state.gates[US_EXPORT].proposal is None
    assert run.state.gate == CN_IMPORT


def test_a_denial_needs_no_second_reviewer():
    run = submitted(four_eyes())
    events = run.send(deny(US_EXPORT, "alice"))
    assert types(events) == ["GateDenied"]
    assert run.state.status == Status.DENIED


def test_the_second_reviewer_may_deny_what_was_proposed():
    run = submitted(four_eyes())
    run.send(approve(US_EXPORT, "alice"))
    events = run.send(Decide(gate=US_EXPORT, reviewer="bob", approve=False, reason="end use unclear"))
    assert types(events) == ["GateDenied"]
    assert only(events, GateDenied).reason == "end use unclear"
    assert run.state.status == Status.DENIED
    assert run.state.gates[US_EXPORT].decided_by == "bob"
    assert run.state.units_approved is None


def test_only_a_reviewer_of_the_gate_is_the_second_pair_of_eyes():
    run = submitted(four_eyes())
    run.send(approve(US_EXPORT, "alice"))
    run.refuse(approve(US_EXPORT, "wang"), r"reviewer 'wang' may not decide gate us-export")
    run.refuse(approve(US_EXPORT, "mallory"), r"'mallory' is not a person with a key")


def test_four_eyes_is_for_us_export_only():
    run = submitted(four_eyes())
    run.send(approve(US_EXPORT, "alice", units=LIMIT))
    events = run.send(approve(CN_IMPORT, "wang"))
    assert types(events)[0] == "GateApproved"
    assert only(events, GateApproved).units_approved == LIMIT


def test_without_four_eyes_a_large_approval_takes_effect_at_once():
    run = submitted(duties_policy({}))
    assert run.policy.duties.four_eyes_above is None
    assert types(run.send(approve(US_EXPORT, "alice"))) == ["GateApproved", "GateOpened"]


def test_the_proposer_and_the_second_reviewer_both_decided_us_export():
    """With distinct reviewers, a proposal counts as deciding the gate: its author decides no other."""
    policy = duties_policy(
        {"four_eyes_above": LIMIT, "distinct_reviewers": True},
        people={"alice": [US_EXPORT, CN_IMPORT], "bob": [US_EXPORT, CN_IMPORT], "li": [DOMESTIC_QUOTA]},
    )
    run = submitted(policy)
    run.send(approve(US_EXPORT, "alice"))
    run.send(approve(US_EXPORT, "bob"))
    assert run.state.gate == CN_IMPORT
    run.refuse(
        approve(CN_IMPORT, "alice"), rf"'alice' already decided gate {US_EXPORT}.*{DISTINCT_REVIEWERS}"
    )
    run.refuse(approve(CN_IMPORT, "bob"), rf"'bob' already decided gate {US_EXPORT}")
    run.send(approve(CN_IMPORT, "wang"))
    run.send(approve(DOMESTIC_QUOTA, "li"))
    assert run.state.status == Status.LICENSED


def test_the_submitter_may_not_propose_either():
    run = submitted(four_eyes(), by="alice")
    run.refuse(approve(US_EXPORT, "alice"), SUBMITTER)


def test_a_proposal_waits_for_the_applicants_answer_like_any_approval():
    run = submitted(four_eyes())
    run.send(RequestInfo(gate=US_EXPORT, reviewer="bob", question="Who operates it?"))
    run.refuse(approve(US_EXPORT, "alice"), r"waiting for the applicant's answer")
    run.send(Respond(text="We do."))
    assert types(run.send(approve(US_EXPORT, "alice"))) == ["ApprovalProposed"]


def test_a_proposal_waits_for_screening_and_needs_a_reason_when_held():
    policy = four_eyes(screening=True)
    unscreened = submitted(policy)
    unscreened.refuse(approve(US_EXPORT, "alice"), r"screening has not run", facts=NONE)
    held = Run(policy, world=World(matches=[hit()]))
    held.send(Submit(request=make_request()))
    held.send(Evaluate(gate=US_EXPORT))
    held.refuse(approve(US_EXPORT, "alice"), r"held by restricted-party screening")
