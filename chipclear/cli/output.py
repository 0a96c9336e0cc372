"""Presenting results: rich tables for people, stable JSON for programs.

Every command prints through here, so the domain and the store are imported only by the functions
that are handed their objects (docs/performance.md, "CLI start-up").
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from chipclear.display import is_safe, json_text, shown

if TYPE_CHECKING:
    from datetime import datetime

    from chipclear.domain.events import StoredEvent
    from chipclear.domain.state import RequestState


def timestamp(moment: datetime) -> str:
    """The chain's text form of a moment (chipclear.store.chain.timestamp)."""
    from chipclear.store.chain import timestamp as chain_form

    return chain_form(moment)


class SafeConsole(Console):
    """A rich console that shows control, bidi and zero-width characters escaped (chipclear.display)
    in everything printed through it: strings, Text and table cells alike, so no command can forget.

    Styles are rich's own and still render; only the characters of the text are escaped. New lines in
    a printed string are kept (a message may span lines); values put into lines and cells by the
    functions below are escaped whole, new lines included.
    """

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(safe(item) for item in objects), **kwargs)


def safe(renderable: Any) -> Any:
    """`renderable` with its text escaped: a str (markup survives: no bracket is escaped), a Text
    (styles kept, piece by piece) or a Table (every cell, header and title); others pass as they are."""
    if isinstance(renderable, str):
        return shown(renderable, lines=True)
    if isinstance(renderable, Text):
        return _safe_text(renderable)
    if isinstance(renderable, Table):
        for column in renderable.columns:
            column.header = safe(column.header)
            column._cells[:] = [safe(cell) for cell in column._cells]
        renderable.title = safe(renderable.title) if renderable.title is not None else None
        return renderable
    return renderable


def _safe_text(text: Text) -> Text:
    if is_safe(text.plain.replace("\n", "")):
        return text
    # Cut at every span boundary, so each piece lies wholly inside or outside each span; escape each
    # piece and give it back the styles that covered it.
    cuts = sorted({span.start for span in text.spans} | {span.end for span in text.spans})
    rebuilt = text.blank_copy()
    for piece in text.divide(cut for cut in cuts if 0 < cut < len(text)):
        part = Text(shown(piece.plain, lines=True), style=piece.style)
        for span in piece.spans:
            part.stylize(span.style)
        rebuilt.append(part)
    return rebuilt


console = SafeConsole()
errors = SafeConsole(stderr=True)
# Piped output (a file, grep, a ticket) keeps each sentence on one line: rich would otherwise break
# it at 80 columns. On a terminal, lines wrap to its width as usual; tables fit the width either way.
console.soft_wrap = not console.is_terminal
errors.soft_wrap = not errors.is_terminal


def row(table: Table, *cells: object) -> None:
    """A table row as plain text: names, reasons and conditions come from users and may hold square
    brackets, which rich would otherwise read as markup (and drop, or fail on), and control characters,
    shown escaped, new lines too."""
    table.add_row(*(cell if isinstance(cell, Text) else Text(shown(str(cell))) for cell in cells))


def print_json(document: Any) -> None:
    # Plain print, not rich: programs parse this, and rich would wrap long lines. Exact JSON; only
    # the characters a terminal would act on are spelt as JSON escapes (chipclear.display.json_text).
    print(json_text(json.dumps(document, indent=2, ensure_ascii=False, default=str)))


def print_outcome(document: Any, line: str, *, json_: bool, highlight: bool = True) -> None:
    """A command's outcome: its JSON document for programs, else one line (rich markup) for people."""
    if json_:
        print_json(document)
    else:
        console.print(line, highlight=highlight)


def state_document(state: RequestState, *, source: str) -> dict[str, Any]:
    """The `status --json` contract: stable keys, ISO timestamps; each gate adds its own keys."""
    assert state.status is not None
    deadline = state.deadline
    document: dict[str, Any] = {
        "request_id": state.request_id,
        "status": state.status,
        "gate": state.gate,
        "route": list(state.route),
        "buyer": state.buyer,
        "units_requested": state.units_requested,
        "units_approved": state.units_approved,
        "policy_version": state.policy_version,
        "deadline": timestamp(deadline) if deadline else None,
        "licence_id": state.licence_id,
        "conditions": state.conditions,
        "outcome_reason": state.outcome_reason,
        "licence_valid_until": timestamp(state.licence_valid_until) if state.licence_valid_until else None,
        "flags": state.flags,
        "review_due": timestamp(state.review_due) if state.review_due else None,
        "escalated": state.escalated,
        "open_question": state.open_question.model_dump(mode="json") if state.open_question else None,
        "correspondence": [exchange.model_dump(mode="json") for exchange in state.correspondence],
        "gates": {
            gate: record.model_dump(mode="json", exclude={"gate"}) for gate, record in state.gates.items()
        },
        "version": state.version,
        "submitted_at": timestamp(state.submitted_at) if state.submitted_at else None,
        "updated_at": timestamp(state.updated_at) if state.updated_at else None,
        "source": source,
    }
    for part in state.slices.values():
        document |= part.document(state)
    return document


