"""`chipclear screening …`: load restricted-party lists and check names against the one in force."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from chipclear.cli import output
from chipclear.cli.common import ActorOption, JsonOption, actor_default, handles_errors, settings, store
from chipclear.cli.files import InvalidInput, read_text
from chipclear.domain.gates import us_export
from chipclear.domain.policy import load_policy
from chipclear.domain.screening import ScreenedParty, ScreeningListError, parse_csl
from chipclear.store.screening import CurrentList

screening_app = typer.Typer(
    help="Restricted-party screening lists (US Consolidated Screening List CSV format).",
    no_args_is_help=True,
)


@screening_app.command("load")
@handles_errors
def load(
    file: Annotated[Path, typer.Argument(help="A CSL CSV file, e.g. consolidated.csv from trade.gov.")],
    source: Annotated[str | None, typer.Option(help="Where the file came from. Default: its name.")] = None,
    actor: ActorOption = None,
    json_: JsonOption = False,
) -> None:
    """Make FILE the list every later screening uses; a bad file loads nothing (exit 2)."""
    text = read_text(file)
    try:
        parsed = parse_csl(text, source=source or file.name, loaded_at=datetime.now(UTC))
    except ScreeningListError as exc:
        raise InvalidInput(f"{file}: {exc}") from None
    loaded = store().save_screening_list(parsed, actor=actor or actor_default())
    info = parsed.info
    if json_:
        output.print_json({**info.model_dump(mode="json"), "loaded": loaded})
    elif loaded:
        output.console.print(
            f"loaded [bold]{info.version}[/]: {info.entries} entries, {info.names} names from {file}"
        )
    else:
        output.console.print(
            f"[yellow]unchanged:[/] the list in force already has checksum {info.sha256[:12]}; nothing loaded"
        )


@screening_app.command("check")
@handles_errors
def check(
    names: Annotated[list[str], typer.Argument(help="One or more party names.")],
    threshold: Annotated[
        float | None,
        typer.Option(min=0, max=100, help="Match score 0-100. Default: the policy's screening_threshold."),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Show what the list in force matches for each name, as a request's screening would."""
    if threshold is None:
        threshold = us_export.GATE.section(load_policy(settings().policy)).screening_threshold
    index = CurrentList(store()).index()
    parties = [ScreenedParty(role="buyer", name=name) for name in names]
    matches = index.screen(parties, threshold)
    if json_:
        output.print_json(
            {
                "list_version": index.info.version,
                "threshold": threshold,
                "matches": [match.model_dump(mode="json", exclude={"role"}) for match in matches],
            }
        )
        return
    output.console.print(escape(f"list {index.info.version} ({index.info.source}), threshold {threshold:g}"))
    for name in names:
        found = [match for match in matches if match.party_name == name]
        if not found:
            output.console.print(f"[green]clear:[/] {escape(name)}")
            continue
        table = Table("score", "listed as", "matched name", "entity number", "list")
        for match in found:
            output.row(
                table,
                f"{match.score:g}",
                match.entry_name,
                match.matched_name,
                match.entity_number or "",
                match.source,
            )
        output.console.print(f"[bold red]{len(found)} match(es):[/] {escape(name)}")
        output.console.print(table)


@screening_app.command("versions")
@handles_errors
def versions(json_: JsonOption = False) -> None:
    """Every list loaded, newest (the one in force) first."""
    events = store()
    loaded = events.screening_list_versions()
    if json_:
        output.print_json([info.model_dump(mode="json") for info in loaded])
        return
    if not loaded:
        sample = CurrentList(events).index().info
        output.console.print(
            f"no list loaded: screenings use the bundled sample {sample.version} ({sample.entries} entries). "
            "Load the current Consolidated Screening List with `chipclear screening load FILE.csv`."
        )
        return
    table = Table("version", "loaded (UTC)", "source", "entries", "names", "sha256")
    for number, info in enumerate(loaded):
        assert info.loaded_at is not None
        output.row(
            table,
            info.version + (" (in force)" if number == 0 else ""),
            info.loaded_at.isoformat()[:19],
            info.source,
            str(info.entries),
            str(info.names),
            info.sha256[:16],
        )
    output.console.print(table)
