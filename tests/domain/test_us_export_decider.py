"""The us-export gate in depth, decided with no server: restricted-party screening (a fact of Evaluate)
and holds, default licence conditions, the per-buyer cap (what `needs` asks of its owner, the decider,
and the owner's pure logic), information requests that stop the review clock, review-SLA escalation
with `next_due`, and giving an unused export approval back (`Compensate`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

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
from chipclear.domain.commands import (
    AddEvidence,
    Compensate,
    Decide,
    Escalate,
    Evaluate,
    Expire,
    RequestInfo,
    Respond,
    Submit,
    Withdraw,
)
from chipclear.domain.decider import Due, compensations, needs, next_due
from chipclear.domain.errors import DomainError
from chipclear.domain.events import (
    Event,
    ExportApprovalReleased,
    GateApproved,
    GateDenied,
    InformationProvided,
    InformationRequested,
    LicenseIssued,
    PartiesScreened,
    RequestExpired,
    ReviewEscalated,
)
from chipclear.domain.facts import NONE, Facts, FactsWanted, Screening, ScreenParties
from chipclear.domain.gates import us_export
from chipclear.domain.gates.us_export import UsExportSlice, on_hold
from chipclear.domain.models import Attachment, ImportRequest, ProcurementRecord, Status
from chipclear.domain.policy import DEFAULT_ROUTE, Policy
from chipclear.domain.screening import ScreenedParty, ScreeningMatch, parties_of
from chipclear.domain.state import RequestState
from tests import decisions
from tests.decisions import LIST_VERSION, World, only, types
from tests.factories import make_policy, make_request

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
DAY = timedelta(days=1)
MODES = ["manual", "auto"]
BUYER = "ByteDance Ltd."
BUYER_CAP = 100_000
DEFAULTS = ("KYC of the consignee on file", "No remote access by unauthorised parties")
US_EXPORT, CN_IMPORT, DOMESTIC_QUOTA = DEFAULT_ROUTE


# -- helpers ----------------------------------------------------------------------------------------


@dataclass
class Run(decisions.Run):
    now: datetime = NOW


def policy(mode: str = "manual", **us_export: Any) -> Policy:
    return make_policy(mode, us_export=us_export)


def part(run: Run) -> UsExportSlice:
    """The us-export gate's slice of the request's state."""
    return us_export.GATE.slice(run.state)


def submitted(pol: Policy, request: ImportRequest | None = None, world: World | None = None) -> Run:
    run = Run(pol, world=world or World())
    run.send(Submit(request=request or make_request()))
    assert run.state.gate == US_EXPORT
    return run


def hit(
    entry: str = "Sunway Microelectronics",
    *,
    party: str = BUYER,
    score: float = 95.0,
    role: str = "buyer",
    source: str = "Entity List (EL) - Bureau of Industry and Security",
) -> ScreeningMatch:
    return ScreeningMatch.model_validate(
        {
            "role": role,
            "party_name": party,
            "entry_name": entry,
            "matched_name": entry,
            "entity_number": None,
            "source": source,
            "programs": ["EAR"],
            "score": score,
        }
    )


def screened(pol: Policy, *matches: ScreeningMatch, request: ImportRequest | None = None) -> Run:
    """Submitted, then Evaluate at us-export: the screening finds `matches`."""
    run = submitted(pol, request, World(matches=list(matches)))
    events = run.send(Evaluate(gate=US_EXPORT))
    assert types(events)[0] == "PartiesScreened"
    return run


def claim(run: Run, units: int, *, approved_before: int = 0, cap: int = BUYER_CAP) -> BuyerClaim:
    return BuyerClaim(
        buyer=BUYER, request_id=run.request_id, units=units, cap=cap, approved_before=approved_before
    )


def approve_us_export(run: Run, *, units: int | None = None, **extra: Any) -> list[Event]:
    """A manual us-export approval; the world grants the claim when the policy caps the buyer."""
    return run.send(Decide(gate=US_EXPORT, reviewer="alice", approve=True, units=units, **extra))


def evidence(invoice: str, units: int) -> list[ProcurementRecord]:
    return [ProcurementRecord(vendor="Huawei", product="Ascend 910C", units=units, invoice=invoice)]


def attachment(content: bytes, name: str = "end-use-statement.pdf") -> Attachment:
    return Attachment(name=name, size=len(content), sha256=hashlib.sha256(content).hexdigest())


# -- 1. restricted-party screening ------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_evaluate_and_approval_wait_for_screening(mode: str) -> None:
    request = make_request()
    run = submitted(policy(mode, screening=True), request)
    wanted = needs(run.state, Evaluate(gate=US_EXPORT), run.policy, NOW)
    assert wanted == FactsWanted(screening=ScreenParties(parties=parties_of(request), threshold=90.0))
    run.refuse(Evaluate(gate=US_EXPORT), "restricted-party screening has not run", facts=NONE)
    run.refuse(Decide(gate=US_EXPORT, reviewer="alice", approve=True), "screening has not run")
    events = run.send(Evaluate(gate=US_EXPORT))
    if mode == "manual":
        assert types(events) == ["PartiesScreened"]
        assert run.send(Decide(gate=US_EXPORT, reviewer="alice", approve=True))[0].type == "GateApproved"
    else:
        assert types(events) == ["PartiesScreened", "GateApproved", "GateOpened"]
    assert run.state.gate == CN_IMPORT


def test_without_screening_in_the_policy_nothing_waits_for_it() -> None:
    run = submitted(policy("manual", screening=False))
    assert needs(run.state, Evaluate(gate=US_EXPORT), run.policy, NOW) == FactsWanted()
    assert run.send(Evaluate(gate=US_EXPORT)) == []
    assert part(run).screening is None
    assert run.world.asked == []


@pytest.mark.parametrize("mode", MODES)
def test_screening_without_matches_records_the_parties(mode: str) -> None:
    request = make_request()
    run = submitted(policy(mode, screening=True), request)
    events = run.send(Evaluate(gate=US_EXPORT))
    assert events[0].data == PartiesScreened(
        list_version=LIST_VERSION, threshold=90.0, parties=parties_of(request), matches=[]
    )
    assert events[0].actor == "policy"
    assert part(run).screening == events[0].data
    assert not part(run).held
    if mode == "manual":
        assert types(events) == ["PartiesScreened"]  # an officer decides
        assert run.state.status == "us_export_review"
        assert not on_hold(run.state)
        assert run.state.flags == []
    else:
        assert types(events) == ["PartiesScreened", "GateApproved", "GateOpened"]


def test_screening_lists_every_party() -> None:
    request = make_request(
        end_user={"name": "Volcano Cloud", "country": "CN", "kind": "private"},
        consignees=[{"name": "HK Logistics Ltd.", "country": "HK", "kind": "private"}],
    )
    run = screened(policy("manual", screening=True), request=request)
    screening = part(run).screening
    assert screening is not None
    assert screening.parties == [
        ScreenedParty(role="buyer", name=BUYER),
        ScreenedParty(role="end_user", name="Volcano Cloud"),
        ScreenedParty(role="consignee", name="HK Logistics Ltd."),
    ]


def test_a_match_holds_the_request_for_an_officer_in_manual_mode() -> None:
    run = submitted(policy("manual", screening=True), world=World(matches=[hit()]))
    events = run.send(Evaluate(gate=US_EXPORT))
    assert types(events) == ["PartiesScreened"]  # the rules leave it to the officer
    assert run.state.status == "us_export_review"
    assert on_hold(run.state)
    assert part(run).held
    assert "held" in run.state.flags


def test_a_match_denies_the_request_in_auto_mode_naming_party_entry_and_score() -> None:
    weaker = hit("Sugon Information Industry", score=91.0)
    best = hit("Beijing Sunway Microelectronics", party="Sunway Micro", role="end_user", score=96.5)
    run = submitted(policy("auto", screening=True), world=World(matches=[weaker, best]))
    events = run.send(Evaluate(gate=US_EXPORT))
    assert types(events) == ["PartiesScreened", "GateDenied"]
    denied = events[1].data
    assert isinstance(denied, GateDenied)
    assert denied.gate == US_EXPORT
    assert denied.rule == "us_export.screening"
    assert "'Sunway Micro'" in denied.reason
    assert "'Beijing Sunway Microelectronics'" in denied.reason
    assert "96.5" in denied.reason
    assert "us_export.screening_threshold 90" in denied.reason
    assert LIST_VERSION in denied.reason
    assert "Sugon" not in denied.reason  # the best match is named, not the first
    assert {e.actor for e in events} == {"policy"}
    assert run.state.status == Status.DENIED
    assert run.state.outcome_reason == denied.reason
    assert not on_hold(run.state)  # a final request is no longer held
    assert run.state.flags == []


@pytest.mark.parametrize("matches", [[], [hit()]], ids=["clear", "match"])
def test_only_evaluate_screens_an_officers_decision_does_not(matches: list[ScreeningMatch]) -> None:
    run = screened(policy("manual", screening=True), *matches)
    approval = Decide(gate=US_EXPORT, reviewer="alice", approve=True, reason="checked")
    assert needs(run.state, approval, run.policy, NOW) == FactsWanted()
    asked = len(run.world.asked)
    approve_us_export(run, reason="checked")
    assert len(run.world.asked) == asked
    assert types(run.history).count("PartiesScreened") == 1


def test_no_screening_once_past_us_export() -> None:
    run = screened(policy("manual", screening=True))
    approve_us_export(run)
    assert run.state.gate == CN_IMPORT
    assert needs(run.state, Evaluate(gate=US_EXPORT), run.policy, NOW) == FactsWanted()
    assert needs(run.state, Evaluate(gate=CN_IMPORT), run.policy, NOW) == FactsWanted()
    run.refuse(Evaluate(gate=US_EXPORT), "not at gate us-export")


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_approving_a_held_request_needs_a_written_reason(reason: str | None) -> None:
    run = screened(policy("manual", screening=True), hit("Sunway Microelectronics"), hit("Sugon", score=92))
    error = run.refuse(
        Decide(gate=US_EXPORT, reviewer="alice", approve=True, reason=reason), "written reason"
    )
    assert "Sunway Microelectronics" in str(error)
    assert "Sugon" in str(error)
    assert on_hold(run.state)


def test_approving_a_held_request_with_a_reason_records_it_as_the_note() -> None:
    run = screened(policy("manual", screening=True), hit())
    reason = "False positive: different company, registry extract checked"
    events = run.send(Decide(gate=US_EXPORT, reviewer="alice", approve=True, reason=f"  {reason} "))
    assert types(events) == ["GateApproved", "GateOpened"]
    approved = events[0].data
    assert isinstance(approved, GateApproved)
    assert approved.note == reason
    assert approved.rule is None
    assert events[0].actor == "alice"
    assert run.state.gate == CN_IMPORT
    assert not on_hold(run.state)
    assert "held" not in run.state.flags


def test_denying_a_held_request_works() -> None:
    run = screened(policy("manual", screening=True), hit())
    events = run.send(
        Decide(gate=US_EXPORT, reviewer="alice", approve=False, reason="confirmed listed party")
    )
    assert types(events) == ["GateDenied"]
    assert run.state.status == Status.DENIED
    assert run.state.outcome_reason == "confirmed listed party"
    assert not on_hold(run.state)


def test_screening_uses_the_policy_threshold() -> None:
    run = submitted(policy("manual", screening=True, screening_threshold=85))
    screen = needs(run.state, Evaluate(gate=US_EXPORT), run.policy, NOW).screening
    assert screen is not None and screen.threshold == 85.0
    assert only(run.send(Evaluate(gate=US_EXPORT)), PartiesScreened).threshold == 85.0


# -- 2. default conditions ----------------------------------------------------------------------------


def test_manual_export_approval_puts_default_conditions_first_without_duplicates() -> None:
    run = submitted(policy("manual", default_conditions=list(DEFAULTS)))
    events = approve_us_export(
        run, conditions=["Quarterly end-use report", DEFAULTS[1], "Quarterly end-use report"]
    )
    approved = only(events, GateApproved)
    assert approved.conditions == [*DEFAULTS, "Quarterly end-use report"]
    assert run.state.conditions == [*DEFAULTS, "Quarterly end-use report"]


def test_auto_export_approval_carries_the_default_conditions() -> None:
    run = submitted(policy("auto", default_conditions=list(DEFAULTS)))
    events = run.send(Evaluate(gate=US_EXPORT))
    approved = only(events, GateApproved)
    assert approved.rule == "us_export.mode = auto"
    assert approved.conditions == list(DEFAULTS)


def test_held_approval_carries_the_default_conditions_too() -> None:
    run = screened(policy("manual", screening=True, default_conditions=list(DEFAULTS)), hit())
    events = run.send(Decide(gate=US_EXPORT, reviewer="alice", approve=True, reason="false positive"))
    assert only(events, GateApproved).conditions == list(DEFAULTS)


def test_default_conditions_ride_only_on_the_export_approval() -> None:
    run = submitted(policy("manual", default_conditions=list(DEFAULTS)))
    approve_us_export(run)
    events = run.send(Decide(gate=CN_IMPORT, reviewer="wang", approve=True, conditions=["Customs seal"]))
    assert only(events, GateApproved).conditions == ["Customs seal"]


def test_the_licence_lists_every_condition_after_three_manual_gates() -> None:
    pol = make_policy(
        "manual",
        us_export={"default_conditions": list(DEFAULTS), "screening": True, "max_units_per_buyer": BUYER_CAP},
    )
    run = screened(pol, request=make_request(units=40_000, domestic_procurement=[]))
    approve_us_export(run, conditions=["Quarterly end-use report", DEFAULTS[0]])
    run.send(Evaluate(gate=CN_IMPORT))
    run.send(Decide(gate=CN_IMPORT, reviewer="wang", approve=True, conditions=["Customs seal", DEFAULTS[1]]))
    run.send(Evaluate(gate=DOMESTIC_QUOTA))
    run.refuse(Decide(gate=DOMESTIC_QUOTA, reviewer="wang", approve=True), "domestic quota not met")
    run.send(AddEvidence(records=evidence("HW-2026-0042", 40_000)))
    events = run.send(Decide(gate=DOMESTIC_QUOTA, reviewer="wang", approve=True, conditions=["Annual audit"]))
    assert types(events) == ["GateApproved", "LicenseIssued"]
    licence = only(events, LicenseIssued)
    expected = [*DEFAULTS, "Quarterly end-use report", "Customs seal", "Annual audit"]
    assert licence.conditions == expected
    assert licence.units == 40_000
    assert run.state.status == Status.LICENSED
    assert run.state.conditions == expected


def test_the_auto_licence_lists_the_default_conditions() -> None:
    run = submitted(policy("auto", default_conditions=list(DEFAULTS)))
    run.send(Evaluate(gate=US_EXPORT))
    run.send(Evaluate(gate=CN_IMPORT))
    events = run.send(Evaluate(gate=DOMESTIC_QUOTA))
    assert only(events, LicenseIssued).conditions == list(DEFAULTS)


# -- 3. the per-buyer cap: what needs asks, what the decider takes ------------------------------------


def capped(mode: str = "manual", **us_export: Any) -> Policy:
    return policy(mode, max_units_per_buyer=BUYER_CAP, **us_export)


@pytest.mark.parametrize("mismatch", ["none", "other-request", "fewer-units", "more-units"])
def test_manual_export_approval_without_a_matching_claim_is_refused(mismatch: str) -> None:
    run = submitted(capped(), make_request(units=50_000))
    backing = {
        "none": None,
        "other-request": claim(run, 50_000).model_copy(update={"request_id": "req-someone-else"}),
        "fewer-units": claim(run, 40_000),
        "more-units": claim(run, 60_000),
    }[mismatch]
    run.refuse(
        Decide(gate=US_EXPORT, reviewer="alice", approve=True),
        "units: 50000 have not been claimed against us_export.max_units_per_buyer",
        facts=Facts(buyer_claim=backing),
    )


def test_manual_export_approval_records_the_claim_the_owner_granted() -> None:
    run = submitted(capped(), make_request(units=50_000))
    run.world.claimed_elsewhere(45_000)
    events = approve_us_export(run, units=30_000)
    approved = only(events, GateApproved)
    assert approved.units_approved == 30_000
    assert approved.buyer_claim == claim(run, 30_000, approved_before=45_000)
    assert part(run).buyer_claim == approved.buyer_claim
    assert run.state.units_approved == 30_000
    assert run.state.gate == CN_IMPORT
    assert run.world.held_by() == {"req-elsewhere": 45_000, run.request_id: 30_000}


def test_manual_export_approval_beyond_the_headroom_is_refused_by_the_owner() -> None:
    run = submitted(capped(), make_request(units=50_000))
    run.world.claimed_elsewhere(70_000)
    run.refuse(
        Decide(gate=US_EXPORT, reviewer="alice", approve=True),
        "units: 50000 exceeds the remaining headroom of 30000",
    )
    assert run.world.held_by() == {"req-elsewhere": 70_000}  # all or nothing: nothing taken
    assert only(approve_us_export(run, units=30_000), GateApproved).units_approved == 30_000


def test_a_claim_is_not_recorded_when_the_policy_has_no_buyer_cap() -> None:
    run = submitted(policy("manual"))
    approval = Decide(gate=US_EXPORT, reviewer="alice", approve=True)
    assert needs(run.state, approval, run.policy, NOW) == FactsWanted()
    events = run.send(approval, facts=Facts(buyer_claim=claim(run, 50_000)))
    assert only(events, GateApproved).buyer_claim is None
    assert part(run).buyer_claim is None


@pytest.mark.parametrize(
    ("requested", "units", "expected"),
    [(50_000, None, 50_000), (90_000, None, 75_000), (90_000, 20_000, 20_000)],
)
def test_a_manual_approval_claims_all_or_nothing(requested: int, units: int | None, expected: int) -> None:
    pol = capped()
    run = submitted(pol, make_request(units=requested))
    command = Decide(gate=US_EXPORT, reviewer="alice", approve=True, units=units)
    assert needs(run.state, command, pol, NOW) == FactsWanted(
        buyer_claim=ClaimUnits(buyer=BUYER, request_id=run.request_id, units=expected, cap=BUYER_CAP)
    )


def test_an_auto_evaluate_claims_what_is_left() -> None:
    pol = capped("auto")
    run = submitted(pol, make_request(units=90_000))
    assert needs(run.state, Evaluate(gate=US_EXPORT), pol, NOW) == FactsWanted(
        buyer_claim=ClaimUnits(
            buyer=BUYER, request_id=run.request_id, units=75_000, cap=BUYER_CAP, partial=True
        )
    )


def test_a_manual_evaluate_claims_nothing() -> None:
    pol = capped("manual")
    run = submitted(pol)
    assert needs(run.state, Evaluate(gate=US_EXPORT), pol, NOW) == FactsWanted()


def test_an_auto_evaluate_screens_first_then_claims_only_if_clear() -> None:
    pol = capped("auto", screening=True)
    run = submitted(pol)
    evaluate = Evaluate(gate=US_EXPORT)
    first = needs(run.state, evaluate, pol, NOW)
    assert first.screening is not None and first.buyer_claim is None
    clear = Screening(list_version=LIST_VERSION, threshold=90.0, parties=first.screening.parties, matches=[])
    assert needs(run.state, evaluate, pol, NOW, Facts(screening=clear)) == FactsWanted(
        buyer_claim=ClaimUnits(
            buyer=BUYER, request_id=run.request_id, units=50_000, cap=BUYER_CAP, partial=True
        )
    )
    # The rules never approve a held request: nothing to claim.
    listed = clear.model_copy(update={"matches": [hit()]})
    assert needs(run.state, evaluate, pol, NOW, Facts(screening=listed)) == FactsWanted()


def test_a_held_request_claims_only_when_the_officer_approves() -> None:
    run = screened(capped("manual", screening=True), hit())
    assert on_hold(run.state)
    assert run.world.held_by() == {}
    approval = Decide(gate=US_EXPORT, reviewer="alice", approve=True, reason="false positive")
    wanted = needs(run.state, approval, run.policy, NOW).buyer_claim
    assert wanted is not None
    assert (wanted.units, wanted.partial) == (50_000, False)
    run.send(approval)
    assert run.world.held_by() == {run.request_id: 50_000}


def test_a_rule_denial_needs_no_screening_and_no_claim() -> None:
    pol = capped("auto", screening=True)
    request = make_request(end_user={"name": "PLA Unit 61398", "country": "CN", "kind": "military"})
    run = submitted(pol, request)
    assert needs(run.state, Evaluate(gate=US_EXPORT), pol, NOW) == FactsWanted()
    events = run.send(Evaluate(gate=US_EXPORT))  # denied by the rule, unscreened, without any claim
    assert types(events) == ["GateDenied"]
    assert only(events, GateDenied).rule == "us_export.excluded_end_user_kinds"
    assert run.world.asked == []


@pytest.mark.parametrize("mode", MODES)
def test_without_a_cap_nothing_is_claimed(mode: str) -> None:
    pol = policy(mode)
    run = submitted(pol)
    assert needs(run.state, Evaluate(gate=US_EXPORT), pol, NOW) == FactsWanted()
    approval = Decide(gate=US_EXPORT, reviewer="alice", approve=True)
    assert needs(run.state, approval, pol, NOW) == FactsWanted()


def test_other_commands_and_gates_claim_nothing() -> None:
    pol = capped()
    run = submitted(pol)
    denial = Decide(gate=US_EXPORT, reviewer="alice", approve=False, reason="no")
    assert needs(run.state, denial, pol, NOW) == FactsWanted()
    assert needs(run.state, Withdraw(reason="cancelled"), pol, NOW) == FactsWanted()
    approve_us_export(run)
    cn = Decide(gate=CN_IMPORT, reviewer="wang", approve=True)
    assert needs(run.state, cn, pol, NOW) == FactsWanted()
    again = Decide(gate=US_EXPORT, reviewer="alice", approve=True)
    assert needs(run.state, again, pol, NOW) == FactsWanted()
    assert needs(RequestState(), Evaluate(gate=US_EXPORT), pol, NOW) == FactsWanted()


def test_a_refused_approval_asks_the_owner_nothing() -> None:
    run = submitted(capped())
    run.refuse(Decide(gate=US_EXPORT, reviewer="chen", approve=True), "may not decide")
    run.refuse(Decide(gate=US_EXPORT, reviewer="mallory", approve=True), "not a person with a key")
    run.refuse(Decide(gate=US_EXPORT, reviewer="alice", approve=True, units=50_001), "units still requested")
    assert run.world.asked == []
    assert run.world.held_by() == {}


def test_auto_evaluate_with_no_headroom_is_denied_naming_the_cap() -> None:
    run = submitted(capped("auto"))
    run.world.claimed_elsewhere(BUYER_CAP)
    events = run.send(Evaluate(gate=US_EXPORT))
    assert types(events) == ["GateDenied"]
    denied = only(events, GateDenied)
    assert denied.rule == "us_export.max_units_per_buyer"
    assert f"us_export.max_units_per_buyer = {BUYER_CAP}" in denied.reason
    assert repr(BUYER) in denied.reason
    assert f"{BUYER_CAP} units already approved" in denied.reason
    assert events[0].actor == "policy"
    assert run.state.status == Status.DENIED
    assert run.world.held_by() == {"req-elsewhere": BUYER_CAP}


def test_auto_evaluate_with_less_headroom_approves_what_is_left() -> None:
    run = submitted(capped("auto"), make_request(units=50_000))
    run.world.claimed_elsewhere(70_000)
    events = run.send(Evaluate(gate=US_EXPORT))
    assert types(events) == ["GateApproved", "GateOpened"]
    approved = only(events, GateApproved)
    assert approved.units_approved == 30_000
    assert approved.note is not None
    assert "headroom" in approved.note
    assert f"us_export.max_units_per_buyer = {BUYER_CAP}" in approved.note
    assert approved.buyer_claim == claim(run, 30_000, approved_before=70_000)
    assert part(run).buyer_claim == approved.buyer_claim
    assert run.state.units_approved == 30_000


def test_auto_evaluate_with_the_full_claim_approves_everything() -> None:
    run = submitted(capped("auto"), make_request(units=50_000))
    events = run.send(Evaluate(gate=US_EXPORT))
    approved = only(events, GateApproved)
    assert (approved.units_approved, approved.note) == (50_000, None)
    assert approved.buyer_claim == claim(run, 50_000)


@pytest.mark.parametrize("mismatch", ["none", "other-request"])
def test_auto_evaluate_without_a_claim_for_this_request_is_refused(mismatch: str) -> None:
    run = submitted(capped("auto"))
    backing = (
        None
        if mismatch == "none"
        else BuyerClaim(buyer=BUYER, request_id="req-other", units=50_000, cap=BUYER_CAP, approved_before=0)
    )
    run.refuse(Evaluate(gate=US_EXPORT), "needs a claim against", facts=Facts(buyer_claim=backing))


def test_two_requests_of_one_buyer_share_the_cap_end_to_end() -> None:
    """needs -> the cap owner (check_claim/apply_claim) -> decide, as the workflow chains them."""
    pol = capped("manual", max_units_per_request=75_000)
    world = World()
    first, second = (submitted(pol, make_request(units=60_000), world) for _ in range(2))
    approve_us_export(first)
    assert first.state.units_approved == 60_000

    second.refuse(Decide(gate=US_EXPORT, reviewer="alice", approve=True), "remaining headroom of 40000")
    approve_us_export(second, units=40_000)
    assert part(second).buyer_claim == BuyerClaim(
        buyer=BUYER, request_id=second.request_id, units=40_000, cap=BUYER_CAP, approved_before=60_000
    )
    assert world.held_by() == {first.request_id: 60_000, second.request_id: 40_000}
    assert sum(world.held_by().values()) == BUYER_CAP


# -- 4. the buyer's cap owner ------------------------------------------------------------------------


def ask(request_id: str, units: int, *, partial: bool = False, cap: int = BUYER_CAP) -> ClaimUnits:
    return ClaimUnits(buyer=BUYER, request_id=request_id, units=units, cap=cap, partial=partial)


def release(request_id: str) -> ReleaseClaim:
    return ReleaseClaim(buyer=BUYER, request_id=request_id, reason="request denied")


def test_check_claim_within_the_headroom_grants_all() -> None:
    owner = BuyerCapState(claims={"req-a": 70_000})
    granted = check_claim(owner, ask("req-b", 30_000))
    assert granted == BuyerClaim(
        buyer=BUYER, request_id="req-b", units=30_000, cap=BUYER_CAP, approved_before=70_000
    )
    assert (granted.total, granted.headroom) == (BUYER_CAP, 30_000)
    assert owner == BuyerCapState(claims={"req-a": 70_000})  # checking changes nothing
    after = apply_claim(owner, granted)
    assert after.claims == {"req-a": 70_000, "req-b": 30_000}
    assert after.buyer_key == "bytedance"


def test_check_claim_above_the_headroom_is_refused_naming_headroom_and_cap() -> None:
    owner = BuyerCapState(claims={"req-a": 70_000})
    with pytest.raises(DomainError) as info:
        check_claim(owner, ask("req-b", 40_000))
    message = str(info.value)
    assert "remaining headroom of 30000" in message
    assert f"{RULE} = {BUYER_CAP}" in message
    assert "70000 already approved" in message


@pytest.mark.parametrize(("held", "expected"), [(70_000, 30_000), (99_999, 1), (BUYER_CAP, 0)])
def test_a_partial_claim_grants_what_is_left(held: int, expected: int) -> None:
    owner = BuyerCapState(claims={"req-a": held})
    granted = check_claim(owner, ask("req-b", 50_000, partial=True))
    assert granted.units == expected
    assert granted.approved_before == held
    after = apply_claim(owner, granted)
    assert after.claims.get("req-b", 0) == expected
    assert ("req-b" in after.claims) is (expected > 0)
    assert sum(after.claims.values()) <= BUYER_CAP


def test_a_repeated_claim_replaces_the_earlier_one() -> None:
    owner = BuyerCapState(claims={"req-a": 60_000, "req-b": 30_000})
    granted = check_claim(owner, ask("req-a", 70_000))  # headroom counts req-b only: 70,000
    assert granted.approved_before == 30_000
    owner = apply_claim(owner, granted)
    assert owner.claims == {"req-a": 70_000, "req-b": 30_000}
    with pytest.raises(DomainError, match="remaining headroom of 70000"):
        check_claim(owner, ask("req-a", 70_001))
    smaller = apply_claim(owner, check_claim(owner, ask("req-a", 10_000)))
    assert smaller.claims == {"req-a": 10_000, "req-b": 30_000}


def test_release_gives_the_units_back_once() -> None:
    owner = BuyerCapState(claims={"req-a": 60_000, "req-b": 30_000})
    owner, given = apply_release(owner, release("req-a"))
    assert given == 60_000
    assert owner.claims == {"req-b": 30_000}
    assert owner.released == {"req-a": 60_000}
    again, given = apply_release(owner, release("req-a"))
    assert given == 0
    assert again == owner
    assert check_claim(owner, ask("req-c", 70_000)).units == 70_000  # the headroom came back


def test_a_released_request_cannot_claim_again() -> None:
    owner, _ = apply_release(BuyerCapState(claims={"req-a": 10_000}), release("req-a"))
    for partial in (False, True):
        with pytest.raises(DomainError, match="already released its export approval"):
            check_claim(owner, ask("req-a", 1, partial=partial))


@dataclass(frozen=True)
class CapOp:
    kind: str
    request_id: str
    units: int
    partial: bool


cap_ops = st.lists(
    st.builds(
        CapOp,
        kind=st.sampled_from(["claim", "claim", "claim", "release"]),
        request_id=st.sampled_from(["req-a", "req-b", "req-c", "req-d"]),
        units=st.integers(min_value=1, max_value=120),
        partial=st.booleans(),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(cap=st.integers(min_value=1, max_value=200), ops=cap_ops)
def test_no_sequence_of_claims_and_releases_exceeds_the_cap(cap: int, ops: list[CapOp]) -> None:
    owner = BuyerCapState()
    for op in ops:
        if op.kind == "release":
            held = owner.claims.get(op.request_id, 0)
            already = op.request_id in owner.released
            owner, given = apply_release(owner, release(op.request_id))
            assert given == (0 if already else held)
        else:
            command = ask(op.request_id, op.units, partial=op.partial, cap=cap)
            try:
                granted = check_claim(owner, command)
            except DomainError:
                assert op.request_id in owner.released or (
                    not op.partial and op.units > cap - owner.held_by_others(op.request_id)
                )
                continue
            assert op.request_id not in owner.released
            assert granted.units == op.units or (op.partial and granted.units < op.units)
            assert granted.total <= cap
            owner = apply_claim(owner, granted)
        assert sum(owner.claims.values()) <= cap
        assert all(units >= 1 for units in owner.claims.values())
        assert not set(owner.claims) & set(owner.released)


# -- 5. information requests --------------------------------------------------------------------------


def asking(**us_export: Any) -> Run:
    return submitted(policy("manual", review_sla="P30D", **us_export))


def question(text: str = "Who operates the Wuhu cluster day to day?") -> RequestInfo:
    return RequestInfo(gate=US_EXPORT, reviewer="alice", question=text)


@pytest.mark.parametrize(("deadline", "expected"), [({}, 10 * DAY), ({"info_deadline": "P5D"}, 5 * DAY)])
def test_request_info_asks_the_applicant_with_a_due_date(
    deadline: dict[str, str], expected: timedelta
) -> None:
    run = asking(**deadline)
    asked_at = NOW + 2 * DAY
    events = run.send(question("  Who operates the cluster?  "), at=asked_at)
    assert types(events) == ["InformationRequested"]
    assert events[0].data == InformationRequested(
        gate=US_EXPORT, question="Who operates the cluster?", due=asked_at + expected
    )
    assert events[0].actor == "alice"
    open_question = run.state.open_question
    assert open_question is not None
    assert (open_question.asked_by, open_question.asked_at, open_question.due) == (
        "alice",
        asked_at,
        asked_at + expected,
    )
    assert "awaiting-applicant" in run.state.flags
    assert run.state.status == "us_export_review"


def test_request_info_only_at_us_export() -> None:
    run = asking()
    approve_us_export(run)
    assert run.state.gate == CN_IMPORT
    run.refuse(
        RequestInfo(gate=CN_IMPORT, reviewer="wang", question="Batch?"),
        "does not ask the applicant for information",
    )
    run.refuse(question(), "not at gate us-export")


@pytest.mark.parametrize("reviewer", ["wang", "chen"])
def test_request_info_only_by_a_reviewer_of_the_gate(reviewer: str) -> None:
    run = asking()
    run.refuse(
        RequestInfo(gate=US_EXPORT, reviewer=reviewer, question="Why?"),
        f"reviewer '{reviewer}' may not decide gate us-export",
    )


def test_request_info_by_a_person_the_policy_does_not_register_is_refused() -> None:
    run = asking()
    run.refuse(
        RequestInfo(gate=US_EXPORT, reviewer="mallory", question="Why?"),
        "'mallory' is not a person with a key",
    )


def test_request_info_while_a_question_is_open_is_refused() -> None:
    run = asking()
    run.send(question("First question"))
    run.refuse(question("Second question"), "has not answered the last question yet.*First question")


def test_approval_waits_for_the_answer_but_a_denial_does_not() -> None:
    run = asking()
    run.send(question("Who operates it?"))
    run.refuse(
        Decide(gate=US_EXPORT, reviewer="alice", approve=True),
        "waiting for the applicant's answer to 'Who operates it\\?'",
    )
    events = run.send(Decide(gate=US_EXPORT, reviewer="alice", approve=False, reason="no answer needed"))
    assert types(events) == ["GateDenied"]
    assert run.state.status == Status.DENIED
    assert run.state.open_question is None
    assert run.state.flags == []


def test_respond_without_an_open_question_is_refused() -> None:
    run = asking()
    run.refuse(Respond(text="Unprompted"), "nobody has asked")
    run.send(question())
    run.send(Respond(text="Answer"))
    run.refuse(Respond(text="Second answer"), "nobody has asked")


def test_respond_closes_the_question_with_text_and_attachments() -> None:
    run = asking()
    run.send(question(), at=NOW + DAY)
    files = [attachment(b"%PDF-1.7 statement"), attachment(b"org chart", name="org.png")]
    answered_at = NOW + 4 * DAY
    events = run.send(
        Respond(text="  Volcano Cloud operates it.  ", attachments=files, actor="bd-legal"), at=answered_at
    )
    assert types(events) == ["InformationProvided"]
    assert events[0].data == InformationProvided(
        gate=US_EXPORT, text="Volcano Cloud operates it.", attachments=files
    )
    assert events[0].actor == "bd-legal"
    assert run.state.open_question is None
    assert "awaiting-applicant" not in run.state.flags
    exchange = run.state.correspondence[-1]
    assert (exchange.answer, exchange.attachments, exchange.answered_by, exchange.answered_at) == (
        "Volcano Cloud operates it.",
        files,
        "bd-legal",
        answered_at,
    )
    assert exchange.waited == 3 * DAY
    assert only(approve_us_export(run), GateApproved).units_approved == 50_000


@pytest.mark.parametrize("digest", ["a" * 63, "a" * 65, "g" * 64, "A" * 64, "", "sha256:" + "a" * 57])
def test_an_attachment_needs_a_64_hex_sha256(digest: str) -> None:
    with pytest.raises(ValidationError, match="sha256"):
        Attachment(name="x.pdf", size=1, sha256=digest)


def test_the_review_clock_stops_while_the_applicant_answers() -> None:
    run = asking()
    assert run.state.review_due == NOW + 30 * DAY
    run.send(question("First"), at=NOW + 5 * DAY)
    assert run.state.review_due == NOW + 30 * DAY  # not moved until the answer shows how long it took
    run.send(Respond(text="First answer"), at=NOW + 12 * DAY + timedelta(hours=3))
    assert run.state.review_due == NOW + 37 * DAY + timedelta(hours=3)
    run.send(question("Second"), at=NOW + 20 * DAY)
    run.send(Respond(text="Second answer"), at=NOW + 21 * DAY)
    assert run.state.review_due == NOW + 38 * DAY + timedelta(hours=3)
    gate_record = run.state.gates[US_EXPORT]
    assert gate_record.review_due == NOW + 30 * DAY  # the SLA as set, before the pauses


@settings(max_examples=100, deadline=None)
@given(
    rounds=st.lists(
        st.tuples(
            st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=5)),
            st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=9)),
        ),
        max_size=5,
    )
)
def test_review_due_moves_by_exactly_the_time_waited(rounds: list[tuple[timedelta, timedelta]]) -> None:
    run = asking()
    now = NOW
    waited = timedelta(0)
    for before_question, wait in rounds:
        now += before_question
        run.send(question(), at=now)
        now += wait
        run.send(Respond(text="answer"), at=now)
        waited += wait
    assert run.state.review_due == NOW + 30 * DAY + waited
    assert next_due(run.state) == Due(NOW + 30 * DAY + waited, Escalate(gate=US_EXPORT))


def test_an_unanswered_question_returns_the_request_at_its_due_time() -> None:
    run = asking()
    run.send(question(), at=NOW + DAY)
    due = NOW + 11 * DAY
    expire = Expire(gate=US_EXPORT, cause="information_request")
    run.refuse(expire, "has not passed", at=due - timedelta(seconds=1))
    events = run.send(expire, at=due)
    assert types(events) == ["RequestExpired"]
    assert events[0].data == RequestExpired(gate=US_EXPORT, deadline=due, cause="information_request")
    assert events[0].actor == "deadline"
    assert run.state.status == Status.EXPIRED
    assert run.state.outcome_reason is not None
    assert "returned without action" in run.state.outcome_reason
    assert run.state.gates[US_EXPORT].outcome == "expired"


def test_question_expiry_needs_an_open_question() -> None:
    run = asking()
    expire = Expire(gate=US_EXPORT, cause="information_request")
    run.refuse(expire, "not waiting for the applicant", at=NOW + 60 * DAY)
    run.send(question())
    run.send(Respond(text="answer"), at=NOW + DAY)
    run.refuse(expire, "not waiting for the applicant", at=NOW + 60 * DAY)


def test_the_hard_deadline_is_not_a_returned_request() -> None:
    run = asking()
    run.send(question())
    events = run.send(Expire(gate=US_EXPORT), at=NOW + 90 * DAY)
    assert only(events, RequestExpired).cause is None
    assert run.state.outcome_reason is not None
    assert "returned without action" not in run.state.outcome_reason


# -- 6. escalation and next_due ----------------------------------------------------------------------


def test_next_due_is_the_escalation_at_the_review_sla_then_the_deadline() -> None:
    run = asking()
    assert next_due(run.state) == Due(NOW + 30 * DAY, Escalate(gate=US_EXPORT))
    run.refuse(
        Escalate(gate=US_EXPORT),
        "review SLA .* has not passed",
        at=NOW + 30 * DAY - timedelta(seconds=1),
    )
    events = run.send(Escalate(gate=US_EXPORT), at=NOW + 30 * DAY)
    assert events[0].data == ReviewEscalated(gate=US_EXPORT, due=NOW + 30 * DAY)
    assert events[0].actor == "deadline"
    assert run.state.escalated
    assert run.state.escalated_at == NOW + 30 * DAY
    assert "escalated" in run.state.flags
    assert next_due(run.state) == Due(NOW + 90 * DAY, Expire(gate=US_EXPORT))
    run.refuse(Escalate(gate=US_EXPORT), "already escalated", at=NOW + 40 * DAY)


def test_next_due_while_a_question_is_open_is_the_question_when_earlier() -> None:
    run = asking()
    run.send(question(), at=NOW + 25 * DAY)
    assert next_due(run.state) == Due(NOW + 35 * DAY, Expire(gate=US_EXPORT, cause="information_request"))
    run.refuse(Escalate(gate=US_EXPORT), "clock is stopped", at=NOW + 31 * DAY)
    run.send(Respond(text="answer"), at=NOW + 29 * DAY)
    assert next_due(run.state) == Due(NOW + 34 * DAY, Escalate(gate=US_EXPORT))


def test_next_due_while_a_question_is_open_is_the_deadline_when_earlier() -> None:
    run = asking(decision_deadline="P7D")
    run.send(question(), at=NOW + DAY)  # due at NOW + 11 days, after the 7-day deadline
    assert next_due(run.state) == Due(NOW + 7 * DAY, Expire(gate=US_EXPORT))


def test_next_due_on_a_tie_is_the_hard_deadline() -> None:
    run = asking(decision_deadline="P30D")
    assert next_due(run.state) == Due(NOW + 30 * DAY, Expire(gate=US_EXPORT))


def test_next_due_without_a_review_sla_is_the_deadline() -> None:
    run = submitted(policy("manual"))
    assert run.state.review_due is None
    assert next_due(run.state) == Due(NOW + 90 * DAY, Expire(gate=US_EXPORT))
    run.refuse(Escalate(gate=US_EXPORT), "no review SLA", at=NOW + 89 * DAY)


def test_next_due_of_a_final_request_is_none() -> None:
    run = asking()
    run.send(Withdraw(reason="project cancelled"))
    assert next_due(run.state) is None
    assert next_due(RequestState()) is None


def test_escalated_only_while_at_the_escalated_gate() -> None:
    run = asking()
    run.send(Escalate(gate=US_EXPORT), at=NOW + 31 * DAY)
    assert run.state.escalated
    run.now = NOW + 32 * DAY
    approve_us_export(run)
    assert run.state.gate == CN_IMPORT
    assert run.state.escalated_gate == US_EXPORT
    assert not run.state.escalated
    assert "escalated" not in run.state.flags
    assert run.state.review_due is None  # cn-import has no review SLA
    assert next_due(run.state) == Due(NOW + 32 * DAY + 90 * DAY, Expire(gate=CN_IMPORT))
    run.refuse(Escalate(gate=CN_IMPORT), "no review SLA", at=NOW + 200 * DAY)


def test_a_held_escalated_request_shows_both_flags() -> None:
    run = screened(policy("manual", screening=True, review_sla="P30D"), hit())
    run.send(Escalate(gate=US_EXPORT), at=NOW + 30 * DAY)
    run.send(question(), at=NOW + 31 * DAY)
    assert run.state.flags == ["held", "awaiting-applicant", "escalated"]


# -- 7. giving an unused export approval back ---------------------------------------------------------


def give_back() -> Compensate:
    return Compensate(gate=US_EXPORT, reason="request ended without a licence")


def test_export_compensation_is_refused_while_the_request_is_open() -> None:
    run = submitted(capped())
    # Decided without asking the world: see test_needs_asks_nothing_for_a_compensation_decide_refuses.
    run.refuse(give_back(), "only a request that ended without a licence", facts=NONE)
    approve_us_export(run)
    run.refuse(give_back(), "only a request that ended without a licence", facts=NONE)
    assert run.world.held_by() == {run.request_id: 50_000}


def test_export_compensation_without_an_export_approval_records_nothing() -> None:
    run = submitted(capped())
    run.send(Decide(gate=US_EXPORT, reviewer="alice", approve=False, reason="end use unclear"))
    assert run.send(give_back()) == []
    assert not part(run).export_released
    assert run.world.held_by() == {}


def test_export_compensation_is_refused_for_a_licensed_request() -> None:
    run = submitted(capped())
    approve_us_export(run)
    run.send(Decide(gate=CN_IMPORT, reviewer="wang", approve=True))
    run.send(Decide(gate=DOMESTIC_QUOTA, reviewer="wang", approve=True))
    assert run.state.status == Status.LICENSED
    assert compensations(run.state) == []
    run.refuse(give_back(), "only a request that ended without a licence", facts=NONE)
    assert run.world.held_by() == {run.request_id: 50_000}


@pytest.mark.parametrize("ending", ["denied", "withdrawn", "expired"])
def test_export_compensation_once_after_an_unlicensed_end(ending: str) -> None:
    run = submitted(capped())
    approve_us_export(run)
    assert run.world.held_by() == {run.request_id: 50_000}
    match ending:
        case "denied":
            run.send(Decide(gate=CN_IMPORT, reviewer="wang", approve=False, reason="quota"))
        case "withdrawn":
            run.send(Withdraw(reason="project cancelled"))
        case "expired":
            run.send(Expire(gate=CN_IMPORT), at=NOW + 90 * DAY)
    assert run.state.is_final
    assert run.state.status != Status.LICENSED
    assert not part(run).export_released
    assert compensations(run.state)[-1].gate == US_EXPORT
    command = give_back()
    wanted = needs(run.state, command, run.policy, NOW)
    assert wanted == FactsWanted(
        release_buyer_claim=ReleaseClaim(buyer=BUYER, request_id=run.request_id, reason=command.reason)
    )
    events = run.send(command)
    assert types(events) == ["ExportApprovalReleased"]
    assert events[0].data == ExportApprovalReleased(units=50_000, reason="request ended without a licence")
    assert events[0].actor == "policy"
    assert part(run).export_released
    assert part(run).buyer_claim is not None  # the claim stays on record
    assert run.world.held_by() == {}  # the headroom is the buyer's again
    # Once: a second compensation asks nothing and records nothing.
    assert needs(run.state, command, run.policy, NOW) == FactsWanted()
    assert run.send(command) == []


def test_an_uncapped_export_approval_is_given_back_without_asking_an_owner() -> None:
    run = submitted(policy("manual"))
    approve_us_export(run)
    run.send(Withdraw(reason="project cancelled"))
    assert needs(run.state, give_back(), run.policy, NOW) == FactsWanted()
    assert types(run.send(give_back())) == ["ExportApprovalReleased"]
    assert run.world.asked == []


# -- 8. regressions: bugs once found in the decider, fixed since -------------------------------------


def test_the_licence_lists_each_condition_once_whichever_gate_repeats_it() -> None:
    """Every gate's approval de-duplicates its conditions, not only us-export's: a condition an officer
    repeats at cn-import or domestic-quota is carried into the state and the licence once."""
    run = submitted(policy("manual", default_conditions=list(DEFAULTS)))
    approve_us_export(run)
    run.send(Decide(gate=CN_IMPORT, reviewer="wang", approve=True, conditions=["Customs seal"] * 2))
    assert run.state.conditions == [*DEFAULTS, "Customs seal"]
    events = run.send(
        Decide(gate=DOMESTIC_QUOTA, reviewer="wang", approve=True, conditions=["Annual audit"] * 2)
    )
    assert only(events, LicenseIssued).conditions == [*DEFAULTS, "Customs seal", "Annual audit"]


def test_an_answer_after_its_deadline_is_refused() -> None:
    """BIS returns an application without action once the hold passes; a late answer cannot revive it."""
    run = Run(make_policy("manual", us_export={"info_deadline": "P10D"}))
    run.send(Submit(request=make_request(request_id="late-answer")))
    run.send(RequestInfo(gate=US_EXPORT, reviewer="alice", question="Who operates the site?"))
    due = NOW + timedelta(days=10)
    run.refuse(Respond(text="Us."), "the answer was due by", at=due + timedelta(seconds=1))
    run.send(Respond(text="Us, in time."), at=due)
    assert run.state.open_question is None
