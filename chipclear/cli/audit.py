"""`chipclear audit …`: prove the record is whole: chains, seals, signed acts, checkpoints and proofs.

Every check trusts keys from the policy (`[recorder] keys`, each person's `key`), never from the store:
a key found beside the events proves nothing about who wrote them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from chipclear.cli import output
from chipclear.cli.common import JsonOption, fail, handles_errors, settings, store
from chipclear.cli.files import InvalidInput
from chipclear.cli.store import policy_trust, rebuild
from chipclear.domain.gates import domestic_quota
from chipclear.domain.licence import ShipmentRecorded
from chipclear.domain.policy import load_policy
from chipclear.domain.screening_act import SCREENING_STREAM
from chipclear.kept_files import lab_reports_checked
from chipclear.store.chain import AuditReport
from chipclear.store.checkpoint import (
    Checkpoint,
    ConsistencyReport,
    InvalidCheckpoint,
    read_checkpoint,
    write_checkpoint,
)
from chipclear.store.protocol import AuditProgress, EventStore
from chipclear.store.reconcile import Difference, reconcile
from chipclear.store.sql_checkpoints import CheckpointMismatch, UnknownEvent

audit_app = typer.Typer(
    help="Prove the event log is whole: chains, recorder seals, signed acts, checkpoints.",
    no_args_is_help=True,
)

CheckpointOption = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        help="A checkpoint file (from `chipclear audit checkpoint`): prove the log still extends it.",
    ),
]
SHOWN = 10  # breaks printed for people; --json has them all


def _checkpoint_file(path: Path) -> Checkpoint:
    try:
        return read_checkpoint(path)
    except InvalidCheckpoint as exc:
        raise InvalidInput(f"--checkpoint: {exc}") from None


@audit_app.command("verify")
@handles_errors
def verify(checkpoint: CheckpointOption = None, json_: JsonOption = False) -> None:
    """Check every chain, head, recorder seal and signed act, and that every projection row, the
    invoice registry and the list in force are what the log gives; with --checkpoint, that nothing
    before it was removed or rewritten. Exit 1 on any break, naming each."""
    trust = policy_trust()
    given = _checkpoint_file(checkpoint) if checkpoint is not None else None
    with closing(store()) as events, _progress(events, shown=not json_) as progress:
        report = events.verify(trust, progress)
        consistent = events.check_checkpoint(given, trust.recorder_keys) if given is not None else None
        differences = _rebuilt_and_compared(events, report)
        shipments = events.read_all(types=[ShipmentRecorded.model_fields["type"].default])
        altered, missing = lab_reports_checked(settings().home, shipments)
    differences += altered
    if json_:
        document: dict[str, Any] = report.model_dump()
        document["differences"] = [d.model_dump() for d in differences]
        document["lab_reports_not_kept_here"] = missing
        if consistent is not None:
            document["checkpoint"] = consistent.model_dump()
        output.print_json(document)
    elif report.ok and not differences and (consistent is None or consistent.ok):
        output.console.print(_intact(report, consistent), highlight=False, soft_wrap=True)
    if missing and not json_:
        output.console.print(
            f"[yellow]note:[/] {len(missing)} lab report(s) the shipments name are not kept in this home "
            f"({settings().home / 'files'}): kept where the shipments were recorded, or a log moved here "
            "without its files",
            highlight=False,
            soft_wrap=True,
        )
    problems = [b.describe() for b in report.breaks] + [d.describe() for d in differences]
    if consistent is not None and not consistent.ok:
        problems.insert(0, f"checkpoint {checkpoint}: {consistent.problem}")
    if problems:
        if not json_:
            for line in problems[1:SHOWN]:
                output.errors.print(f"  {line}", highlight=False, soft_wrap=True, markup=False)
        more = f" ({len(problems)} problems; --json lists them all)" if len(problems) > 1 else ""
        fail(problems[0] + more)


@contextmanager
def _progress(events: EventStore, *, shown: bool) -> Iterator[AuditProgress | None]:
    """A progress bar of the events checked, on a terminal only: piped or --json output is unchanged."""
    if not shown or not output.errors.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    total = events.event_count()
    with Progress(
        TextColumn("checking the log"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=output.errors,
        transient=True,
    ) as bar:
        task = bar.add_task("events", total=total)
        yield lambda done: bar.advance(task, done)


def _rebuilt_and_compared(events: EventStore, report: AuditReport) -> list[Difference]:
    """Every stored row the log does not give; a screening-list row the chain audit named already is
    not named twice."""
    current = settings()
    policy = load_policy(current.policy, home=current.home)
    unique = domestic_quota.NAME in policy.route and domestic_quota.GATE.section(policy).unique_invoices
    differences = reconcile(events, unique_invoices=unique)
    if any(b.stream_id == SCREENING_STREAM for b in report.breaks):
        differences = [d for d in differences if d.table != "screening_lists"]
    return differences


def _intact(report: AuditReport, consistent: ConsistencyReport | None) -> str:
    line = (
        f"[green]intact:[/] {report.streams_checked} streams, {report.events_checked} events, "
        f"{report.acts_checked} of them signed by the person who acted; every seal by a recorder key of "
        f"policy {report.trusted_policy}; "
        "every projection, invoice, lab report and the list in force as the log gives them"
    )
    if consistent is not None:
        line += (
            f"; the log ({consistent.log_size} events) extends the checkpoint of "
            f"{consistent.checkpoint_size} events (root {consistent.checkpoint_root[:16]}…)"
        )
    return line


@audit_app.command("checkpoint")
@handles_errors
def checkpoint(
    out: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Also write it to this file (0600, whole or not at all)."),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Sign (with the recorder key) and store a checkpoint of the whole log now; keep the file apart."""
    if out is not None and not out.parent.is_dir():
        raise InvalidInput(f"--output: the directory {out.parent} does not exist")
    if out is not None and out.is_dir():
        raise InvalidInput(f"--output: {out} is a directory; name a file")
    with closing(store()) as events:
        made = events.make_checkpoint()
    if out is not None:
        try:
            write_checkpoint(made, out)
        except OSError as exc:
            fail(f"the checkpoint was stored but not written to {out}: {exc.strerror or exc}")
    if json_:
        output.print_json(made.model_dump())
    else:
        output.console.print(
            f"checkpoint of {made.tree_size} events (through position {made.last_position}): "
            f"root {made.root_hash}" + (f"; written to {out}" if out is not None else ""),
            highlight=False,
            soft_wrap=True,  # a path or a hash broken over two lines cannot be copied
        )


@audit_app.command("prove")
@handles_errors
def prove(
    event_id: Annotated[str, typer.Argument(help="The event to prove (its event_id).")],
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", help="The checkpoint file to prove it against.")
    ],
) -> None:
    """Print an inclusion proof (RFC 9162) that the event is in the checkpoint's tree, as JSON."""
    trust = policy_trust()
    given = _checkpoint_file(checkpoint)
    with closing(store()) as events:
        try:
            proof = events.prove(event_id, given, trust.recorder_keys)
        except (UnknownEvent, CheckpointMismatch) as exc:
            fail(str(exc.args[0]))
    output.print_json(proof.model_dump())


# Kept for scripts written before `chipclear projections rebuild`; hidden from help.
audit_app.command("rebuild", hidden=True)(rebuild)
