"""`chipclear exporter`: an exporter's declared US end-user shipments and its 50% rule, per quarter."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from chipclear.cli import common
from chipclear.cli.common import Act, JsonOption

exporter_app = typer.Typer(
    help="An exporter's US end-user shipments and its China shipments per quarter (the 50% rule).",
    no_args_is_help=True,
)


@exporter_app.command(name="us-shipments")
@common.handles_errors
@common.acts
def us_shipments(
    act: Act,
    exporter: Annotated[str, typer.Argument(help="The exporter, as requests name it (NVIDIA Corporation).")],
    units: Annotated[int, typer.Option(help="Units shipped to US end users in the quarter, to date.", min=0)],
    period: Annotated[
        str | None, typer.Option(help="The calendar quarter, e.g. 2026Q1 (default: the current one).")
    ] = None,
    evidence: Annotated[
        Path | None, typer.Option(help="A file backing the figure (pinned by its sha256 on the act).")
    ] = None,
) -> None:
    """Record the exporter's US end-user shipments for a quarter (a signed act by its officer); China
    shipments in that quarter may then reach half of it. A later figure for a quarter replaces it."""
    from chipclear import client as ops
    from chipclear.cli import output
    from chipclear.cli.files import load_attachment
    from chipclear.domain.exporter import DeclareUsShipments, period_of
    from chipclear.temporal import connect

    attachment = load_attachment(evidence) if evidence is not None else None
    command = DeclareUsShipments(
        actor=act.actor,
        exporter=exporter,
        period=period or period_of(datetime.now(UTC)),
        units=units,
        evidence=attachment,
    )
    private = act.key(command.person)
    current = common.settings()

    async def go() -> None:
        client = await connect()
        result = await ops.declare_us_shipments(client, current.task_queue, command, key=private)
        if act.json:
            output.print_json(result.model_dump(mode="json"))
            return
        output.console.print(
            f"{result.exporter} {result.period}: {result.us_units:,} units to US end users declared; "
            f"China shipments {result.china_units:,} of at most {result.us_units // 2:,}",
            highlight=False,
        )

    common.run(go())


@exporter_app.command(name="show")
@common.handles_errors
def show(
    exporter: Annotated[str, typer.Argument(help="The exporter, as requests name it.")],
    json_: JsonOption = False,
) -> None:
    """Each quarter's US end-user shipments, China shipments and the room left under the 50% rule."""
    from rich.markup import escape

    from chipclear import client as ops
    from chipclear.cli import output
    from chipclear.temporal import ServerUnavailable, connect

    current = common.settings()

    async def go() -> Any:
        try:
            live = await ops.exporter_live(await connect(), exporter, current.task_queue)
        except ServerUnavailable:
            live = None
        return live if live is not None else ops.stored_exporter(common.store(), exporter, current.task_queue)

    state = common.run(go())
    if state.exporter is None:
        raise ops.NotFound(f"nothing is recorded for exporter {exporter!r}")
    quarters = [
        {
            "period": period,
            "us_units": quarter.us_units,
            "china_units": quarter.china_units,
            "china_room": max(0, quarter.us_units // 2 - quarter.china_units),
            "declared_by": quarter.declared_by,
            "shipments": quarter.shipments,
        }
        for period, quarter in sorted(state.quarters.items())
    ]
    if json_:
        output.print_json({"exporter": state.exporter, "version": state.version, "quarters": quarters})
        return
    output.console.print(f"exporter [bold]{escape(state.exporter)}[/]")
    for row in quarters:
        output.console.print(
            f"  {row['period']}: US end users {row['us_units']:,}; China {row['china_units']:,} in "
            f"{row['shipments']} shipment(s); room {row['china_room']:,}",
            highlight=False,
        )
