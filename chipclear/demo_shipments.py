"""The demo past the licences: NVIDIA ships under each one with a US lab's report, until every licence
is used up. One shipment is refused for more units than its licence has left, one by the exporter's 50%
rule until its corrected US figure arrives.

Part of `chipclear demo` (chipclear/demo.py), which runs it with its own worker and task queue.
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.markup import escape
from rich.table import Table
from temporalio.client import Client

from chipclear import client as ops
from chipclear.cli import output
from chipclear.contracts import licence_workflow_id
from chipclear.domain.exporter import DeclareUsShipments, period_of
from chipclear.domain.licence import LabReport, LicenceStatus, Ship
from chipclear.domain.state import RequestState
from chipclear.kept_files import ToKeep
from chipclear.store.protocol import EventStore

EXPORTER = "NVIDIA Corporation"
OFFICER = "sam"  # the exporter's trade-compliance officer in the bundled policies
LAB = "UL Solutions"


def _lab_report(folder: Path, shipment: str, units: int, buyer: str) -> tuple[LabReport, ToKeep]:
    """A lab's report on one shipment, written as a file and read as `ship` reads one; kept once the
    shipment is recorded."""
    path = folder / f"{shipment}.txt"
    path.write_text(
        f"{LAB}: third-party pre-export review of shipment {shipment}\n"
        f"{units} x NVIDIA H200 for {buyer}; markings, firmware and configuration checked: PASS\n",
        encoding="utf-8",
    )
    file = ToKeep(path)
    report = LabReport(
        name=path.name, size=file.size, sha256=file.sha256, lab=LAB, report_id=f"UL-{shipment}"
    )
    return report, file


async def ship_everything(
    client: Client,
    store: EventStore,
    home: Path,
    task_queue: str,
    licensed: list[RequestState],
    sam: Ed25519PrivateKey,
) -> Table:
    """Draw every licence down to nothing, showing the two refusals on the way; the table of licences."""
    period = period_of(datetime.now(UTC))

    async def declare(units: int) -> None:
        command = DeclareUsShipments(actor=OFFICER, exporter=EXPORTER, period=period, units=units)
        result = await ops.declare_us_shipments(client, task_queue, command, key=sam)
        output.console.print(
            f"{EXPORTER} declares {result.us_units:,} units shipped to US end users in {period}: "
            f"China may take {result.us_units // 2:,}."
        )

    async def ship(state: RequestState, shipment: str, units: int) -> None:
        assert state.request_id is not None and state.buyer is not None
        report, file = _lab_report(folder, shipment, units, state.buyer)
        command = Ship(actor=OFFICER, shipment_id=shipment, units=units, lab_report=report)
        try:
            # The first act on a licence opens its workflow (chipclear.licence_opening).
            result = await ops.licence_act(client, task_queue, state, command, key=sam)
        except ops.Rejected as refused:
            output.console.print(f"  {shipment} ({units:,} units): [red]refused[/]: {escape(str(refused))}")
            return
        file.keep(home)
        output.console.print(
            f"  {shipment} ({units:,} units, lab report {report.report_id}): "
            f"{result.units_remaining:,} left, {result.status}"
        )

    with tempfile.TemporaryDirectory(prefix="chipclear-demo-lab-") as scratch:
        folder = Path(scratch)
        output.console.print("\nShipments, each reviewed by a US test lab before export:")
        await declare(200_000)
        first, second = licensed[0], licensed[1]
        first_units, second_units = first.units_approved or 0, second.units_approved or 0
        await ship(first, "SH-1", first_units - 15_000)
        await ship(first, "SH-2", 20_000)  # more than the 15,000 left: no quantity tolerance
        await ship(second, "SH-3", second_units)  # above half of the US figure: the 50% rule refuses
        await declare(600_000)  # the exporter's corrected figure for the quarter
        await ship(first, "SH-2", 15_000)
        for number, state in enumerate(licensed[1:], start=3):
            await ship(state, f"SH-{number}", state.units_approved or 0)
    await _used_up(client, licensed)
    return _licences(store, licensed)


async def _used_up(client: Client, licensed: list[RequestState]) -> None:
    """Every licence the demo drew down to nothing has ended its workflow: nothing of the demo stays open."""
    for state in licensed:
        assert state.request_id is not None
        await asyncio.wait_for(client.get_workflow_handle(licence_workflow_id(state.request_id)).result(), 60)


def _licences(store: EventStore, licensed: list[RequestState]) -> Table:
    table = Table("licence", "buyer", "licensed", "shipped", "remaining", "status", title="licences")
    for state in licensed:
        assert state.request_id is not None
        standing = ops.stored_licence(store, state.request_id)
        terms = standing.terms
        assert terms is not None
        status = standing.status or LicenceStatus.VALID
        output.row(
            table,
            terms.licence_id,
            terms.buyer,
            str(terms.units),
            str(standing.units_shipped),
            str(standing.units_remaining),
            str(status),
        )
    return table
