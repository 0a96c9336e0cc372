"""Signed acts in the pure decider: a person's act counts only with their own key's signature over the act,
the request and the version they saw; every refusal names the problem and changes nothing. Events a
signed act caused carry the act, signature and all, so an auditor checks it again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import TypeAdapter

from chipclear.domain.commands import (
    AddEvidence,
    Command,
    Decide,
    Evaluate,
    HumanAct,
    HumanCommand,
    PersonAct,
    RequestInfo,
    Respond,
    Submit,
    Withdraw,
)
from chipclear.domain.events import Event, GateApproved, RequestSubmitted
from chipclear.domain.models import Attachment, ProcurementRecord, Status
from chipclear.domain.policy import DEFAULT_ROUTE
from chipclear.domain.signing import RESERVED_ACTORS, ActSignature, act_message, act_verifies, verify
from tests import decisions, keys
from tests.decisions import only, types
from tests.factories import make_policy, make_request

NOW = datetime(2026, 4, 1, tzinfo=UTC)
US_EXPORT, CN_IMPORT, DOMESTIC_QUOTA = DEFAULT_ROUTE


@dataclass
class Run(decisions.Run):
    now: datetime = NOW


def submitted(**us_export: Any) -> Run:
    run = Run(make_policy("manual", us_export=us_export))
    run.send(Submit(request=make_request()))
    assert run.state.gate == US_EXPORT
    return run


def approval(**fields: Any) -> Decide:
    return Decide(gate=US_EXPORT, reviewer="alice", approve=True, **fields)


def evidence(invoice: str = "HW-7", units: int = 50_000) -> list[ProcurementRecord]:
    return [ProcurementRecord(vendor="Huawei", product="Ascend 910C", units=units, invoice=invoice)]


def signature_of(act: dict[str, Any]) -> ActSignature:
    return ActSignature(**act["signature"])


# -- a signature is required, and must be the person's own --------------------------------------------


def test_an_unsigned_decision_is_refused():
    run = submitted()
    run.refuse(approval(), r"the act is not signed: alice signs it with their key", sign=False)
    run.refuse(
        Decide(gate=US_EXPORT, reviewer="alice", approve=False, reason="no"),
        "the act is not signed",
        sign=False,
    )


def test_an_unsigned_approval_asks_the_world_nothing():
    """The workflow's dry run refuses the unsigned act before any owner (here the buyer's cap) is asked."""
    run = submitted(max_units_per_buyer=100_000)
    run.refuse(approval(), "the act is not signed", sign=False)
    assert run.world.asked == []
    assert run.world.held_by() == {}
    run.send(approval())  # signed, the same approval claims and is approved
    assert run.world.held_by() == {run.request_id: 50_000}


@pytest.mark.parametrize(
    "command",
    [
        RequestInfo(gate=US_EXPORT, reviewer="alice", question="Who operates it?"),
        AddEvidence(records=evidence()),
        Withdraw(reason="changed our mind"),
    ],
    ids=lambda c: c.kind,
)
def test_every_act_of_a_registered_person_needs_a_signature(command: HumanAct):
    run = submitted()
    run.refuse(command, rf"the act is not signed: {command.person} signs it", sign=False)
    run.send(command)  # the same act, signed, is accepted


def test_a_decision_signed_with_another_persons_key_is_refused():
    run = submitted()
    forged = keys.sign(approval(), run.request_id, run.state.version, by="wang")
    run.refuse(forged, r"the act is signed with a key that is not alice's in policy test-manual")


def test_a_stranger_key_is_refused_even_with_a_valid_signature():
    run = submitted()
    stranger = keys.sign(approval(), run.request_id, run.state.version, by="mallory")
    assert stranger.signature is not None
    assert act_verifies(run.request_id, stranger.model_dump(mode="json"), stranger.signature)  # well made
    run.refuse(stranger, r"signed with a key that is not alice's")


# -- a signature counts once: for this act, this request, this version -------------------------------


def test_a_signature_for_an_older_version_is_refused():
    run = submitted(review_sla="P30D")
    seen = run.state.version
    stale = keys.sign(approval(), run.request_id, seen)
    # The request moves on (a question and its answer) and comes back to where alice signed.
    run.send(RequestInfo(gate=US_EXPORT, reviewer="alice", question="Who operates it?"))
    run.send(Respond(text="We do."))
    assert run.state.gate == US_EXPORT and run.state.open_question is None
    error = run.refuse(stale, rf"the signature is for version {seen} of {run.request_id}")
    assert f"now at version {run.state.version}" in str(error)
    assert "sign anew" in str(error)
    run.send(approval())  # signed anew, at the version alice now sees, the same approval counts
    assert run.state.gate == CN_IMPORT


def test_a_signature_for_a_version_not_reached_yet_is_refused():
    run = submitted()
    early = keys.sign(approval(), run.request_id, run.state.version + 1)
    run.refuse(early, rf"the signature is for version {run.state.version + 1} of {run.request_id}")


def test_the_same_signed_act_sent_twice_counts_once():
    run = submitted(review_sla="P30D")
    ask = keys.sign(
        RequestInfo(gate=US_EXPORT, reviewer="alice", question="Who operates it?"),
        run.request_id,
        run.state.version,
    )
    run.send(ask)
    run.send(Respond(text="We do."))
    # The very same signed question again, where a fresh one would be accepted: the request moved on.
    run.refuse(ask, r"it has moved on; look at it again and sign anew")
    run.send(RequestInfo(gate=US_EXPORT, reviewer="alice", question="Who operates it?"))


def test_a_signed_decision_replayed_on_a_final_request_is_refused_by_its_signature():
    run = submitted()
    denial = keys.sign(
        Decide(gate=US_EXPORT, reviewer="alice", approve=False, reason="no"),
        run.request_id,
        run.state.version,
    )
    run.send(denial)
    assert run.state.status == Status.DENIED
    run.refuse(denial, r"the signature is for version .* sign anew")


def test_a_signature_for_another_request_is_refused():
    run, other = submitted(), submitted()
    assert run.state.version == other.state.version
    elsewhere = keys.sign(approval(), other.request_id, other.state.version)
    run.refuse(elsewhere, r"alice's signature does not match this act; nothing was recorded")
    other.send(elsewhere)  # where it was signed for, it counts


@pytest.mark.parametrize(
    "change",
    [
        {"units": 40_000},  # units changed after signing
        {"units": None},
        {"approve": False, "reason": "no"},
        {"conditions": ["Quarterly site visits"]},
        {"reason": "false positive"},
    ],
    ids=lambda c: ",".join(c),
)
def test_a_tampered_act_is_refused(change: dict[str, Any]):
    run = submitted()
    signed = keys.sign(approval(units=10_000), run.request_id, run.state.version)
    tampered = signed.model_copy(update=change)
    assert tampered.signature == signed.signature
    run.refuse(tampered, r"alice's signature does not match this act; nothing was recorded")
    run.send(signed)  # untouched, it counts
    assert run.state.units_approved == 10_000


def test_a_signature_moved_to_another_version_does_not_verify():
    run = submitted()
    signed = keys.sign(approval(), run.request_id, run.state.version - 1)
    assert signed.signature is not None
    moved = signed.model_copy(
        update={"signature": signed.signature.model_copy(update={"expected_version": run.state.version})}
    )
    run.refuse(moved, r"alice's signature does not match this act")


def test_a_reviewer_swapped_after_signing_is_refused():
    run = submitted()
    signed = keys.sign(approval(), run.request_id, run.state.version)
    run.refuse(signed.model_copy(update={"reviewer": "bob"}), r"not a person with a key")
    run.refuse(signed.model_copy(update={"reviewer": "chen"}), r"signed with a key that is not chen's")


# -- who may act at all -------------------------------------------------------------------------------


@pytest.mark.parametrize("actor", ["policy", "allocation-ledger", "deadline", "system"])
@pytest.mark.parametrize(
    "make",
    [
        lambda actor: Withdraw(actor=actor, reason="changed our mind"),
        lambda actor: AddEvidence(actor=actor, records=evidence()),
        lambda actor: Respond(actor=actor, text="We do."),
        lambda actor: Decide(gate=US_EXPORT, reviewer=actor, approve=True),
        lambda actor: RequestInfo(gate=US_EXPORT, reviewer=actor, question="Why?"),
    ],
    ids=["withdraw", "add_evidence", "respond", "decide", "request_info"],
)
def test_a_reserved_actor_may_not_act(actor: str, make: Any):
    assert actor in RESERVED_ACTORS
    run = submitted()
    command = make(actor)
    # Neither unsigned nor signed (with any key): the name is the system's own.
    run.refuse(command, rf"'{actor}' is reserved for the system's own acts", sign=False)
    run.refuse(keys.sign(command, run.request_id, run.state.version), rf"'{actor}' is reserved")


def test_a_reserved_actor_may_not_submit():
    run = Run(make_policy())
    run.refuse(Submit(actor="policy", request=make_request()), r"'policy' is reserved", sign=False)
    assert run.state.status is None


@pytest.mark.parametrize(
    "command",
    [
        AddEvidence(actor="mallory", records=evidence()),
        Withdraw(actor="mallory", reason="changed our mind"),
        Decide(gate=US_EXPORT, reviewer="mallory", approve=True),
    ],
    ids=lambda c: c.kind,
)
def test_an_unregistered_persons_act_is_refused_signed_or_not(command: HumanAct):
    run = submitted()
    message = r"'mallory' is not a person with a key in policy test-manual \[reviewers\]"
    run.refuse(command, message, sign=False)
    run.refuse(keys.sign(command, run.request_id, run.state.version), message)


def test_a_registered_person_without_a_key_may_not_act():
    policy = make_policy("manual", reviewers={"chen": {"gates": []}})
    run = Run(policy)
    run.send(Submit(request=make_request()))
    run.refuse(AddEvidence(actor="chen", records=evidence()), r"'chen' is not a person with a key")


# -- submission ---------------------------------------------------------------------------------------


def test_an_unregistered_submitter_is_accepted_unsigned():
    run = Run(make_policy())
    events = run.send(Submit(actor="walk-in", request=make_request()), sign=False)
    submitted_event = only(events, RequestSubmitted)
    assert submitted_event.route == DEFAULT_ROUTE
    assert {event.actor for event in events} == {"walk-in"}
    assert all(event.act is None for event in events)  # no signature: the name carries no authority
    assert run.state.submitted_by == "walk-in"
    assert run.state.gate == US_EXPORT


def test_a_signed_submission_by_someone_not_registered_is_refused():
    run = Run(make_policy())
    request = make_request()
    signed = keys.sign(Submit(actor="walk-in", request=request), request.request_id, 0)
    run.refuse(signed, r"'walk-in' signed the submission but is not in policy test-manual \[reviewers\]")
    assert run.state.status is None


def test_a_registered_submitters_unsigned_submission_is_refused():
    run = Run(make_policy())
    request = make_request()
    run.refuse(Submit(actor="chen", request=request), r"the act is not signed: chen signs it", sign=False)
    run.refuse(
        keys.sign(Submit(actor="chen", request=request), request.request_id, 0, by="wang"),
        r"signed with a key that is not chen's",
    )
    run.refuse(
        keys.sign(Submit(actor="chen", request=request), request.request_id, 1),
        r"the signature is for version 1 of " + request.request_id,
    )
    other = make_request()
    run.refuse(
        keys.sign(Submit(actor="chen", request=request), other.request_id, 0),
        r"chen's signature does not match this act",
    )
    run.send(Submit(actor="chen", request=request))
    assert run.state.submitted_by == "chen"


# -- the record of the act ----------------------------------------------------------------------------


def check_carried(events: list[Event], sent: PersonAct, stream: str) -> None:
    """Every event of `events` by the act's person carries the act as sent, signature and all, and an
    auditor holding only the event re-checks the signature."""
    assert sent.signature is not None
    mine = [event for event in events if event.actor == sent.person]
    assert mine
    for event in mine:
        assert event.act == sent.model_dump(mode="json")
        assert event.act["signature"]["key"] == keys.public(sent.person)
        signature = signature_of(event.act)
        assert signature == sent.signature
        assert act_verifies(stream, event.act, signature)
        assert signature.expected_version + 1 == events[0].version
        # Changed in the record, the act no longer verifies.
        assert not act_verifies(stream, {**event.act, "kind": "withdraw"}, signature)


def test_events_of_a_signed_decision_carry_the_act():
    run = submitted()
    sent = keys.sign(
        approval(units=20_000, conditions=["Quarterly audits"]), run.request_id, run.state.version
    )
    events = run.send(sent)
    assert types(events) == ["GateApproved", "GateOpened"]
    assert {event.actor for event in events} == {"alice"}
    check_carried(events, sent, run.request_id)
    assert TypeAdapter(HumanCommand).validate_python(events[0].act) == sent  # the act itself, whole


def test_a_policy_decision_inside_a_signed_act_carries_no_act():
    policy = make_policy("auto")
    run = Run(policy)
    run.send(Submit(request=make_request(domestic_procurement=[])))
    run.to(DOMESTIC_QUOTA)
    run.send(Evaluate(gate=DOMESTIC_QUOTA))
    sent = keys.sign(AddEvidence(records=evidence()), run.request_id, run.state.version)
    events = run.send(sent)
    assert types(events) == ["EvidenceAdded", "DomesticQuotaAssessed", "GateApproved", "LicenseIssued"]
    check_carried(events, sent, run.request_id)
    by_policy = [event for event in events if event.actor == "policy"]
    assert [event.type for event in by_policy] == ["GateApproved", "LicenseIssued"]
    assert all(event.act is None for event in by_policy)
    assert isinstance(by_policy[0].data, GateApproved)


def test_events_the_system_causes_carry_no_act():
    run = Run(make_policy("auto"))
    run.send(Submit(request=make_request()))
    events = run.send(Evaluate(gate=US_EXPORT))
    assert events and {event.actor for event in events} == {"policy"}
    assert all(event.act is None for event in events)


def test_events_of_a_signed_submission_carry_the_act():
    run = Run(make_policy())
    request = make_request()
    sent = keys.sign(Submit(actor="chen", request=request), request.request_id, 0)
    events = run.send(sent)
    check_carried(events, sent, request.request_id)


# -- what is signed -----------------------------------------------------------------------------------

SIGNED_ACTS: list[Command] = [
    Submit(actor="chen", request=make_request()),
    approval(units=12_345, reason="ok", conditions=["a", "b"]),
    RequestInfo(gate=US_EXPORT, reviewer="alice", question="Who?"),
    Respond(
        text="Us.",
        attachments=[Attachment(name="statement.pdf", size=3, sha256="ab" * 32)],
    ),
    AddEvidence(
        records=[
            ProcurementRecord.model_validate(
                {"vendor": "Huawei", "product": "Ascend 910C", "units": 5, "invoice": "HW-1", "order": "PO-9"}
            )
        ]
    ),
    Withdraw(reason="changed our mind"),
]


@pytest.mark.parametrize("command", SIGNED_ACTS, ids=lambda c: c.kind)
def test_a_signed_act_survives_the_wire(command: PersonAct):
    """What the client signs is what the worker checks once the act has travelled as JSON."""
    signed = keys.sign(command, "req-wire", 7)
    assert signed.signature is not None
    travelled = type(command).model_validate_json(signed.model_dump_json())
    assert travelled == signed
    assert act_verifies("req-wire", travelled.model_dump(mode="json"), signed.signature)


def test_the_signed_message_is_the_act_the_stream_and_the_version_behind_a_label():
    act = keys.sign(approval(), "req-1", 3)
    assert act.signature is not None
    body = act.model_dump(mode="json")
    message = act_message("req-1", 3, body)
    assert message.startswith(b"chipclear act v1\n{")
    assert b'"signature"' not in message  # the signature is over everything but itself
    assert message == act_message("req-1", 3, {k: v for k, v in body.items() if k != "signature"})
    assert verify(keys.public("alice"), message, act.signature.value)
    assert not verify(keys.public("alice"), act_message("req-1", 4, body), act.signature.value)
    assert not verify(keys.public("alice"), act_message("req-2", 3, body), act.signature.value)
    assert not verify(keys.public("wang"), message, act.signature.value)
