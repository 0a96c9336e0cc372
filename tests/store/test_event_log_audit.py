"""`verify`, the event log's audit: a clean log verifies, and every edit an attacker makes is caught.

Every test that takes `event_store` runs on SQLite and on PostgreSQL. The tampering tests reach behind
the interfaces (`Raw`: plain SQL on the database) to play an attacker with database access.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import closing
from datetime import datetime, timedelta
from typing import Any

import pytest

from chipclear.store.chain import first_break, link, timestamp
from chipclear.store.protocol import EventStore
from chipclear.store.sql_base import EVENT_COLUMNS, chain_row
from tests.store.support import (
    KINDS,
    Raw,
    append_all,
    append_batches,
    attacker,
    open_handle,
    scenario,
    scenarios,
)

# -- audit ---------------------------------------------------------------------------------------------


class TestVerify:
    def test_a_clean_store_verifies(self, event_store: EventStore) -> None:
        assert event_store.verify().model_dump() == {
            "ok": True,
            "streams_checked": 0,
            "events_checked": 0,
            "breaks": [],
            "acts_checked": 0,
            "trusted_policy": None,
        }
        found = scenarios(len(KINDS))
        append_all(event_store, found)
        report = event_store.verify()
        assert report.ok and report.breaks == []
        assert report.streams_checked == len(found)
        assert report.events_checked == sum(len(each.events) for each in found)
        assert report.acts_checked == sum(e.act is not None for each in found for e in each.events) > 0


def auditors_hash(prev_hash: str, row: Any) -> str:
    """The chain as docs/security.md defines it, written out here without chipclear's code: what an
    auditor's own script computes from the stored columns."""
    out = prev_hash.encode("ascii")
    for value in row[1:12]:  # event_id … act, in column order
        if value is None:
            out += b"~,"
        else:
            raw = str(value).encode("utf-8")
            out += str(len(raw)).encode() + b":" + raw + b","
    return hashlib.sha256(out).hexdigest()


def test_an_auditors_own_script_recomputes_every_hash(event_store: EventStore) -> None:
    append_all(event_store, scenarios(len(KINDS)))
    raw = Raw(event_store)
    with closing(raw.conn):
        rows = raw.execute(f"SELECT {EVENT_COLUMNS} FROM events ORDER BY stream_id, version").fetchall()
    assert rows and any(row[11] is not None for row in rows) and any(row[11] is None for row in rows)
    for row in rows:
        assert auditors_hash(row[12], row) == row[13]


TARGET = "tamper-b"
EVENTS = len(scenario("licensed", "tamper-probe").events)


