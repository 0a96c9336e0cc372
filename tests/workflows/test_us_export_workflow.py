"""The US export gate in depth, against a real dev server and a real SQLite event store.

Restricted-party screening holds (and auto-denies), the per-buyer cap under a burst of concurrent
approvals and its compensation on withdrawal, the review SLA, information requests and their deadline,
and replay of the histories these paths leave behind. Requests are driven as users drive them; open
ones are cleaned up by withdrawal, never by terminating a workflow.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Replayer

from activities.events import AppendInput, EventActivities
from chipclear import client as ops
from chipclear.contracts import TransitionResult, deployment
from chipclear.domain.buyer_cap import RULE as BUYER_CAP_RULE
from chipclear.domain.commands import RequestInfo, Respond, Withdraw
from chipclear.domain.events import (
    EventData,
    ExportApprovalReleased,
    GateApproved,
    GateDenied,
    GateOpened,
    InformationProvided,
    InformationRequested,
    PartiesScreened,
    RequestExpired,
    ReviewEscalated,
    StoredEvent,
)
from chipclear.domain.gates import us_export
from chipclear.domain.models import Attachment, Status
from chipclear.domain.policy import Policy
from chipclear.domain.screening import ScreenedParty
from chipclear.domain.state import RequestState
from chipclear.projections import list_requests
from chipclear.store.protocol import AppendResult
from chipclear.store.reconcile import reconcile
from chipclear.store.sqlite import SQLiteEventStore
from chipclear.temporal import DATA_CONVERTER
from tests.conftest import running_worker, worker_with
from tests.factories import make_policy, make_request
from tests.workflows.support import (
    Handle,
    at_gate,
    decision,
    settled_history_length,
    start,
    wait_for,
)
from workflows.import_request import ImportRequestWorkflow

E = TypeVar("E", bound=EventData)

HUAWEI = "Huawei Technologies Co Ltd"  # as an applicant might write it: no comma, no full stops
HUAWEI_LISTED = "Huawei Technologies Co., Ltd."  # as the bundled sample list writes it
DAWNING = "Dawning Information Industry Co., Ltd."  # an alternative name of the sample's "Sugon"
DEFAULT_CONDITIONS = ("No re-export without a further US licence",)
HOLD_REASON = "Subsidiary ruled out: the buyer is a separate reseller (BIS advisory opinion 2026-014)"


# -- helpers -------------------------------------------------------------------------------------
def party(name: str) -> dict[str, str]:
    return {"name": name, "country": "CN", "kind": "private"}


def export_policy(mode: str = "manual", **settings: Any) -> Policy:
    """A test policy with restricted-party screening on; other us-export settings as given."""
    return make_policy(mode, us_export={"screening": True, **settings})


def payloads(store: SQLiteEventStore, request_id: str, kind: type[E]) -> list[E]:
    return [event.data for event in store.read_stream(request_id) if isinstance(event.data, kind)]


def stored_of(store: SQLiteEventStore, request_id: str, type_: str) -> list[StoredEvent]:
    return [event for event in store.read_stream(request_id) if event.type == type_]


def export_approvals(store: SQLiteEventStore, request_id: str) -> list[GateApproved]:
    return [a for a in payloads(store, request_id, GateApproved) if a.gate == "us-export"]


async def stored_eventually(
    store: SQLiteEventStore,
    request_id: str,
    predicate: Callable[[list[StoredEvent]], bool],
    within: float = 20.0,
) -> list[StoredEvent]:
    """Poll the event store (what `chipclear status` reads) until `predicate` holds for the stream."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        events = store.read_stream(request_id)
        if predicate(events):
            return events
        if loop.time() > deadline:
            raise AssertionError(f"{request_id}: never stored, last types {[e.type for e in events]}")
        await asyncio.sleep(0.05)


def screening_of(state: RequestState) -> PartiesScreened | None:
    return us_export.GATE.slice(state).screening


def screened_at_export(state: RequestState) -> bool:
    return state.gate == "us-export" and screening_of(state) is not None


