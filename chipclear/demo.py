"""`chipclear demo`: the January 2026 news, replayed through all three gates on the auto policy.

ByteDance, Alibaba and Tencent order H200s in volume; a smaller private firm follows; a state-owned
enterprise is refused at Chinese import review; a state-funded data centre is refused at the domestic
quota; JD.com is short of domestic evidence until it files more; and a server maker on the Entity List
(Sugon, under its other name) is stopped by restricted-party screening before anyone reviews it. Then NVIDIA
ships under every licence until each is used up (chipclear/demo_shipments.py).
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict
from rich.table import Table
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError, RPCStatusCode

from chipclear import client as ops
from chipclear import keys
from chipclear.cli import output
from chipclear.config import Settings
from chipclear.contracts import exporter_workflow_id, ledger_id, workflow_id
from chipclear.demo_shipments import EXPORTER as SHIPPING_EXPORTER
from chipclear.demo_shipments import ship_everything
from chipclear.domain.allocation import BatchSpec, LedgerState, OpenBatch
from chipclear.domain.commands import AddEvidence
from chipclear.domain.gates import cn_import, domestic_quota
from chipclear.domain.models import ImportRequest, ProcurementRecord, Status
from chipclear.domain.policy import load_policy
from chipclear.domain.state import RequestState
from chipclear.logs import configure
from chipclear.projections import get_request, open_event_store
from chipclear.store.protocol import EventStore
from chipclear.temporal import connect
from chipclear.worker import run_worker

QUEUED = "cn_import_queued"
QUOTA_REVIEW = "domestic_quota_review"
DEMO_REQUESTS = "demo_requests.yaml"  # in chipclear/data
# How long the demo waits for its requests' workflows to close once each has settled (compensations
# take a few activities): far more than they need, and bounded, so a broken worker cannot hang it.
CLOSE_WITHIN = 120.0


class DemoRun(BaseModel):
    """What one run of the demo started, for whoever checks that it left nothing running."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    task_queue: str
    request_ids: list[str]
    entity_ids: list[str]  # the ledger and the exporter, closed before the demo returns


class _DemoRequests(BaseModel):
    """chipclear/data/demo_requests.yaml: the fields every request shares, then each buyer's own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shared: dict[str, Any]
    requests: list[dict[str, Any]]  # ImportRequest fields, with a `slug` in place of the request_id


def scenario(run_id: str) -> list[ImportRequest]:
    text = (resources.files("chipclear") / "data" / DEMO_REQUESTS).read_text(encoding="utf-8")
    demo = _DemoRequests.model_validate(yaml.safe_load(text))
    return [_filed(demo.shared | row, run_id) for row in demo.requests]


def _filed(fields: dict[str, Any], run_id: str) -> ImportRequest:
    """One request of the file as this run files it: `demo-<run>-<slug>`."""
    slug = fields.pop("slug")
    return ImportRequest.model_validate(
        fields
        | {
            "request_id": f"demo-{run_id}-{slug}",
            # Invoices count once across every request ever filed: each run gets its own.
            "domestic_procurement": [
                {**record, "invoice": f"{record['invoice']}/{run_id}"}
                for record in fields.get("domestic_procurement", [])
            ],
        }
    )


def _settled(state: RequestState | None) -> bool:
    """Final, queued for a later batch, or held at the domestic quota waiting for evidence."""
    if state is None or state.status is None:
        return False
    held = state.status == QUOTA_REVIEW and domestic_quota.GATE.slice(state).assessment is not None
    return state.is_final or held or state.status == QUEUED


async def _wait_settled(store: EventStore, request_id: str, *, leaving: str | None = None) -> RequestState:
    for _ in range(600):
        state = get_request(store, request_id)
        if state is not None and _settled(state) and state.status != leaving:
            return state
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{request_id} did not settle within 60 s")


def _table(title: str, states: list[RequestState]) -> Table:
    table = Table("buyer", "requested", "approved", "batch", "status", "why", title=title)
    for state in states:
        assert state.request is not None and state.status is not None
        where = state.outcome_reason or ""
        assessment = domestic_quota.GATE.slice(state).assessment
        if state.status == QUOTA_REVIEW and assessment:
            where = f"held: short of {assessment.shortfall} domestic units"
        allocation = cn_import.GATE.slice(state).allocation
        if state.status == QUEUED and allocation is not None:
            where = f"queued for a later batch (position {allocation.position})"
        batch = allocation.batch_id if allocation and allocation.batch_id else "-"
        if allocation is not None and allocation.released:
            batch += " (released)"
        denied = state.units_approved is None or state.status == Status.DENIED
        output.row(
            table,
            state.request.buyer.name,
            str(state.units_requested),
            "-" if denied else str(state.units_approved),
            batch,
            state.status,
            where,
        )
    return table


def _batches(ledger: LedgerState) -> Table:
    table = Table("batch", "capacity", "allocated", "free", "eligible", title="allocation batches")
    for batch in ledger.batches.values():
        output.row(
            table, batch.batch_id, str(batch.capacity), str(batch.allocated), str(batch.free), batch.eligible
        )
    return table


async def _closed(client: Client, request_ids: list[str]) -> None:
    """Wait until every request's workflow has returned: a denied request gives back its units and
    its export approval after its final status is stored, and the worker must still be there then."""

    async def one(request_id: str) -> None:
        with suppress(WorkflowFailureError):  # a refused submission ends its run at once: closed too
            await client.get_workflow_handle(workflow_id(request_id)).result()

    await asyncio.wait_for(asyncio.gather(*(one(rid) for rid in request_ids)), CLOSE_WITHIN)


async def _close_entities(client: Client, entity_ids: list[str], run_id: str) -> None:
    """The demo's ledger and exporter serve nothing once its requests are closed: end them, so the
    Web UI's list shows no workflow of the demo still running. Their records stay in the event store."""
    for entity_id in entity_ids:
        try:
            await client.get_workflow_handle(entity_id).terminate(reason=f"chipclear demo {run_id} finished")
        except RPCError as exc:
            # Never started (nothing shipped), or already closed.
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise


async def run_demo(settings: Settings, *, client: Client | None = None) -> DemoRun:
    configure(level="WARNING")  # the tables are the output; worker chatter would bury them
    run_id = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    # A task queue (and so an allocation ledger) of its own: the demo's batches never serve real requests.
    demo = settings.with_(task_queue=f"{settings.task_queue}-demo-{run_id}", policy="auto")
    client = client or await connect()
    store = open_event_store(settings.event_store_url)
    # The people of the auto policy act here as in real use, each signing with their own key: wang
    # (cn-import) opens the batches, chen (a compliance officer) submits and files evidence.
    keys.provide_missing(settings.home, "auto")
    policy = load_policy("auto", home=settings.home)
    wang, chen = (keys.load_private(keys.private_path(settings.home, name)) for name in ("wang", "chen"))
    stop, ready = asyncio.Event(), asyncio.Event()
    worker = asyncio.create_task(run_worker(demo, policy=policy, client=client, stop=stop, ready=ready))
    await ready.wait()
    try:
        b1 = BatchSpec(
            batch_id="B1",
            capacity=400_000,
            priority=["ByteDance", "Alibaba", "Tencent"],
            eligible="priority",
        )
        await ops.open_batch(client, demo.task_queue, OpenBatch(batch=b1, actor="wang"), key=wang)
        output.console.print(
            "Batch B1 (2026-01-28): 400,000 units for ByteDance, Alibaba and Tencent only.\n"
        )
        requests = scenario(run_id)
        for request in requests:
            await ops.submit(client, store, request, task_queue=demo.task_queue, actor="chen", key=chen)
        ids = [request.request_id for request in requests]
        states = [await _wait_settled(store, request_id) for request_id in ids]
        output.console.print(_table("after batch B1 (auto policy)", states))

        b2 = BatchSpec(batch_id="B2", capacity=300_000, eligible="all", per_company_cap=75_000)
        opened = await ops.open_batch(client, demo.task_queue, OpenBatch(batch=b2, actor="wang"), key=wang)
        output.console.print(
            f"\nBatch B2: 300,000 units for everyone; served from the queue at once: "
            f"{', '.join(opened.served)}"
        )
        states = [await _wait_settled(store, rid, leaving=QUEUED) for rid in ids]
        short = next(s for s in states if s.status == QUOTA_REVIEW)
        shortfall = domestic_quota.GATE.slice(short).assessment
        assert short.request_id is not None and shortfall is not None
        extra = ProcurementRecord(
            vendor="Huawei",
            product="Ascend 910C",
            units=shortfall.shortfall,
            invoice=f"HW-JD-002/{run_id}",
        )
        output.console.print(
            f"{short.buyer} files one more invoice ({extra.units} Ascend 910C units, {extra.invoice}):"
        )
        evidence = AddEvidence(records=[extra], actor="chen")
        result = await ops.update(client, short.request_id, evidence, key=chen)
        output.console.print(
            f"  {short.request_id}: {', '.join(result.events)} -> [bold]{result.status}[/]\n"
        )
        states = [await _wait_settled(store, rid, leaving=QUOTA_REVIEW) for rid in ids]
        await _closed(client, ids)
        # Read again now every workflow has closed: the table shows each compensation as stored.
        states = [state for rid in ids if (state := get_request(store, rid)) is not None]
        output.console.print(_table("after batch B2", states))
        output.console.print(_batches(await ops.ledger_state(client, store, demo.task_queue)))
        licensed = [state for state in states if state.status == Status.LICENSED]
        sam = keys.load_private(keys.private_path(settings.home, "sam"))
        output.console.print(
            await ship_everything(client, store, settings.home, demo.task_queue, licensed, sam)
        )
        exporter = exporter_workflow_id(SHIPPING_EXPORTER, demo.task_queue)
        entities = [ledger_id(demo.task_queue), exporter]
        await _close_entities(client, entities, run_id)
    finally:
        stop.set()
        await worker
        store.close()
    output.console.print(
        f"\nEvery step is in the event store: `chipclear events demo-{run_id}-bytedance`, "
        "`chipclear audit verify`.\nWeb UI: http://127.0.0.1:8233/namespaces/default/workflows "
        f"(workflow ids start with import-demo-{run_id}-)"
    )
    return DemoRun(run_id=run_id, task_queue=demo.task_queue, request_ids=ids, entity_ids=entities)
