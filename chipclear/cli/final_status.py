"""`chipclear status` of a final request, from the SQLite store's projection row as it is stored.

A final request (licensed, denied, withdrawn, expired) never changes, and no workflow answers for it
any more, so its status needs neither Temporal nor the domain's models, whose import is most of a CLI
call's start-up (docs/performance.md, "CLI start-up"). Its row in the request projection
(chipclear.projections) holds the whole state as JSON; read with sqlite3 and turned into the `status`
document here, it prints through the same layout (chipclear.cli.output.print_status).

What this module computes must be what `output.state_document` and each gate's `describe` give for the
same state: tests/cli/test_final_status.py folds real requests both ways and compares, and checks the
shapes below against the models. A row of any other shape (a field added since, a gate this module
does not know, a state not final) is not answered here: the caller goes the usual way.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from typing import Any

from chipclear.cli import output
from chipclear.config import Settings
from chipclear.request_rows import read_only

FINAL = frozenset({"licensed", "denied", "withdrawn", "expired"})  # chipclear.domain.models.FINAL_STATUSES

# The keys of each model as the row stores it (model_dump_json), so that a model that grows a field is
# left to the models (the test names the one that changed).
STATE_KEYS = frozenset(
    {
        "request_id",
        "request",
        "route",
        "status",
        "gate",
        "version",
        "policy_version",
        "units_requested",
        "units_approved",
        "conditions",
        "gates",
        "correspondence",
        "slices",
        "licence_id",
        "licence_valid_until",
        "outcome_reason",
        "submitted_at",
        "submitted_by",
        "updated_at",
        "escalated_gate",
        "escalated_at",
    }
)
GATE_RECORD_KEYS = frozenset(
    {
        "gate",
        "opened_at",
        "deadline",
        "outcome",
        "decided_by",
        "decided_at",
        "units_approved",
        "reason",
        "review_due",
        "proposal",
    }
)
EXCHANGE_KEYS = frozenset(
    {"gate", "question", "asked_by", "asked_at", "due", "answer", "attachments", "answered_by", "answered_at"}
)
SLICE_KEYS = {
    "us-export": frozenset(
        {"screening", "buyer_claim", "export_released", "rescreen_hold", "rescreened_with"}
    ),
    "cn-import": frozenset({"allocation"}),
    "domestic-quota": frozenset({"evidence", "rejected_evidence", "assessment"}),
}
# Keys a row stored before they were added lacks, and the default the model reads it with (a test
# compares): such a row is read as pydantic reads it, not left to the models for want of them.
SLICE_DEFAULTS: dict[str, dict[str, Any]] = {"us-export": {"rescreen_hold": None, "rescreened_with": None}}
SCREENING_KEYS = frozenset({"type", "list_version", "threshold", "parties", "matches"})
PARTY_KEYS = frozenset({"role", "name", "country", "suspicious"})
MATCH_KEYS = frozenset(
    {
        "role",
        "party_name",
        "entry_name",
        "matched_name",
        "entity_number",
        "source",
        "programs",
        "score",
        "entry_id",
        "entry_type",
        "tokens",
        "folds",
    }
)
BUYER_CLAIM_KEYS = frozenset({"buyer", "request_id", "units", "cap", "approved_before"})
ALLOCATION_KEYS = frozenset({"outcome", "batch_id", "units", "requested", "reason", "position", "released"})
ASSESSMENT_KEYS = frozenset(
    {
        "type",
        "imported_units",
        "domestic_units",
        "required_ratio",
        "required_units",
        "shortfall",
        "public_hub",
    }
)
HUB_KEYS = frozenset(
    {
        "installed_domestic",
        "installed_foreign",
        "domestic_added",
        "imported_units",
        "share_after",
        "min_share",
        "shortfall",
    }
)


def show(current: Settings, request_id: str, *, json_: bool) -> bool:
    """Print the status of `request_id` if it is final in a SQLite store; False: not answered here."""
    state = stored_final(current, request_id)
    if state is None:
        return False
    doc = document(state, source="event-store")
    if json_:
        output.print_json(doc)
    else:
        output.print_status(doc, gate_lines(state))
    return True


def stored_final(current: Settings, request_id: str) -> dict[str, Any] | None:
    """The request's stored state, if the store is a SQLite file whose row for it is final and of a
    shape this module knows; None otherwise (no such file or row, or anything unexpected in it)."""
    path = current.store_file
    if path is None or not path.is_file():
        return None
    try:
        with closing(read_only(path)) as db:
            query = "SELECT status, state FROM requests WHERE request_id = ?"
            found = db.execute(query, (request_id,)).fetchone()
    except sqlite3.Error:
        return None
    if found is None or found[0] not in FINAL:
        return None
    try:
        state = _with_defaults(json.loads(found[1]))
        return state if _known(state) else None
    except (TypeError, ValueError, AttributeError, KeyError):  # not JSON, or JSON of another shape
        return None


def _with_defaults(state: Any) -> Any:
    """`state` with the keys of `SLICE_DEFAULTS` its slices lack, as the models fill them."""
    if not isinstance(state, dict) or not isinstance(state.get("slices"), dict):
        return state
    slices = {
        gate: {**SLICE_DEFAULTS.get(gate, {}), **part} if isinstance(part, dict) else part
        for gate, part in state["slices"].items()
    }
    return {**state, "slices": slices}


def _known(state: Any) -> bool:
    if not (isinstance(state, dict) and state.keys() == STATE_KEYS and state["status"] in FINAL):
        return False
    if state["gate"] is not None or not isinstance(state["request"], dict):
        return False
    if any(record.keys() != GATE_RECORD_KEYS for record in state["gates"].values()):
        return False
    if any(exchange.keys() != EXCHANGE_KEYS for exchange in state["correspondence"]):
        return False
    slices = state["slices"]
    if not set(state["route"]) <= SLICE_KEYS.keys() or not slices.keys() <= SLICE_KEYS.keys():
        return False
    if any(part.keys() != SLICE_KEYS[gate] for gate, part in slices.items()):
        return False
    for screened in (slices.get("us-export", {}).get(key) for key in ("screening", "rescreen_hold")):
        if screened is not None and not (
            screened.keys() == SCREENING_KEYS  # a re-screening (PartiesRescreened) has the same shape
            and all(party.keys() == PARTY_KEYS for party in screened["parties"])
            and all(match.keys() == MATCH_KEYS for match in screened["matches"])
        ):
            return False
    claim = slices.get("us-export", {}).get("buyer_claim")
    allocation = slices.get("cn-import", {}).get("allocation")
    assessment = slices.get("domestic-quota", {}).get("assessment")
    hub = assessment.get("public_hub") if assessment is not None else None
    return all(
        value is None or value.keys() == keys
        for value, keys in (
            (claim, BUYER_CLAIM_KEYS),
            (allocation, ALLOCATION_KEYS),
            (assessment, ASSESSMENT_KEYS),
            (hub, HUB_KEYS),
        )
    )


def document(state: dict[str, Any], *, source: str) -> dict[str, Any]:
    """`output.state_document` of a final state, from its stored JSON: no gate open, so no deadline,
    review clock, open question or flag."""
    doc: dict[str, Any] = {
        "request_id": state["request_id"],
        "status": state["status"],
        "gate": None,
        "route": list(state["route"]),
        "buyer": state["request"]["buyer"]["name"],
        "units_requested": state["units_requested"],
        "units_approved": state["units_approved"],
        "policy_version": state["policy_version"],
        "deadline": None,
        "licence_id": state["licence_id"],
        "conditions": state["conditions"],
        "outcome_reason": state["outcome_reason"],
        "licence_valid_until": _moment(state["licence_valid_until"]),
        "flags": [],
        "review_due": None,
        "escalated": False,
        "open_question": None,
        "correspondence": state["correspondence"],
        "gates": {
            gate: {key: value for key, value in record.items() if key != "gate"}
            for gate, record in state["gates"].items()
        },
        "version": state["version"],
        "submitted_at": _moment(state["submitted_at"]),
        "updated_at": _moment(state["updated_at"]),
        "source": source,
    }
    for gate, part in state["slices"].items():
        doc |= _SLICE_DOCUMENTS[gate](part)
    return doc


def _moment(text: str | None) -> str | None:
    return output.json_moment(text) if text is not None else None


def _without_type(value: dict[str, Any] | None) -> dict[str, Any] | None:
    return {key: item for key, item in value.items() if key != "type"} if value is not None else None


def _us_export_document(part: dict[str, Any]) -> dict[str, Any]:
    return {
        "on_hold": False,  # a hold holds only at the gate, and a final request stands at none
        "screening": _without_type(part["screening"]),
        "buyer_claim": part["buyer_claim"],
        "export_released": part["export_released"],
        "rescreen_hold": _without_type(part["rescreen_hold"]),
        "rescreened_with": part["rescreened_with"],
    }


def _cn_import_document(part: dict[str, Any]) -> dict[str, Any]:
    return {"allocation": part["allocation"]}


def _domestic_quota_document(part: dict[str, Any]) -> dict[str, Any]:
    return {
        "domestic_quota": _without_type(part["assessment"]),
        "rejected_evidence": part["rejected_evidence"],
        "evidence_records": len(part["evidence"]),
    }


_SLICE_DOCUMENTS = {
    "us-export": _us_export_document,
    "cn-import": _cn_import_document,
    "domestic-quota": _domestic_quota_document,
}


def gate_lines(state: dict[str, Any]) -> list[str]:
    """`output.gate_lines` of a final state: each gate's `describe`, in route order."""
    lines: list[str] = []
    for gate in state["route"]:
        part = state["slices"].get(gate)
        if part is not None:
            lines += _SLICE_LINES[gate](part)
    return lines


