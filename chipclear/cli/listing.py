"""`chipclear list`: requests a page at a time, newest first, from the event store's projection.

Nothing here grows with the store: a page is one keyset query on an index (`submitted_at`, then the id)
that reads only the summary columns, and the table is drawn for that page alone. `--all` walks every
page the same way and prints each as it comes. The visibility search (`--gate`, `--buyer`, `--query`)
stays in chipclear.cli.main, with the callbacks the options share.

Nothing here imports the domain or the store either, unless it must: a SQLite store's page is read by
chipclear.request_rows with sqlite3 (tests/cli/test_startup.py holds that budget), and only another
store (PostgreSQL, one to migrate) is opened the usual way, through chipclear.projections.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from typing import TYPE_CHECKING, Annotated, Protocol

import typer

from chipclear.cli import output
from chipclear.cli.common import JsonOption, handles_errors, settings, store
from chipclear.cli.main import _known_gate, _known_status, _list_visible, _print_requests, _visibility_query
from chipclear.request_rows import STATUSES, RequestSummary, open_sqlite_rows

if TYPE_CHECKING:
    from collections.abc import Iterator

    from chipclear.store.protocol import ProjectionRows

DEFAULT_LIMIT = 50
# Rows a page of `--all` reads and prints at once: one query and one table each.
ALL_PAGE = 500


class Rows(Protocol):
    """Where a page comes from: a SQLite store's table read directly, or any store opened as usual."""

    def newest(
        self, status: str | None, flags: Sequence[str], *, limit: int, after: RequestSummary | None = None
    ) -> list[RequestSummary]: ...

    def summary(self, request_id: str) -> RequestSummary | None: ...

    def close(self) -> None: ...


class StoreRows:
    """`Rows` from an opened event store (chipclear.projections, with the domain it imports)."""

    def __init__(self, events: ProjectionRows) -> None:
        self.events = events

    def newest(
        self, status: str | None, flags: Sequence[str], *, limit: int, after: RequestSummary | None = None
    ) -> list[RequestSummary]:
        from chipclear.projections import newest_requests

        return newest_requests(self.events, status, flags, limit=limit, after=after)

    def summary(self, request_id: str) -> RequestSummary | None:
        from chipclear.projections import request_summary

        return request_summary(self.events, request_id)

    def close(self) -> None:
        pass  # the process's store, as every command leaves it


def open_rows() -> Rows:
    """The SQLite store's rows read as they are when chipclear.request_rows can; else the store."""
    light = open_sqlite_rows(settings().event_store_url)
    return light if light is not None else StoreRows(store())


def _status(value: str | None) -> str | None:
    """--status: the built-in statuses without importing the gates; any other value is checked by the
    registry (it knows a gate registered since, and names every known status if the value is none)."""
    return value if value is None or value in STATUSES else _known_status(value)


def _gate(value: str | None) -> str | None:
    return None if value is None else _known_gate(value)


@handles_errors
def list_(
    status_: Annotated[
        str | None,
        typer.Option("--status", help="Only requests with this status.", callback=_status),
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
        typer.Option(help="Only requests at this gate (a Temporal visibility query).", callback=_gate),
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
    if gate is not None or buyer is not None or query is not None:
        from chipclear.cli.files import InvalidInput

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
    with closing(open_rows()) as found:
        _list_page(found, status_, flags, limit, after, all_=all_, json_=json_)


def _list_page(
    found: Rows,
    status: str | None,
    flags: list[str],
    limit: int,
    after: str | None,
    *,
    all_: bool,
    json_: bool,
) -> None:
    start: RequestSummary | None = None
    if after is not None:
        start = found.summary(after)
        if start is None:
            from chipclear.cli.files import InvalidInput

            raise InvalidInput(f"--after {after!r}: no such request in the event store")
    if all_:
        _print_all(_pages(found, status, flags, start), json_)
        return
    page = found.newest(status, flags, limit=limit + 1, after=start)  # one more: are there older ones?
    more, page = len(page) > limit, page[:limit]
    if json_:
        output.print_json([row.model_dump() for row in page])
        return
    _print_requests(page)
    if more:
        output.console.print(
            f"{len(page)} request(s), newest first; older ones: chipclear list --after {page[-1].request_id} "
            "(or --all)",
            highlight=False,
        )
    else:
        output.console.print(f"{len(page)} request(s)")


def _pages(
    found: Rows, status: str | None, flags: list[str], after: RequestSummary | None
) -> Iterator[list[RequestSummary]]:
    while True:
        page = found.newest(status, flags, limit=ALL_PAGE, after=after)
        if page:
            yield page
        if len(page) < ALL_PAGE:
            return
        after = page[-1]


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