async def replay(handle: Handle) -> None:
    """The history a path left behind replays on today's code: the workflow is deterministic."""
    history = await handle.fetch_history()
    replayer = Replayer(workflows=[ImportRequestWorkflow], data_converter=DATA_CONVERTER)
    await replayer.replay_workflow(history)


async def withdraw_all(client: Client, request_ids: Sequence[str]) -> None:
    await asyncio.gather(*(ops.update(client, rid, Withdraw(reason="test over")) for rid in request_ids))


# -- 1. restricted-party screening --------------------------------------------------------------
async def test_listed_buyer_is_held_until_an_officer_approves_with_a_written_reason(
    client: Client, store: SQLiteEventStore
) -> None:
    policy = export_policy(default_conditions=list(DEFAULT_CONDITIONS))
    request = make_request(buyer=party(HUAWEI), units=20_000)
    rid = request.request_id
    async with running_worker(client, store, policy) as worker:
        handle = await start(client, store, worker, request)
        held = await wait_for(client, rid, us_export.on_hold)
        assert held.status == "us_export_review"
        assert "held" in held.flags
        screening = screening_of(held)
        assert screening is not None
        [match] = screening.matches
        assert (match.role, match.party_name, match.entry_name) == ("buyer", HUAWEI, HUAWEI_LISTED)
        assert rid in [row.request_id for row in list_requests(store, flags=["held"])]

        # Without a written reason the hold cannot be lifted; the refusal leaves no trace anywhere.
        history_before = await settled_history_length(handle)
        stored_before = store.read_stream(rid)
        for reason in (None, "   "):
            with pytest.raises(ops.Rejected, match=r"held by restricted-party screening.*written reason"):
                await ops.update(client, rid, decision("us-export", "alice", reason=reason))
        history_after = (await handle.fetch_history()).events
        assert len(history_after) == history_before
        assert not any(
            e.HasField("workflow_execution_update_accepted_event_attributes") for e in history_after
        )
        assert store.read_stream(rid) == stored_before

        approved = await ops.update(
            client,
            rid,
            decision("us-export", "alice", reason=HOLD_REASON, conditions=["Quarterly usage reports"]),
        )
        assert approved.status == "cn_import_review"
        assert approved.events == ["GateApproved", "GateOpened"]
        released = await wait_for(client, rid, at_gate("cn-import"))
        assert not us_export.on_hold(released) and "held" not in released.flags
        assert rid not in [row.request_id for row in list_requests(store, flags=["held"])]
        await ops.update(client, rid, Withdraw(reason="test over"))
        assert (await handle.result()).status == Status.WITHDRAWN

    events = store.read_stream(rid)
    assert [e.type for e in events] == [
        "RequestSubmitted",
        "EvidenceAdded",  # the request's own procurement records, judged at submission
        "GateOpened",
        "PartiesScreened",
        "GateApproved",
        "GateOpened",
        "RequestWithdrawn",
        # No per-buyer cap in this policy, so no units to give back; the approval is recorded unused.
        "ExportApprovalReleased",
    ]
    opened, screened, export, cn_opened = events[2].data, events[3].data, events[4].data, events[5].data
    assert isinstance(opened, GateOpened) and opened.gate == "us-export"
    assert isinstance(screened, PartiesScreened) and events[3].actor == "policy"
    assert screened.list_version.startswith("sample-")
    assert screened.threshold == us_export.GATE.section(policy).screening_threshold
    assert screened.parties == [ScreenedParty(role="buyer", name=HUAWEI)]
    [hit] = screened.matches
    assert hit.entry_name == HUAWEI_LISTED and hit.party_name == HUAWEI
    assert "Entity List" in hit.source
    assert hit.score >= screened.threshold
    assert isinstance(export, GateApproved) and events[4].actor == "alice"
    assert export.gate == "us-export" and export.units_approved == 20_000 and export.rule is None
    assert export.note == HOLD_REASON
    assert export.conditions == [*DEFAULT_CONDITIONS, "Quarterly usage reports"]
    assert isinstance(cn_opened, GateOpened) and cn_opened.gate == "cn-import"
    assert store.verify().ok
    await replay(handle)


