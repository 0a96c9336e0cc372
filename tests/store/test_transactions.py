"""No transaction outlives the call that opened it, on either backend.

A worker's activity runs in a thread, and Temporal cancels a timed-out sync activity by raising an
exception into that thread (`PyThreadState_SetAsyncExc`): it fires at the next Python instruction, which
for a call waiting on a lock is the one right after the lock was taken. A transaction opened outside
the block that rolls it back kept SQLite's write lock for good and wedged every writer (issue 16).
These tests raise exactly such an exception into a writer waiting on a held lock.
"""

from __future__ import annotations

import ctypes
import sqlite3
import threading
import time
from pathlib import Path

import psycopg
import pytest

from chipclear.projections import PROJECTIONS
from chipclear.store import sqlite as sqlite_backend
from chipclear.store.protocol import EventStore, StoreUnavailable
from chipclear.store.sqlite import SQLiteEventStore
from tests.store.support import RECORDER, Raw, append_batches, scenarios


class Interrupted(Exception):
    """What Temporal raises into an activity's thread when it cancels it (here, our own)."""


def raise_in(thread: threading.Thread, exc: type[BaseException]) -> None:
    assert thread.ident is not None
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exc))
    assert done == 1


def hold_write_lock(raw: Raw) -> None:
    """Another process's writer: SQLite's write lock, or every PostgreSQL stream head."""
    if raw.postgres:
        raw.execute("BEGIN")
        raw.execute("LOCK TABLE streams IN EXCLUSIVE MODE")
    else:
        raw.execute("BEGIN IMMEDIATE")


def writable_now(raw: Raw, stream_id: str) -> bool:
    """Whether a writer could take `stream_id` at once: no lock left behind by anyone."""
    try:
        if raw.postgres:
            raw.execute("BEGIN")
            raw.execute("SELECT 1 FROM streams WHERE stream_id = ? FOR UPDATE NOWAIT", (stream_id,))
        else:
            raw.execute("PRAGMA busy_timeout=0")
            raw.execute("BEGIN IMMEDIATE")
    except (sqlite3.OperationalError, psycopg.errors.LockNotAvailable):
        return False
    finally:
        raw.execute("ROLLBACK")
    return True


def test_a_writer_interrupted_right_after_taking_the_lock_leaves_nothing_open(
    event_store: EventStore,
) -> None:
    first, second = scenarios(2, prefix="interrupted")
    append_batches(event_store, first.batches)
    raw = Raw(event_store)
    hold_write_lock(raw)
    outcome: list[BaseException] = []

    def writer() -> None:
        try:
            append_batches(event_store, second.batches[:1])
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.5)  # the writer is now waiting for the lock (a precondition, not a measurement)
    raise_in(thread, Interrupted)  # pending until the writer runs Python again: once it has the lock
    raw.execute("ROLLBACK")
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], Interrupted), outcome
    # Nothing was written and nothing is held: any writer, in any process, takes the stream at once.
    assert event_store.read_stream(second.request_id) == []
    assert writable_now(raw, first.request_id)
    append_batches(event_store, second.batches)
    assert [e.version for e in event_store.read_stream(second.request_id)] == list(
        range(1, sum(map(len, second.batches)) + 1)
    )


def test_an_interrupted_snapshot_leaves_nothing_open(event_store: EventStore) -> None:
    """The audit's read-only transaction: interrupted inside, it is ended all the same."""
    (only,) = scenarios(1, prefix="snapshot")
    append_batches(event_store, only.batches)
    raw = Raw(event_store)
    seen: list[BaseException] = []

    def auditor() -> None:
        try:
            with event_store._snapshot() as tx:  # type: ignore[attr-defined]
                tx.execute("SELECT count(*) FROM events").fetchone()
                raise Interrupted
        except Interrupted as exc:
            seen.append(exc)

    thread = threading.Thread(target=auditor)
    thread.start()
    thread.join(timeout=30)
    assert seen
    assert writable_now(raw, only.request_id)
    assert event_store.verify().ok


def test_sqlite_lock_held_past_the_busy_timeout_is_store_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer gives up after BUSY_TIMEOUT with one sentence naming the store, and holds nothing."""
    monkeypatch.setattr(sqlite_backend, "BUSY_TIMEOUT", 0.3)
    store = SQLiteEventStore(tmp_path / "events.db", projections=PROJECTIONS, recorder=RECORDER)
    try:
        (only,) = scenarios(1, prefix="busy")
        raw = Raw(store)
        hold_write_lock(raw)
        with pytest.raises(StoreUnavailable, match=r"events\.db is locked by another connection"):
            append_batches(store, only.batches[:1])
        raw.execute("ROLLBACK")
        assert writable_now(raw, only.request_id)
        append_batches(store, only.batches)  # the same handle, the same thread: as good as new
        assert store.read_stream(only.request_id)
    finally:
        store.close()
