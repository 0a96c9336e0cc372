"""The import workflow against a real Temporal dev server and a real SQLite event store.

Saved histories and their replay live in test_replay.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowUpdateFailedError

from activities.events import AppendInput, EventActivities
from chipclear import client as ops
from chipclear.contracts import ACT_UPDATE, TransitionResult
from chipclear.domain.commands import AddEvidence, Decide, Withdraw
from chipclear.domain.gates import cn_import, domestic_quota, us_export
from chipclear.domain.models import ProcurementRecord, Status
from chipclear.domain.policy import DEFAULT_ROUTE
from chipclear.domain.state import RequestState
from chipclear.store.protocol import AppendResult
from chipclear.store.sqlite import SQLiteEventStore
from tests import keys
from tests.conftest import running_worker, worker_with
from tests.factories import make_policy, make_request
from tests.workflows.support import (
    assert_store_matches,
    at_gate,
    decision,
    settled_history_length,
    start,
    submit_signed,
    wait_for,
)

US, CN, DQ = us_export.NAME, cn_import.NAME, domestic_quota.NAME


def assessed(state: RequestState) -> bool:
    """The domestic quota has been assessed (the request stands at, or has passed, its last gate)."""
    return domestic_quota.GATE.slice(state).assessment is not None


async def test_manual_path_through_all_gates_by_updates(client: Client, store: SQLiteEventStore) -> None:
    request = make_request(units=90_000)
    async with running_worker(client, store, make_policy("manual")) as worker:
        handle = await start(client, store, worker, request)
        await wait_for(client, request.request_id, at_gate(US))
        us = await ops.update(
            client,
            request.request_id,
            decision(US, "alice", units=60_000, conditions=["KYC on the consignee"]),
        )
        assert us.status == "cn_import_review"
        assert us.events == ["GateApproved", "GateOpened"]
        cn = await ops.update(client, request.request_id, decision(CN, "wang"))
        assert cn.status == "domestic_quota_review"
        await wait_for(client, request.request_id, assessed)
        dq = await ops.update(client, request.request_id, decision(DQ, "wang"))
        assert dq.events == ["GateApproved", "LicenseIssued"]
        result = await handle.result()
    assert result.status == Status.LICENSED
    assert result.units_approved == 60_000
    assert result.licence_id == f"LIC-{request.request_id}"
    events = store.read_stream(request.request_id)
    assert [e.type for e in events] == [
        "RequestSubmitted",
        "EvidenceAdded",  # the request's own records, judged like evidence sent later
        "GateOpened",
        "GateApproved",
        "GateOpened",
        "GateApproved",
        "GateOpened",
        "DomesticQuotaAssessed",
        "GateApproved",
        "LicenseIssued",
    ]
    assert {e.actor for e in events if e.type == "GateApproved"} == {"alice", "wang"}
    assert all(e.policy_version == "test-manual" for e in events)
    assert events[-1].data.conditions == ["KYC on the consignee"]  # type: ignore[union-attr]
    assert_store_matches(store, request.request_id, result)


async def test_auto_path_records_every_gate(client: Client, store: SQLiteEventStore) -> None:
    request = make_request(
        units=100_000,
        domestic_procurement=[{"vendor": "Huawei", "product": "Ascend", "units": 80_000, "invoice": "A-1"}],
    )
    async with running_worker(client, store, make_policy("auto")) as worker:
        result = await (await start(client, store, worker, request)).result()
    assert result.status == Status.LICENSED
    assert result.units_approved == 75_000  # us_export.max_units_per_request
    types = [e.type for e in store.read_stream(request.request_id)]
    assert types.count("GateApproved") == 3 and types.count("GateOpened") == 3
    assert types[0] == "RequestSubmitted" and types[-1] == "LicenseIssued"
    assert_store_matches(store, request.request_id, result)


@pytest.mark.parametrize(
    ("overrides", "gate", "rule"),
    [
        (
            {"end_user": {"name": "PLA Unit 61398", "country": "CN", "kind": "military"}},
            US,
            "us_export.excluded_end_user_kinds",
        ),
        (
            {"buyer": {"name": "China Mobile", "country": "CN", "kind": "state_owned"}},
            CN,
            "cn_import.excluded_buyer_kinds",
        ),
        (
            {"data_center": {"name": "Zhongwei Hub", "province": "Ningxia", "state_funded": True}},
            DQ,
            "domestic_quota.deny_state_funded",
        ),
    ],
)
@pytest.mark.parametrize("mode", ["auto", "manual"])
async def test_denial_rules_apply_in_every_mode(
    client: Client,
    store: SQLiteEventStore,
    overrides: dict[str, Any],
    gate: str,
    rule: str,
    mode: str,
) -> None:
    request = make_request(**overrides)
    async with running_worker(client, store, make_policy(mode)) as worker:
        handle = await start(client, store, worker, request)
        # In manual mode earlier gates wait for reviewers; approve them so the rule's gate is reached.
        reviewers = {US: "alice", CN: "wang"}
        if mode == "manual":
            for earlier in DEFAULT_ROUTE[: DEFAULT_ROUTE.index(gate)]:
                await wait_for(client, request.request_id, at_gate(earlier))
                await ops.update(client, request.request_id, decision(earlier, reviewers[earlier]))
        result = await handle.result()
    assert result.status == Status.DENIED
    assert result.outcome_reason is not None and rule in result.outcome_reason
    [denied] = [e for e in store.read_stream(request.request_id) if e.type == "GateDenied"]
    assert denied.data.gate == gate  # type: ignore[union-attr]
    assert denied.actor == "policy"
    assert_store_matches(store, request.request_id, result)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (decision(CN, "wang"), "not at gate cn-import"),
        (decision(US, "wang"), "may not decide gate us-export"),
        (decision(US, "chen"), "may not decide gate us-export"),
        (decision(US, "alice", units=50_001), "exceeds the 50000 units"),
        (decision(US, "alice", approve=False), "needs a reason"),
        (
            AddEvidence(
                records=[
                    ProcurementRecord(vendor="Huawei", product="Ascend", units=1, invoice="HW-2026-0001")
                ]
            ),
            "already submitted",
        ),
    ],
)
async def test_validator_rejections_leave_history_and_store_untouched(
    client: Client, store: SQLiteEventStore, command: Decide | AddEvidence, message: str
) -> None:
    request = make_request(units=50_000)
    async with running_worker(client, store, make_policy("manual")) as worker:
        handle = await start(client, store, worker, request)
        await wait_for(client, request.request_id, at_gate(US))
        history_before = await settled_history_length(handle)
        stored_before = store.read_stream(request.request_id)
        with pytest.raises(ops.Rejected, match=message):
            await ops.update(client, request.request_id, command)
        history_after = (await handle.fetch_history()).events
        assert len(history_after) == history_before
        assert not any(
            e.HasField("workflow_execution_update_accepted_event_attributes") for e in history_after
        )
        assert store.read_stream(request.request_id) == stored_before
        await ops.update(client, request.request_id, Withdraw(reason="test over"))  # as a user ends it
        assert (await handle.result()).status == Status.WITHDRAWN


FORGERIES: dict[str, tuple[Callable[[Decide, str], Decide], str]] = {
    # name: (how the act is forged, what the refusal names)
    "another's key": (lambda act, rid: keys.sign(act, rid, 3, by="wang"), "not alice's"),
    "edited after signing": (
        lambda act, rid: keys.sign(act, rid, 3).model_copy(update={"units": 1_000}),
        "signature does not match this act",
    ),
    "an older version": (lambda act, rid: keys.sign(act, rid, 2), "the signature is for version 2"),
    "unsigned": (lambda act, rid: act, "the act is not signed"),
}


@pytest.mark.parametrize("forgery", FORGERIES, ids=list(FORGERIES))
async def test_a_forged_act_is_refused_before_history_and_the_worker_carries_on(
    client: Client, store: SQLiteEventStore, forgery: str
) -> None:
    """Sent straight to the Update, past the client: each forgery is refused by the validator, nothing
    is recorded, and the worker (whose sandbox sees a failed signature check) serves the next act."""
    forge, message = FORGERIES[forgery]
    request = make_request(units=50_000)
    async with running_worker(client, store, make_policy("manual")) as worker:
        handle = await start(client, store, worker, request)
        state = await wait_for(client, request.request_id, at_gate(US))
        assert state.version == 3  # RequestSubmitted, EvidenceAdded, GateOpened
        stored_before = store.read_stream(request.request_id)
        forged = forge(decision(US, "alice", units=50_000), request.request_id)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(ACT_UPDATE, forged, result_type=TransitionResult)
        assert message in str(refused.value.cause)
        assert store.read_stream(request.request_id) == stored_before
        approved = await ops.update(client, request.request_id, decision(US, "alice"))
        assert approved.gate == CN
        await ops.update(client, request.request_id, Withdraw(reason="test over"))
        assert (await handle.result()).status == Status.WITHDRAWN


async def test_final_request_refuses_every_update(client: Client, store: SQLiteEventStore) -> None:
    request = make_request()
    async with running_worker(client, store, make_policy("auto")) as worker:
        await (await start(client, store, worker, request)).result()
        stored = store.read_stream(request.request_id)
        with pytest.raises(ops.Rejected, match="already final"):
            await ops.update(client, request.request_id, Withdraw(reason="too late"))
    assert store.read_stream(request.request_id) == stored


async def test_duplicate_submit_returns_the_existing_run(client: Client, store: SQLiteEventStore) -> None:
    request = make_request()
    async with running_worker(client, store, make_policy("manual")) as worker:
        first = await start(client, store, worker, request)
        await wait_for(client, request.request_id, at_gate(US))
        again = await submit_signed(client, store, request, worker.task_queue)
        assert not again.created
        assert (await again.handle.describe()).run_id == (await first.describe()).run_id
        changed = request.model_copy(update={"units": request.units + 1})
        with pytest.raises(ops.Conflict, match="different content"):
            await submit_signed(client, store, changed, worker.task_queue)
        # Stored once: RequestSubmitted, EvidenceAdded (its own records), GateOpened.
        assert len(store.read_stream(request.request_id)) == 3
        await ops.update(client, request.request_id, Withdraw(reason="test over"))


async def test_deadline_expires_the_request(client: Client, store: SQLiteEventStore) -> None:
    policy = make_policy("manual", us_export={"decision_deadline": "PT2S"})
    request = make_request()
    async with running_worker(client, store, policy) as worker:
        result = await (await start(client, store, worker, request)).result()
    assert result.status == Status.EXPIRED
    expired = store.read_stream(request.request_id)[-1]
    assert expired.type == "RequestExpired"
    assert expired.actor == "deadline"
    assert expired.occurred_at >= expired.data.deadline  # type: ignore[union-attr]
    assert_store_matches(store, request.request_id, result)


async def test_withdrawal_ends_the_request_at_its_gate(client: Client, store: SQLiteEventStore) -> None:
    request = make_request()
    async with running_worker(client, store, make_policy("manual")) as worker:
        handle = await start(client, store, worker, request)
        await wait_for(client, request.request_id, at_gate(US))
        await ops.update(client, request.request_id, decision(US, "alice"))
        withdrawn = await ops.update(client, request.request_id, Withdraw(reason="order cancelled"))
        assert withdrawn.status == Status.WITHDRAWN
        result = await handle.result()
    assert result.outcome_reason == "order cancelled"
    *_, last, unused = store.read_stream(request.request_id)
    assert last.type == "RequestWithdrawn" and last.data.gate == CN  # type: ignore[union-attr]
    # The US approval goes unused: recorded once, with the units it approved.
    assert unused.type == "ExportApprovalReleased" and unused.data.units == 50_000  # type: ignore[union-attr]
    assert_store_matches(store, request.request_id, result)


async def test_shortfall_waits_for_evidence_then_licenses(client: Client, store: SQLiteEventStore) -> None:
    request = make_request(
        units=40_000,
        domestic_procurement=[
            {"vendor": "Huawei", "product": "Ascend 910B", "units": 10_000, "invoice": "JD-1"}
        ],
    )
    async with running_worker(client, store, make_policy("auto")) as worker:
        handle = await start(client, store, worker, request)
        held = await wait_for(client, request.request_id, assessed)
        assert held.status == "domestic_quota_review"
        assert (found := domestic_quota.GATE.slice(held).assessment) is not None and found.shortfall == 30_000
        more = ProcurementRecord(vendor="Huawei", product="Ascend 910C", units=30_000, invoice="JD-2")
        done = await ops.update(client, request.request_id, AddEvidence(records=[more]))
        assert done.events == ["EvidenceAdded", "DomesticQuotaAssessed", "GateApproved", "LicenseIssued"]
        result = await handle.result()
    assert result.status == Status.LICENSED
    assert_store_matches(store, request.request_id, result)


async def test_manual_domestic_quota_approval_needs_the_ratio(
    client: Client, store: SQLiteEventStore
) -> None:
    request = make_request(
        units=20_000,
        domestic_procurement=[{"vendor": "Hygon", "product": "DCU", "units": 5_000, "invoice": "HY-1"}],
    )
    async with running_worker(client, store, make_policy("manual")) as worker:
        handle = await start(client, store, worker, request)
        await wait_for(client, request.request_id, at_gate(US))
        await ops.update(client, request.request_id, decision(US, "alice"))
        await ops.update(client, request.request_id, decision(CN, "wang"))
        with pytest.raises(ops.Rejected, match="short by 15000"):
            await ops.update(client, request.request_id, decision(DQ, "wang"))
        denied = await ops.update(
            client,
            request.request_id,
            decision(DQ, "wang", approve=False, reason="not enough domestic chips"),
        )
        assert denied.status == Status.DENIED
        await handle.result()


async def test_concurrent_decisions_one_wins(client: Client, store: SQLiteEventStore) -> None:
    request = make_request()
    async with running_worker(client, store, make_policy("manual")) as worker:
        handle = await start(client, store, worker, request)
        await wait_for(client, request.request_id, at_gate(US))
        outcomes = await asyncio.gather(
            ops.update(client, request.request_id, decision(US, "alice", units=10_000)),
            ops.update(client, request.request_id, decision(US, "alice", units=20_000)),
            return_exceptions=True,
        )
        wins = [o for o in outcomes if not isinstance(o, BaseException)]
        losses = [o for o in outcomes if isinstance(o, ops.Rejected)]
        assert len(wins) == 1 and len(losses) == 1, outcomes
        approvals = [e for e in store.read_stream(request.request_id) if e.type == "GateApproved"]
        assert len(approvals) == 1
        await ops.update(client, request.request_id, Withdraw(reason="test over"))  # as a user ends it
        assert (await handle.result()).status == Status.WITHDRAWN


class FlakyAppend:
    """The real append, but the first attempt of each batch fails *after* the write succeeded."""

    def __init__(self, store: SQLiteEventStore) -> None:
        self.real = EventActivities(store, make_policy("auto"))
        self.attempts: list[int] = []

    @activity.defn(name="append_events")
    def append_events(self, input: AppendInput) -> AppendResult:
        result = self.real.append_events(input)
        self.attempts.append(activity.info().attempt)
        if activity.info().attempt == 1:
            raise RuntimeError("connection lost after commit")
        return result


async def test_retried_append_after_a_successful_write_stores_nothing_twice(
    client: Client, store: SQLiteEventStore
) -> None:
    flaky = FlakyAppend(store)
    request = make_request()
    async with worker_with(client, flaky.append_events, flaky.real.current_policy) as worker:
        result = await (await start(client, store, worker, request)).result()
    assert result.status == Status.LICENSED
    assert 1 in flaky.attempts and 2 in flaky.attempts
    events = store.read_stream(request.request_id)
    assert len({e.event_id for e in events}) == len(events) == result.version
    assert_store_matches(store, request.request_id, result)


async def test_query_is_answered_while_waiting(client: Client, store: SQLiteEventStore) -> None:
    request = make_request()
    async with running_worker(client, store, make_policy("manual")) as worker:
        handle = await start(client, store, worker, request)
        state = await wait_for(client, request.request_id, at_gate(US))
        assert state.deadline is not None
        assert state.deadline - state.gates[US].opened_at == timedelta(days=90)
        await ops.update(client, request.request_id, Withdraw(reason="test over"))  # as a user ends it
        assert (await handle.result()).status == Status.WITHDRAWN
