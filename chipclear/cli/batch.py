"""`chipclear batch …`: open allocation batches and look inside the ledger."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError
from rich.table import Table

from chipclear import client as ops
from chipclear.cli import output
from chipclear.cli.common import Act, JsonOption, acts, handles_errors, run, settings
from chipclear.cli.files import InvalidInput
from chipclear.config import Settings
from chipclear.contracts import OpenBatchResult
from chipclear.domain.allocation import BatchSpec, LedgerState, OpenBatch
from chipclear.domain.limits import cut
from chipclear.domain.models import MAX_UNITS
from chipclear.domain.names import normalise_buyer
from chipclear.domain.policy import describe_validation_error
from chipclear.projections import open_event_store
from chipclear.temporal import ServerUnavailable, connect

# The ledger's own bound on a batch's capacity (BatchSpec), applied to a company's cap too.
MAX_BATCH_UNITS = 100 * MAX_UNITS

batch_app = typer.Typer(help="Allocation batches of the cn-import gate.", no_args_is_help=True)


# A batch that closes more than this far ahead is a typo for a year, not a plan.
LONGEST_BATCH = timedelta(days=3653)


def _closing_time(closes_at: datetime | None, now: datetime) -> None:
    """A batch must open to close later: one already closed would take every waiting request's hope
    and grant nothing; one closing centuries ahead is a typo."""
    if closes_at is None:
        return
    if closes_at.tzinfo is None:
        raise InvalidInput("--closes-at: give a time zone, e.g. 2026-03-01T00:00:00+08:00")
    if closes_at <= now:
        raise InvalidInput(
            f"--closes-at: {closes_at.isoformat()} is in the past (now: "
            f"{now.isoformat(timespec='seconds')}); a batch must close later than it opens"
        )
    if closes_at - now > LONGEST_BATCH:
        raise InvalidInput(f"--closes-at: {closes_at.isoformat()} is more than 10 years ahead")


def _spec(
    batch_id: str,
    units: int,
    priority: str | None,
    per_company_cap: int | None,
    eligible: str,
    closes_at: datetime | None,
) -> BatchSpec:
    try:
        spec = BatchSpec(
            batch_id=batch_id,
            capacity=units,
            priority=[name.strip() for name in (priority or "").split(",") if name.strip()],
            per_company_cap=per_company_cap,
            eligible=eligible,
            closes_at=closes_at,
        )
    except ValidationError as exc:
        raise InvalidInput(f"batch: {describe_validation_error(exc)}") from None
    # The ledger bounds a batch's capacity; a company's cap within the same bound, or 2**70 would pass.
    if per_company_cap is not None and not 1 <= per_company_cap <= MAX_BATCH_UNITS:
        raise InvalidInput(
            f"--per-company-cap: {cut(per_company_cap)} is not between 1 and {MAX_BATCH_UNITS}"
        )
    return spec


async def run_open(
    settings: Settings, spec: BatchSpec, actor: str, key: Ed25519PrivateKey
) -> OpenBatchResult:
    client = await connect()
    return await ops.open_batch(client, settings.task_queue, OpenBatch(batch=spec, actor=actor), key=key)


def ledger_document(state: LedgerState) -> list[dict[str, Any]]:
    rows = []
    for batch in state.batches.values():
        waiting = [e for e in state.queue if batch.eligible == "all" or batch.is_priority(e.buyer_key)]
        rows.append(
            {
                "batch_id": batch.batch_id,
                "capacity": batch.capacity,
                "allocated": batch.allocated,
                "free": batch.free,
                "queue_length": len(waiting),
                "priority": batch.priority,
                "per_company_cap": batch.per_company_cap,
                "eligible": batch.eligible,
                "opened_at": batch.opened_at.isoformat(),
                "closes_at": batch.closes_at.isoformat() if batch.closes_at else None,
            }
        )
    return rows


def batch_detail(state: LedgerState, batch_id: str) -> dict[str, Any]:
    batch = state.batches.get(batch_id)
    if batch is None:
        raise ops.NotFound(f"no batch {batch_id!r} (open batches: {', '.join(state.batches) or 'none'})")
    # Units per buyer from the batch's own totals, which keep every grant; the requests listed are those
    # the ledger still carries (a licensed request is settled out of it as the ledger continues as new,
    # see docs/gates.md), each buyer named as its requests gave it.
    names: dict[str, str] = {}
    held: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for allocation in state.allocations.values():
        if allocation.batch_id == batch_id:
            key = normalise_buyer(allocation.buyer)
            names.setdefault(key, allocation.buyer)
            held[key].append({"request_id": allocation.request_id, "units": allocation.units})
    allocations = sorted(
        (
            {"buyer": names.get(key, key), "units": units, "requests": held.get(key, [])}
            for key, units in batch.by_buyer.items()
        ),
        key=lambda row: str(row["buyer"]).casefold(),
    )
    queue = [
        {
            "position": position,
            "request_id": entry.request_id,
            "buyer": entry.buyer,
            "units": entry.units,
            "priority": batch.is_priority(normalise_buyer(entry.buyer)),
        }
        for position, entry in enumerate(state.ordered_queue(), start=1)
    ]
    return {
        **next(row for row in ledger_document(state) if row["batch_id"] == batch_id),
        "allocations": allocations,
        "queue": queue,
    }


async def read_ledger(settings: Settings) -> LedgerState:
    if (missing := settings.missing_store()) is not None:
        raise ops.NotFound(missing)  # a read never creates a store
    try:
        client = await connect()
    except ServerUnavailable:
        client = None  # the stored events still tell the whole story
    return await ops.ledger_state(client, open_event_store(settings.event_store_url), settings.task_queue)


@batch_app.command("open")
@handles_errors
@acts
def batch_open(
    act: Act,
    batch_id: Annotated[str, typer.Option("--id", help="Batch id, e.g. B2.")],
    units: Annotated[int, typer.Option(help="Capacity in units.")],
    priority: Annotated[
        str | None, typer.Option(help="Priority buyers, comma-separated: ByteDance,Alibaba,Tencent")
    ] = None,
    per_company_cap: Annotated[int | None, typer.Option(help="Most units one company may hold.")] = None,
    eligible: Annotated[
        Literal["all", "priority"],
        typer.Option(help="all: everyone (priority first); priority: only them"),
    ] = "all",
    closes_at: Annotated[
        datetime | None, typer.Option(help="When the batch stops granting (ISO 8601).")
    ] = None,
) -> None:
    """Open a batch: the queue is served at once, in priority order, and waiting requests wake.

    A signed act of an import reviewer (a reviewer of cn-import in the policy)."""
    _closing_time(closes_at, datetime.now(UTC))
    spec = _spec(batch_id, units, priority, per_company_cap, eligible, closes_at)
    result = run(run_open(settings(), spec, act.actor, act.key(act.actor)))
    output.print_outcome(
        result.model_dump(),
        f"opened batch [bold]{result.batch_id}[/] with {result.capacity} units; "
        f"served from the queue: {', '.join(result.served) or 'nobody waiting'}",
        json_=act.json,
    )


@batch_app.command("list")
@handles_errors
def batch_list(json_: JsonOption = False) -> None:
    """Every batch: capacity, allocated, free and how many requests wait."""
    state = run(read_ledger(settings()))
    rows = ledger_document(state)
    if json_:
        output.print_json({"batches": rows, "queue_length": len(state.queue)})
        return
    table = Table("batch", "capacity", "allocated", "free", "waiting", "eligible", "priority", "cap")
    for row in rows:
        output.row(
            table,
            row["batch_id"],
            str(row["capacity"]),
            str(row["allocated"]),
            str(row["free"]),
            str(row["queue_length"]),
            row["eligible"],
            ", ".join(row["priority"]) or "-",
            str(row["per_company_cap"] or "-"),
        )
    output.console.print(table)
    output.console.print(f"{len(state.queue)} request(s) queued")


@batch_app.command("show")
@handles_errors
def batch_show(batch_id: str, json_: JsonOption = False) -> None:
    """One batch: allocations per buyer, and the queue in the order it will be served."""
    detail = batch_detail(run(read_ledger(settings())), batch_id)
    if json_:
        output.print_json(detail)
        return
    output.console.print(
        f"batch [bold]{detail['batch_id']}[/]: {detail['allocated']} of {detail['capacity']} units "
        f"allocated, {detail['free']} free ({detail['eligible']} eligible)"
    )
    allocations = Table("buyer", "units", "requests not yet settled")
    for row in detail["allocations"]:
        output.row(
            allocations, row["buyer"], str(row["units"]), ", ".join(r["request_id"] for r in row["requests"])
        )
    output.console.print(allocations)
    queue = Table("position", "request", "buyer", "units", "priority")
    for row in detail["queue"]:
        output.row(queue,
            str(row["position"]), row["request_id"], row["buyer"], str(row["units"]),
            "yes" if row["priority"] else "",
        )  # fmt: skip
    output.console.print(queue)