class TestTampering:
    """Every edit an attacker with database access can make is caught, in the right stream and version.

    Three licensed streams of `EVENTS` events (RequestSubmitted … LicenseIssued); only the middle one
    is touched.
    """

    @pytest.fixture
    def store(self, event_store: EventStore) -> EventStore:
        append_all(event_store, [scenario("licensed", f"tamper-{name}") for name in "abc"])
        assert event_store.verify().ok
        return event_store

    def only_break(self, store: EventStore, version: int, events_checked: int = 3 * EVENTS) -> str:
        report = store.verify()
        assert not report.ok
        assert report.streams_checked == 3
        assert report.events_checked == events_checked
        assert [(b.stream_id, b.version) for b in report.breaks] == [(TARGET, version)], report.breaks
        return report.breaks[0].problem

    def test_the_guards_refuse_update_and_delete(self, store: EventStore) -> None:
        raw = Raw(store)
        with closing(raw.conn):
            with pytest.raises(Exception, match="append-only"):
                raw.execute("UPDATE events SET actor = 'mallory' WHERE stream_id = ?", (TARGET,))
            with pytest.raises(Exception, match="append-only"):
                raw.execute("DELETE FROM events WHERE stream_id = ?", (TARGET,))
            if raw.postgres:
                with pytest.raises(Exception, match="append-only"):
                    raw.execute("TRUNCATE events")
        assert store.verify().ok
        assert len(store.read_stream(TARGET)) == EVENTS

    @pytest.mark.parametrize("page", [None, 2])
    def test_edited_data(self, store: EventStore, page: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
        """The audit reads the log a page at a time by (stream, version): with a page of two rows, which
        splits every stream, the break is still found once, at its version, and every event checked."""
        if page is not None:
            monkeypatch.setattr("chipclear.store.sql_base.PAGE", page)
            assert store.verify().ok
        with attacker(store) as conn:
            (data,) = conn.execute(
                "SELECT data FROM events WHERE stream_id = ? AND version = 3", (TARGET,)
            ).fetchone()
            edited = json.dumps(json.loads(data) | {"units_approved": 75000})
            conn.execute("UPDATE events SET data = ? WHERE stream_id = ? AND version = 3", (edited, TARGET))
        assert "hash" in self.only_break(store, 3)

    @pytest.mark.parametrize("column", ["data", "act"])
    def test_a_white_space_edit_of_a_stored_column(self, store: EventStore, column: str) -> None:
        """The hash is over the stored bytes: an edit that leaves the JSON's meaning alone still breaks it."""
        with attacker(store) as conn:
            version, text = conn.execute(
                f"SELECT version, {column} FROM events WHERE stream_id = ? AND {column} IS NOT NULL"
                " ORDER BY version LIMIT 1",
                (TARGET,),
            ).fetchone()
            spaced = json.dumps(json.loads(text), sort_keys=True, separators=(", ", ": "), ensure_ascii=False)
            assert spaced != text and json.loads(spaced) == json.loads(text)
            edit = f"UPDATE events SET {column} = ? WHERE stream_id = ? AND version = ?"
            conn.execute(edit, (spaced, TARGET, version))
        assert self.only_break(store, version) == "hash does not match the event's content"

    def test_edited_row_with_its_hash_recomputed(self, store: EventStore) -> None:
        """Re-hashing the edited row moves the chain's break to the next link, which still names the old
        hash; and the recorder's seal, made over the old hash, no longer verifies on the edited row."""
        with attacker(store) as conn:
            row = conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ? AND version = 5",
                (TARGET,),
            ).fetchone()
            edited = list(row)
            edited[10] = "mallory"  # actor
            _, _, prev_hash, _, chained = chain_row(edited)
            conn.execute(
                "UPDATE events SET actor = 'mallory', hash = ? WHERE stream_id = ? AND version = 5",
                (link(prev_hash, chained), TARGET),
            )
        report = store.verify()
        assert [(b.stream_id, b.version, b.event_type, b.problem) for b in report.breaks] == [
            (TARGET, 5, "GateOpened", "the recorder seal does not verify"),
            (TARGET, 6, None, "prev_hash does not match the previous event"),
        ]

    def test_relabelled_schema_version(self, store: EventStore) -> None:
        """The schema version is chained: relabelling a payload as another shape (so that an upcaster
        would rewrite it on read) breaks the chain like editing the payload does."""
        with attacker(store) as conn:
            relabel = "UPDATE events SET schema_version = 2 WHERE stream_id = ? AND version = 4"
            conn.execute(relabel, (TARGET,))
        assert "hash" in self.only_break(store, 4)

    def test_deleted_middle_row(self, store: EventStore) -> None:
        with attacker(store) as conn:
            conn.execute("DELETE FROM events WHERE stream_id = ? AND version = 5", (TARGET,))
        assert "version 5 is missing" in self.only_break(store, 5, events_checked=3 * EVENTS - 1)

    def test_deleted_first_row(self, store: EventStore) -> None:
        with attacker(store) as conn:
            conn.execute("DELETE FROM events WHERE stream_id = ? AND version = 1", (TARGET,))
        report = store.verify()
        assert report.events_checked == 3 * EVENTS - 1
        # The submission's signed act now starts at v2, not at the version after the one it was signed for.
        assert [(b.stream_id, b.version, b.problem) for b in report.breaks] == [
            (TARGET, 1, "version 1 is missing (next stored is 2)"),
            (TARGET, 2, "the act was signed for version 0 of the stream, but its first event is v2"),
        ]

    def test_swapped_content_of_two_rows(self, store: EventStore) -> None:
        with attacker(store) as conn:
            (t2, d2), (t3, d3) = conn.execute(
                "SELECT type, data FROM events WHERE stream_id = ? AND version IN (2, 3) ORDER BY version",
                (TARGET,),
            ).fetchall()
            update = "UPDATE events SET type = ?, data = ? WHERE stream_id = ? AND version = ?"
            conn.execute(update, (t3, d3, TARGET, 2))
            conn.execute(update, (t2, d2, TARGET, 3))
        assert "hash" in self.only_break(store, 2)

    def test_swapped_version_numbers(self, store: EventStore) -> None:
        with attacker(store) as conn:
            move = "UPDATE events SET version = ? WHERE stream_id = ? AND version = ?"
            conn.execute(move, (1000, TARGET, 4))
            conn.execute(move, (4, TARGET, 5))
            conn.execute(move, (5, TARGET, 1000))
        self.only_break(store, 4)

    def test_truncated_tail(self, store: EventStore) -> None:
        with attacker(store) as conn:
            conn.execute("DELETE FROM events WHERE stream_id = ? AND version = ?", (TARGET, EVENTS))
        problem = self.only_break(store, EVENTS, events_checked=3 * EVENTS - 1)
        assert f"version {EVENTS} is missing" in problem and "head" in problem

    def test_truncated_tail_and_head_rolled_back_without_its_hash(self, store: EventStore) -> None:
        with attacker(store) as conn:
            conn.execute("DELETE FROM events WHERE stream_id = ? AND version >= ?", (TARGET, EVENTS - 1))
            conn.execute("UPDATE streams SET version = ? WHERE stream_id = ?", (EVENTS - 2, TARGET))
        assert "head hash" in self.only_break(store, EVENTS - 2, events_checked=3 * EVENTS - 2)

    def test_deleted_stream_head(self, store: EventStore) -> None:
        with attacker(store) as conn:
            conn.execute("DELETE FROM streams WHERE stream_id = ?", (TARGET,))
        assert "head is missing" in self.only_break(store, EVENTS)

    def test_edited_recorded_at(self, store: EventStore) -> None:
        with attacker(store) as conn:
            recorded = conn.execute(
                "SELECT recorded_at FROM events WHERE stream_id = ? AND version = 6", (TARGET,)
            ).fetchone()[0]
            earlier = timestamp(datetime.fromisoformat(recorded) - timedelta(days=30))
            conn.execute(
                "UPDATE events SET recorded_at = ? WHERE stream_id = ? AND version = 6", (earlier, TARGET)
            )
        assert "hash" in self.only_break(store, 6)

    def test_verify_during_a_concurrent_append_reports_no_false_break(
        self, event_store: EventStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        early, late = scenario("licensed", "race-a"), scenario("licensed", "race-b")
        append_batches(event_store, [early.batches[0], late.batches[0]])
        other_worker = open_handle(event_store)

        def first_break_while_a_worker_appends(stream_id: str, rows: Any, head: Any) -> Any:
            if stream_id == "race-a":  # heads are already read; race-b gets a new batch before its rows
                other_worker.append("race-b", late.batches[1][0].version - 1, late.batches[1])
            return first_break(stream_id, rows, head)

        monkeypatch.setattr("chipclear.store.sql_audit.first_break", first_break_while_a_worker_appends)
        try:
            during = event_store.verify()
        finally:
            monkeypatch.undo()
            other_worker.close()

        assert event_store.verify().ok  # the log itself is fine...
        assert during.ok, during.breaks  # ...so the audit taken during the append must be too
