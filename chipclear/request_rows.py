"""The request projection's summary rows, as `chipclear list` reads them, without the domain or the store.

A `list` call waits for its imports more than for its query: the domain's models and the store package
(which imports them) are most of a cold call's start-up (docs/performance.md, "CLI start-up"). The
summary columns need neither: they are plain values the projection (chipclear.projections, which
re-uses `RequestSummary` and the columns from here) wrote when the events were appended. So a page of
a SQLite store is read here with sqlite3, read-only, by the same query the store runs
(chipclear.store.sql_projection.SQLProjections.projection_rows, for the `RowQuery` that
chipclear.projections.newest_requests builds); tests/cli/test_list_query.py compares the two.

Only a store this module can read as it is: a SQLite file at the schema version below, with the
table's columns as the projection writes them. Anything else (PostgreSQL, a store to migrate, a file
that is not a store) is `None` from `open_sqlite_rows`, and the caller opens the store the usual way,
which migrates it or says what is wrong.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qs

from pydantic import BaseModel, Field, field_validator

from chipclear.config import SQLITE_SYNCHRONOUS, sqlite_file
from chipclear.row_query import RowQuery, select_sql

TABLE = "requests"
COLUMNS = (
    "request_id",
    "status",
    "gate",
    "buyer",
    "units_requested",
    "units_approved",
    "policy_version",
    "version",
    "submitted_at",
    "updated_at",
    "state",
    "flags",
)
# The summary columns: everything but the state, which `list` never needs.
SUMMARY_COLUMNS = [column for column in COLUMNS if column != "state"]

# chipclear.store.sqlite.MIGRATIONS[-1].version (a test compares): a store at any other version is left
# to the store, which migrates an older one and refuses a newer one.
SQLITE_SCHEMA_VERSION = 2
# chipclear.domain.gates.statuses() with the built-in gates (a test compares), so that `--status`
# knows them without importing the gates; any other value is checked against the registry itself.
STATUSES = (
    "submitted",
    "us_export_review",
    "cn_import_review",
    "cn_import_queued",
    "domestic_quota_review",
    "licensed",
    "denied",
    "withdrawn",
    "expired",
)


class RequestSummary(BaseModel):
    """One row of the request projection: what `chipclear list` shows without folding any events."""

    request_id: str
    status: str  # a final status, or the status its gate names (`us_export_review`, …)
    gate: str | None
    buyer: str
    units_requested: int
    units_approved: int | None
    policy_version: str
    version: int
    submitted_at: str
    updated_at: str
    flags: list[str] = Field(default_factory=list)  # held, awaiting-applicant, escalated

    @field_validator("flags", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return [flag for flag in value.split(",") if flag] if isinstance(value, str) else value


def summary_query(
    status: str | None = None,
    flags: Sequence[str] = (),
    *,
    newest_first: bool = False,
    limit: int | None = None,
    after: RequestSummary | None = None,
) -> RowQuery:
    """The summary rows with this status (any when None) carrying every flag, by submission then id;
    `newest_first` and `limit`/`after` make it one keyset page (`after`: the last row of the page before).
    The store's readers (chipclear.projections) and this module's run this one query."""
    return RowQuery(
        equal={"status": str(status)} if status is not None else {},
        tagged={"flags": flags} if flags else {},
        columns=SUMMARY_COLUMNS,
        order_by=["submitted_at"],
        descending=newest_first,
        limit=limit,
        after=None if after is None else (after.submitted_at, after.request_id),
    )


def read_only(path: Path) -> sqlite3.Connection:
    """A connection that can never create or change the store at `path` (the store's own code migrates)."""
    return sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=5)


def open_read_only(url: str) -> sqlite3.Connection | None:
    """A read-only connection to the SQLite store at `url` (a `CHIPCLEAR_EVENT_STORE` URL) at the schema
    version below, or None if it is no such store (the store itself names what is wrong, or migrates it)."""
    file = sqlite_file(url)
    synchronous = parse_qs(url.partition("?")[2]).get("synchronous", ["full"])[0]
    if file is None or synchronous.lower() not in SQLITE_SYNCHRONOUS:
        return None  # the store names what is wrong with the URL
    if not file.is_file() or file.stat().st_size == 0:
        return None
    try:
        db = read_only(file)
    except sqlite3.Error:
        return None
    try:
        migrated = db.execute("SELECT max(version) FROM schema_migrations").fetchone()
    except sqlite3.Error:
        migrated = None
    if migrated is None or migrated[0] != SQLITE_SCHEMA_VERSION:
        db.close()
        return None
    return db


def open_sqlite_rows(url: str) -> SQLiteRequestRows | None:
    """A read-only reader of the SQLite store at `url` (a `CHIPCLEAR_EVENT_STORE` URL), or None if the
    store is not one this module reads as it is (see the module's docstring)."""
    db = open_read_only(url)
    if db is None:
        return None
    try:
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({TABLE})")}
    except sqlite3.Error:
        columns = set()
    if columns != set(COLUMNS):
        db.close()
        return None
    file = sqlite_file(url)
    assert file is not None
    return SQLiteRequestRows(db, file)


class SQLiteRequestRows:
    """The summary rows of one SQLite store's request projection, read by the store's own query."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    def newest(
        self,
        status: str | None,
        flags: Sequence[str],
        *,
        limit: int,
        after: RequestSummary | None = None,
    ) -> list[RequestSummary]:
        """chipclear.projections.newest_requests: a page newest first, keyset on (submitted_at, id)."""
        return self._rows(summary_query(status, flags, newest_first=True, limit=limit, after=after))

    def summary(self, request_id: str) -> RequestSummary | None:
        """chipclear.projections.request_summary: one request's row, without its state."""
        rows = self._rows(RowQuery(columns=SUMMARY_COLUMNS, keys=[request_id]))
        return rows[0] if rows else None

    def _rows(self, query: RowQuery) -> list[RequestSummary]:
        built = select_sql(TABLE, COLUMNS[0], COLUMNS, query)
        if built is None:
            return []
        try:
            cursor = self._db.execute(*built)
            names = [d[0] for d in cursor.description]
            return [RequestSummary.model_validate(dict(zip(names, row, strict=True))) for row in cursor]
        except sqlite3.Error as exc:
            from chipclear.store.errors import StoreUnavailable

            raise StoreUnavailable(f"the event store {self.path} could not be read ({exc})") from exc

    def close(self) -> None:
        self._db.close()
