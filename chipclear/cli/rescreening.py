"""`chipclear clear-hold` and `chipclear screening rescreen`: screening again when a list changes.

Loading a new list (`screening load`) starts the re-screening fan-out itself; `screening rescreen`
starts it by hand (for the list in force, or after a load whose server was down). A match holds a
request under review until a us-export reviewer clears it (`clear-hold`), and suspends a valid licence
until one reinstates it (`reinstate-licence`).
"""

from __future__ import annotations

from typing import Annotated

import typer

from chipclear.cli.common import JsonOption, Signing, acts, handles_errors, run, settings, store


@handles_errors
@acts
def clear_hold(
    signing: Signing,
    request_id: str,
    reviewer: Annotated[str, typer.Option(help="Your reviewer name (a us-export reviewer).")],
    reason: Annotated[str, typer.Option(help="Why the match is a false positive (recorded).")],
) -> None:
    """Clear a re-screening hold as a false positive, saying why; the request's gates may approve again."""
    from chipclear import client as ops
    from chipclear.cli import output
    from chipclear.domain.commands import ClearScreeningHold
    from chipclear.temporal import connect

    command = ClearScreeningHold(reviewer=reviewer, reason=reason)
    private = signing.key(command.person)

    async def go() -> None:
        result = await ops.update(await connect(), request_id, command, key=private)
        if signing.json:
            output.print_json(result.model_dump(mode="json"))
            return
        output.console.print(
            f"{request_id}: recorded {', '.join(result.events)}; status [bold]{result.status}[/]"
        )

    run(go())


@handles_errors
def rescreen(
    version: Annotated[
        str | None, typer.Option(help="The list version to screen against (default: the list in force).")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the fan-out to finish and print its tally.")
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Screen every live request and licence again against the list in force (a workflow does it)."""
    from chipclear import client as ops

    events = store()
    info = events.current_screening_info()
    if info is None:
        raise ops.NotFound("no screening list is loaded: `chipclear screening load FILE` first")
    if version is not None and version != info.version:
        raise ops.Rejected(
            f"list {version} is not the one in force ({info.version}); screening runs on that one"
        )
    run(start_and_report(info.version, wait=wait, json_=json_))


async def start_and_report(list_version: str, *, wait: bool, json_: bool, quiet: bool = False) -> None:
    """Start the fan-out for `list_version` and say so (with its tally, when waiting)."""
    from chipclear import client as ops
    from chipclear.cli import output
    from chipclear.contracts import RescreeningTally
    from chipclear.temporal import connect

    current = settings()
    handle = await ops.start_rescreening(await connect(), current.task_queue, list_version)
    tally = RescreeningTally.model_validate(await handle.result()) if wait else None
    if quiet:
        return
    if json_:
        output.print_json(
            {"workflow_id": handle.id, "list_version": list_version, "tally": tally and tally.model_dump()}
        )
        return
    output.console.print(
        f"re-screening live requests and licences against list {list_version} (workflow {handle.id})"
    )
    if tally is not None:
        output.console.print(
            f"  {tally.requests} request(s): {tally.requests_held} held, {tally.requests_denied} denied; "
            f"{tally.licences} licence(s): {tally.licences_suspended} suspended; {tally.failures} failed",
            highlight=False,
        )
