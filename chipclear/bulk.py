"""Bulk submission: many request files, directories of them and CSV order books, started with bounded
concurrency, each with its own outcome.

The order book arrives in bulk (Chinese firms reportedly ordered more than 2 million H200s), so
`chipclear submit` takes a directory or a CSV of one request a row as well as a file. Every file and
every row passes the same input gate and models as a single submission (`check_request`), and is
submitted by the same `client.submit`, idempotent per request id: a second run of the same order book
starts nothing and says "already submitted" for each row. A bad row is refused, naming its file and
row; the others still go in.

Unlike a single submission, nothing here waits for a request's first step: it starts workflows, and
the worker takes them up at its own pace. The CLI's presentation (progress bar, lines, JSON) is in
chipclear/cli/submit.py.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from chipclear.cli.files import InvalidInput, check_request, load_request, read_text
from chipclear.domain.limits import (
    MAX_BULK_REQUESTS,
    MAX_ORDER_BOOK_BYTES,
    MAX_ORDER_CELL,
    MAX_ORDER_ROWS,
    cut,
    cut_text,
)
from chipclear.domain.models import ImportRequest

if TYPE_CHECKING:  # the Temporal client and the store are imported when something is submitted
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from temporalio.client import Client

    from chipclear.store.protocol import EventStore

# What a directory holds that `submit` reads: request files, not an order book or anything else.
REQUEST_SUFFIXES = (".yaml", ".yml", ".json")

# -- the order book's columns -------------------------------------------------------------------------
# Where each column's cell goes in the request, a group at a time: the columns `<prefix><field>` fill
# `field` of one part of it (`0`: the one entry of a list), so `consignee_kind` fills consignees.0.kind.
# An empty cell is a field left out, so optional columns may stay blank; docs/cli.md describes each.
_PARTY = ("name", "country", "kind")
_COLUMN_GROUPS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("", (), ("request_id",)),
    ("buyer_", ("buyer",), _PARTY),
    ("end_user_", ("end_user",), _PARTY),
    ("consignee_", ("consignees", "0"), _PARTY),
    ("exporter_", ("exporter",), ("name", "country")),
    ("", (), ("end_use", "product", "units", "unit_price_usd")),
    ("data_center_", ("data_center",), ("name", "province")),
    (
        "",
        ("data_center",),
        ("state_funded", "public_computing_hub", "installed_domestic", "installed_foreign"),
    ),
    (
        "domestic_",
        ("domestic_procurement", "0"),
        ("vendor", "product", "units", "invoice", "invoice_date", "delivered_on"),
    ),
)
COLUMNS: dict[str, tuple[str, ...]] = {
    prefix + field: (*part, field) for prefix, part, fields in _COLUMN_GROUPS for field in fields
}
REQUIRED_COLUMNS = (
    "request_id",
    "buyer_name",
    "buyer_country",
    "buyer_kind",
    "exporter_name",
    "end_use",
    "units",
    "data_center_name",
    "data_center_province",
)
WHOLE_NUMBERS = frozenset({"units", "installed_domestic", "installed_foreign", "domestic_units"})
FLAGS = frozenset({"state_funded", "public_computing_hub"})
# A CSV cell is text: a count is a number only when written as one (`500`, not `0500`, `5e2`, `0x1F4`),
# a price a decimal number (`31500`, `31500.50`), a flag `true` or `false` (any case, as spreadsheets
# write TRUE). Anything else stays text, and the models refuse it naming the column.
WHOLE = re.compile(r"0|[1-9][0-9]{0,11}")
DECIMAL = re.compile(r"(0|[1-9][0-9]{0,11})(\.[0-9]{1,6})?")
_COLUMN_OF = {path: column for column, path in COLUMNS.items()}


# -- what is submitted, and what came of it -----------------------------------------------------------
@dataclass(frozen=True)
class Pending:
    """One request to submit, read when its turn comes: `load` returns it or raises InvalidInput."""

    source: str  # the file, or `orders.csv row 12`, as the user will read it
    load: Callable[[], ImportRequest]


OutcomeKind = Literal["submitted", "already_submitted", "refused", "failed"]


class Outcome(BaseModel):
    """What became of one file or row. `refused`: bad input or a rule (nothing started, fix it);
    `failed`: the server or the store did not answer (nothing known started; run the command again)."""

    source: str
    outcome: OutcomeKind
    request_id: str | None = None
    workflow_id: str | None = None
    reason: str | None = None

    @property
    def went_in(self) -> bool:
        """Submitted, now or by an earlier run: the request's workflow is running."""
        return self.outcome in ("submitted", "already_submitted")


