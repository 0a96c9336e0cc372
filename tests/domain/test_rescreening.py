"""Re-screening against a new list, in the pure decider: a match holds a request under review (no
approval at any gate until a us-export reviewer clears it with a reason), denies one where the rules
decide alone, and a list already screened against records nothing; a licence is suspended."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chipclear.domain.commands import ClearScreeningHold, Decide, Evaluate, Rescreen, Submit
from chipclear.domain.facts import Screening
from chipclear.domain.gates import us_export
from chipclear.domain.licence import (
    LicenceRescreened,
    LicenceState,
    LicenceStatus,
    LicenceSuspended,
    LicenceTerms,
    RescreenLicence,
    decide_licence,
    evolve_licence,
)
from chipclear.domain.models import Status
from chipclear.domain.screening import ScreenedParty, ScreeningMatch
from tests.decisions import Run, World, ledger_with, types
from tests.factories import make_policy, make_request

NOW = datetime(2026, 11, 30, tzinfo=UTC)
HIT = ScreeningMatch(
    role="buyer",
    party_name="ByteDance Ltd.",
    entry_name="Bytedance Listed Entity",
    matched_name="Bytedance Listed Entity",
    entity_number=None,
    source="Entity List (EL) - Bureau of Industry and Security",
    score=96.0,
)


def submitted(mode: str) -> Run:
    run = Run(make_policy(mode, us_export={"screening": True}), NOW)
    run.send(Submit(request=make_request(), actor="applicant"))
    run.send(Evaluate(gate=run.state.gate or ""))
    return run


def test_a_match_on_a_new_list_holds_a_request_under_review_until_a_reviewer_clears_it():
    run = submitted("manual")
    run.send(Decide(gate="us-export", reviewer="alice", approve=True))
    assert run.state.gate == "cn-import"
    run.world = World(matches=[HIT], list_version="csl-2026-12")
    assert types(run.send(Rescreen(list_version="csl-2026-12"))) == ["PartiesRescreened"]
    assert us_export.GATE.slice(run.state).flags() == ["held"]
    run.refuse(
        Decide(gate="cn-import", reviewer="wang", approve=True),
        "held by re-screening against list csl-2026-12",
    )
    run.refuse(ClearScreeningHold(reviewer="wang", reason="x"), "only a us-export reviewer")
    # Asked again for the same list (a retried fan-out), nothing new is recorded.
    assert run.send(Rescreen(list_version="csl-2026-12")) == []
    assert types(run.send(ClearScreeningHold(reviewer="alice", reason="a namesake"))) == [
        "ScreeningHoldCleared"
    ]
    run.refuse(ClearScreeningHold(reviewer="alice", reason="again"), "not held")
    run.send(Decide(gate="cn-import", reviewer="wang", approve=True))
    assert run.state.gate == "domestic-quota"


def test_a_clear_new_list_is_recorded_and_holds_nothing():
    run = submitted("manual")
    run.world = World(matches=[], list_version="csl-2026-12")
    assert types(run.send(Rescreen(list_version="csl-2026-12"))) == ["PartiesRescreened"]
    assert us_export.GATE.holds(run.state) is None


def test_where_the_rules_decide_alone_a_new_match_denies_the_request_at_its_gate():
    policy = make_policy("auto", us_export={"screening": True}, cn_import={"allocate_from_batches": True})
    run = Run(policy, NOW, world=World(ledger=ledger_with()))  # no batch: the request queues
    run.send(Submit(request=make_request(), actor="applicant"))
    while run.state.gate is not None and run.state.status != "cn_import_queued":
        before = run.state.version
        run.send(Evaluate(gate=run.state.gate))
        if run.state.version == before:
            break
    assert run.state.status == "cn_import_queued", run.state.status
    run.world.matches, run.world.list_version = [HIT], "csl-2026-12"
    events = run.send(Rescreen(list_version="csl-2026-12"))
    assert types(events) == ["PartiesRescreened", "GateDenied"]
    assert run.state.status == Status.DENIED and "re-screening against list csl-2026-12" in (
        run.state.outcome_reason or ""
    )


def test_a_final_request_is_not_screened_again():
    run = submitted("manual")
    run.send(Decide(gate="us-export", reviewer="alice", approve=False, reason="no"))
    run.refuse(Rescreen(list_version="v2"), "already final")


def test_a_valid_licence_matching_a_new_list_is_suspended_once():
    terms = LicenceTerms(
        request_id="r",
        licence_id="LIC-r",
        buyer="ByteDance Ltd.",
        exporter=None,
        units=10,
        unit_price_usd=None,
        issued_at=NOW,
        valid_until=NOW + timedelta(days=1_000),
        request_version=9,
        parties=[ScreenedParty(role="buyer", name="ByteDance Ltd.")],
    )
    state = LicenceState.opened(terms)
    found = Screening(list_version="v2", threshold=90, parties=terms.parties, matches=[HIT])
    policy = make_policy("auto")
    events = decide_licence(state, RescreenLicence(screening=found), policy, NOW)
    rescreened, suspended = events
    assert isinstance(rescreened, LicenceRescreened) and isinstance(suspended, LicenceSuspended)
    assert "Bytedance Listed Entity" in suspended.reason
    for event in events:
        state = evolve_licence(state, event, NOW)
    assert state.status is LicenceStatus.SUSPENDED and state.rescreened_with == "v2"
    assert decide_licence(state, RescreenLicence(screening=found), policy, NOW) == []
