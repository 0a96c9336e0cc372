"""Reading restricted-party lists in the US Consolidated Screening List (CSL) CSV format.

Pure: the CSV arrives as text and the store keeps the parsed list; nothing here reads a file except
the bundled sample, as the bundled policies are read.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import io
import itertools
from datetime import UTC, datetime
from importlib import resources

from chipclear.domain.screening.models import ScreeningEntry, ScreeningList, ScreeningListInfo

REQUIRED_COLUMNS = ("source", "name")


class ScreeningListError(ValueError):
    """A list file that is not in the CSL format; the message names the row and the column."""


# -- reading CSL files --------------------------------------------------------------------------------
def parse_csl(
    text: str, *, source: str, loaded_at: datetime | None, sha256: str | None = None
) -> ScreeningList:
    """Parse a CSL CSV; any bad row rejects the whole file, so a half-read list is never used.
    `sha256`: the text's, if already worked out (`checksum`)."""
    entries = read_entries(text)
    info = list_info(
        sha256 or checksum(text),
        source=source,
        loaded_at=loaded_at,
        entries=len(entries),
        names=names_in(entries),
    )
    return ScreeningList(info=info, entries=entries)


def list_info(
    sha256: str, *, source: str, loaded_at: datetime | None, entries: int, names: int
) -> ScreeningListInfo:
    """The description `parse_csl` gives a file of checksum `sha256` with that many entries and names:
    `screening load` counts them in the processes that read the file's runs of rows, not again."""
    stamp = f"-{loaded_at.astimezone(UTC):%Y%m%dT%H%M%SZ}" if loaded_at is not None else ""
    return ScreeningListInfo(
        version=f"{'csl' if loaded_at else 'sample'}-{sha256[:12]}{stamp}",
        sha256=sha256,
        source=source,
        loaded_at=loaded_at,
        entries=entries,
        names=names,
    )


def names_in(entries: list[ScreeningEntry]) -> int:
    """How many names `entries` have: each entry's name and alternative names, each counted once."""
    return sum(len(dict.fromkeys([e.name, *e.alt_names])) for e in entries)


def checksum(text: str) -> str:
    """The sha256 a list's version and every screening's record name it by."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_entries(text: str) -> list[ScreeningEntry]:
    """The entries of a CSL CSV, in order: its header row names the columns."""
    # strict: an unterminated quote is an error, not a field that swallows every later row.
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")), strict=True)
    try:
        columns = [c.strip() for c in next(reader, [])]
    except csv.Error as exc:
        raise ScreeningListError(f"header: not valid CSV ({exc})") from None
    if not columns:
        raise ScreeningListError("the file is empty: expected a header row with source, name, …")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ScreeningListError(
            f"header: missing column(s) {', '.join(missing)} (found: {', '.join(columns)}); "
            "expected the Consolidated Screening List CSV format"
        )
    # Each field's column (a column named twice: the last), or None for a column the file lacks.
    at = {column: number for number, column in enumerate(columns)}
    places = tuple(at.get(column) for column in _FIELDS)
    width = len(columns)
    entries: list[ScreeningEntry] = []
    # Tens of thousands of entries, none in a cycle: the cyclic collector would only walk them again
    # and again while they are made.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for row in reader:
            if not row:  # a blank line
                continue
            if len(row) > width:
                raise ScreeningListError(f"row {reader.line_num}: more fields than the {width} columns")
            # A short row's missing fields are empty, as are the columns the file lacks.
            fields = [row[n] if n is not None and n < len(row) else "" for n in places]
            entries.append(_entry(fields, reader.line_num))
    except csv.Error as exc:
        raise ScreeningListError(f"row {reader.line_num}: not valid CSV ({exc})") from None
    finally:
        if collecting:
            gc.enable()
    if not entries:
        raise ScreeningListError("the file has a header but no entries")
    return entries


def split_csl(text: str, parts: int) -> list[str]:
    """`text` cut into at most `parts` CSV texts of about equal length, each its header row and a run
    of the rows after it: read one after the other, they have the entries of `text`, in order.

    A cut is made at a line's end with an even number of quotes before it, outside any quoted field
    of a well-formed file. In a file with a stray quote (a quote inside an unquoted field, which the
    reader takes as it is) a cut can fall inside a quoted field: the text before it then ends in an
    open quote, which `read_entries` refuses, so a wrong cut is never read as entries."""
    body = text.removeprefix("\ufeff")
    cuts = [_row_end(body, 0)]  # the header row's end
    for number in range(1, parts):
        at = _row_end(body, max(cuts[-1], len(body) * number // parts))
        if at >= len(body):
            break
        if at > cuts[-1]:
            cuts.append(at)
    cuts.append(len(body))
    header = body[: cuts[0]]
    return [header + body[start:stop] for start, stop in itertools.pairwise(cuts) if start < stop] or [body]


def _row_end(text: str, start: int) -> int:
    """Just after the first line end at or after `start` with an even number of quotes before it."""
    quotes = text.count('"', 0, start)
    at = start
    while True:
        end = text.find("\n", at)
        if end == -1:
            return len(text)
        quotes += text.count('"', at, end)
        if quotes % 2 == 0:
            return end + 1
        at = end + 1


# The columns an entry is read from, in `_entry`'s order.
_FIELDS = (
    "source",
    "name",
    "_id",
    "entity_number",
    "type",
    "programs",
    "addresses",
    "alt_names",
    "start_date",
    "federal_register_notice",
    "license_requirement",
    "license_policy",
    "source_list_url",
)


def _text(value: str) -> str | None:
    return value.strip() or None


def _items(value: str) -> list[str]:
    return [part for part in map(str.strip, value.split(";")) if part] if value else []


def _entry(fields: list[str], line: int) -> ScreeningEntry:
    """An entry from its `_FIELDS`, each "" where the file lacks the column."""
    (source, name, id_, number, type_, programs, addresses, alt_names, *rest) = fields
    start_date, notice, requirement, policy, url = rest
    source, name = source.strip(), name.strip()
    if not name:
        raise ScreeningListError(f"row {line}, column name: must not be empty")
    if not source:
        raise ScreeningListError(f"row {line}, column source: must not be empty")
    return ScreeningEntry(
        source=source,
        name=name,
        id=_text(id_),
        entity_number=_text(number),
        type=_text(type_),
        programs=_items(programs),
        addresses=_items(addresses),
        alt_names=_items(alt_names),
        start_date=_text(start_date),
        federal_register_notice=_text(notice),
        license_requirement=_text(requirement),
        license_policy=_text(policy),
        source_list_url=_text(url),
    )


SAMPLE_LIST = "screening-sample.csv"


def bundled_list() -> ScreeningList:
    """The small sample shipped with the package: used until an operator loads a full list."""
    text = (resources.files("chipclear") / "data" / SAMPLE_LIST).read_text(encoding="utf-8")
    return parse_csl(text, source=f"bundled {SAMPLE_LIST}", loaded_at=None)