def print_state(state: RequestState, *, source: str) -> None:
    print_status(state_document(state, source=source), gate_lines(state))


def print_status(doc: dict[str, Any], lines: list[str]) -> None:
    """`status` for people, from its JSON document (`state_document`) and what the gates say (`gate_lines`):
    one layout, whether the state came from the domain's models or, for a final request, straight from
    the store's row (chipclear.cli.final_status)."""
    console.print(
        f"[bold]{doc['request_id']}[/]  status [bold]{doc['status']}[/]"
        + (f" at gate [bold]{doc['gate']}[/] (deadline {doc['deadline']})" if doc["gate"] else "")
    )
    console.print(
        f"buyer {escape(shown(doc['buyer']))}  units requested {doc['units_requested']}  "
        f"approved {doc['units_approved'] if doc['units_approved'] is not None else '-'}  "
        f"policy {doc['policy_version']}"
    )
    table = Table("gate", "outcome", "by", "units", "opened", "decided", "reason")
    for gate, record in doc["gates"].items():
        row(
            table,
            gate,
            record["outcome"] or "pending",
            record["decided_by"] or "",
            str(record["units_approved"] or ""),
            json_moment(record["opened_at"])[:19],
            json_moment(record["decided_at"])[:19] if record["decided_at"] else "",
            record["reason"] or "",
        )
    console.print(table)
    _print_review(doc)
    for line in lines:
        # Text, not markup: names and reasons come from users and the policy, brackets included.
        console.print(Text(shown(line)))
    if doc["licence_id"]:
        until = f", valid until {doc['licence_valid_until'][:10]}" if doc["licence_valid_until"] else ""
        console.print(f"licence [bold]{doc['licence_id']}[/] for {doc['units_approved']} units{until}")
        for condition in doc["conditions"]:
            console.print(f"  condition: {escape(shown(condition))}")
    if doc["outcome_reason"]:
        console.print(f"reason: {escape(shown(doc['outcome_reason']))}")
    console.print(f"[dim]source: {doc['source']}, version {doc['version']}[/]")


def json_moment(text: str) -> str:
    """A moment as a JSON document holds it (pydantic's form, `…Z`) in the chain's form, as `timestamp`."""
    from datetime import UTC, datetime

    return datetime.fromisoformat(text).astimezone(UTC).isoformat(timespec="microseconds")


def gate_lines(state: RequestState) -> list[str]:
    """What each gate of the route has to say about the request (screening, allocation, evidence…)."""
    parts = [state.slices[gate] for gate in state.route if gate in state.slices]
    return [line for part in parts for line in part.describe(state)]


def print_gate_lines(state: RequestState) -> None:
    for line in gate_lines(state):
        # Text, not markup: names and reasons come from users and the policy, brackets included.
        console.print(Text(shown(line)))


def licence_document(state: RequestState) -> dict[str, Any]:
    """The `licence --json` contract."""
    assert state.request is not None and state.licence_id is not None
    request = state.request
    last = state.gates.get(state.route[-1]) if state.route else None
    issued = last.decided_at if last is not None else None
    return {
        "licence_id": state.licence_id,
        "request_id": state.request_id,
        "holder": request.buyer.name,
        "end_user": request.effective_end_user.name,
        "product": request.product.value,
        "units": state.units_approved,
        "data_center": request.data_center.name,
        "issued_at": timestamp(issued) if issued else None,
        "valid_until": timestamp(state.licence_valid_until) if state.licence_valid_until else None,
        "conditions": state.conditions,
        "approvals": [
            {"gate": gate, "units": record.units_approved, "by": record.decided_by}
            for gate, record in state.gates.items()
            if record.outcome == "approved"
        ],
        "policy_version": state.policy_version,
    }


