"""The schema interface: numbered migrations applied once each, in order; a store at another version
is refused. SQLite migrates itself when opened; PostgreSQL waits for `chipclear store migrate`."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from functools import partial
from pathlib import Path

import psycopg
import pytest

from chipclear.domain.buyer_cap import ClaimUnits
from chipclear.projections import PROJECTIONS, get_request
from chipclear.store.factory import open_store
from chipclear.store.migrations import Migration, SchemaError
from chipclear.store.postgres import PostgresEventStore, split_url
from chipclear.store.sql_base import Tx
from chipclear.store.sqlite import MIGRATIONS, SQLiteEventStore
from tests.postgres import Cluster
from tests.store.support import RECORDER, append_all, run_threads, scenario, scenarios


def add_note(tx: Tx) -> None:
    tx.execute("ALTER TABLE requests ADD COLUMN note TEXT NOT NULL DEFAULT ''")


LATEST = MIGRATIONS[-1].version
NOTE = Migration(LATEST + 1, "requests.note", add_note)


def columns(path: Path, table: str) -> set[str]:
    with closing(sqlite3.connect(path)) as conn:
        return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


class TestSQLite:
    def test_a_store_opens_at_the_latest_version(self, tmp_path: Path) -> None:
        with closing(SQLiteEventStore(tmp_path / "events.db")) as store:
            assert store.schema_version() == store.migrations()[-1].version == LATEST == 2
            assert store.pending_migrations() == []
        assert "schema_version" in columns(tmp_path / "events.db", "events")

    def test_a_store_made_by_an_earlier_release_upgrades_when_opened(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = tmp_path / "events.db"
        found = scenarios(5, prefix="old")
        with closing(SQLiteEventStore(path, projections=PROJECTIONS, recorder=RECORDER)) as earlier:
            append_all(earlier, found)
        monkeypatch.setattr(SQLiteEventStore, "migrations", lambda self: (*MIGRATIONS, NOTE))

        with closing(SQLiteEventStore(path, projections=PROJECTIONS, recorder=RECORDER)) as store:
            assert store.schema_version() == LATEST + 1 and store.pending_migrations() == []
            report = store.verify()
            assert report.ok and report.streams_checked == len(found)
            for each in found:
                assert get_request(store, each.request_id) == each.state
            held = scenario("awaiting_review", "new-after-upgrade")
            append_all(store, [held])
            assert get_request(store, "new-after-upgrade") == held.state
        assert "note" in columns(path, "requests")
        with closing(sqlite3.connect(path)) as conn:
            applied = conn.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
        assert applied == [*((m.version, m.name) for m in MIGRATIONS), (LATEST + 1, "requests.note")]

    def test_a_store_made_by_1_0_gains_the_buyers_caps_when_opened(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = tmp_path / "events.db"
        found = scenarios(3, prefix="v1")
        with monkeypatch.context() as patched:
            patched.setattr(SQLiteEventStore, "migrations", lambda self: MIGRATIONS[:1])
            with closing(SQLiteEventStore(path, projections=PROJECTIONS, recorder=RECORDER)) as earlier:
                append_all(earlier, found)
        assert "units" not in columns(path, "buyer_claims")
        with closing(SQLiteEventStore(path, projections=PROJECTIONS, recorder=RECORDER)) as store:
            assert store.schema_version() == 2 and store.verify().ok
            claim = store.claim_buyer_units(ClaimUnits(buyer="Zhipu AI", request_id="r1", units=5, cap=10))
            assert claim.units == 5 and store.buyer_cap("ZHIPU AI").claims == {"r1": 5}
        assert {"request_id", "buyer_key", "units", "released"} <= columns(path, "buyer_claims")

    def test_an_interrupted_upgrade_leaves_the_store_as_it_was(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A step is one transaction: a crash in the middle of it undoes all of it."""
        path = tmp_path / "events.db"
        found = scenarios(3)
        with closing(SQLiteEventStore(path, projections=PROJECTIONS, recorder=RECORDER)) as earlier:
            append_all(earlier, found)

        def crash(tx: Tx) -> None:
            add_note(tx)
            raise KeyboardInterrupt  # the operator's Ctrl-C, in the middle of the upgrade

        with monkeypatch.context() as patched:
            patched.setattr(
                SQLiteEventStore,
                "migrations",
                lambda self: (*MIGRATIONS, Migration(LATEST + 1, "requests.note", crash)),
            )
            with pytest.raises(KeyboardInterrupt):
                SQLiteEventStore(path)
        with closing(open_store(f"sqlite:///{path}", require_schema=False)) as untouched:
            assert untouched.schema_version() == LATEST  # the new step did not go in, not even in part
        assert "note" not in columns(path, "requests")
        with closing(SQLiteEventStore(path, projections=PROJECTIONS, recorder=RECORDER)) as store:
            assert store.verify().ok
            assert [get_request(store, each.request_id) for each in found] == [each.state for each in found]

    def test_opening_for_migration_changes_nothing_until_asked(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'events.db'}"
        with closing(open_store(url, require_schema=False)) as store:
            assert [m.version for m in store.pending_migrations()] == [1, 2]  # `store migrate --check`
        with closing(open_store(url, require_schema=False)) as store:
            assert store.schema_version() == 0
            assert [m.version for m in store.migrate()] == [1, 2]  # `store migrate`
            assert store.migrate() == []

    def test_a_schema_newer_than_the_release_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "events.db"
        SQLiteEventStore(path).close()
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("INSERT INTO schema_migrations VALUES (3, 'from the future', 'now')")
        with pytest.raises(SchemaError, match=r"version 3, newer than this release knows \(2\): upgrade"):
            SQLiteEventStore(path)

    def test_an_up_to_date_store_applies_nothing_when_opened_again(self, tmp_path: Path) -> None:
        with closing(
            SQLiteEventStore(tmp_path / "events.db", projections=PROJECTIONS, recorder=RECORDER)
        ) as store:
            append_all(store, [scenario("licensed")])
        with closing(SQLiteEventStore(tmp_path / "events.db")) as store:
            assert store.migrate() == [] and store.schema_version() == LATEST


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
        # Each step is its own transaction under the migrations lock, so two processes may share
        # the steps between them; what must hold is that every step is applied exactly once, in order.
        assert sorted(version for done in applied for version in done) == [1, 2]
        assert all(done == sorted(done) for done in applied)
        with closing(open_store(url, recorder=RECORDER)) as store:
            assert store.schema_version() == LATEST and store.verify().ok

    def test_a_schema_newer_than_the_release_is_refused(self, pg_url: str) -> None:
        with psycopg.connect(split_url(pg_url)[0], autocommit=True) as conn:
            conn.execute("INSERT INTO schema_migrations VALUES (99, 'from the future', 'now')")
        with pytest.raises(SchemaError, match=r"version 99, newer than this release knows \(2\): upgrade"):
            open_store(pg_url)

    def test_unmigrated_postgresql_is_refused_until_migrated(self, postgres: Cluster) -> None:
        url = postgres.new_schema()
        with pytest.raises(SchemaError, match="chipclear store migrate"):
            open_store(url)
        with closing(open_store(url, require_schema=False)) as store:
            assert store.schema_version() == 0
            assert [m.version for m in store.migrate()] == [1, 2]
            assert store.migrate() == []  # idempotent
        with closing(open_store(url, recorder=RECORDER)) as store:
            assert store.schema_version() == LATEST and store.verify().ok