async def test_listed_consignee_holds_the_request(client: Client, store: SQLiteEventStore) -> None:
    request = make_request(consignees=[party(DAWNING)])
    rid = request.request_id
    async with running_worker(client, store, export_policy()) as worker:
        handle = await start(client, store, worker, request)
        held = await wait_for(client, rid, us_export.on_hold)
        screening = screening_of(held)
        assert screening is not None
        assert screening.parties == [
            ScreenedParty(role="buyer", name="ByteDance Ltd."),
            ScreenedParty(role="consignee", name=DAWNING),
        ]
        [match] = screening.matches  # the buyer itself is clean
        assert (match.role, match.party_name, match.entry_name) == ("consignee", DAWNING, "Sugon")
        assert match.matched_name == "Dawning Information Industry Co."
        with pytest.raises(ops.Rejected, match=r"matches: Sugon\); an approval needs a written reason"):
            await ops.update(client, rid, decision("us-export", "alice"))
        await ops.update(client, rid, Withdraw(reason="test over"))
        assert (await handle.result()).status == Status.WITHDRAWN


async def test_auto_mode_denies_a_listed_buyer_and_passes_a_clean_one(
    client: Client, store: SQLiteEventStore
) -> None:
    listed = make_request(buyer=party(HUAWEI))
    clean = make_request(buyer=party("Kuaishou Technology"), units=30_000)
    async with running_worker(client, store, export_policy("auto")) as worker:
        denied, licensed = await asyncio.gather(
            (await start(client, store, worker, listed)).result(),
            (await start(client, store, worker, clean)).result(),
        )

    assert denied.status == Status.DENIED
    assert denied.outcome_reason is not None and "us_export.screening" in denied.outcome_reason
    events = store.read_stream(listed.request_id)
    assert [e.type for e in events] == [
        "RequestSubmitted",
        "EvidenceAdded",
        "GateOpened",
        "PartiesScreened",
        "GateDenied",
    ]
    refusal = events[-1]
    assert isinstance(refusal.data, GateDenied) and refusal.actor == "policy"
    assert refusal.data.gate == "us-export" and refusal.data.rule == "us_export.screening"
    assert HUAWEI_LISTED in refusal.data.reason
    [screened] = payloads(store, listed.request_id, PartiesScreened)
    assert [m.entry_name for m in screened.matches] == [HUAWEI_LISTED]

    assert licensed.status == Status.LICENSED and licensed.units_approved == 30_000
    [screened] = payloads(store, clean.request_id, PartiesScreened)
    assert screened.matches == [] and screened.list_version.startswith("sample-")
    [export] = export_approvals(store, clean.request_id)
    assert export.rule == "us_export.mode = auto" and export.units_approved == 30_000
    assert store.verify().ok


