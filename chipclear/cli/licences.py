"""`chipclear licence`, `ship`, `suspend-licence`, `reinstate-licence`: a licence once issued.

A licence's standing (units shipped and remaining, its status, every shipment) is read from its
workflow while it runs, else from its stored stream, so it answers the same once the workflow is gone.
Heavy modules are imported inside the commands: `--help` never loads Temporal.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from chipclear.cli import common
from chipclear.cli.common import Act, JsonOption, Signing

if TYPE_CHECKING:
    from chipclear.domain.licence import LicenceAct, LicenceState
    from chipclear.domain.state import RequestState


def _request(request_id: str) -> RequestState:
    """The request as its stored record folds; exit 1 naming why it holds no licence."""
    from chipclear import client as ops
    from chipclear.projections import get_request

    state = get_request(common.store(), request_id)
    if state is None:
        raise ops.NotFound(f"no request {request_id!r}")
    if state.licence_id is None:
        raise ops.NotFound(
            f"request {request_id!r} has no licence (status {state.status}"
            + (f": {state.outcome_reason})" if state.outcome_reason else ")")
        )
    return state


async def _standing(request_id: str) -> LicenceState:
    """The licence as its workflow holds it while running, else as its stored stream folds."""
    from chipclear import client as ops
    from chipclear.temporal import ServerUnavailable, connect

    try:
        live = await ops.licence_live(await connect(), request_id)
    except ServerUnavailable:
        live = None  # Temporal is down: the store still has every recorded shipment
    return live if live is not None else ops.stored_licence(common.store(), request_id)


def licence_document(request: RequestState, standing: LicenceState, now: datetime) -> dict[str, Any]:
    """The `licence --json` contract: the request's licence, then its standing and every shipment."""
    from chipclear.cli import output
    from chipclear.domain.licence import LicenceStatus

    document = output.licence_document(request)
    units = standing.terms.units if standing.terms else request.units_approved or 0
    status = standing.status_at(now) or LicenceStatus.VALID
    return document | {
        "exporter": request.request.exporter.name if request.request and request.request.exporter else None,
        "status": str(status),
        "suspended_reason": standing.suspended_reason,
        "units_shipped": standing.units_shipped,
        "units_remaining": units - standing.units_shipped,
        "value_shipped_usd": standing.value_shipped_usd if standing.shipments else 0.0,
        "shipments": [
            {
                "shipment_id": shipment.shipment_id,
                "units": shipment.units,
                "value_usd": shipment.value_usd,
                "period": shipment.period,
                "lab": shipment.lab_report.lab,
                "lab_report_id": shipment.lab_report.report_id,
                "lab_report_sha256": shipment.lab_report.sha256,
                "declaration": shipment.declaration,
                "recorded_against": shipment.import_approval.model_dump(mode="json")
                if shipment.import_approval
                else None,
            }
            for shipment in standing.shipments.values()
        ],
        "version": standing.version,
    }


@common.handles_errors
def licence(request_id: str, json_: JsonOption = False) -> None:
    """A request's licence: units, validity, conditions, and its standing (valid, suspended, exhausted,
    expired) with every shipment drawn down against it."""
    from chipclear.cli import output

    request = _request(request_id)
    document = licence_document(request, common.run(_standing(request_id)), datetime.now(UTC))
    if json_:
        output.print_json(document)
        return
    output.print_licence(document)
    output.print_licence_standing(document)


