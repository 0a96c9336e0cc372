"""Reading restricted-party lists in the US Consolidated Screening List (CSL) CSV format.

Pure: the CSV arrives as text and the store keeps the parsed list; nothing here reads a file except
the bundled sample, as the bundled policies are read.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import io
from datetime import UTC, datetime
from importlib import resources

from chipclear.domain.screening.models import ScreeningEntry, ScreeningList, ScreeningListInfo

REQUIRED_COLUMNS = ("source", "name")


class ScreeningListError(ValueError):
    """A list file that is not in the CSL format; the message names the row and the column."""


# -- reading CSL files --------------------------------------------------------------------------------
def parse_csl(text: str, *, source: str, loaded_at: datetime | None) -> ScreeningList:
    """Parse a CSL CSV; any bad row rejects the whole file, so a half-read list is never used."""
    sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    # strict: an unterminated quote is an error, not a field that swallows every later row.
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")), strict=True)
    columns = [c.strip() for c in reader.fieldnames or []]
    if not columns:
        raise ScreeningListError("the file is empty: expected a header row with source, name, …")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ScreeningListError(
            f"header: missing column(s) {', '.join(missing)} (found: {', '.join(columns)}); "
            "expected the Consolidated Screening List CSV format"
        )
    reader.fieldnames = columns
    entries: list[ScreeningEntry] = []
    # Tens of thousands of entries, none in a cycle: the cyclic collector would only walk them again
    # and again while they are made.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for row in reader:
            line = reader.line_num
            if None in row:
                raise ScreeningListError(f"row {line}: more fields than the {len(columns)} columns")
            entries.append(_entry(row, line))
    except csv.Error as exc:  # the DictReader's count lags behind the line that failed
        raise ScreeningListError(f"row {reader.reader.line_num}: not valid CSV ({exc})") from None
    finally:
        if collecting:
            gc.enable()
    if not entries:
        raise ScreeningListError("the file has a header but no entries")
    names = sum(len(dict.fromkeys([e.name, *e.alt_names])) for e in entries)
    stamp = f"-{loaded_at.astimezone(UTC):%Y%m%dT%H%M%SZ}" if loaded_at is not None else ""
    info = ScreeningListInfo(
        version=f"{'csl' if loaded_at else 'sample'}-{sha256[:12]}{stamp}",
        sha256=sha256,
        source=source,
        loaded_at=loaded_at,
        entries=len(entries),
        names=names,
    )
    return ScreeningList(info=info, entries=entries)


def _entry(row: dict[str, str | None], line: int) -> ScreeningEntry:
    get = row.get

    def text(column: str) -> str | None:
        return (get(column) or "").strip() or None

    def items(column: str) -> list[str]:
        value = get(column)
        if not value:
            return []
        return [part for part in map(str.strip, value.split(";")) if part]

    source, name = text("source"), text("name")
    if name is None:
        raise ScreeningListError(f"row {line}, column name: must not be empty")
    if source is None:
        raise ScreeningListError(f"row {line}, column source: must not be empty")
    return ScreeningEntry(
        source=source,
        name=name,
        id=text("_id"),
        entity_number=text("entity_number"),
        type=text("type"),
        programs=items("programs"),
        addresses=items("addresses"),
        alt_names=items("alt_names"),
        start_date=text("start_date"),
        federal_register_notice=text("federal_register_notice"),
        license_requirement=text("license_requirement"),
        license_policy=text("license_policy"),
        source_list_url=text("source_list_url"),
    )


SAMPLE_LIST = "screening-sample.csv"


def bundled_list() -> ScreeningList:
    """The small sample shipped with the package: used until an operator loads a full list."""
    text = (resources.files("chipclear") / "data" / SAMPLE_LIST).read_text(encoding="utf-8")
    return parse_csl(text, source=f"bundled {SAMPLE_LIST}", loaded_at=None)