# -- 2. the per-buyer cap under concurrency -----------------------------------------------------
async def test_concurrent_manual_approvals_never_exceed_the_buyer_cap_and_withdrawal_gives_back(
    client: Client, store: SQLiteEventStore
) -> None:
    buyer = "Kuaishou Technology Co., Ltd."
    policy = export_policy(max_units_per_buyer=10_000)
    requests = [make_request(buyer=party(buyer), units=1_000) for _ in range(20)]
    ids = [r.request_id for r in requests]
    async with running_worker(client, store, policy) as worker:
        handles = dict(
            zip(ids, await asyncio.gather(*(start(client, store, worker, r) for r in requests)), strict=True)
        )
        await asyncio.gather(*(wait_for(client, rid, screened_at_export) for rid in ids))

        outcomes = await asyncio.gather(
            *(ops.update(client, rid, decision("us-export", "alice")) for rid in ids),
            return_exceptions=True,
        )
        approved = [rid for rid, o in zip(ids, outcomes, strict=True) if isinstance(o, TransitionResult)]
        refused = {rid: o for rid, o in zip(ids, outcomes, strict=True) if isinstance(o, BaseException)}
        assert len(approved) == 10 and len(refused) == 10, outcomes
        assert all(isinstance(o, ops.Rejected) for o in refused.values()), refused
        for failure in refused.values():
            # The cap owner's own words reach the reviewer: the headroom, the rule, no error type.
            message = str(failure)
            assert "remaining headroom of 0" in message and BUYER_CAP_RULE in message, message
            assert "DomainError" not in message and "LedgerRefused" not in message, message
        assert all(o.status == "cn_import_review" for o in outcomes if isinstance(o, TransitionResult))

        # The store agrees: exactly the cap approved, each claim saw the ones before it.
        approvals = {rid: export_approvals(store, rid) for rid in ids}
        assert sum(a.units_approved for found in approvals.values() for a in found) == 10_000
        assert all(len(approvals[rid]) == 1 for rid in approved)
        assert all(approvals[rid] == [] for rid in refused)
        claims = [a.buyer_claim for rid in approved for a in approvals[rid]]
        assert all(c is not None and c.units == 1_000 and c.cap == 10_000 for c in claims)
        assert sorted(c.approved_before for c in claims if c is not None) == list(range(0, 10_000, 1_000))
        cap = store.buyer_cap(buyer, deployment(worker.task_queue))
        assert sum(cap.claims.values()) == 10_000 and set(cap.claims) == set(approved)

        # A withdrawal hands the approval's units back to the buyer's headroom.
        donor = approved[0]
        await ops.update(client, donor, Withdraw(reason="order cancelled"))
        await stored_eventually(store, donor, lambda es: es[-1].type == "ExportApprovalReleased")
        assert (await handles[donor].result()).status == Status.WITHDRAWN
        [given] = payloads(store, donor, ExportApprovalReleased)
        assert given.units == 1_000 and "withdrawn" in given.reason
        # The buyer's cap however its name is written, in this deployment's caps.
        cap = store.buyer_cap(buyer.upper(), deployment(worker.task_queue))
        assert sum(cap.claims.values()) == 9_000 and donor not in cap.claims
        assert cap.released == {donor: 1_000}

        # ...so one previously refused request now fits, and the cap is full again after it.
        late, *still_refused = refused
        again = await ops.update(client, late, decision("us-export", "alice"))
        assert again.status == "cn_import_review"
        [late_approval] = export_approvals(store, late)
        assert late_approval.buyer_claim is not None
        assert late_approval.buyer_claim.approved_before == 9_000
        with pytest.raises(ops.Rejected, match="headroom of 0"):
            await ops.update(client, still_refused[0], decision("us-export", "alice"))
        assert sum(store.buyer_cap(buyer, deployment(worker.task_queue)).claims.values()) == 10_000

        # Clean up as users would; every approval still held is released, refusals release nothing.
        still_open = [rid for rid in ids if rid != donor]
        await withdraw_all(client, still_open)
        results = await asyncio.gather(*(handles[rid].result() for rid in still_open))
        assert {r.status for r in results} == {Status.WITHDRAWN}
        assert store.buyer_cap(buyer, deployment(worker.task_queue)).claims == {}

    holders = {donor, late, *approved}
    for rid in ids:
        releases = payloads(store, rid, ExportApprovalReleased)
        assert [r.units for r in releases] == ([1_000] if rid in holders else []), rid
    assert store.verify().ok and reconcile(store, unique_invoices=False) == []
    assert store.buyer_cap(buyer).claims == {}  # the production deployment's cap: untouched
    await replay(handles[donor])
    await replay(handles[late])


