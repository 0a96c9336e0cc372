"""`chipclear store …` and `chipclear projections …`: the event store's schema, export, import, rebuild."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated

import typer

from chipclear.cli import output
from chipclear.cli.common import JsonOption, fail, handles_errors, settings, store
from chipclear.cli.files import InvalidInput
from chipclear.domain.policy import PolicyError, load_policy
from chipclear.projections import open_event_store
from chipclear.store.transfer import read_csv, read_jsonl, write_csv, write_jsonl
from chipclear.store.trust import Trust
from chipclear.store.urls import redact

store_app = typer.Typer(help="The event store: schema migrations, export and import.", no_args_is_help=True)
projections_app = typer.Typer(help="The read models kept from the event log.", no_args_is_help=True)


def policy_trust() -> Trust:
    """The keys the policy in force names; a policy naming no recorder key can vouch for nothing."""
    current = settings()
    policy = load_policy(current.policy, home=current.home)
    if not policy.recorder.keys:
        raise PolicyError(
            f"policy {policy.version}: [recorder] keys is empty, so no recorder seal can be trusted; "
            'name the worker\'s public key there (keys = ["file:keys/recorder.pub"])'
        )
    return Trust.from_policy(policy)


class ExportFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"


@store_app.command("migrate")
@handles_errors
def migrate(
    check: Annotated[
        bool, typer.Option("--check", help="Only report pending migrations; exit 1 if there are any.")
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Bring the event store's schema up to this release (run once before workers start on PostgreSQL)."""
    url = settings().event_store_url
    with closing(open_event_store(url, require_schema=False)) as events:
        pending = events.pending_migrations()
        applied = [] if check else events.migrate()
        version = events.schema_version()
    steps = pending if check else applied
    if json_:
        output.print_json(
            {
                "event_store": redact(url),
                "schema_version": version,
                "pending" if check else "applied": [{"version": m.version, "name": m.name} for m in steps],
            }
        )
    else:
        for migration in steps:
            verb = "pending" if check else "applied"
            output.console.print(f"{verb} {migration.version}: {migration.name}", highlight=False)
        state = f"{len(steps)} pending" if check and steps else "up to date"
        output.console.print(f"event store {redact(url)}: schema version {version}, {state}", highlight=False)
    if check and pending:
        raise typer.Exit(1)


@store_app.command("export")
@handles_errors
def export(
    format_: Annotated[
        ExportFormat,
        typer.Option(
            "--format", help="jsonl: everything (events, screening lists, invoices); csv: the events only."
        ),
    ] = ExportFormat.jsonl,
    out: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file (default: standard output).")
    ] = None,
) -> None:
    """Write the whole store, exactly as stored, from one consistent snapshot."""
    writer = write_jsonl if format_ is ExportFormat.jsonl else write_csv
    if out is not None:
        if not out.parent.is_dir():
            raise InvalidInput(f"--output: the directory {out.parent} does not exist")
        if out.is_dir():
            raise InvalidInput(f"--output: {out} is a directory; name a file")
        if not os.access(out.parent, os.W_OK):
            raise InvalidInput(f"--output: cannot write in {out.parent} (permission denied)")
    events = store()
    records = events.dump()
    try:
        with _destination(out) as stream:
            count = writer(records, stream)
    except BrokenPipeError:
        # `chipclear store export | head`: the reader has what it wanted. Say nothing more on a dead pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(1) from None
    except OSError as exc:  # a full disk, a quota: the export is not written, and says so
        fail(f"the export was not written: {exc.strerror or exc}", 1)
    finally:
        records.close()  # ends the snapshot before the store closes under it
        events.close()
    if out is not None:
        output.errors.print(f"exported {count} events to {out} ({format_})", highlight=False)


@contextmanager
def _destination(path: Path | None) -> Iterator[IO[str]]:
    """Standard output, or a regular file that appears only once the export is complete."""
    if path is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    if path.exists() and not path.is_file():  # a FIFO or a device: write into it, never replace it
        with path.open("w", encoding="utf-8", newline="") as stream:
            yield stream
        return
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as stream:
            yield stream
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@store_app.command("import")
@handles_errors
def import_(
    file: Annotated[Path, typer.Argument(help="A file written by `chipclear store export`.")],
    format_: Annotated[
        ExportFormat | None, typer.Option("--format", help="Default: csv for a .csv file, else jsonl.")
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Load an export into an empty store; every chain, recorder seal, signed act and checkpoint is
    verified (against the keys the policy names) before anything is committed."""
    kind = format_ or (ExportFormat.csv if file.suffix.lower() == ".csv" else ExportFormat.jsonl)
    if not file.is_file():
        raise InvalidInput(f"{file}: no such file")
    trust = policy_trust()
    events = store(create=True)
    try:
        with file.open(encoding="utf-8", newline="") as lines:
            records = read_jsonl(lines) if kind is ExportFormat.jsonl else read_csv(lines)
            summary = events.load(records, trust)
    except UnicodeDecodeError:
        raise InvalidInput(f"{file}: not UTF-8 text") from None
    finally:
        events.close()
    output.print_outcome(
        summary.model_dump(),
        f"[green]imported[/] {summary.events} events in {summary.streams} streams, "
        f"{summary.screening_lists} screening lists, {summary.invoices} invoices, "
        f"{summary.buyer_claims} buyer-cap claims; "
        f"every chain, seal and signed act verified against policy {trust.policy_version}, "
        f"and {summary.checkpoints} checkpoints; {summary.requests} requests projected",
        json_=json_,
        highlight=False,
    )
    if kind is ExportFormat.csv and not json_:
        output.console.print(
            "[yellow]note:[/] a CSV export holds the events only: no stream heads (a stream cut short "
            "at its end cannot be told), no invoice registry, no screening list; load the list again "
            "(`chipclear screening load`) before screening new requests",
            highlight=False,
        )


@projections_app.command("rebuild")
@handles_errors
def rebuild() -> None:
    """Rebuild the request projection by replaying the whole log through `evolve`."""
    count = store().rebuild_projection()
    output.console.print(f"rebuilt the projection of {count} requests from the log")
