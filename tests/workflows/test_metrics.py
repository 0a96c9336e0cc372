"""The worker's Prometheus endpoint: the SDK's own metrics and chipclear's, after real requests."""

from __future__ import annotations

import re
import urllib.request
import uuid

import pytest
from temporalio.client import Client

from chipclear import client as ops
from chipclear.devserver import free_port
from chipclear.domain.licence import SuspendLicence
from chipclear.domain.models import Status
from chipclear.store.sqlite import SQLiteEventStore
from chipclear.temporal import connect
from tests.conftest import running_worker
from tests.factories import make_policy, make_request
from tests.workflows.licences import Rig


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
    return text


def value(text: str, name: str, **labels: str) -> float:
    """The sum of `name` over every series whose labels include `labels`."""
    total, found = 0.0, False
    for line in text.splitlines():
        matched = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if matched and all(f'{key}="{wanted}"' in (matched.group(1) or "") for key, wanted in labels.items()):
            total, found = total + float(matched.group(2)), True
    assert found, f"no {name} {labels} in the scrape"
    return total


async def test_metrics_endpoint_counts_what_the_requests_did(client: Client, store: SQLiteEventStore) -> None:
    port = free_port()
    target = client.service_client.config.target_host
    metered = await connect(target_host=target, namespace=client.namespace, metrics_port=port)
    policy = make_policy("auto", us_export={"screening": True})
    clean = make_request(request_id=f"metrics-{uuid.uuid4().hex[:8]}", units=12_345)
    listed = make_request(
        request_id=f"metrics-{uuid.uuid4().hex[:8]}",
        buyer={"name": "Huawei Technologies Co., Ltd.", "country": "CN", "kind": "private"},
    )
    async with running_worker(metered, store, policy) as worker:
        results = {}
        for request in (clean, listed):
            submission = await ops.submit(metered, store, request, task_queue=worker.task_queue, actor="t")
            results[request.request_id] = (await submission.handle.result()).status
        # The licence drawn down once, and a shipment above what remains refused.
        # The first shipment opens the licence's workflow. Then it is suspended: a licence transition.
        rig = Rig(metered, store, worker)
        await rig.declare(100_000)
        await rig.ship(clean.request_id, "M1", 5_000)
        with pytest.raises(ops.Rejected):
            await rig.ship(clean.request_id, "M2", 8_000)
        await rig.act(clean.request_id, SuspendLicence(actor="alice", reason="KYC review"))
    assert results == {clean.request_id: Status.LICENSED, listed.request_id: Status.DENIED}

    text = scrape(port)
    queue = {"task_queue": worker.task_queue}
    assert value(text, "chipclear_units_licensed_total", **queue) == 12_345
    assert value(text, "chipclear_screening_hits_total", **queue) == 1
    assert value(text, "chipclear_request_transitions_total", status="licensed", **queue) == 1
    assert value(text, "chipclear_request_transitions_total", status="denied", **queue) == 1
    # Every gate the clean request passed was timed; in auto mode each took no time at all.
    for gate in ("us-export", "cn-import", "domestic-quota"):
        assert value(text, "chipclear_gate_duration_seconds_count", gate=gate, outcome="GateApproved") == 1
    assert value(text, "chipclear_gate_duration_seconds_count", gate="us-export", outcome="GateDenied") == 1
    assert value(text, "chipclear_units_shipped_total", **queue) == 5_000
    assert value(text, "chipclear_shipments_refused_total", reason="over_licence", **queue) == 1
    assert value(text, "chipclear_licence_transitions_total", status="suspended", **queue) == 1
    # The SDK's own metrics come from the same endpoint.
    assert value(text, "temporal_workflow_completed_total", **queue) == 2