async def test_auto_mode_grants_what_headroom_is_left_then_denies(
    client: Client, store: SQLiteEventStore
) -> None:
    buyer = "Zhipu AI"
    policy = export_policy("auto", max_units_per_buyer=10_000)
    requests = [make_request(buyer=party(buyer), units=4_000) for _ in range(5)]
    ids = [r.request_id for r in requests]
    async with running_worker(client, store, policy) as worker:
        handles = await asyncio.gather(*(start(client, store, worker, r) for r in requests))
        results = await asyncio.gather(*(h.result() for h in handles))
        cap = store.buyer_cap(buyer, deployment(worker.task_queue))

    export = {rid: export_approvals(store, rid) for rid in ids}
    assert sorted(a.units_approved for found in export.values() for a in found) == [2_000, 4_000, 4_000]
    partial = next(a for found in export.values() for a in found if a.units_approved == 2_000)
    assert partial.note is not None and "remaining headroom" in partial.note
    assert partial.buyer_claim is not None and partial.buyer_claim.approved_before == 8_000
    licensed = [r for r in results if r.status == Status.LICENSED]
    assert sorted(r.units_approved or 0 for r in licensed) == [2_000, 4_000, 4_000]
    denied = [r for r in results if r.status == Status.DENIED]
    assert len(denied) == 2
    for result in denied:
        [refusal] = payloads(store, result.request_id, GateDenied)
        assert refusal.gate == "us-export" and refusal.rule == BUYER_CAP_RULE
        assert "no headroom left" in refusal.reason
        assert payloads(store, result.request_id, ExportApprovalReleased) == []
    assert sum(cap.claims.values()) == 10_000
    assert set(cap.claims) == {r.request_id for r in licensed}


# -- 3. review SLA and the decision deadline ----------------------------------------------------
async def test_review_sla_escalates_then_the_deadline_expires(
    client: Client, store: SQLiteEventStore
) -> None:
    policy = export_policy(review_sla="PT2S", decision_deadline="PT6S")
    request = make_request()
    rid = request.request_id
    async with running_worker(client, store, policy) as worker:
        handle = await start(client, store, worker, request)
        state = await wait_for(client, rid, lambda s: s.escalated)
        assert state.status == "us_export_review" and "escalated" in state.flags
        await stored_eventually(store, rid, lambda es: any(e.type == "ReviewEscalated" for e in es))
        assert rid in [row.request_id for row in list_requests(store, flags=["escalated"])]
        [row] = [row for row in list_requests(store, flags=["escalated"]) if row.request_id == rid]
        assert row.flags == ["escalated"] and row.status == "us_export_review"
        result = await handle.result()

    assert result.status == Status.EXPIRED
    assert result.outcome_reason is not None and "no decision at us-export" in result.outcome_reason
    events = store.read_stream(rid)
    assert [e.type for e in events] == [
        "RequestSubmitted",
        "EvidenceAdded",  # the request's own procurement records, judged at submission
        "GateOpened",
        "PartiesScreened",
        "ReviewEscalated",
        "RequestExpired",
    ]
    opened, escalated, expired = events[2], events[4], events[5]
    assert isinstance(opened.data, GateOpened) and opened.data.review_due is not None
    assert opened.data.review_due == opened.occurred_at + timedelta(seconds=2)
    assert opened.data.deadline == opened.occurred_at + timedelta(seconds=6)
    assert isinstance(escalated.data, ReviewEscalated) and escalated.actor == "deadline"
    assert escalated.data.due == opened.data.review_due
    assert escalated.occurred_at >= escalated.data.due
    assert isinstance(expired.data, RequestExpired) and expired.actor == "deadline"
    assert expired.data.cause is None and expired.data.deadline == opened.data.deadline
    assert expired.occurred_at >= expired.data.deadline
    # A final request needs nobody's attention any more.
    assert rid not in [row.request_id for row in list_requests(store, flags=["escalated"])]
    assert store.verify().ok
    await replay(handle)