def print_licence(doc: dict[str, Any]) -> None:
    console.print(f"licence [bold]{doc['licence_id']}[/] for request {doc['request_id']}")
    console.print(
        escape(
            f"  {doc['units']} {doc['product']} for {doc['holder']} (end user {doc['end_user']}), "
            f"data centre {doc['data_center']}"
        )
    )
    issued, until = (doc["issued_at"] or "-")[:10], (doc["valid_until"] or "-")[:10]
    console.print(f"  issued {issued}, valid until {until} (policy {escape(doc['policy_version'])})")
    approvals = ", ".join(f"{a['gate']} {a['units']} by {a['by']}" for a in doc["approvals"])
    console.print(escape(f"  approvals: {approvals}"))
    for number, condition in enumerate(doc["conditions"], start=1):
        console.print(escape(f"  condition {number}: {condition}"), highlight=False)


def _count(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


def _print_review(doc: dict[str, Any]) -> None:
    """The review clock and the officer's questions, at whichever gate asks them."""
    if doc["review_due"] is not None:
        flag = " [bold red]ESCALATED[/]" if doc["escalated"] else ""
        console.print(f"review SLA due {doc['review_due'][:19]}{flag}")
    question = doc["open_question"]
    if question is not None:
        asked, due = json_moment(question["asked_at"])[:19], json_moment(question["due"])[:19]
        console.print(
            f"[yellow]waiting for the applicant[/] since {asked}, answer due {due}: "
            f"{escape(shown(question['question']))}"
        )
    for exchange in doc["correspondence"]:
        if exchange["answered_at"] is not None:
            files = f" (+{len(exchange['attachments'])} file(s))" if exchange["attachments"] else ""
            asked = f"  asked by {exchange['asked_by']}: {exchange['question']}"
            answered = f"  answered by {exchange['answered_by']}: {exchange['answer']}{files}"
            console.print(escape(shown(asked)))
            console.print(escape(shown(answered)))


def event_document(event: StoredEvent) -> dict[str, Any]:
    return {
        "position": event.position,
        "event_id": event.event_id,
        "stream_id": event.stream_id,
        "version": event.version,
        "type": event.type,
        "data": event.data_json(),
        "occurred_at": timestamp(event.occurred_at),
        "recorded_at": timestamp(event.recorded_at),
        "policy_version": event.policy_version,
        "actor": event.actor,
        "act": event.act,  # the person's signed act that caused it, signature included; None: by rule
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def summarise(event: StoredEvent) -> str:
    """One line a person can read; `events --json` has every field."""
    from chipclear.domain import events as ev
    from chipclear.domain.allocation import (
        BatchOpened,
        QueueLeft,
        RequestQueued,
        RequestsSettled,
        UnitsGranted,
        UnitsReleased,
    )

    match event.data:
        case ev.RequestSubmitted(request=r):
            return f"{r.buyer.name} ({r.buyer.kind}) asks for {r.units} {r.product}"
        case ev.GateOpened(gate=gate, deadline=deadline, review_due=review_due):
            sla = f", review due {timestamp(review_due)[:10]}" if review_due else ""
            return f"{gate} opened, deadline {timestamp(deadline)[:10]}{sla}"
        case ev.GateApproved(gate=gate, units_approved=units, rule=rule, conditions=conditions):
            extra = f" ({rule})" if rule else ""
            extra += f", {len(conditions)} condition(s)" if conditions else ""
            return f"{gate} approved {units} units{extra}"
        case ev.GateDenied(gate=gate, reason=reason):
            return f"{gate} denied: {reason}"
        case ev.EvidenceAdded(records=records):
            return f"{len(records)} record(s), {sum(r.units for r in records)} domestic units"
        case ev.EvidenceRejected(records=rejected):
            return "not counted: " + "; ".join(f"{r.record.invoice} ({r.reason})" for r in rejected)
        case ev.DomesticQuotaAssessed() as a:
            return f"{a.domestic_units} domestic vs {a.required_units} required, shortfall {a.shortfall}"
        case ev.LicenseIssued(licence_id=licence_id, units=units, conditions=conditions):
            return f"{licence_id}: {units} units, {len(conditions)} condition(s)"
        case ev.RequestWithdrawn(gate=gate, reason=reason):
            return f"withdrawn at {gate}: {reason}"
        case ev.RequestExpired(gate=gate, deadline=deadline, cause="information_request"):
            return f"returned without action at {gate}: no answer by {timestamp(deadline)[:19]}"
        case ev.RequestExpired(gate=gate, deadline=deadline):
            return f"expired at {gate} (deadline {timestamp(deadline)[:19]})"
        case ev.PartiesScreened(matches=matches, parties=parties, list_version=version):
            hidden = sum(1 for party in parties if party.suspicious)
            flagged = f"; {_count(hidden, 'name', 'names')} with hidden characters" if hidden else ""
            if not matches:
                return f"{_count(len(parties), 'party', 'parties')} screened, clear (list {version}){flagged}"
            names = ", ".join(sorted({m.entry_name for m in matches}))
            return f"HOLD: {len(matches)} match(es) ({names}), list {version}{flagged}"
        case ev.InformationRequested(question=question, due=due):
            return f"asks the applicant (due {timestamp(due)[:19]}): {question}"
        case ev.InformationProvided(text=text, attachments=attachments):
            return text + (f" (+{len(attachments)} file(s))" if attachments else "")
        case ev.ReviewEscalated(gate=gate, due=due):
            return f"{gate} review SLA passed ({timestamp(due)[:19]}): escalated"
        case ev.ExportApprovalReleased(units=units):
            return f"export approval unused: {units} units back to the buyer's cap"
        case ev.ScreeningListLoaded(version=version, entries=entries, source=source):
            return f"list {version} in force: {entries} entries from {source}"
        case ev.AllocationGranted(batch_id=batch, units=units, requested=requested, reason=reason):
            return f"{units} of {requested} units from batch {batch}" + (f" ({reason})" if reason else "")
        case ev.AllocationQueued(position=position):
            return f"queued for a later batch, position {position}"
        case ev.AllocationReleased(batch_id=batch, units=units):
            return f"gave back {units} units to batch {batch}" if batch else "left the allocation queue"
        # The allocation ledger's own stream.
        case BatchOpened(batch=batch):
            return f"batch {batch.batch_id} opened: {batch.capacity} units, {batch.eligible} eligible"
        case UnitsGranted(request_id=request_id, batch_id=batch, units=units, requested=requested):
            return f"{units} of {requested} units from batch {batch} to {request_id}"
        case RequestQueued(request_id=request_id, units=units):
            return f"{request_id} queued for {units} units"
        case UnitsReleased(request_id=request_id, batch_id=batch, units=units, reason=reason):
            return f"{request_id} gave back {units} units to batch {batch}: {reason}"
        case QueueLeft(request_id=request_id, reason=reason):
            return f"{request_id} left the queue: {reason}"
        case RequestsSettled(request_ids=request_ids, licensed=licensed):
            given_back = len(request_ids) - licensed
            return f"settled: {licensed} licensed, {given_back} given back ({', '.join(request_ids[:3])}" + (
                ", …)" if len(request_ids) > 3 else ")"
            )
    return event.type


def print_log_line(event: StoredEvent, *, json_: bool) -> None:
    """One event of the whole log, printed as soon as it is read (a follower cannot wait for a table)."""
    if json_:
        print(json_text(json.dumps(event_document(event), ensure_ascii=False)), flush=True)
        return
    console.print(
        Text.assemble(
            (f"{event.position:>8} ", "dim"),
            (shown(event.stream_id), "bold"),
            f" v{event.version} {event.type} by {shown(event.actor)} ",
            f"at {timestamp(event.occurred_at)[:19]}: ",
            shown(summarise(event)),
        ),
        soft_wrap=True,
    )
    console.file.flush()


def print_events(events: list[StoredEvent]) -> None:
    table = Table("v", "type", "actor", "occurred (UTC)", "what", "hash")
    for event in events:
        row(
            table,
            str(event.version),
            event.type,
            # A person's act carries their signature; what the rules, the ledger or a deadline did does not.
            f"{event.actor} (signed)" if event.act is not None else event.actor,
            timestamp(event.occurred_at)[:19],
            summarise(event),
            event.hash[:10],
        )
    console.print(table)


def print_licence_standing(doc: dict[str, Any]) -> None:
    """Where a licence stands and every shipment drawn down against it (`chipclear licence`)."""
    console.print(
        f"  [bold]{doc['status']}[/]: {doc['units_shipped']:,} of {doc['units']:,} units shipped, "
        f"{doc['units_remaining']:,} remaining"
        + (escape(f"; suspended: {shown(doc['suspended_reason'])}") if doc["suspended_reason"] else "")
    )
    for shipment in doc["shipments"]:
        lab = f"{shipment['lab'] or 'lab'} report {shipment['lab_report_id']}"
        declared = f", declaration {shipment['declaration']}" if shipment["declaration"] else ""
        console.print(
            escape(
                f"  shipment {shipment['shipment_id']}: {shipment['units']:,} units in {shipment['period']}, "
                f"{shown(lab)} (sha256 {shipment['lab_report_sha256'][:12]}…){declared}"
            ),
            highlight=False,
        )
