"""`list --query`: the user's expression stays one term under the request-only guard; and the page
`list` reads from a SQLite store's rows without the store (chipclear.request_rows) is the store's own."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from chipclear.cli.files import InvalidInput
from chipclear.cli.listing import Rows, StoreRows
from chipclear.cli.main import _visibility_query
from chipclear.domain.gates import statuses
from chipclear.projections import PROJECTIONS
from chipclear.request_rows import (
    COLUMNS,
    SQLITE_SCHEMA_VERSION,
    STATUSES,
    RequestSummary,
    open_sqlite_rows,
)
from chipclear.store.sqlite import MIGRATIONS, SQLiteEventStore
from tests.store.support import KINDS, RECORDER, append_all, scenarios


def test_the_users_expression_is_one_parenthesised_term_after_the_guard() -> None:
    query = _visibility_query(
        None, "us-export", None, False, "ChipclearUnits > 1000 OR ChipclearEscalated = true"
    )
    assert query == (
        'WorkflowType = "ImportRequest" AND ChipclearGate = "us-export" AND '
        "(ChipclearUnits > 1000 OR ChipclearEscalated = true)"
    )
    # Parentheses inside quotes are text, not grouping.
    assert _visibility_query(None, None, "A (B) Ltd.", False, "ChipclearBuyer = 'x)'").endswith(
        "(ChipclearBuyer = 'x)')"
    )


@pytest.mark.parametrize(
    "escape",
    [
        "ChipclearGate = 'x') OR (WorkflowType != 'ImportRequest'",
        "ChipclearGate = 'x')) OR ((true",
        "(ChipclearGate = 'x'",
        "ChipclearBuyer = 'unclosed",
    ],
)
def test_an_expression_that_would_escape_the_guard_is_refused(escape: str) -> None:
    with pytest.raises(InvalidInput, match="--query: "):
        _visibility_query(None, None, None, False, escape)


# -- the page a SQLite store's rows give without the store (chipclear.request_rows) -------------------


@pytest.fixture
def stored(tmp_path: Path) -> Iterator[tuple[Path, SQLiteEventStore]]:
    """A SQLite store of every kind of request, some rows flagged and two submitted at one moment."""
    path = tmp_path / "events.db"
    with closing(SQLiteEventStore(path, projections=PROJECTIONS, recorder=RECORDER)) as store:
        append_all(store, scenarios(3 * len(KINDS)))
        with closing(sqlite3.connect(path)) as db, db:
            # Flags and a tie in submission time, which the scenarios lack: the queries must agree on them.
            db.execute("UPDATE requests SET flags = 'held' WHERE request_id IN ('req-001', 'req-008')")
            db.execute("UPDATE requests SET flags = 'held,escalated' WHERE request_id = 'req-015'")
            db.execute("UPDATE requests SET flags = 'awaiting-applicant' WHERE request_id = 'req-004'")
            db.execute(
                "UPDATE requests SET submitted_at = (SELECT submitted_at FROM requests "
                "WHERE request_id = 'req-010') WHERE request_id = 'req-011'"
            )
        yield path, store


def _pages(rows: Rows, status: str | None, flags: list[str], size: int) -> list[list[RequestSummary]]:
    pages, after = [], None
    while page := rows.newest(status, flags, limit=size, after=after):
        pages.append(page)
        after = page[-1]
    return pages


def test_the_sqlite_rows_read_as_the_store_reads_them(stored: tuple[Path, SQLiteEventStore]) -> None:
    path, store = stored
    light = open_sqlite_rows(f"sqlite:///{path}")
    assert light is not None
    with closing(light):
        usual = StoreRows(store)
        everything = usual.newest(None, [], limit=1000)
        assert len(everything) == 3 * len(KINDS)
        assert {row.submitted_at for row in everything if row.request_id in ("req-010", "req-011")} == {
            next(row.submitted_at for row in everything if row.request_id == "req-010")
        }
        for status in (None, "licensed", "us_export_review", "domestic_quota_review", "submitted"):
            for flags in ([], ["held"], ["held", "escalated"], ["awaiting-applicant"]):
                for size in (1, 3, 1000):
                    expected = _pages(usual, status, flags, size)
                    assert _pages(light, status, flags, size) == expected, (status, flags, size)
        assert [row.request_id for row in light.newest(None, ["held"], limit=10)] == [
            "req-015",
            "req-008",
            "req-001",
        ]
        for row in everything[:3] + everything[-3:]:
            assert light.summary(row.request_id) == usual.summary(row.request_id) == row
        assert light.summary("no-such-request") is None


def test_what_the_sqlite_rows_mirror_is_what_the_domain_and_the_store_hold(
    stored: tuple[Path, SQLiteEventStore],
) -> None:
    assert tuple(str(status) for status in statuses()) == STATUSES
    assert MIGRATIONS[-1].version == SQLITE_SCHEMA_VERSION
    # The table as a migrated store holds it, which is what the reader relies on.
    path, _ = stored
    with closing(sqlite3.connect(path)) as db:
        table = [row[1] for row in db.execute("PRAGMA table_info(requests)")]
    assert table == list(COLUMNS)


def test_a_store_not_read_as_it_is_is_left_to_the_store(
    stored: tuple[Path, SQLiteEventStore], tmp_path: Path
) -> None:
    path, _ = stored
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    empty = tmp_path / "empty.db"
    empty.touch()
    for url in (
        "postgresql://chipclear@localhost:5432/chipclear",
        f"sqlite:///{tmp_path / 'missing.db'}",
        f"sqlite:///{empty}",
        f"sqlite:///{text}",
        f"sqlite:///{tmp_path}",
        f"sqlite:///{path}?synchronous=sometimes",
        "sqlite:///",
    ):
        assert open_sqlite_rows(url) is None, url
    assert not (tmp_path / "missing.db").exists()  # read-only: nothing made
    reader = open_sqlite_rows(f"sqlite:///{path}?synchronous=normal")
    assert reader is not None
    reader.close()

    # A schema at another version (one to migrate, or newer than this release), or a table of other
    # columns: the store says what to do, the reader does not guess.
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("DELETE FROM schema_migrations WHERE version = 2")
    assert open_sqlite_rows(f"sqlite:///{path}") is None  # one to migrate
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("INSERT INTO schema_migrations VALUES (2, 'buyer caps', 'now'), (3, 'newer', 'now')")
    assert open_sqlite_rows(f"sqlite:///{path}") is None  # newer than this release
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("DELETE FROM schema_migrations WHERE version = 3")
        db.execute("ALTER TABLE requests DROP COLUMN flags")
    assert open_sqlite_rows(f"sqlite:///{path}") is None
