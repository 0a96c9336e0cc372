"""Versioned schema migrations: stores made by earlier releases open and upgrade; PostgreSQL waits for
`chipclear store migrate` and refuses a schema it does not know."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from functools import partial
from pathlib import Path

import psycopg
import pytest

from chipclear.domain.state import fold
from chipclear.store import open_store
from chipclear.store.migrations import SchemaError
from chipclear.store.postgres import PostgresEventStore, split_url
from chipclear.store.sqlite import SQLiteEventStore
from tests.postgres import Cluster
from tests.store.test_store import append_all, run_threads, scenario, scenarios

# The schema of the release before flags and versioned migrations: a store file made by it must open.
BEFORE_FLAGS = [
    "CREATE TABLE events (position INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,"
    " stream_id TEXT NOT NULL, version INTEGER NOT NULL CHECK (version >= 1), type TEXT NOT NULL,"
    " data TEXT NOT NULL, occurred_at TEXT NOT NULL, recorded_at TEXT NOT NULL,"
    " policy_version TEXT NOT NULL, actor TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,"
    " UNIQUE (stream_id, version))",
    "CREATE TABLE streams (stream_id TEXT PRIMARY KEY, version INTEGER NOT NULL, head_hash TEXT NOT NULL)",
    "CREATE TABLE requests (request_id TEXT PRIMARY KEY, status TEXT NOT NULL, gate TEXT,"
    " buyer TEXT NOT NULL, units_requested INTEGER NOT NULL, units_approved INTEGER,"
    " policy_version TEXT NOT NULL, version INTEGER NOT NULL, submitted_at TEXT NOT NULL,"
    " updated_at TEXT NOT NULL, state TEXT NOT NULL)",
]


def legacy_store(path: Path) -> list[str]:
    """A store file as the earlier release left it: its events copied in, no flags, no migrations table."""
    found = scenarios(5, prefix="old")
    source = SQLiteEventStore(path.with_name("source.db"))
    append_all(source, found)
    source.close()
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for statement in BEFORE_FLAGS:
            conn.execute(statement)
        conn.execute("ATTACH DATABASE ? AS source", (str(path.with_name("source.db")),))
        conn.execute("INSERT INTO events SELECT * FROM source.events")
        conn.execute("INSERT INTO streams SELECT * FROM source.streams")
        conn.execute(
            "INSERT INTO requests SELECT request_id, status, gate, buyer, units_requested, units_approved,"
            " policy_version, version, submitted_at, updated_at, state FROM source.requests"
        )
    return [each.request_id for each in found]


class TestSQLite:
    def test_a_store_from_before_versioned_migrations_upgrades_when_opened(self, tmp_path: Path) -> None:
        path = tmp_path / "events.db"
        request_ids = legacy_store(path)
        with closing(SQLiteEventStore(path)) as store:
            assert store.schema_version() == store.migrations()[-1].version == 2
            assert store.pending_migrations() == []
            report = store.verify()
            assert report.ok and report.streams_checked == len(request_ids)
            for request_id in request_ids:  # the new column is filled from the log, not left empty
                state = store.get_request(request_id)
                assert state == fold(store.read_stream(request_id))
            rows = store.list_requests()
            assert [row.request_id for row in rows] == sorted(request_ids)
            held = scenario("awaiting_review", "new-after-upgrade")  # a new request writes its flags
            append_all(store, [held])
            assert store.get_request("new-after-upgrade") == held.state
        with closing(sqlite3.connect(path)) as conn:
            applied = conn.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
        assert [version for version, _ in applied] == [1, 2]

    def test_an_interrupted_upgrade_leaves_the_store_as_it_was(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The flags column and the projection's refill are one step: a crash between them undoes both."""
        path = tmp_path / "events.db"
        request_ids = legacy_store(path)

        def crash(self: SQLiteEventStore, tx: object) -> int:
            raise KeyboardInterrupt  # the operator's Ctrl-C, in the middle of the upgrade

        with monkeypatch.context() as patched:
            patched.setattr(SQLiteEventStore, "_rebuild", crash)
            with pytest.raises(KeyboardInterrupt):
                SQLiteEventStore(path)
        with closing(open_store(f"sqlite:///{path}", require_schema=False)) as untouched:
            assert untouched.schema_version() == 1  # step 1 went in; step 2 did not, not even in part
        with closing(SQLiteEventStore(path)) as store:
            assert [row.request_id for row in store.list_requests()] == sorted(request_ids)

    def test_opening_for_migration_changes_nothing_until_asked(self, tmp_path: Path) -> None:
        path = tmp_path / "events.db"
        legacy_store(path)
        with closing(open_store(f"sqlite:///{path}", require_schema=False)) as store:
            assert [m.version for m in store.pending_migrations()] == [1, 2]  # `store migrate --check`
        with closing(open_store(f"sqlite:///{path}", require_schema=False)) as store:
            assert store.schema_version() == 0
            assert [m.version for m in store.migrate()] == [1, 2]  # `store migrate`

    def test_a_schema_newer_than_the_release_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "events.db"
        SQLiteEventStore(path).close()
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("INSERT INTO schema_migrations VALUES (3, 'from the future', 'now')")
        with pytest.raises(SchemaError, match=r"version 3, newer than this release knows \(2\): upgrade"):
            SQLiteEventStore(path)

    def test_an_up_to_date_store_applies_nothing_when_opened_again(self, tmp_path: Path) -> None:
        with closing(SQLiteEventStore(tmp_path / "events.db")) as store:
            append_all(store, [scenario("licensed")])
        with closing(SQLiteEventStore(tmp_path / "events.db")) as store:
            assert store.migrate() == [] and store.schema_version() == 2


class TestPostgreSQL:
    def test_two_processes_migrating_at_once_apply_each_step_once(self, postgres: Cluster) -> None:
        url = postgres.new_schema()
        handles = [PostgresEventStore(url, require_schema=False) for _ in range(4)]
        applied: list[list[int]] = []
        lock = threading.Lock()
        start = threading.Barrier(len(handles))

        def migrate(store: PostgresEventStore) -> None:
            start.wait(timeout=30)
            done = [m.version for m in store.migrate()]
            with lock:
                applied.append(done)

        try:
            assert run_threads([partial(migrate, store) for store in handles]) == []
        finally:
            for handle in handles:
                handle.close()
        assert sorted(applied) == [[], [], [], [1]]
        with closing(open_store(url)) as store:
            assert store.schema_version() == 1 and store.verify().ok

    def test_a_schema_newer_than_the_release_is_refused(self, pg_url: str) -> None:
        with psycopg.connect(split_url(pg_url)[0], autocommit=True) as conn:
            conn.execute("INSERT INTO schema_migrations VALUES (99, 'from the future', 'now')")
        with pytest.raises(SchemaError, match=r"version 99, newer than this release knows \(1\): upgrade"):
            open_store(pg_url)
