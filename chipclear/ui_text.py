"""What the Temporal Web UI shows for a request: a one-line summary, the request, and a gate table.

Pure text (Temporal markdown): the client sets the summary and details at start, the workflow
refreshes the gate table after every stored transition.
"""

from __future__ import annotations

from chipclear.domain.licence import LicenceState
from chipclear.domain.models import ImportRequest
from chipclear.domain.registry import gate_of
from chipclear.domain.state import RequestState

TIMES, ARROW = "\u00d7", "\u2192"


def summary(request: ImportRequest) -> str:
    """`H200 x 50,000 -> ByteDance Ltd.` (with the multiplication sign and arrow): the list's line."""
    return f"{request.product} {TIMES} {request.units:,} {ARROW} {request.buyer.name}"


def details(request: ImportRequest) -> str:
    end_user = request.effective_end_user
    site = request.data_center
    lines = [
        f"**{request.request_id}**: {request.units:,} {TIMES} {request.product}",
        "",
        f"- buyer: {request.buyer.name} ({request.buyer.country}, {request.buyer.kind})",
        f"- end user: {end_user.name} ({end_user.country}, {end_user.kind})",
        f"- end use: {request.end_use}",
        f"- data centre: {site.name}, {site.province}"
        + (" (state-funded)" if site.state_funded else "")
        + (" (public computing hub)" if site.public_computing_hub else ""),
    ]
    if request.consignees:
        lines.append("- consignees: " + ", ".join(party.name for party in request.consignees))
    return "\n".join(lines)


GATE_COLUMNS = ("gate", "status", "units", "reviewer", "time (UTC)")


def gate_rows(state: RequestState) -> list[tuple[str, ...]]:
    """One row per gate of the route: status, units, reviewer and time of each."""
    rows: list[tuple[str, ...]] = []
    for gate in state.route:
        record = state.gates.get(gate)
        if record is None:
            rows.append((gate, "not reached", "", "", ""))
            continue
        status = record.outcome or ("current" if state.gate == gate else "open")
        units = f"{record.units_approved:,}" if record.units_approved is not None else ""
        when = (record.decided_at or record.opened_at).strftime("%Y-%m-%d %H:%M")
        rows.append((gate, status, units, record.decided_by or "", when))
    return rows


def aligned_table(header: tuple[str, ...], rows: list[tuple[str, ...]], *, right: frozenset[int]) -> str:
    """A markdown pipe table padded to fixed columns, inside a fenced block: the Web UI renders a
    plain markdown table with no cell padding ("50,000alice"), while a fenced block keeps every
    column aligned in a monospaced font, and still reads as a table in the raw text."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        padded = (
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join(["```", line(header), rule, *(line(row) for row in rows), "```"])


def gate_table(state: RequestState) -> str:
    """The request's gates as an aligned table, then where it stands (markdown)."""
    table = aligned_table(GATE_COLUMNS, gate_rows(state), right=frozenset({2}))
    tail = f"**{state.status}**" + (f": {state.outcome_reason}" if state.outcome_reason else "")
    if state.licence_id:
        tail += f" (licence {state.licence_id}, {state.units_approved:,} units)"
    holds = [] if state.is_final else [held for name in state.route if (held := gate_of(name).holds(state))]
    return "\n".join([table, "", tail, *(f"**held**: {held}" for held in holds)])


SHIPMENT_COLUMNS = ("shipment", "units", "lab report", "declaration")


def licence_table(state: LicenceState) -> str:
    """A licence's standing, then its shipments as an aligned table (markdown): the Web UI's current
    details of its workflow."""
    terms = state.terms
    if terms is None:
        return "**opening**"
    head = (
        f"**{state.status}**: licence {terms.licence_id} of {terms.request_id}, "
        f"{state.units_remaining:,} of {terms.units:,} units remaining ({state.units_shipped:,} shipped), "
        f"valid until {terms.valid_until:%Y-%m-%d}"
    )
    if state.suspended_reason:
        head += f"; suspended: {state.suspended_reason}"
    if not state.shipments:
        return head
    rows: list[tuple[str, ...]] = [
        (
            shipment.shipment_id,
            f"{shipment.units:,}",
            (shipment.lab_report.lab or "lab") + " " + shipment.lab_report.report_id,
            shipment.declaration or "",
        )
        for shipment in state.shipments.values()
    ]
    return "\n".join([head, "", aligned_table(SHIPMENT_COLUMNS, rows, right=frozenset({1}))])
