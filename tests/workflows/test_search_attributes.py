"""Search attributes: upserted at every transition that changes one, so visibility queries (and the Web UI)
follow, and only then (each upsert is a history event and a visibility write)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer

from chipclear import client as ops
from chipclear import search_attributes as sa
from chipclear.domain.commands import Decide, RequestInfo, Respond, Withdraw
from chipclear.domain.models import Status
from chipclear.store.sqlite import SQLiteEventStore
from chipclear.temporal import DATA_CONVERTER
from tests.conftest import running_worker
from tests.factories import make_policy, make_request
from tests.workflows.support import at_gate, wait_for
from workflows.import_request import ImportRequestWorkflow


async def visible(client: Client, query: str, within: float = 20.0) -> list[dict[str, Any]]:
    """The requests a visibility query finds, once it finds any (visibility is eventually consistent)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        found = [
            {key.name: execution.typed_search_attributes.get(key) for key in sa.ALL} | {"id": execution.id}
            async for execution in client.list_workflows(query)
        ]
        if found or loop.time() > deadline:
            return found
        await asyncio.sleep(0.3)


async def test_the_namespace_has_them_and_setup_is_idempotent(client: Client) -> None:
    assert await sa.ready(client)
    assert await sa.ensure(client) == []  # the dev server registered them all at start


@asynccontextmanager
async def at_us_export(
    client: Client, store: SQLiteEventStore, buyer: str, units: int
) -> AsyncIterator[tuple[str, ops.Submission]]:
    """A manual request of `buyer`, submitted on a worker with the attributes on, waiting at us-export."""
    request = make_request(buyer={"name": buyer, "country": "CN", "kind": "private"}, units=units)
    async with running_worker(client, store, make_policy("manual"), search_attributes=True) as worker:
        submission = await ops.submit(client, store, request, task_queue=worker.task_queue, actor="t")
        await wait_for(client, request.request_id, at_gate("us-export"))
        yield request.request_id, submission


async def test_every_transition_is_searchable(client: Client, store: SQLiteEventStore) -> None:
    buyer = f"Search Buyer {uuid.uuid4().hex[:8]}"
    async with at_us_export(client, store, buyer, 42_000) as (rid, submission):
        [row] = await visible(client, f'ChipclearGate = "us-export" AND ChipclearBuyer = "{buyer}"')
        assert row == {
            "id": f"import-{rid}",
            "ChipclearStatus": "us_export_review",
            "ChipclearGate": "us-export",
            "ChipclearBuyer": buyer,
            "ChipclearUnits": 42_000,
            "ChipclearBatch": "",
            "ChipclearEscalated": False,
        }
        await ops.update(client, rid, Decide(gate="us-export", reviewer="alice", approve=True, units=40_000))
        [moved] = await visible(client, f'ChipclearGate = "cn-import" AND ChipclearBuyer = "{buyer}"')
        assert moved["ChipclearUnits"] == 40_000
        # What the Web UI shows on the request's page: the summary, the request, the gate table.
        description = await submission.handle.describe()
        assert await description.static_summary() == f"H200 \u00d7 42,000 \u2192 {buyer}"
        details = await description.static_details()
        assert details is not None and "Wuhu Cluster 3" in details and "large language model" in details
        metadata = await submission.handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        table = metadata.current_details
        rows = {
            cells[0]: cells[1:]
            for line in table.splitlines()
            if line.startswith("|") and not line.startswith("|-")
            for cells in [[cell.strip() for cell in line.strip("|").split("|")]]
        }
        assert rows["us-export"][:3] == ["approved", "40,000", "alice"]
        assert rows["cn-import"][0] == "current" and rows["domestic-quota"][0] == "not reached"
        await ops.update(client, rid, Withdraw(reason="test over"))
        assert (await submission.handle.result()).status == Status.WITHDRAWN
        [ended] = await visible(client, f'ChipclearStatus = "withdrawn" AND ChipclearBuyer = "{buyer}"')
        assert ended["ChipclearGate"] == ""
    # No longer at us-export: the query that found it there finds nothing now.
    assert (
        await visible(client, f'ChipclearGate = "us-export" AND ChipclearBuyer = "{buyer}"', within=1) == []
    )
    history = await submission.handle.fetch_history()
    await Replayer(workflows=[ImportRequestWorkflow], data_converter=DATA_CONVERTER).replay_workflow(history)


def upserted(history: WorkflowHistory) -> list[dict[str, bytes]]:
    """chipclear's upserts in a history, in order (the SDK's own TemporalChangeVersion left out)."""
    return [
        {name: payload.data for name, payload in fields.items()}
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
        for fields in [
            event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
        ]
        if "TemporalChangeVersion" not in fields
    ]


async def test_a_step_that_changes_nothing_indexed_upserts_nothing(
    client: Client, store: SQLiteEventStore
) -> None:
    buyer = f"Quiet Buyer {uuid.uuid4().hex[:8]}"
    async with at_us_export(client, store, buyer, 30_000) as (rid, submission):
        await ops.update(client, rid, RequestInfo(gate="us-export", reviewer="alice", question="Which site?"))
        await ops.update(client, rid, Respond(text="Wuhu Cluster 3"))
        await ops.update(client, rid, Withdraw(reason="test over"))
        await submission.handle.result()
    [ended] = await visible(client, f'ChipclearStatus = "withdrawn" AND ChipclearBuyer = "{buyer}"')
    assert ended["ChipclearGate"] == ""
    history = await submission.handle.fetch_history()
    # Four steps stored (submission, question, answer, withdrawal); two changed what is indexed.
    values = upserted(history)
    assert len(values) == 2 and values[0] != values[1]
    assert [event.type for event in store.read_stream(rid)].count("InformationRequested") == 1
