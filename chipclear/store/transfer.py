"""The store's export format: for auditors, and for moving a log between backends.

Rows travel exactly as stored (timestamps as their chained text, hashes and seals as written), so an
import re-checks the very hashes and signatures the source computed: a log that was edited or forged
on the way does not verify and is not imported. JSON Lines carries everything a store holds (events,
stream heads, screening lists, the invoice registry, the buyers' caps, the checkpoints); CSV carries the
events alone, one row each, for a spreadsheet: without the heads, an import from CSV cannot tell a
stream whose last events were cut off, and without the checkpoints, a stream removed whole.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import IO, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from chipclear.store.chain import canonical
from chipclear.store.upcasting import UPCASTERS, Upcasters


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExportHeader(_Record):
    record: Literal["header"] = "header"
    format: Literal["chipclear-event-store"] = "chipclear-event-store"
    format_version: Literal[2] = 2  # 2: events carry their act and recorder seal; checkpoints
    exported_at: str
    schema_version: int


class ExportedEvent(_Record):
    record: Literal["event"] = "event"
    position: int = Field(ge=1, le=2**63 - 1)  # a BIGINT on PostgreSQL, an INTEGER on SQLite
    event_id: str = Field(min_length=1)
    stream_id: str = Field(min_length=1)
    version: int = Field(ge=1)
    type: str
    schema_version: int = Field(ge=1)
    data: dict[str, Any]
    occurred_at: str
    recorded_at: str
    policy_version: str
    actor: str
    act: dict[str, Any] | None = None
    prev_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    sealed_by: str
    seal: str

    @field_validator("act", mode="before")
    @classmethod
    def _act_cell(cls, value: Any) -> Any:
        """A CSV cell holds the act as JSON text; an empty cell is no act."""
        if isinstance(value, str):
            return json.loads(value) if value else None
        return value

    def check_payload(self, upcasters: Upcasters = UPCASTERS) -> None:
        """The data must be an event this release can read: an import never stores what it cannot."""
        upcasters.parse(self.type, self.schema_version, self.data)

    def data_text(self) -> str:
        return canonical(self.data)  # as the store writes it

    def act_text(self) -> str | None:
        return None if self.act is None else canonical(self.act)


class ExportedStream(_Record):
    """A stream's head as stored: without it a cut-off tail would import as a shorter, valid stream."""

    record: Literal["stream"] = "stream"
    stream_id: str = Field(min_length=1)
    version: int = Field(ge=0)
    head_hash: str = Field(pattern=r"^[0-9a-f]{64}$")


class ExportedScreeningList(_Record):
    record: Literal["screening_list"] = "screening_list"
    version: str
    sha256: str
    source: str
    loaded_at: str
    entries: int
    names: int
    data: str  # as stored: its sha256 is chained in the list's ScreeningListLoaded event


class ExportedCheckpoint(_Record):
    """A signed head of the log's Merkle tree, as stored: the import proves the log still extends it."""

    record: Literal["checkpoint"] = "checkpoint"
    tree_size: int
    root_hash: str
    last_position: int
    timestamp: str
    key: str
    signature: str


class ExportedInvoice(_Record):
    record: Literal["invoice"] = "invoice"
    invoice_key: str
    request_id: str | None
    buyer: str
    buyer_key: str
    registered_at: str


class ExportedBuyerClaim(_Record):
    """One request's row of its buyer's cap: the units it holds, and what it gave back."""

    record: Literal["buyer_claim"] = "buyer_claim"
    request_id: str = Field(min_length=1)
    buyer: str
    buyer_key: str
    deployment: str
    units: int = Field(ge=0)
    released: int | None = Field(default=None, ge=0)
    claimed_at: str


ExportRecord = (
    ExportHeader
    | ExportedEvent
    | ExportedStream
    | ExportedScreeningList
    | ExportedInvoice
    | ExportedBuyerClaim
    | ExportedCheckpoint
)
Record = Annotated[ExportRecord, Field(discriminator="record")]
RECORD: TypeAdapter[Record] = TypeAdapter(Record)
CSV_COLUMNS = [name for name in ExportedEvent.model_fields if name != "record"]


class InvalidExport(ValueError):
    """An export file that cannot be imported; the message names the line and the field."""