def _act(
    request_id: str, command: LicenceAct, signing: Signing, *, recorded: Callable[[], object] = lambda: None
) -> None:
    """Sign `command` as its person and send it to the licence's workflow; a licence whose workflow has
    ended says why (exit 1), and a repeat of a shipment it recorded is not an error. `recorded` runs once
    the act stands in the record (the lab report kept), never for a refused one."""
    from rich.markup import escape

    from chipclear import client as ops
    from chipclear.cli import output
    from chipclear.temporal import connect

    private = signing.key(command.person)
    request = _request(request_id)

    async def go() -> None:
        client = await connect()
        try:
            queue = common.settings().task_queue
            result = await ops.licence_act(client, queue, request, command, key=private)
        except ops.LicenceClosed:
            closed = licence_document(
                request, ops.stored_licence(common.store(), request_id), datetime.now(UTC)
            )
            shipment = getattr(command, "shipment_id", None)
            if shipment is not None and any(s["shipment_id"] == shipment for s in closed["shipments"]):
                recorded()
                _print_result(signing.json, closed, f"shipment {shipment} is already recorded; nothing new")
                return
            raise ops.Rejected(
                f"licence {closed['licence_id']} is {closed['status']} "
                f"({closed['units_shipped']:,} of {closed['units']:,} units shipped): nothing can change it"
            ) from None
        recorded()
        document = licence_document(request, await _standing(request_id), datetime.now(UTC))
        said = ", ".join(result.events) or "nothing new (already recorded)"
        _print_result(signing.json, document | {"events": result.events}, f"{request_id}: recorded {said}")

    def _print_result(as_json: bool, document: dict[str, Any], line: str) -> None:
        if as_json:
            output.print_json(document)
            return
        output.console.print(escape(line))
        output.console.print(
            f"licence {escape(document['licence_id'])}: [bold]{document['status']}[/], "
            f"{document['units_remaining']:,} of {document['units']:,} units remaining"
        )

    common.run(go())


@common.handles_errors
@common.acts
def ship(
    act: Act,
    request_id: str,
    shipment: Annotated[
        str, typer.Option("--shipment", help="The shipment's id (a repeat is recorded once).")
    ],
    units: Annotated[int, typer.Option(help="Units in this shipment (no quantity tolerance).", min=1)],
    lab_report: Annotated[
        Path, typer.Option("--lab-report", help="The US third-party test lab's report on this shipment.")
    ],
    lab: Annotated[str | None, typer.Option(help="The lab that wrote the report.")] = None,
    report_id: Annotated[
        str | None, typer.Option("--report-id", help="The lab's report number (default: the file's name).")
    ] = None,
    value_usd: Annotated[
        float | None, typer.Option("--value-usd", help="The shipment's value (default: units x unit price).")
    ] = None,
    declaration: Annotated[
        str | None, typer.Option(help="The Chinese customs declaration number, when known.")
    ] = None,
) -> None:
    """Record a shipment under a request's licence, drawing it down (an Update: a refused shipment
    records nothing). The lab report is kept by its sha256 next to the event store."""
    from chipclear.domain.licence import LabReport, Ship
    from chipclear.kept_files import ToKeep

    file = ToKeep(lab_report)  # kept once the shipment is recorded: a refused one keeps nothing
    report = LabReport(
        name=lab_report.name,
        size=file.size,
        sha256=file.sha256,
        lab=lab,
        report_id=report_id or lab_report.stem,
    )
    command = Ship(
        actor=act.actor,
        shipment_id=shipment,
        units=units,
        value_usd=value_usd,
        lab_report=report,
        declaration=declaration,
    )
    _act(request_id, command, act, recorded=lambda: file.keep(common.settings().home))


ReasonOption = Annotated[str, typer.Option(help="Why (recorded with the act).")]


def _licensing_act(kind: Literal["suspend", "reinstate"], doc: str) -> Callable[..., None]:
    """`suspend-licence` and `reinstate-licence`: the same options, a licensing reviewer's signed act."""

    @common.handles_errors
    @common.acts
    def command(act: Act, request_id: str, reason: ReasonOption) -> None:
        from chipclear.domain.licence import ReinstateLicence, SuspendLicence

        said = SuspendLicence if kind == "suspend" else ReinstateLicence
        _act(request_id, said(actor=act.actor, reason=reason), act)

    command.__doc__ = doc
    command.__name__ = f"{kind}_licence"
    return command


suspend_licence = _licensing_act(
    "suspend",
    "Suspend a request's licence (a licensing reviewer's signed act): no shipment until reinstated.",
)
reinstate_licence = _licensing_act(
    "reinstate", "Reinstate a suspended licence (a licensing reviewer's signed act)."
)
