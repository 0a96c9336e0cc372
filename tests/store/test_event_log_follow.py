"""The event log followed while writers append, and writers in parallel.

Runs on both backends through the conformance fixture. The PostgreSQL-only tests hold a transaction
open by hand to make a position commit after a later one, the case a follower must not skip.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from functools import partial
from typing import Any

import psycopg
import pytest

from chipclear.domain.events import StoredEvent
from chipclear.store.factory import open_store
from chipclear.store.follow import FollowerState, Gap, settled_run
from chipclear.store.postgres import PostgresEventStore, _Tx, split_url
from chipclear.store.protocol import EventLog, EventStore
from chipclear.store.sql_log import append_in
from tests.store.support import RECORDER, append_all, grant, open_handle, run_threads, scenarios, write_stream

FOLLOW_WITHIN = 30.0  # seconds; well inside pytest-timeout, so a lost event shows as a diff, not a kill


def follow_until(store: EventLog, total: int) -> list[StoredEvent]:
    """Poll as `chipclear events --follow` does, until `total` events arrived (or FOLLOW_WITHIN passed)."""
    follower, seen = store.follow(0), list[StoredEvent]()
    deadline = time.monotonic() + FOLLOW_WITHIN
    while len(seen) < total and time.monotonic() < deadline:
        batch = follower.poll()
        seen += batch
        if not batch:
            time.sleep(0.005)
    return seen


# -- the follower's rule, on its own -------------------------------------------------------------------


def at(*positions: int) -> list[tuple[int, str]]:
    return [(position, f"event@{position}") for position in positions]


WRITER = frozenset({(4242, "3/731")})


class TestSettledRun:
    def test_contiguous_positions_pass(self) -> None:
        out, state, gap = settled_run(at(1, 2, 3), FollowerState(), gap_final=False, complete=True)
        assert out == ["event@1", "event@2", "event@3"] and state == FollowerState(position=3) and gap is None

    def test_a_gap_stops_the_run_and_is_reported(self) -> None:
        out, state, gap = settled_run(at(1, 2, 4, 5), FollowerState(), gap_final=False, complete=True)
        assert out == ["event@1", "event@2"]
        assert state == FollowerState(position=2) and gap == 5  # the caller records the writers

    def test_the_gap_holds_while_a_writer_of_that_moment_runs(self) -> None:
        waiting = FollowerState(position=2, gap=Gap(writers=WRITER, through=5))
        out, state, gap = settled_run(at(4, 5, 6), waiting, gap_final=False, complete=True)
        assert out == [] and state == waiting and gap is None

    def test_a_late_commit_fills_the_gap_and_passes_in_order(self) -> None:
        waiting = FollowerState(position=2, gap=Gap(writers=WRITER, through=5))
        out, state, _ = settled_run(at(3, 4, 5, 6), waiting, gap_final=False, complete=True)
        assert out == ["event@3", "event@4", "event@5", "event@6"] and state.position == 6

    def test_a_rolled_back_position_is_passed_once_final(self) -> None:
        waiting = FollowerState(position=2, gap=Gap(writers=WRITER, through=5))
        out, state, gap = settled_run(at(4, 5, 7), waiting, gap_final=True, complete=True)
        # 3 is final and missing: rolled back. 6 is above the settled range: a new gap to wait out.
        assert out == ["event@4", "event@5"]
        assert state == FollowerState(position=5, final_through=5) and gap == 7

    def test_a_rolled_back_tail_of_the_settled_range_is_stepped_over(self) -> None:
        waiting = FollowerState(position=2, gap=Gap(writers=WRITER, through=6))
        out, state, gap = settled_run(at(3, 7), waiting, gap_final=True, complete=True)
        assert out == ["event@3", "event@7"]  # 4-6 were rolled back; 7 follows the final range
        assert state == FollowerState(position=7, final_through=6) and gap is None

    def test_a_page_cut_short_keeps_the_follower_inside_the_settled_range(self) -> None:
        waiting = FollowerState(position=2, gap=Gap(writers=WRITER, through=50))
        out, state, _ = settled_run(at(4, 5), waiting, gap_final=True, complete=False)
        assert out == ["event@4", "event@5"] and state.position == 5 and state.final_through == 50


# -- following a live log --------------------------------------------------------------------------------


class TestFollow:
    def test_a_follower_sees_every_event_once_in_order_while_writers_run(
        self, event_store: EventStore
    ) -> None:
        writers, each = 4, 60
        total = writers * each
        handles = [open_handle(event_store) for _ in range(writers)]
        seen: list[StoredEvent] = []

        def follower() -> None:
            seen.extend(follow_until(event_store, total))

        reader = threading.Thread(target=follower)
        reader.start()
        try:
            errors = run_threads(
                [partial(write_stream, h, f"ledger-{w}", each) for w, h in enumerate(handles)]
            )
        finally:
            reader.join(timeout=FOLLOW_WITHIN + 10)
            for handle in handles:
                handle.close()
        assert not reader.is_alive(), "the follower did not return"
        assert errors == []
        logged = list(event_store.read_all())
        assert len(logged) == total
        assert [e.position for e in seen] == [e.position for e in logged]  # none lost, none twice, in order
        assert [e.event_id for e in seen] == [e.event_id for e in logged]
        assert event_store.verify().ok

    def test_a_follower_resumes_from_its_checkpoint(self, event_store: EventStore) -> None:
        append_all(event_store, scenarios(3))
        first = event_store.follow(0)
        head = first.poll()
        middle = head[len(head) // 2].position
        rest = event_store.follow(middle).poll()
        assert [e.position for e in rest] == [e.position for e in head if e.position > middle]
        assert first.poll() == [] and first.position == head[-1].position


@contextmanager
def open_append(store: PostgresEventStore, stream_id: str) -> Iterator[Callable[[], None]]:
    """Append one event inside a transaction that stays open; call the yielded function to commit.

    Leaving the block without committing rolls the append back, as a failed activity would.
    """
    conn = psycopg.connect(split_url(store.url)[0], autocommit=False)
    try:
        append_in(store, _Tx(conn), stream_id, 0, [grant(stream_id, 1)])
        yield conn.commit
    finally:
        conn.rollback()
        conn.close()


def wait_for(condition: Callable[[], bool], within: float = 20) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def lock_waiters(store: PostgresEventStore) -> int:
    """Sessions of this database blocked on a lock right now."""
    with psycopg.connect(split_url(store.url)[0], autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[PostgresEventStore]:
    with closing(PostgresEventStore(pg_url, recorder=RECORDER)) as store:
        yield store


class TestPostgresGaps:
    def test_a_position_that_commits_late_is_waited_for_not_skipped(
        self, pg_store: PostgresEventStore
    ) -> None:
        write_stream(pg_store, "early", 1)
        follower = pg_store.follow(0)
        assert [e.stream_id for e in follower.poll()] == ["early"]
        with open_append(pg_store, "slow") as commit_slow:  # draws position 2 and does not commit yet
            write_stream(pg_store, "fast", 1)  # position 3 commits first
            assert [e.stream_id for e in pg_store.read_all()] == ["early", "fast"]  # a naive read skips 2
            assert follower.poll() == [] and follower.poll() == []  # the follower waits at the gap
            commit_slow()
        assert [(e.position, e.stream_id) for e in follower.poll()] == [(2, "slow"), (3, "fast")]
        assert pg_store.verify().ok

    def test_a_rolled_back_position_is_passed_once_no_writer_can_fill_it(
        self, pg_store: PostgresEventStore
    ) -> None:
        follower = pg_store.follow(0)
        with open_append(pg_store, "doomed"):  # draws position 1, then rolls back
            write_stream(pg_store, "kept", 1)
            assert follower.poll() == []  # 1 may still commit: 2 waits
            assert follower.poll() == []
        # The writer rolled back: the next poll sees no transaction that could still fill 1.
        assert [(e.position, e.stream_id) for e in follower.poll()] == [(2, "kept")]
        assert follower.poll() == []
        assert [e.stream_id for e in pg_store.read_all()] == ["kept"]

    def test_a_late_commit_by_a_younger_transaction_is_not_skipped(
        self, pg_store: PostgresEventStore
    ) -> None:
        """The slow writer takes its transaction id after the fast one, yet draws the lower position."""
        fast = psycopg.connect(split_url(pg_store.url)[0], autocommit=False)
        slow = psycopg.connect(split_url(pg_store.url)[0], autocommit=False)
        try:
            pg_store._lock_stream(_Tx(fast), "fast")  # the older transaction id
            pg_store._lock_stream(_Tx(slow), "slow")  # the younger one
            append_in(pg_store, _Tx(slow), "slow", 0, [grant("slow", 1)])  # position 1, not committed
            append_in(pg_store, _Tx(fast), "fast", 0, [grant("fast", 1)])  # position 2
            fast.commit()
            follower = pg_store.follow(0)
            for _ in range(3):  # however often it is asked while `slow` runs
                assert follower.poll() == [] and follower.waiting
            slow.commit()
        finally:
            for conn in (fast, slow):
                conn.rollback()
                conn.close()
        assert [(e.position, e.stream_id) for e in follower.poll()] == [(1, "slow"), (2, "fast")]

    def test_an_unrelated_open_transaction_does_not_hold_the_follower(
        self, pg_store: PostgresEventStore, postgres: Any
    ) -> None:
        """A long transaction elsewhere in the cluster (another database, another table) is no writer."""
        with psycopg.connect(postgres.url("template1"), autocommit=False) as elsewhere:
            elsewhere.execute("SELECT pg_current_xact_id()")  # holds a transaction id, open
            follower = pg_store.follow(0)
            with open_append(pg_store, "doomed"):
                write_stream(pg_store, "kept", 1)
                assert follower.poll() == []
            assert [(e.position, e.stream_id) for e in follower.poll()] == [(2, "kept")]
            elsewhere.rollback()

    def test_appends_to_different_streams_do_not_wait_for_each_other(
        self, pg_store: PostgresEventStore
    ) -> None:
        """No table-wide lock: with one append held open, another stream's append commits at once."""
        with open_append(pg_store, "held") as commit_held:
            done = threading.Event()

            def free() -> None:
                write_stream(pg_store, "free", 3)
                done.set()

            other = threading.Thread(target=free)
            other.start()
            assert done.wait(timeout=20), "an append to another stream waited for the open transaction"
            other.join()
            commit_held()
        assert {e.stream_id for e in pg_store.read_all()} == {"held", "free"}

    def test_appends_to_one_stream_queue_behind_each_other(self, pg_store: PostgresEventStore) -> None:
        with open_append(pg_store, "contended") as commit_first:
            result: list[BaseException] = []

            def second() -> None:
                try:
                    pg_store.append("contended", 0, [grant("contended", 1)])
                except BaseException as exc:
                    result.append(exc)

            rival = threading.Thread(target=second)
            rival.start()
            assert wait_for(lambda: lock_waiters(pg_store) == 1), "the second writer never waited on a lock"
            assert rival.is_alive() and result == []
            commit_first()
            rival.join(timeout=20)
        assert [type(e).__name__ for e in result] == ["ConcurrencyError"]
        assert [e.version for e in pg_store.read_stream("contended")] == [1]


