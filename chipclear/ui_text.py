"""What the Temporal Web UI shows for a request: a one-line summary, the request, and a gate table.

Pure text (Temporal markdown): the client sets the summary and details at start, the workflow
refreshes the gate table after every stored transition.
"""

from __future__ import annotations

from chipclear.domain.models import ImportRequest
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


def gate_table(state: RequestState) -> str:
    """The request's gates as a markdown table: status, units, reviewer and time of each."""
    rows = ["| gate | status | units | reviewer | time (UTC) |", "|---|---|---|---|---|"]
    for gate in state.route:
        record = state.gates.get(gate)
        if record is None:
            rows.append(f"| {gate} | not reached | | | |")
            continue
        status = record.outcome or ("**current**" if state.gate == gate else "open")
        units = f"{record.units_approved:,}" if record.units_approved is not None else ""
        when = (record.decided_at or record.opened_at).strftime("%Y-%m-%d %H:%M")
        rows.append(f"| {gate} | {status} | {units} | {record.decided_by or ''} | {when} |")
    tail = f"**{state.status}**" + (f": {state.outcome_reason}" if state.outcome_reason else "")
    if state.licence_id:
        tail += f" (licence {state.licence_id}, {state.units_approved:,} units)"
    return "\n".join([*rows, "", tail])
