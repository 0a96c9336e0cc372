"""`chipclear buyer-cap`: one buyer's cap on US export approvals, as the event store holds it."""

from __future__ import annotations

from typing import Annotated

import typer

from chipclear.cli import common
from chipclear.cli.common import JsonOption


@common.handles_errors
def buyer_cap(
    buyer: Annotated[str, typer.Argument(help="The buyer, however its name is written.")],
    json_: JsonOption = False,
) -> None:
    """A buyer's cap on US export approvals: units approved over its requests, each one's share, headroom.

    Requests that ended unlicensed are listed with the units they gave back. The cap is the policy's
    us_export.max_units_per_buyer; the buyer's name may be written any way its requests write it."""
    from rich.markup import escape

    from chipclear.cli import output
    from chipclear.client_errors import NotFound
    from chipclear.contracts import deployment
    from chipclear.domain.gates import us_export
    from chipclear.domain.policy import load_policy

    current = common.settings()
    held = common.store().buyer_cap(buyer, deployment(current.task_queue))
    cap = us_export.GATE.section(load_policy(current.policy, home=current.home)).max_units_per_buyer
    if not held.claims and not held.released:
        raise NotFound(f"no request of buyer {buyer!r} has claimed units of its cap")
    total = held.held
    headroom = None if cap is None else max(0, cap - total)
    if json_:
        output.print_json(
            {
                "buyer": buyer,
                "buyer_key": held.buyer_key,
                "cap": cap,
                "approved": total,
                "headroom": headroom,
                "claims": held.claims,
                "released": held.released,
            }
        )
        return
    limit = (
        "no per-buyer cap in the policy"
        if cap is None
        else f"{total:,} of {cap:,} approved, {headroom:,} left"
    )
    output.console.print(f"buyer [bold]{escape(buyer)}[/]: {limit}", highlight=False)
    for request_id, units in sorted(held.claims.items()):
        output.console.print(f"  {escape(request_id)}: {units:,} units approved", highlight=False)
    for request_id, units in sorted(held.released.items()):
        output.console.print(
            f"  {escape(request_id)}: ended unlicensed, {units:,} units given back", highlight=False
        )
