"""A fourth gate, defined here and nowhere else, runs through the real worker; and a policy that says
only its version and modes still screens, allocates from batches and keeps invoices unique.

The toy gate is a CAC cybersecurity review (the Cyberspace Administration of China reviews purchases
by operators of critical information infrastructure): buyers of the kinds the policy lists wait for a
CAC reviewer; everyone else passes by rule. Nothing in chipclear names it: the route is data.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from temporalio.client import Client

from chipclear import client as ops
from chipclear.domain.allocation import BatchSpec, OpenBatch
from chipclear.domain.commands import Decide
from chipclear.domain.events import EvidenceRejected, GateApproved, GateOpened, PartiesScreened
from chipclear.domain.gates.base import Context, GateRules, Payload, approval
from chipclear.domain.models import ImportRequest, PartyKind
from chipclear.domain.policy import Policy, ReviewSection
from chipclear.domain.registry import register, unregister
from chipclear.domain.state import GateSlice
from chipclear.projections import get_request
from chipclear.store.sqlite import SQLiteEventStore
from tests import keys
from tests.conftest import running_worker
from tests.factories import request_doc
from tests.workflows.support import submit_signed, wait_for

CAC = "cac-review"


class CacSection(ReviewSection):
    reviewed_kinds: frozenset[PartyKind] = frozenset({PartyKind.UNIVERSITY})
    condition: str = "Data of the installation stays in China (CAC review)"


class CacReview(GateRules[CacSection, GateSlice]):
    name = CAC
    section_model = CacSection

    def status(self, state: Any) -> str:
        return "cac_review"

    def statuses(self) -> tuple[str, ...]:
        return ("cac_review",)

    def on_enter(self, ctx: Context) -> list[Payload]:
        assert ctx.state.request is not None
        if ctx.state.request.buyer.kind not in self.section(ctx.policy).reviewed_kinds:
            return approval(ctx, self, ctx.state.units_in_play, by_policy=True, note="not a CII operator")
        return super().on_enter(ctx)

    def standing_conditions(self, policy: Policy) -> tuple[str, ...]:
        return (self.section(policy).condition,)


@pytest.fixture(autouse=True)
def cac_review() -> Iterator[None]:
    """The toy gate is known only while this module's tests run."""
    register(CacReview())
    yield
    unregister(CAC)


def _policy() -> Policy:
    return Policy.model_validate(
        {
            "version": "toy-cac",
            "route": ["us-export", CAC, "domestic-quota"],
            "us_export": {"mode": "auto"},
            "cac_review": {"mode": "manual", "decision_deadline": "P30D"},
            "domestic_quota": {"mode": "auto"},
            # alice is a person the policy knows, who may decide no gate of this route.
            "reviewers": {
                "chen": {"gates": [CAC], "key": keys.public("chen")},
                "alice": {"key": keys.public("alice")},
                "applicant": {"key": keys.public("applicant")},
            },
            "recorder": {"keys": [keys.public(keys.RECORDER)]},
        }
    )


async def test_a_gate_defined_in_a_test_runs_through_the_real_worker(
    client: Client, store: SQLiteEventStore
) -> None:
    policy = _policy()
    request = ImportRequest.model_validate(
        request_doc(buyer={"name": "Tsinghua Compute Centre", "country": "CN", "kind": "university"})
    )
    async with running_worker(client, store, policy) as worker:
        submission = await submit_signed(client, store, request, worker.task_queue)
        waiting = await wait_for(client, request.request_id, lambda s: s.gate == CAC)
        assert waiting.status == "cac_review"
        assert waiting.route == ("us-export", CAC, "domestic-quota")
        # Only a CAC reviewer may decide it.
        with pytest.raises(ops.Rejected, match="reviewer 'alice' may not decide gate cac-review"):
            await ops.update(client, request.request_id, Decide(gate=CAC, reviewer="alice", approve=True))
        result = await ops.update(client, request.request_id, Decide(gate=CAC, reviewer="chen", approve=True))
        assert result.events == ["GateApproved", "GateOpened"] and result.gate == "domestic-quota", result
        outcome = await submission.handle.result()
    assert outcome.licence_id == f"LIC-{request.request_id}"
    events = store.read_stream(request.request_id)
    opened = [e.data.gate for e in events if isinstance(e.data, GateOpened)]
    assert opened == ["us-export", CAC, "domestic-quota"]
    cac = [e for e in events if isinstance(e.data, GateApproved) and e.data.gate == CAC]
    assert [e.actor for e in cac] == ["chen"]
    state = get_request(store, request.request_id)
    assert state is not None and "Data of the installation stays in China (CAC review)" in state.conditions
    assert store.verify().ok