class BulkReport(BaseModel):
    """Every outcome, in the order the paths and rows were given, and the counts (`--json`)."""

    total: int
    submitted: int
    already_submitted: int
    refused: int
    failed: int
    concurrency: int
    seconds: float
    outcomes: list[Outcome]

    @classmethod
    def of(cls, outcomes: Sequence[Outcome], *, concurrency: int, seconds: float) -> BulkReport:
        def count(kind: OutcomeKind) -> int:
            return sum(1 for outcome in outcomes if outcome.outcome == kind)

        return cls(
            total=len(outcomes),
            submitted=count("submitted"),
            already_submitted=count("already_submitted"),
            refused=count("refused"),
            failed=count("failed"),
            concurrency=concurrency,
            seconds=round(seconds, 3),
            outcomes=list(outcomes),
        )


# -- reading paths ------------------------------------------------------------------------------------
def is_bulk(paths: Sequence[Path]) -> bool:
    """One path that is neither a directory nor a CSV is a single request file: today's `submit`."""
    if len(paths) != 1:
        return True
    path = paths[0]
    return _is_dir(path) or path.suffix.lower() == ".csv"


def _is_dir(path: Path) -> bool:
    """A directory; a path that cannot be looked at is a file, which the input gate refuses saying why."""
    try:
        return path.is_dir()
    except OSError:
        return False


def read_paths(paths: Iterable[Path]) -> list[Pending]:
    """Every request the paths name, in order: a file; a directory's request files, sorted by name (not
    its subdirectories, nor hidden files); an order book's rows. A path that cannot be read at all (a
    CSV with an unknown column, a directory with no request file) is one refused entry of its own; the
    rest still go in. More than MAX_BULK_REQUESTS in all is refused whole, before anything starts."""
    pending: list[Pending] = []
    for path in paths:
        if _is_dir(path):
            pending += _directory(path)
        elif path.suffix.lower() == ".csv":
            pending += _order_book(path)
        else:
            pending.append(_file(path))
        if len(pending) > MAX_BULK_REQUESTS:
            raise InvalidInput(
                f"more than {MAX_BULK_REQUESTS} requests in one `chipclear submit`; submit the rest in "
                "further commands (what went in is skipped when submitted again)"
            )
    return pending


def _file(path: Path) -> Pending:
    return Pending(cut_text(str(path)), lambda: load_request(path))


def _refused(source: str, exc: InvalidInput) -> Pending:
    def load() -> ImportRequest:
        raise exc

    return Pending(source, load)


def _directory(path: Path) -> list[Pending]:
    try:
        names = sorted(
            child.name
            for child in path.iterdir()
            if child.suffix.lower() in REQUEST_SUFFIXES and not child.name.startswith(".")
        )
    except OSError as exc:
        problem = InvalidInput(f"directory {cut_text(str(path))}: cannot be read ({exc.strerror or exc})")
        return [_refused(cut_text(str(path)), problem)]
    if not names:
        problem = InvalidInput(
            f"directory {cut_text(str(path))}: holds no request files ({', '.join(REQUEST_SUFFIXES)})"
        )
        return [_refused(cut_text(str(path)), problem)]
    return [_file(path / name) for name in names]


def _order_book(path: Path) -> list[Pending]:
    """One Pending a row; the file's own problems (size, header, too many rows, not CSV) refuse it whole."""
    shown = cut_text(str(path))
    try:
        header, rows = _rows(path, shown)
    except InvalidInput as exc:
        return [_refused(shown, exc)]
    return [
        Pending(f"{shown} row {number}", _row_loader(f"{shown} row {number}", header, cells))
        for number, cells in rows
    ]


