"""A licence through the real worker, as its users drive it: the tests of licences and the saved
histories of the licence and exporter workflows share it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from temporalio.client import Client

from chipclear import client as ops
from chipclear.contracts import (
    EXPORTER_WORKFLOW,
    ExporterInput,
    LicenceActResult,
    entity_queue,
    exporter_stream,
    exporter_workflow_id,
)
from chipclear.domain.exporter import ChinaShipmentCounted, DeclareUsShipments, period_of
from chipclear.domain.licence import (
    LabReport,
    LicenceAct,
    LicenceState,
    Ship,
    ShipmentRecorded,
    licence_stream,
)
from chipclear.domain.models import Status
from chipclear.domain.state import RequestState
from chipclear.licence_opening import open_licence
from chipclear.projections import get_request
from chipclear.store.sqlite import SQLiteEventStore
from chipclear.worker import ChipclearWorker
from tests import keys
from tests.factories import make_request
from tests.workflows.support import submit_signed

EXPORTER = "NVIDIA Corporation"
REPORT = LabReport(name="lab.pdf", size=1234, sha256="ab" * 32, lab="UL Solutions", report_id="UL-1")


@dataclass
class Rig:
    client: Client
    store: SQLiteEventStore
    worker: ChipclearWorker

    @property
    def queue(self) -> str:
        return self.worker.task_queue

    async def licensed(self, units: int = 1_000, *, opened: bool = True) -> str:
        """A request every gate passes at once (auto), its licence's workflow open unless `opened` is
        False (a licence nobody has acted on yet has no workflow)."""
        request = make_request(units=units)
        submission = await submit_signed(self.client, self.store, request, self.queue)
        result = await submission.handle.result()
        assert result.status is Status.LICENSED
        if opened:
            await self.open_licence(request.request_id)
        return request.request_id

    def request(self, request_id: str) -> RequestState:
        state = get_request(self.store, request_id)
        assert state is not None
        return state

    async def open_licence(self, request_id: str) -> LicenceState:
        """Open the licence's workflow as its first act would (chipclear.licence_opening)."""
        return await open_licence(self.client, self.queue, self.request(request_id))

    async def declare(self, units: int, period: str | None = None) -> None:
        command = DeclareUsShipments(
            actor="sam", exporter=EXPORTER, period=period or period_of(datetime.now(UTC)), units=units
        )
        await ops.declare_us_shipments(self.client, self.queue, command, key=keys.private("sam"))

    async def ship(self, request_id: str, shipment: str, units: int, **fields: object) -> list[str]:
        command = Ship(
            actor=str(fields.pop("actor", "sam")),
            shipment_id=shipment,
            units=units,
            **({"lab_report": REPORT} | fields),
        )
        return (await self.act(request_id, command)).events

    async def act(self, request_id: str, command: LicenceAct) -> LicenceActResult:
        """`command` signed by its person and sent as the CLI sends it (opening the licence if need be)."""
        key = keys.private(command.person)
        return await ops.licence_act(self.client, self.queue, self.request(request_id), command, key=key)

    def shipments(self, request_id: str) -> list[ShipmentRecorded]:
        return [
            event.data
            for event in self.store.read_stream(licence_stream(request_id))
            if isinstance(event.data, ShipmentRecorded)
        ]

    def counted(self) -> list[ChinaShipmentCounted]:
        stream = exporter_stream(exporter_workflow_id(EXPORTER, self.queue))
        return [e.data for e in self.store.read_stream(stream) if isinstance(e.data, ChinaShipmentCounted)]


async def exporter_through_runs(rig: Rig, history_limit: int) -> tuple[str, list[str], str]:
    """The exporter's workflow with a short history, its US figures declared, then shipments of 10 units
    under one licence until it has begun its third run: the second carried in the counts of the first,
    and (with settling) settled them as it ended. Its id, its run ids first to last, and the licence's
    request id."""
    exporter = exporter_workflow_id(EXPORTER, rig.queue)
    owner = await rig.client.start_workflow(
        EXPORTER_WORKFLOW,
        ExporterInput(history_limit=history_limit),
        id=exporter,
        task_queue=entity_queue(rig.queue),
    )
    runs = [owner.result_run_id or ""]
    await rig.declare(1_000_000)
    request_id = await rig.licensed()  # 1,000 units: room for every shipment below
    for i in range(60):
        if len(runs) == 3:
            return exporter, runs, request_id
        await rig.ship(request_id, f"S{i}", 10)
        current = (await rig.client.get_workflow_handle(exporter).describe()).run_id
        if current != runs[-1]:
            runs.append(current)
    raise AssertionError(f"{exporter} was meant to continue as new twice: {len(runs)} run(s)")
