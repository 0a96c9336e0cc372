"""A licence through the real worker, as its users drive it: the tests of licences and the saved
histories of the licence and exporter workflows share it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from temporalio.client import Client

from chipclear import client as ops
from chipclear.contracts import exporter_stream, exporter_workflow_id
from chipclear.domain.exporter import ChinaShipmentCounted, DeclareUsShipments, period_of
from chipclear.domain.licence import LabReport, LicenceState, Ship, ShipmentRecorded, licence_stream
from chipclear.domain.models import Status
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

    async def licensed(self, units: int = 1_000) -> str:
        """A request every gate passes at once (auto), its licence's workflow open."""
        request = make_request(units=units)
        submission = await submit_signed(self.client, self.store, request, self.queue)
        result = await submission.handle.result()
        assert result.status is Status.LICENSED
        await self.open_licence(request.request_id)
        return request.request_id

    async def open_licence(self, request_id: str) -> LicenceState:
        for _ in range(200):
            live = await ops.licence_live(self.client, request_id)
            if live is not None and live.status is not None:
                return live
            await asyncio.sleep(0.05)
        raise AssertionError(f"the licence of {request_id} never opened")

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
        result = await ops.licence_act(self.client, request_id, command, key=keys.private(command.actor))
        return result.events

    def shipments(self, request_id: str) -> list[ShipmentRecorded]:
        return [
            event.data
            for event in self.store.read_stream(licence_stream(request_id))
            if isinstance(event.data, ShipmentRecorded)
        ]

    def counted(self) -> list[ChinaShipmentCounted]:
        stream = exporter_stream(exporter_workflow_id(EXPORTER, self.queue))
        return [e.data for e in self.store.read_stream(stream) if isinstance(e.data, ChinaShipmentCounted)]