def _rows(path: Path, shown: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and every non-blank row with its number as a spreadsheet shows it (the header is row 1)."""
    text = read_text(path, limit=MAX_ORDER_BOOK_BYTES, what="order book")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, list[str]]] = []
    try:
        header = [cell.strip() for cell in next(reader, [])]
        _check_header(header, shown)
        for number, cells in enumerate(reader, start=2):
            if not any(cell.strip() for cell in cells):
                continue  # a blank row, or one of commas only: spreadsheets export them at the end
            if len(rows) == MAX_ORDER_ROWS:
                raise InvalidInput(
                    f"{shown}: more than {MAX_ORDER_ROWS} rows; split the order book into files of at "
                    f"most {MAX_ORDER_ROWS} rows (what went in is skipped when submitted again)"
                )
            rows.append((number, cells))
    except csv.Error as exc:
        raise InvalidInput(f"{shown}: line {reader.line_num}: not valid CSV ({exc})") from None
    if not rows:
        raise InvalidInput(f"{shown}: no rows under the header row")
    return header, rows


def _check_header(header: list[str], shown: str) -> None:
    if not any(header):
        raise InvalidInput(
            f"{shown}: header: the first row names the columns ({', '.join(REQUIRED_COLUMNS)}, …)"
        )
    unknown = [column for column in header if column not in COLUMNS]
    if unknown:
        raise InvalidInput(
            f"{shown}: header: unknown column(s) {', '.join(cut(column, 40) for column in unknown[:5])} "
            "(docs/cli.md lists the columns an order book may have)"
        )
    twice = sorted({column for column in header if header.count(column) > 1})
    if twice:
        raise InvalidInput(f"{shown}: header: column(s) {', '.join(twice)} named more than once")
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    if missing:
        raise InvalidInput(f"{shown}: header: missing column(s) {', '.join(missing)}")


def _row_loader(where: str, header: list[str], cells: list[str]) -> Callable[[], ImportRequest]:
    return lambda: request_from_row(where, header, cells)


def request_from_row(where: str, header: Sequence[str], cells: Sequence[str]) -> ImportRequest:
    """One order book row as a request, through the same models as a request file."""
    if len(cells) > len(header):
        raise InvalidInput(f"{where}: {len(cells)} cells, more than the {len(header)} columns of the header")
    row = {column: cell.strip() for column, cell in zip(header, cells, strict=False) if cell.strip()}
    for column, cell in row.items():
        if len(cell) > MAX_ORDER_CELL:
            raise InvalidInput(
                f"{where}: {column}: {len(cell)} characters is over the limit of {MAX_ORDER_CELL} for a cell"
            )
    return check_request(_document(row), where, describe=_by_column)


def _document(row: Mapping[str, str]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for column, cell in row.items():
        value: Any = cell
        if column in WHOLE_NUMBERS and WHOLE.fullmatch(cell):
            value = int(cell)
        elif column == "unit_price_usd" and DECIMAL.fullmatch(cell):
            value = float(cell)
        elif column in FLAGS and cell.lower() in ("true", "false"):
            value = cell.lower() == "true"
        path = COLUMNS[column]
        target: Any = document
        for depth, key in enumerate(path[:-1]):
            if key == "0":
                target = target[0]
            elif path[depth + 1] == "0":  # a list of one entry: the row's one consignee or domestic record
                target = target.setdefault(key, [{}])
            else:
                target = target.setdefault(key, {})
        target[path[-1]] = value
    return document


def _by_column(exc: ValidationError) -> str:
    """The models' complaints, each naming the CSV column (`units`, `buyer_kind`) rather than the
    request's field, as a person fixing the spreadsheet reads it."""
    problems = []
    for error in exc.errors():
        path = tuple(str(part) for part in error["loc"])
        if error["type"] == "value_error" and not path:
            problems.append(str(error["ctx"]["error"]))  # a rule across fields names them itself
            continue
        column = _COLUMN_OF.get(path) or ", ".join(
            name for name, where in COLUMNS.items() if where[: len(path)] == path
        )
        value = error.get("input")
        shown = "" if isinstance(value, dict | list) or error["type"] == "missing" else f" (got {cut(value)})"
        message = "a value is required" if error["type"] == "missing" else str(error["msg"])
        problems.append(f"{cut_text(column or '.'.join(path), 100)}: {cut_text(message, 200)}{shown}")
    return "; ".join(problems)


# -- submitting ---------------------------------------------------------------------------------------
async def submit_all(
    connection: Callable[[], Awaitable[tuple[Client, EventStore]]],
    pending: Sequence[Pending],
    *,
    concurrency: int,
    task_queue: str,
    actor: str,
    key: Ed25519PrivateKey | None,
    report: Callable[[int, Outcome], None] = lambda number, outcome: None,
) -> list[Outcome]:
    """Submit every pending request, at most `concurrency` at once; `report(number, outcome)` hears of
    each as it is known (in any order). Returns the outcomes in the order given.

    `connection` opens the Temporal client and the event store, once, when the first valid request is
    ready to go: a run whose every file and row is bad input is refused without a server. A request id
    given twice in one run is sent once, by the first to name it; a later copy of the same request
    shares its outcome ("already submitted" once it went in), a different request under that id is
    refused. Nothing waits for a request's first step.
    """
    outcomes: list[Outcome | None] = [None] * len(pending)
    first_seen: dict[str, tuple[int, ImportRequest, asyncio.Future[Outcome]]] = {}
    crashed: list[BaseException] = []
    queue = iter(enumerate(pending))
    connect = _Once(connection)

    async def one(number: int, item: Pending) -> Outcome:
        try:
            request = item.load()
        except InvalidInput as exc:
            return Outcome(source=item.source, outcome="refused", reason=_reason(item.source, str(exc)))
        request_id = request.request_id
        # Items are taken in order, and nothing awaits between taking one and this line: the first to
        # name an id is the one sent.
        mine: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        earlier, first, sent = first_seen.setdefault(request_id, (number, request, mine))
        if earlier != number:
            return await _copy_of(item.source, request, pending[earlier].source, first, sent)
        try:
            client, store = await connect()
            outcome = await _submit_one(client, store, item.source, request, task_queue, actor, key)
        except BaseException as exc:
            mine.set_exception(exc)
            mine.exception()  # a copy may never ask: the failure is reported by the worker that met it
            raise
        mine.set_result(outcome)
        return outcome

    async def work() -> None:
        for number, item in queue:  # one iterator shared by every worker: each item is taken once
            if crashed:
                return
            try:
                outcome = await one(number, item)
            except Exception as exc:  # not foreseen: stop starting more, and let the CLI report it
                crashed.append(exc)
                return
            outcomes[number] = outcome
            report(number, outcome)

    await asyncio.gather(*(work() for _ in range(max(1, min(concurrency, len(pending))))))
    if crashed:
        raise crashed[0]
    return [outcome for outcome in outcomes if outcome is not None]


async def _copy_of(
    source: str,
    request: ImportRequest,
    first_source: str,
    first: ImportRequest,
    sent: asyncio.Future[Outcome],
) -> Outcome:
    """A request id named a second time in one run: refused if the request differs, else the first's fate."""
    request_id = request.request_id
    if first != request:
        return Outcome(
            source=source,
            outcome="refused",
            request_id=request_id,
            reason=f"request_id {request_id!r} is also at {first_source}, with different content; "
            "choose a new request_id",
        )
    outcome = await sent
    if outcome.went_in:
        return outcome.model_copy(
            update={
                "source": source,
                "outcome": "already_submitted",
                "reason": f"the same request as {first_source}",
            }
        )
    return outcome.model_copy(update={"source": source, "reason": f"as {first_source}: {outcome.reason}"})


class _Once:
    """The client and store, opened by the first caller; the others wait for it. A failure is kept and
    raised to every caller, not tried again for each request."""

    def __init__(self, opener: Callable[[], Awaitable[tuple[Client, EventStore]]]) -> None:
        self.opener = opener
        self.lock = asyncio.Lock()
        self.opened: tuple[Client, EventStore] | None = None
        self.failed: BaseException | None = None

    async def __call__(self) -> tuple[Client, EventStore]:
        async with self.lock:
            if self.failed is not None:
                raise self.failed
            if self.opened is None:
                try:
                    self.opened = await self.opener()
                except BaseException as exc:
                    self.failed = exc
                    raise
            return self.opened


async def _submit_one(
    client: Client,
    store: EventStore,
    source: str,
    request: ImportRequest,
    task_queue: str,
    actor: str,
    key: Ed25519PrivateKey | None,
) -> Outcome:
    from temporalio.service import RPCError

    from chipclear import client as ops
    from chipclear.contracts import workflow_id
    from chipclear.payload_limits import PayloadTooLarge
    from chipclear.store.protocol import StoreUnavailable

    request_id = request.request_id
    try:
        submission = await ops.submit(client, store, request, task_queue=task_queue, actor=actor, key=key)
    except (ops.Conflict, ops.Rejected, PayloadTooLarge) as exc:
        return Outcome(source=source, outcome="refused", request_id=request_id, reason=str(exc))
    except RPCError as exc:
        return Outcome(
            source=source,
            outcome="failed",
            request_id=request_id,
            workflow_id=workflow_id(request_id),
            reason=f"the Temporal server did not take it ({cut_text(exc.message, 120)}); run the same "
            "command again: what went in is skipped",
        )
    except StoreUnavailable as exc:
        return Outcome(source=source, outcome="failed", request_id=request_id, reason=str(exc))
    return Outcome(
        source=source,
        outcome="submitted" if submission.created else "already_submitted",
        request_id=request_id,
        workflow_id=submission.handle.id,
    )


def _reason(source: str, message: str) -> str:
    """The input gate's message without the file or row it names first: the outcome names it already."""
    for prefix in (
        f"request file {source}: ",
        f"order book {source}: ",
        f"directory {source}: ",
        f"{source}: ",
    ):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message