def _us_export_lines(part: dict[str, Any]) -> list[str]:
    """chipclear.domain.gates.us_export.UsExportSlice.describe, not holding (no gate is open, and a
    re-screening hold says nothing once the request is final)."""
    lines: list[str] = []
    screened = part["screening"]
    if screened is not None and screened["matches"]:
        lines.append(f"screening: {len(screened['matches'])} match(es) on list {screened['list_version']}")
        lines += [
            f"  {m['role']} {m['party_name']!r} ~ {m['entry_name']!r} (as {m['matched_name']!r}, score "
            f"{m['score']:g}, {m['source']})" + (f": {why}" if (why := _explanation(m)) else "")
            for m in screened["matches"]
        ]
    elif screened is not None:
        parties = len(screened["parties"])
        lines.append(
            f"screening: clear ({parties} {'party' if parties == 1 else 'parties'}, "
            f"list {screened['list_version']}, threshold {screened['threshold']:g})"
        )
    if screened is not None:
        lines += [
            f"  suspicious: {p['role']} {p['name']!r}: {', '.join(p['suspicious'])}"
            for p in screened["parties"]
            if p["suspicious"]
        ]
    claim = part["buyer_claim"]
    if claim is not None:
        total = claim["approved_before"] + claim["units"]
        if part["export_released"]:
            lines.append(
                f"buyer cap: this request's {claim['units']} approved units went back to {claim['buyer']}'s "
                f"cap when it ended unused (at approval {total} of {claim['cap']} were approved, "
                f"{total - claim['units']} without them)"
            )
        else:
            lines.append(
                f"buyer cap: {claim['buyer']} has {total} of {claim['cap']} units approved "
                f"({claim['units']} by this request)"
            )
    return lines