class ImportSummary(BaseModel):
    events: int
    streams: int
    screening_lists: int
    invoices: int
    buyer_claims: int = 0
    requests: int  # projection rows rebuilt from the imported log
    checkpoints: int = 0  # each one proven to be extended by the imported log


# -- writing ---------------------------------------------------------------------------------------
def write_jsonl(records: Iterable[ExportRecord], out: IO[str]) -> int:
    count = 0
    for record in records:
        out.write(record.model_dump_json() + "\n")
        count += isinstance(record, ExportedEvent)
    return count


# A spreadsheet reads a cell starting with one of these as a formula (`=HYPERLINK(…)`, `+cmd|…`, `@SUM`),
# or, for tab and carriage return, may shift it into one; an actor or an id can start with anything.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
NEUTRAL = "'"  # what spreadsheets themselves use to say "this cell is text"


def neutral_cell(value: str) -> str:
    """A CSV cell a spreadsheet shows as text: one that could start a formula gets a leading `'`,
    and so does one already starting with `'`, so that `stored_cell` can undo exactly one."""
    return NEUTRAL + value if value.startswith((*FORMULA_STARTS, NEUTRAL)) else value


def stored_cell(cell: str) -> str:
    """The value `neutral_cell` wrote: one leading `'` removed, if there is one."""
    return cell.removeprefix(NEUTRAL)


def write_csv(records: Iterable[ExportRecord], out: IO[str]) -> int:
    """The events, one row each; every cell neutralised for spreadsheets (`neutral_cell`), which
    `read_csv` undoes, so an export imports back byte for byte and its hashes still verify."""
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    count = 0
    for record in records:
        if isinstance(record, ExportedEvent):
            row = record.model_dump(exclude={"record"})
            row["data"] = record.data_text()
            row["act"] = record.act_text() or ""
            writer.writerow({column: neutral_cell(str(value)) for column, value in row.items()})
            count += 1
    return count


# -- reading ---------------------------------------------------------------------------------------
def read_jsonl(lines: Iterable[str], upcasters: Upcasters = UPCASTERS) -> Iterator[ExportRecord]:
    first = True
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = RECORD.validate_json(line)
        except ValidationError as exc:
            raise InvalidExport(f"line {number}: {_describe(exc)}") from None
        if first and not isinstance(record, ExportHeader):
            raise InvalidExport(f"line {number}: not a chipclear export (the first line must be its header)")
        first = False
        yield _checked(record, number, upcasters)
    if first:
        raise InvalidExport("the file is empty: not a chipclear export")


# An event's data is one CSV cell: a request with a thousand procurement records is far above csv's
# default limit of 128 KiB.
CSV_FIELD_LIMIT = 64 * 1024 * 1024


def read_csv(lines: Iterable[str], upcasters: Upcasters = UPCASTERS) -> Iterator[ExportRecord]:
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    reader = csv.DictReader(lines)
    if reader.fieldnames != CSV_COLUMNS:
        raise InvalidExport(f"line 1: expected the columns {','.join(CSV_COLUMNS)}, got {reader.fieldnames}")
    for cells in reader:
        number = reader.line_num
        row = {column: stored_cell(cell) if isinstance(cell, str) else cell for column, cell in cells.items()}
        try:
            data = json.loads(row["data"])
        except (json.JSONDecodeError, TypeError):
            raise InvalidExport(f"line {number}: data: not a JSON object") from None
        try:
            json.loads(row.get("act") or "null")
        except (json.JSONDecodeError, TypeError):
            raise InvalidExport(f"line {number}: act: not a JSON object") from None
        try:
            record = ExportedEvent.model_validate({**row, "data": data})
        except ValidationError as exc:
            raise InvalidExport(f"line {number}: {_describe(exc)}") from None
        yield _checked(record, number, upcasters)


def _checked(record: ExportRecord, number: int, upcasters: Upcasters) -> ExportRecord:
    if isinstance(record, ExportedEvent):
        try:
            record.check_payload(upcasters)
        except (ValidationError, ValueError) as exc:
            detail = _describe(exc) if isinstance(exc, ValidationError) else str(exc)
            raise InvalidExport(f"line {number}: {record.type} event {record.event_id}: {detail}") from None
    return record


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "record"
    return f"{where}: {first['msg']}" + (f" ({len(exc.errors())} problems)" if len(exc.errors()) > 1 else "")
