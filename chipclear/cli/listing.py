"""`chipclear list`: requests a page at a time, newest first, from the event store's projection.

Nothing here grows with the store: a page is one keyset query on an index (`submitted_at`, then the id)
that reads only the summary columns, and the table is drawn for that page alone. `--all` walks every
page the same way and prints each as it comes. The visibility search (`--gate`, `--buyer`, `--query`)
stays in chipclear.cli.main, with the callbacks the options share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from chipclear.cli import output
from chipclear.cli.common import JsonOption, handles_errors, store
from chipclear.cli.main import _known_gate, _known_status, _list_visible, _print_requests, _visibility_query

if TYPE_CHECKING:
    from collections.abc import Iterator

    from chipclear.projections import RequestSummary
    from chipclear.store.protocol import ProjectionRows

DEFAULT_LIMIT = 50
# Rows a page of `--all` reads and prints at once: one query and one table each.
ALL_PAGE = 500


@handles_errors
def list_(
    status_: Annotated[
        str | None,
        typer.Option("--status", help="Only requests with this status.", callback=_known_status),
    ] = None,
    escalated: Annotated[
        bool, typer.Option("--escalated", help="Only requests whose review SLA has passed undecided.")
    ] = False,
    held: Annotated[
        bool, typer.Option("--held", help="Only requests held by a restricted-party screening match.")
    ] = False,
    awaiting: Annotated[
        bool, typer.Option("--awaiting-applicant", help="Only requests waiting for the applicant's answer.")
    ] = False,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=10_000, help="How many requests a page shows, newest first.")
    ] = DEFAULT_LIMIT,
    after: Annotated[
        str | None,
        typer.Option(help="The page after this request (the last one a page showed): older requests."),
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Every request, newest first, page after page.")
    ] = False,
    gate: Annotated[
        str | None,
        typer.Option(help="Only requests at this gate (a Temporal visibility query).", callback=_known_gate),
    ] = None,
    buyer: Annotated[
        str | None, typer.Option(help="Only this buyer's requests (a Temporal visibility query).")
    ] = None,
    query: Annotated[
        str | None,
        typer.Option(help="A raw visibility query, e.g. 'ChipclearUnits > 50000' (Temporal's list syntax)."),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Requests and their current status, newest first, a page at a time, from the event store's projection.

    With --gate, --buyer or --query: from Temporal's visibility store, through the search attributes.
    """
    from chipclear.cli.files import InvalidInput
    from chipclear.projections import request_summary

    if gate is not None or buyer is not None or query is not None:
        if held or awaiting:
            raise InvalidInput(
                "--held / --awaiting-applicant: these read the event store; drop --gate/--buyer/--query"
            )
        if after is not None:
            raise InvalidInput("--after: pages the event store's list; drop --gate/--buyer/--query")
        _list_visible(_visibility_query(status_, gate, buyer, escalated, query), json_)
        return
    flags = [
        flag
        for flag, on in (("escalated", escalated), ("held", held), ("awaiting-applicant", awaiting))
        if on
    ]
    events = store()
    start: RequestSummary | None = None
    if after is not None:
        start = request_summary(events, after)
        if start is None:
            raise InvalidInput(f"--after {after!r}: no such request in the event store")
    if all_:
        _print_all(_pages(events, status_, flags, start), json_)
        return
    rows = _page(events, status_, flags, limit + 1, start)  # one more: are there older ones?
    more, rows = len(rows) > limit, rows[:limit]
    if json_:
        output.print_json([row.model_dump() for row in rows])
        return
    _print_requests(rows)
    if more:
        output.console.print(
            f"{len(rows)} request(s), newest first; older ones: chipclear list --after {rows[-1].request_id} "
            "(or --all)",
            highlight=False,
        )
    else:
        output.console.print(f"{len(rows)} request(s)")


def _page(
    events: ProjectionRows, status: str | None, flags: list[str], limit: int, after: RequestSummary | None
) -> list[RequestSummary]:
    from chipclear.projections import newest_requests

    return newest_requests(events, status, flags, limit=limit, after=after)


def _pages(
    events: ProjectionRows, status: str | None, flags: list[str], after: RequestSummary | None
) -> Iterator[list[RequestSummary]]:
    while True:
        rows = _page(events, status, flags, ALL_PAGE, after)
        if rows:
            yield rows
        if len(rows) < ALL_PAGE:
            return
        after = rows[-1]


def _print_all(pages: Iterator[list[RequestSummary]], json_: bool) -> None:
    """Each page as it comes: JSON as one array written a page at a time, tables one per page."""
    import json

    from chipclear.display import json_text

    total = 0
    if json_:
        # The same document `print_json` writes for a page, built piece by piece.
        print("[", end="")
        for rows in pages:
            for row in rows:
                text = json.dumps(row.model_dump(), indent=2, ensure_ascii=False, default=str)
                print(("\n" if total == 0 else ",\n") + json_text(_indented(text)), end="")
                total += 1
        print("\n]" if total else "]")
        return
    for rows in pages:
        _print_requests(rows)
        total += len(rows)
    output.console.print(f"{total} request(s)")


def _indented(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