# -- 4. information requests --------------------------------------------------------------------
async def test_information_request_pauses_approval_until_the_applicant_answers(
    client: Client, store: SQLiteEventStore
) -> None:
    request = make_request()
    rid = request.request_id
    question = "Who operates the Wuhu cluster day to day?"
    letter = Attachment(
        name="operator-letter.pdf", size=48_213, sha256=hashlib.sha256(b"operator letter").hexdigest()
    )
    async with running_worker(client, store, export_policy()) as worker:
        handle = await start(client, store, worker, request)
        await wait_for(client, rid, screened_at_export)
        with pytest.raises(ops.Rejected, match="may not decide gate us-export"):
            await ops.update(client, rid, RequestInfo(gate="us-export", reviewer="wang", question="?"))
        with pytest.raises(ops.Rejected, match="nobody has asked"):
            await ops.update(client, rid, Respond(text="unprompted"))
        asked = await ops.update(
            client, rid, RequestInfo(gate="us-export", reviewer="alice", question=question)
        )
        assert asked.events == ["InformationRequested"] and asked.status == "us_export_review"
        waiting = await wait_for(client, rid, lambda s: s.open_question is not None)
        open_question = waiting.open_question
        assert open_question is not None
        assert (open_question.question, open_question.asked_by) == (question, "alice")
        assert (
            open_question.due - open_question.asked_at
            == us_export.GATE.section(export_policy()).info_deadline
        )
        assert "awaiting-applicant" in waiting.flags
        assert rid in [row.request_id for row in list_requests(store, flags=["awaiting-applicant"])]

        stored_before = store.read_stream(rid)
        with pytest.raises(ops.Rejected, match="waiting for the applicant's answer"):
            await ops.update(client, rid, decision("us-export", "alice"))
        with pytest.raises(ops.Rejected, match="has not answered the last question"):
            await ops.update(client, rid, RequestInfo(gate="us-export", reviewer="alice", question="More?"))
        assert store.read_stream(rid) == stored_before

        answered = await ops.update(
            client,
            rid,
            Respond(text="Wuhu Cloud Operations Ltd., a ByteDance subsidiary", attachments=[letter]),
        )
        assert answered.events == ["InformationProvided"]
        state = await wait_for(client, rid, lambda s: s.open_question is None)
        assert "awaiting-applicant" not in state.flags
        [exchange] = state.correspondence
        assert exchange.answer == "Wuhu Cloud Operations Ltd., a ByteDance subsidiary"
        assert exchange.attachments == [letter] and exchange.answered_by == "applicant"
        assert rid not in [row.request_id for row in list_requests(store, flags=["awaiting-applicant"])]

        approved = await ops.update(client, rid, decision("us-export", "alice"))
        assert approved.status == "cn_import_review"
        await ops.update(client, rid, Withdraw(reason="test over"))
        assert (await handle.result()).status == Status.WITHDRAWN

    events = store.read_stream(rid)
    assert [e.type for e in events] == [
        "RequestSubmitted",
        "EvidenceAdded",  # the request's own procurement records, judged at submission
        "GateOpened",
        "PartiesScreened",
        "InformationRequested",
        "InformationProvided",
        "GateApproved",
        "GateOpened",
        "RequestWithdrawn",
        "ExportApprovalReleased",
    ]
    requested, provided = events[4], events[5]
    assert isinstance(requested.data, InformationRequested) and requested.actor == "alice"
    assert requested.data.question == question and requested.data.gate == "us-export"
    assert isinstance(provided.data, InformationProvided) and provided.actor == "applicant"
    assert provided.data.gate == "us-export" and provided.data.attachments == [letter]
    assert store.verify().ok
    await replay(handle)


async def test_unanswered_information_request_expires_the_request(
    client: Client, store: SQLiteEventStore
) -> None:
    request = make_request()
    rid = request.request_id
    async with running_worker(client, store, export_policy(info_deadline="PT2S")) as worker:
        handle = await start(client, store, worker, request)
        await wait_for(client, rid, screened_at_export)
        await ops.update(
            client, rid, RequestInfo(gate="us-export", reviewer="alice", question="End-user statement?")
        )
        result = await handle.result()

    assert result.status == Status.EXPIRED
    assert result.outcome_reason is not None and "returned without action" in result.outcome_reason
    [asked] = stored_of(store, rid, "InformationRequested")
    [expired] = stored_of(store, rid, "RequestExpired")
    assert store.read_stream(rid)[-1] == expired
    assert isinstance(asked.data, InformationRequested) and isinstance(expired.data, RequestExpired)
    assert asked.data.due == asked.occurred_at + timedelta(seconds=2)
    assert expired.data.cause == "information_request" and expired.actor == "deadline"
    assert expired.data.deadline == asked.data.due
    assert expired.occurred_at >= expired.data.deadline
    assert store.verify().ok
    await replay(handle)