# -- many writers -------------------------------------------------------------------------------------------


WRITERS, EVENTS_EACH = 8, 500


def timed(target: Callable[[], None]) -> float:
    started = time.perf_counter()
    target()
    return time.perf_counter() - started


@pytest.mark.slow
def test_eight_writers_on_distinct_streams_lose_nothing_that_one_writer_keeps(
    pg_url: str, postgres: Any
) -> None:
    """8 x 500 events at once: nothing lost, duplicated or reordered, every chain intact.

    The one writer appends the same 4,000 events (the same 8 streams, one after the other) to a
    second, fresh schema, and both logs must verify alike. How much faster the eight are is a
    benchmark's business (`chipclear bench --event-store`), not a timed assert that a loaded CI
    machine can flip; that they do not wait on each other is shown without a clock above.
    """
    parallel = PostgresEventStore(pg_url + "&pool_max_size=8", recorder=RECORDER)
    alone_url = postgres.new_schema()
    with closing(open_store(alone_url, require_schema=False)) as fresh:
        fresh.migrate()
    alone = PostgresEventStore(alone_url, recorder=RECORDER)
    streams = [f"writer-{w}" for w in range(WRITERS)]
    try:
        start = threading.Barrier(WRITERS)

        def writer(stream_id: str) -> Callable[[], None]:
            def run() -> None:
                start.wait(timeout=30)
                write_stream(parallel, stream_id, EVENTS_EACH)

            return run

        errors: list[BaseException] = []
        in_parallel = timed(lambda: errors.extend(run_threads([writer(s) for s in streams], timeout=600)))

        def one_writer_alone() -> None:
            for stream_id in streams:
                write_stream(alone, stream_id, EVENTS_EACH)

        one_writer = timed(one_writer_alone)
        assert errors == []

        for store in (parallel, alone):
            report = store.verify()
            assert report.ok, report.breaks
            assert (report.streams_checked, report.events_checked) == (WRITERS, WRITERS * EVENTS_EACH)
            logged = list(store.read_all())
            assert len(logged) == len({e.event_id for e in logged}) == WRITERS * EVENTS_EACH
            for stream_id in streams:
                stored = store.read_stream(stream_id)
                assert [e.version for e in stored] == list(range(1, EVENTS_EACH + 1))
                assert [e.data.units for e in stored] == list(range(1, EVENTS_EACH + 1))  # type: ignore[union-attr]
                positions = [e.position for e in stored]
                assert positions == sorted(positions)  # versions in log order: nothing reordered
        print(f"\n8 writers: {in_parallel:.2f}s; one writer: {one_writer:.2f}s")
    finally:
        parallel.close()
        alone.close()