async def test_a_buyer_the_toy_gate_does_not_review_passes_it_by_rule(
    client: Client, store: SQLiteEventStore
) -> None:
    request = ImportRequest.model_validate(request_doc())
    async with running_worker(client, store, _policy()) as worker:
        submission = await submit_signed(client, store, request, worker.task_queue)
        outcome = await submission.handle.result()
    assert outcome.status == "licensed"
    cac = [
        (e.actor, e.data.rule, e.data.note)
        for e in store.read_stream(request.request_id)
        if isinstance(e.data, GateApproved) and e.data.gate == CAC
    ]
    assert cac == [("policy", "cac_review.mode = auto", "not a CII operator")]


async def test_a_policy_of_only_modes_and_people_screens_allocates_and_keeps_invoices_unique(
    client: Client, store: SQLiteEventStore
) -> None:
    policy = Policy.model_validate(
        {
            "version": "only-modes",
            "us_export": {"mode": "auto"},
            "cn_import": {"mode": "auto"},
            "domestic_quota": {"mode": "auto"},
            # Beyond the modes, only who signs: an import reviewer opens the batch, the applicant submits,
            # and the worker's recorder seals. Every safeguard is left to its default.
            "reviewers": {
                "wang": {"gates": ["cn-import"], "key": keys.public("wang")},
                "applicant": {"key": keys.public("applicant")},
            },
            "recorder": {"keys": [keys.public(keys.RECORDER)]},
        }
    )
    records = [{"vendor": "Huawei", "product": "Ascend 910C", "units": 2_000, "invoice": "HW-TOY-0001"}]
    listed = ImportRequest.model_validate(
        request_doc(
            buyer={"name": "Huawei Technologies Co., Ltd.", "country": "CN", "kind": "private"},
            domestic_procurement=[{**records[0], "invoice": "HW-TOY-0000"}],
        )
    )
    first = ImportRequest.model_validate(request_doc(units=1_000, domestic_procurement=records))
    reused = ImportRequest.model_validate(
        request_doc(
            units=1_000,
            buyer={"name": "Alibaba Cloud", "country": "CN", "kind": "private"},
            domestic_procurement=records,
        )
    )
    async with running_worker(client, store, policy) as worker:
        # Screening is on: a listed buyer is denied by the rules in auto mode.
        denied = await submit_signed(client, store, listed, worker.task_queue)
        assert (await denied.handle.result()).status == "denied"
        screened = [
            e.data for e in store.read_stream(listed.request_id) if isinstance(e.data, PartiesScreened)
        ]
        assert screened and screened[0].matches
        # Allocation batches are on: with no batch open, the request queues at cn-import.
        queued = await submit_signed(client, store, first, worker.task_queue)
        await wait_for(client, first.request_id, lambda s: s.status == "cn_import_queued")
        await ops.open_batch(
            client,
            worker.task_queue,
            OpenBatch(batch=BatchSpec(batch_id="B1", capacity=10_000, eligible="all"), actor="wang"),
        )
        assert (await queued.handle.result()).status == "licensed"
        # Invoices are unique: another buyer's request with the same invoice does not count it.
        second = await submit_signed(client, store, reused, worker.task_queue)
        state = await wait_for(client, reused.request_id, lambda s: s.version >= 2)
        await second.handle.terminate("test done")
    rejected = [e.data for e in store.read_stream(reused.request_id) if isinstance(e.data, EvidenceRejected)]
    assert rejected, state
    assert "registered to another buyer's request" in rejected[0].records[0].reason