async def test_review_clock_stops_while_the_applicant_answers(
    client: Client, store: SQLiteEventStore
) -> None:
    request = make_request()
    rid = request.request_id
    async with running_worker(client, store, export_policy(review_sla="PT6S")) as worker:
        handle = await start(client, store, worker, request)
        await wait_for(client, rid, screened_at_export)
        [opened] = [e for e in payloads(store, rid, GateOpened) if e.gate == "us-export"]
        assert opened.review_due is not None
        await ops.update(client, rid, RequestInfo(gate="us-export", reviewer="alice", question="Why?"))
        [asked] = stored_of(store, rid, "InformationRequested")
        assert asked.occurred_at < opened.review_due, "asked only after the review SLA had passed"
        # The applicant takes a while to answer, until past the review's original due: that is the point
        # of the test (a clock that kept running would escalate while the question is open).
        await asyncio.sleep((opened.review_due - asked.occurred_at).total_seconds() + 1.0)
        await ops.update(client, rid, Respond(text="Because."))
        escalated_state = await wait_for(client, rid, lambda s: s.escalated)
        assert "escalated" in escalated_state.flags
        await stored_eventually(store, rid, lambda es: es[-1].type == "ReviewEscalated")
        await ops.update(client, rid, Withdraw(reason="test over"))
        await handle.result()

    assert stored_of(store, rid, "InformationRequested") == [asked]
    [answered] = stored_of(store, rid, "InformationProvided")
    [escalation] = stored_of(store, rid, "ReviewEscalated")
    assert isinstance(escalation.data, ReviewEscalated)
    waited = answered.occurred_at - asked.occurred_at
    assert answered.occurred_at > opened.review_due  # the original due passed while the question was open
    # The SLA moved by exactly the time the question was open, and only then did it escalate.
    assert escalation.data.due == opened.review_due + waited
    assert escalation.data.due > opened.review_due
    assert escalation.occurred_at >= escalation.data.due
    assert escalation.occurred_at > answered.occurred_at
    await replay(handle)


# -- what a query shows while an append is in flight --------------------------------------------
class HeldAppend:
    """The real append, except that a batch holding `event_type` waits until the test lets it go."""

    def __init__(self, store: SQLiteEventStore, policy: Policy, event_type: str) -> None:
        self.real = EventActivities(store, policy)
        self.event_type = event_type
        self.reached = threading.Event()
        self.release = threading.Event()

    @activity.defn(name="append_events")
    def append_events(self, input: AppendInput) -> AppendResult:
        if any(event.type == self.event_type for event in input.events):
            self.reached.set()
            if not self.release.wait(timeout=30):
                raise RuntimeError("the test never released the held append")
        return self.real.append_events(input)


async def until_set(flag: threading.Event, within: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not flag.is_set():
        if loop.time() > deadline:
            raise AssertionError("the held append was never reached")
        await asyncio.sleep(0.05)


async def test_live_state_shows_only_what_the_event_store_holds(
    client: Client, store: SQLiteEventStore
) -> None:
    """`_flush` promises that nothing outside the workflow learns of a pending event before it is
    stored; `chipclear status` reads the live state first, so it must never run ahead of the store."""
    policy = make_policy("manual", us_export={"review_sla": "PT1S"})
    held = HeldAppend(store, policy, "ReviewEscalated")
    request = make_request()
    rid = request.request_id
    async with worker_with(client, held.append_events, held.real.current_policy) as worker:
        handle = await start(client, store, worker, request)
        try:
            await until_set(held.reached)  # the escalation is decided; its append is in flight
            stored_then = [e.type for e in store.read_stream(rid)]
            live_then = await ops.live_state(client, rid)
        finally:
            held.release.set()
        await stored_eventually(store, rid, lambda es: es[-1].type == "ReviewEscalated")
        await ops.update(client, rid, Withdraw(reason="test over"))  # as a user ends it
        assert (await handle.result()).status == Status.WITHDRAWN

    assert "ReviewEscalated" not in stored_then and live_then is not None
    # The query answers from the last stored state: (2, False), not the pending (3, True).
    seen = (live_then.version, live_then.escalated)
    assert seen == (len(stored_then), False), f"live (version, escalated) {seen}, stored {stored_then}"