def _explanation(match: dict[str, Any]) -> str:
    """chipclear.domain.screening.models.ScreeningMatch.explanation."""
    why = f"on {', '.join(match['tokens'])}" if match["tokens"] else ""
    if match["folds"]:
        why += ("; " if why else "") + "; ".join(match["folds"])
    return why


def _cn_import_lines(part: dict[str, Any]) -> list[str]:
    """chipclear.domain.gates.cn_import.CnImportSlice.describe."""
    held = part["allocation"]
    if held is None:
        return []
    if held["outcome"] == "queued":
        where = f"queued for allocation, position {held['position']}" if held["position"] else "queued"
    else:
        where = f"{held['units']} of {held['requested']} units allocated from batch {held['batch_id']}"
        where += f" ({held['reason']})" if held["reason"] else ""
    return [f"allocation: {where}" + (" (released)" if held["released"] else "")]


def _domestic_quota_lines(part: dict[str, Any]) -> list[str]:
    """chipclear.domain.gates.domestic_quota.DomesticQuotaSlice.describe, with no gate open (so
    nothing waits for evidence)."""
    lines: list[str] = []
    a = part["assessment"]
    if a is not None:
        lines.append(
            f"domestic quota: {a['domestic_units']} domestic units vs {a['required_units']} required "
            f"(ratio {a['required_ratio']} x {a['imported_units']}); shortfall {a['shortfall']}"
        )
        hub = a["public_hub"]
        if hub is not None:
            lines.append(
                f"  public computing hub: domestic share after import {hub['share_after']:.1%} "
                f"(must exceed {hub['min_share']:.0%}); short by {hub['shortfall']}"
            )
    for rejected in part["rejected_evidence"]:
        lines.append(f"  not counted: invoice {rejected['record']['invoice']!r}: {rejected['reason']}")
    return lines


_SLICE_LINES = {
    "us-export": _us_export_lines,
    "cn-import": _cn_import_lines,
    "domestic-quota": _domestic_quota_lines,
}
