"""`chipclear screening …`: load restricted-party lists and check names against the one in force."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from chipclear import client as ops
from chipclear.cli import output
from chipclear.cli.common import (
    ActorOption,
    JsonOption,
    KeyOption,
    actor_default,
    fail,
    handles_errors,
    settings,
    signing_key,
    store,
)
from chipclear.cli.files import InvalidInput, read_text
from chipclear.domain.gates import us_export
from chipclear.domain.policy import load_policy
from chipclear.domain.screening import ScreenedParty, ScreeningListError, parse_csl
from chipclear.domain.screening_act import SCREENING_STREAM, LoadScreeningList, require_loader
from chipclear.store.screening import CurrentList
from chipclear.store.sql_screening import ScreeningListUnavailable

screening_app = typer.Typer(
    help="Restricted-party screening lists (US Consolidated Screening List CSV format).",
    no_args_is_help=True,
)


@screening_app.command("load")
@handles_errors
def load(
    file: Annotated[Path, typer.Argument(help="A CSL CSV file, e.g. consolidated.csv from trade.gov.")],
    source: Annotated[str | None, typer.Option(help="Where the file came from. Default: its name.")] = None,
    replace_smaller: Annotated[
        bool,
        typer.Option(
            "--replace-smaller",
            help="Load FILE even though it has fewer than half the entries of the list in force.",
        ),
    ] = False,
    actor: ActorOption = None,
    key: KeyOption = None,
    json_: JsonOption = False,
) -> None:
    """Make FILE the list every later screening uses; a bad file loads nothing (exit 2), nor does a list
    far smaller than the one in force unless --replace-smaller is given (exit 1).

    A signed act of an us-export reviewer, sealed with the recorder key like every stored event: run
    it where the recorder key is (a worker's host, or a dev home)."""
    text = read_text(file)
    try:
        parsed = parse_csl(text, source=source or file.name, loaded_at=datetime.now(UTC))
    except ScreeningListError as exc:
        raise InvalidInput(f"{file}: {exc}") from None
    info = parsed.info
    events = store()
    # The list in force as its newest ScreeningListLoaded records it (readable even if its row is gone).
    in_force = next(iter(events.screening_list_versions()), None)
    if in_force is not None and shrinks(in_force.entries, info.entries) and not replace_smaller:
        fail(
            f"{file} has {info.entries} {plural(info.entries, 'entry', 'entries')} where the list in force "
            f"({in_force.version}) has {in_force.entries}, so nothing was loaded: check the file, and give "
            "--replace-smaller if the list really shrank",
            1,
        )
    loader = actor or actor_default()
    current = settings()
    policy = load_policy(current.policy, home=current.home)
    stream_version = len(events.read_stream(SCREENING_STREAM))
    described = info.model_dump(include={"version", "sha256", "source", "entries", "names"})
    act = LoadScreeningList(**described, actor=loader)
    signed = ops.signed(act, SCREENING_STREAM, stream_version, signing_key(loader, key))
    require_loader(policy, signed, stream_version)  # refused: exit 1, nothing loaded
    loaded = events.save_screening_list(
        parsed, actor=loader, act=signed.model_dump(mode="json"), expected_version=stream_version
    )
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


def shrinks(in_force: int, loading: int) -> bool:
    """A truncated download or the wrong file: fewer than half the entries, or one where there were more.
    Loading it would quietly clear everyone the missing entries hold."""
    return loading * 2 < in_force or (loading == 1 < in_force)


def plural(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


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
        threshold = us_export.GATE.section(
            load_policy(settings().policy, home=settings().home)
        ).screening_threshold
    try:
        index = CurrentList(store()).index()
    except ScreeningListUnavailable as exc:
        fail(str(exc), 1)
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
