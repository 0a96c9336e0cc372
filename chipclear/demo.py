"""`chipclear demo`: the January 2026 news, replayed through all three gates on the auto policy.

ByteDance, Alibaba and Tencent order H200s in volume; a smaller private firm follows; a state-owned
enterprise is refused at Chinese import review; a state-funded data centre is refused at the domestic
quota; JD.com is short of domestic evidence until it files more; and a server maker on the Entity List
(Sugon, under its other name) is stopped by restricted-party screening before anyone reviews it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from chipclear import client as ops
from chipclear.cli import output
from chipclear.config import Settings
from chipclear.domain.allocation import BatchSpec, LedgerState, OpenBatch
from chipclear.domain.commands import AddEvidence
from chipclear.domain.gates import cn_import, domestic_quota
from chipclear.domain.models import ImportRequest, ProcurementRecord, Status
from chipclear.domain.policy import load_policy
from chipclear.domain.state import RequestState
from chipclear.logs import configure
from chipclear.projections import get_request, open_event_store
from chipclear.store import EventStore
from chipclear.temporal import connect
from chipclear.worker import run_worker

QUEUED = "cn_import_queued"
QUOTA_REVIEW = "domestic_quota_review"


def _party(name: str, kind: str = "private") -> dict[str, Any]:
    return {"name": name, "country": "CN", "kind": kind}


def _dc(name: str, province: str, state_funded: bool = False) -> dict[str, Any]:
    return {"name": name, "province": province, "state_funded": state_funded}


def _evidence(vendor: str, product: str, units: int, invoice: str) -> dict[str, Any]:
    return {"vendor": vendor, "product": product, "units": units, "invoice": invoice}


def scenario(run_id: str) -> list[ImportRequest]:
    rows: list[dict[str, Any]] = [
        {
            "slug": "bytedance",
            "buyer": _party("ByteDance Ltd."),
            "units": 100_000,
            "data_center": _dc("Wuhu Compute Cluster 3", "Anhui"),
            "evidence": [_evidence("Huawei", "Ascend 910C", 80_000, "HW-BD-001")],
        },
        {
            "slug": "alibaba",
            "buyer": _party("Alibaba Group Holding Ltd."),
            "units": 75_000,
            "data_center": _dc("Zhangbei Cloud Region", "Hebei"),
            "evidence": [
                _evidence("Huawei", "Ascend 910B", 50_000, "HW-AL-001"),
                _evidence("Alibaba T-Head", "PPU", 40_000, "TH-AL-001"),
            ],
        },
        {
            "slug": "tencent",
            "buyer": _party("Tencent Holdings Ltd."),
            "units": 60_000,
            "data_center": _dc("Qingyuan Data Centre", "Guangdong"),
            "evidence": [_evidence("Cambricon", "MLU590", 60_000, "CAM-TC-001")],
        },
        {
            "slug": "smallfirm",
            "buyer": _party("Hangzhou Lingxi Intelligent Computing Co., Ltd."),
            "units": 4_000,
            "data_center": _dc("Lingxi Hangzhou DC1", "Zhejiang"),
            "evidence": [_evidence("Hygon", "DCU K100", 5_000, "HY-LX-001")],
        },
        {
            "slug": "soe",
            "buyer": _party("China Mobile Communications Group", "state_owned"),
            "units": 30_000,
            "data_center": _dc("Hohhot Intelligent Computing Centre", "Inner Mongolia"),
            "evidence": [_evidence("Huawei", "Ascend 910C", 30_000, "HW-CM-001")],
        },
        {
            "slug": "statefunded",
            "buyer": _party("Zhongwei Cloud Computing Co., Ltd."),
            "units": 20_000,
            "data_center": _dc("Ningxia Zhongwei Public Computing Hub", "Ningxia", state_funded=True),
            "evidence": [_evidence("Huawei", "Ascend 910C", 25_000, "HW-ZW-001")],
        },
        {
            "slug": "listed",
            "buyer": _party("Dawning Information Industry Co., Ltd."),
            "units": 10_000,
            "data_center": _dc("Tianjin Advanced Computing Centre", "Tianjin"),
            "evidence": [_evidence("Hygon", "DCU K100", 12_000, "HY-DW-001")],
        },
        {
            "slug": "jdcom",
            "buyer": _party("JD.com, Inc."),
            "units": 40_000,
            "data_center": _dc("Suqian Data Centre", "Jiangsu"),
            "evidence": [_evidence("Huawei", "Ascend 910B", 10_000, "HW-JD-001")],
        },
    ]
    return [
        ImportRequest.model_validate(
            {
                "request_id": f"demo-{run_id}-{row['slug']}",
                "buyer": row["buyer"],
                "end_use": "commercial AI model training and inference",
                "product": "H200",
                "units": row["units"],
                "unit_price_usd": 32_000,
                "data_center": row["data_center"],
                # Invoices count once across every request ever filed: each run gets its own.
                "domestic_procurement": [
                    {**record, "invoice": f"{record['invoice']}/{run_id}"} for record in row["evidence"]
                ],
            }
        )
        for row in rows
    ]


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


async def run_demo(settings: Settings) -> None:
    configure(level="WARNING")  # the tables are the output; worker chatter would bury them
    run_id = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    # A task queue (and so an allocation ledger) of its own: the demo's batches never serve real requests.
    demo = settings.with_(task_queue=f"{settings.task_queue}-demo-{run_id}", policy="auto")
    client = await connect()
    store = open_event_store(settings.event_store_url)
    stop, ready = asyncio.Event(), asyncio.Event()
    worker = asyncio.create_task(
        run_worker(demo, policy=load_policy("auto"), client=client, stop=stop, ready=ready)
    )
    await ready.wait()
    try:
        b1 = BatchSpec(
            batch_id="B1",
            capacity=400_000,
            priority=["ByteDance", "Alibaba", "Tencent"],
            eligible="priority",
        )
        await ops.open_batch(client, demo.task_queue, OpenBatch(batch=b1, actor="demo"))
        output.console.print(
            "Batch B1 (2026-01-28): 400,000 units for ByteDance, Alibaba and Tencent only.\n"
        )
        requests = scenario(run_id)
        for request in requests:
            await ops.submit(client, store, request, task_queue=demo.task_queue, actor="demo")
        ids = [request.request_id for request in requests]
        states = [await _wait_settled(store, request_id) for request_id in ids]
        output.console.print(_table("after batch B1 (auto policy)", states))

        b2 = BatchSpec(batch_id="B2", capacity=300_000, eligible="all", per_company_cap=75_000)
        opened = await ops.open_batch(client, demo.task_queue, OpenBatch(batch=b2, actor="demo"))
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
        result = await ops.update(client, short.request_id, AddEvidence(records=[extra], actor="demo"))
        output.console.print(
            f"  {short.request_id}: {', '.join(result.events)} -> [bold]{result.status}[/]\n"
        )
        states = [await _wait_settled(store, rid, leaving=QUOTA_REVIEW) for rid in ids]
        output.console.print(_table("after batch B2", states))
        output.console.print(_batches(await ops.ledger_state(client, store, demo.task_queue)))
    finally:
        stop.set()
        await worker
    output.console.print(
        f"\nEvery step is in the event store: `chipclear events demo-{run_id}-bytedance`, "
        "`chipclear audit verify`.\nWeb UI: http://127.0.0.1:8233/namespaces/default/workflows "
        f"(workflow ids start with import-demo-{run_id}-)"
    )
