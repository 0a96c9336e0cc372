"""Checkpoints: signed heads of the Merkle tree over the whole log, and what they catch that chains cannot.

A chain proves each stream whole as it stands; it cannot see a stream removed whole, a tail cut with the
head set back, or a past rewritten by someone who also holds the recorder key. A checkpoint an auditor
keeps can: the log must stay an append-only extension of it (RFC 9162 consistency). Every test that
takes `event_store` runs on SQLite and on PostgreSQL; the attacker works in plain SQL (`attacker`).
"""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import threading
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from chipclear.config import ConfigError
from chipclear.domain.policy import Policy
from chipclear.domain.signing import public_text
from chipclear.projections import PROJECTIONS
from chipclear.recorder import Checkpointer, CheckpointSchedule, checkpointing, load_recorder
from chipclear.store import merkle
from chipclear.store.chain import link
from chipclear.store.checkpoint import Checkpoint, read_checkpoint, sign_checkpoint, write_checkpoint
from chipclear.store.outage import StoreOutage
from chipclear.store.postgres import PostgresEventStore, _Tx, split_url
from chipclear.store.protocol import EventStore, StoreUnavailable
from chipclear.store.sql_base import EVENT_COLUMNS, chain_row
from chipclear.store.sql_checkpoints import CheckpointMismatch, UnknownEvent
from chipclear.store.sql_log import append_in
from chipclear.store.sqlite import SQLiteEventStore
from chipclear.store.transfer import InvalidExport, read_jsonl, write_jsonl
from chipclear.store.trust import Sealer
from tests import keys
from tests.store.support import (
    AUTO,
    RECORDER,
    Scenario,
    append_all,
    append_batches,
    attacker,
    scenario,
    scenarios,
)
from tests.store.test_seals import MALLORY, STREAM, TRUST, at_cn_import, forge, licence

TRUSTED = TRUST.recorder_keys


def log_root(store: EventStore) -> tuple[int, bytes]:
    """The tree over the log as an auditor computes it from an export: chain hashes in position order."""
    leaves = [merkle.event_leaf(event.hash) for event in store.read_all()]
    return len(leaves), merkle.root(leaves)


def checkpointed(store: EventStore, found: list[Scenario]) -> list[Checkpoint]:
    """Append each scenario batch by batch, with a checkpoint after every batch (as a busy worker might)."""
    made = []
    for each in found:
        for batch in each.batches:
            append_batches(store, [batch])
            made.append(store.make_checkpoint())
    return made


def problem_of(store: EventStore, checkpoint: Checkpoint) -> str:
    report = store.check_checkpoint(checkpoint, TRUSTED)
    assert not report.ok and report.problem is not None
    return report.problem


# -- making and checking -----------------------------------------------------------------------------
def test_a_checkpoint_is_the_signed_root_of_the_whole_log(event_store: EventStore) -> None:
    empty = event_store.make_checkpoint()
    assert (empty.tree_size, empty.root_hash, empty.last_position) == (0, merkle.EMPTY_ROOT.hex(), 0)
    append_all(event_store, scenarios(4))
    made = event_store.make_checkpoint(datetime(2026, 3, 3, tzinfo=UTC))
    size, root = log_root(event_store)
    assert (made.tree_size, made.root_hash) == (size, root.hex())
    assert made.last_position == max(e.position for e in event_store.read_all())
    assert made.timestamp == "2026-03-03T00:00:00.000000+00:00"
    assert made.key == keys.public(keys.RECORDER) and made.signature_verifies()
    assert event_store.checkpoints() == [empty, made]
    assert not event_store.save_checkpoint(made)  # a size is stored once
    report = event_store.check_checkpoint(made, TRUSTED)
    assert report.ok and report.proof == [] and report.log_root == made.root_hash


def test_the_log_grown_since_is_proven_an_extension(event_store: EventStore) -> None:
    append_all(event_store, scenarios(3))
    made = event_store.make_checkpoint()
    append_all(event_store, scenarios(4, prefix="later"))
    report = event_store.check_checkpoint(made, TRUSTED)
    size, root = log_root(event_store)
    assert report.ok and report.problem is None
    assert (report.checkpoint_size, report.log_size, report.log_root) == (made.tree_size, size, root.hex())
    proof = [bytes.fromhex(node) for node in report.proof]
    assert proof and merkle.verify_consistency(made.tree_size, size, made.root(), root, proof)


def test_a_checkpoint_file_is_written_whole_and_private(event_store: EventStore, tmp_path: Path) -> None:
    append_all(event_store, scenarios(2))
    made = event_store.make_checkpoint()
    folder = tmp_path / "auditor"
    folder.mkdir()
    path = folder / "checkpoint.json"
    write_checkpoint(made, path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_checkpoint(path) == made
    assert [p.name for p in folder.iterdir()] == ["checkpoint.json"]  # no partial file left
    body = json.loads(path.read_text())
    assert set(body) == {"format", "tree_size", "root_hash", "last_position", "timestamp", "key", "signature"}


def test_a_checkpoint_that_was_edited_or_signed_by_another_key_proves_nothing(
    event_store: EventStore,
) -> None:
    append_all(event_store, scenarios(2))
    made = event_store.make_checkpoint()
    edited = made.model_copy(update={"tree_size": made.tree_size - 1})
    assert problem_of(event_store, edited) == "the checkpoint's signature does not verify"
    size, root = log_root(event_store)
    own = sign_checkpoint(MALLORY, size, root, made.last_position, datetime.now(UTC))
    assert problem_of(event_store, own) == (
        f"the checkpoint is signed by {own.key}, which the policy does not name as a recorder key"
    )
    assert event_store.check_checkpoint(own, None).ok  # without the policy: only its own key


# -- what a checkpoint catches -----------------------------------------------------------------------
def test_a_request_removed_whole_is_caught(event_store: EventStore) -> None:
    found = scenarios(5)
    made = checkpointed(event_store, found)
    held = made[-1]
    gone = found[2]
    with attacker(event_store) as conn:
        conn.execute("DELETE FROM events WHERE stream_id = ?", (gone.request_id,))
        conn.execute("DELETE FROM streams WHERE stream_id = ?", (gone.request_id,))
        conn.execute("DELETE FROM requests WHERE request_id = ?", (gone.request_id,))
    assert event_store.verify(TRUST).ok  # every remaining chain is whole
    problem = problem_of(event_store, held)
    removed = len(gone.events)
    assert problem.startswith(
        f"the log holds {held.tree_size - removed} events, fewer than the {held.tree_size} the checkpoint "
        f"covers: events were removed; {removed} of the events at or before position {held.last_position} "
        "are gone"
    ), problem
    # The stored checkpoints bound where: the log still extends those made before the stream began.
    before = sum(len(each.events) for each in found[:2])
    assert f"the first difference is among events #{before + 1}-" in problem, problem
    assert f"RequestSubmitted {found[3].request_id} v1" in problem  # what now stands there


def test_a_cut_tail_with_its_head_set_back_is_caught(event_store: EventStore) -> None:
    found = scenarios(3)
    append_all(event_store, found)
    held = event_store.make_checkpoint()
    target = found[0]  # a licensed request: its licence is cut off, and its head set back to match
    kept = event_store.read_stream(target.request_id)[-3]
    with attacker(event_store) as conn:
        conn.execute(
            "DELETE FROM events WHERE stream_id = ? AND version > ?", (target.request_id, kept.version)
        )
        conn.execute(
            "UPDATE streams SET version = ?, head_hash = ? WHERE stream_id = ?",
            (kept.version, kept.hash, target.request_id),
        )
    assert event_store.verify(TRUST).ok
    assert "fewer than the" in problem_of(event_store, held)
    assert "2 of the events at or before position" in problem_of(event_store, held)


def rewrite(store: EventStore, stream_id: str, version: int) -> None:
    """Edit one event's data, then re-hash and re-seal it and every later event of its stream with the
    stolen recorder key, and move the head: the chains and the seals all verify afterwards."""
    sealer = Sealer.of(RECORDER)
    with attacker(store) as conn:
        rows = conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ? AND version >= ? ORDER BY version",
            (stream_id, version),
        ).fetchall()
        prev = rows[0][12]
        for number, row in enumerate(rows):
            edited = list(row)
            if number == 0:
                edited[6] = json.dumps(json.loads(row[6]) | {"units_approved": 75_000})
            _, at, _, _, chained = chain_row(edited)
            hash_ = link(prev, chained)
            conn.execute(
                "UPDATE events SET data = ?, prev_hash = ?, hash = ?, seal = ?"
                " WHERE stream_id = ? AND version = ?",
                (edited[6], prev, hash_, sealer.seal(hash_), stream_id, at),
            )
            prev = hash_
        conn.execute("UPDATE streams SET head_hash = ? WHERE stream_id = ?", (prev, stream_id))


def test_a_past_rewritten_with_the_stolen_recorder_key_is_caught(event_store: EventStore) -> None:
    found = scenarios(3)
    made = checkpointed(event_store, found)
    target = found[0]
    assert target.events[3].type == "GateApproved"
    rewrite(event_store, target.request_id, 4)
    assert event_store.verify(TRUST).ok  # chains, seals, acts: all consistent again
    problem = problem_of(event_store, made[-1])
    assert "the log no longer extends the checkpoint of size" in problem
    # Checkpoints after each batch: the change lies in the second batch (GateApproved, GateOpened).
    first = event_store.read_stream(target.request_id)[3]
    assert f"from GateApproved {target.request_id} v4 at position {first.position} on" in problem, problem
    assert event_store.check_checkpoint(made[0], TRUSTED).ok  # the first batch is untouched


def test_a_forged_licence_appended_after_the_checkpoint_extends_it_and_fails_on_its_seal(
    event_store: EventStore,
) -> None:
    """What is true: an appended forgery is an append, so the log still extends the checkpoint; the
    missing seal is what catches it. With the recorder key stolen it passes both (see the docs)."""
    append_all(event_store, [at_cn_import(), *scenarios(2)])
    held = event_store.make_checkpoint()
    forge(event_store, licence())
    assert event_store.check_checkpoint(held, TRUSTED).ok
    assert [b.describe() for b in event_store.verify(TRUST).breaks] == [
        f"stream {STREAM!r}: LicenseIssued v6: no recorder seal"
    ]


def test_a_forgery_slipped_in_before_the_checkpoint_with_the_stolen_key_is_caught(
    event_store: EventStore,
) -> None:
    """The attacker holds the recorder key and renumbers positions so the licence seems to have been
    written long ago, right after the request's own events: seals, chains and acts all verify."""
    append_all(event_store, [at_cn_import()])
    made = [event_store.make_checkpoint()]
    made += checkpointed(event_store, scenarios(2))
    forge(event_store, licence(), sealed_with=RECORDER)
    head = event_store.read_stream(STREAM)
    after, forged = head[-2].position, head[-1].position
    with attacker(event_store) as conn:
        conn.execute(
            "UPDATE events SET position = -(position + 1) WHERE position > ? AND position < ?",
            (after, forged),
        )
        conn.execute("UPDATE events SET position = ? WHERE position = ?", (after + 1, forged))
        conn.execute("UPDATE events SET position = -position WHERE position < 0")
    assert event_store.verify(TRUST).ok
    problem = problem_of(event_store, made[-1])
    assert "the log no longer extends the checkpoint" in problem
    # The stored checkpoints bound it: the log still extends the one made before the forgery's place.
    assert event_store.check_checkpoint(made[0], TRUSTED).ok
    assert f"the first difference is among events #{made[0].tree_size + 1}-" in problem, problem
    assert f"from LicenseIssued {STREAM} v6 at position {after + 1} on" in problem, problem


# -- inclusion proofs --------------------------------------------------------------------------------
def test_an_event_is_proven_in_the_checkpoint(event_store: EventStore) -> None:
    append_all(event_store, scenarios(4))
    held = event_store.make_checkpoint()
    append_all(event_store, scenarios(1, prefix="after"))
    log = list(event_store.read_all())
    for index in (0, 7, held.tree_size - 1):
        proof = event_store.prove(log[index].event_id, held, TRUSTED)
        assert (proof.leaf_index, proof.tree_size, proof.leaf) == (index, held.tree_size, log[index].hash)
        assert proof.verifies()
        # The auditor's own check, with the pure module and the checkpoint's root alone:
        assert merkle.verify_inclusion(
            index,
            held.tree_size,
            merkle.event_leaf(log[index].hash),
            [bytes.fromhex(node) for node in proof.audit_path],
            held.root(),
        )
    with pytest.raises(CheckpointMismatch, match="was recorded after the checkpoint"):
        event_store.prove(log[-1].event_id, held, TRUSTED)
    with pytest.raises(UnknownEvent, match="no event 'nope'"):
        event_store.prove("nope", held, TRUSTED)


def test_no_proof_against_a_checkpoint_the_log_no_longer_extends(event_store: EventStore) -> None:
    found = scenarios(3)
    append_all(event_store, found)
    held = event_store.make_checkpoint()
    rewrite(event_store, found[1].request_id, 4)
    with pytest.raises(
        CheckpointMismatch, match="cannot prove against this checkpoint: the log no longer extends"
    ):
        event_store.prove(next(iter(event_store.read_all())).event_id, held, TRUSTED)


# -- export and import -------------------------------------------------------------------------------
def export_of(store: EventStore) -> list[str]:
    out = io.StringIO()
    write_jsonl(store.dump(), out)
    return out.getvalue().splitlines(keepends=True)


def test_an_export_carries_its_checkpoints_and_the_import_proves_them(
    event_store: EventStore, tmp_path: Path
) -> None:
    made = checkpointed(event_store, scenarios(2))
    lines = export_of(event_store)
    assert sum('"record":"checkpoint"' in line for line in lines) == len(made)
    with closing(
        SQLiteEventStore(tmp_path / "target.db", projections=PROJECTIONS, recorder=RECORDER)
    ) as target:
        summary = target.load(read_jsonl(lines), TRUST)
        assert summary.checkpoints == len(made)
        assert target.checkpoints() == made
        assert target.check_checkpoint(made[-1], TRUSTED).ok


def test_an_export_with_a_request_removed_is_refused_by_its_checkpoints(
    event_store: EventStore, tmp_path: Path
) -> None:
    found = scenarios(3)
    checkpointed(event_store, found)
    gone = found[1].request_id
    lines = [
        line
        for line in export_of(event_store)
        if json.loads(line).get("stream_id") != gone  # its events and its stream record
    ]
    with closing(
        SQLiteEventStore(tmp_path / "target.db", projections=PROJECTIONS, recorder=RECORDER)
    ) as target:
        with pytest.raises(
            InvalidExport, match=r"^the export does not verify: checkpoint of size \d+: "
        ) as refusal:
            target.load(read_jsonl(lines), TRUST)
        assert "nothing was imported" in str(refusal.value)
        assert list(target.read_all()) == [] and target.checkpoints() == []


def test_an_export_with_an_edited_checkpoint_is_refused(event_store: EventStore, tmp_path: Path) -> None:
    checkpointed(event_store, scenarios(1))
    lines = export_of(event_store)
    at = next(i for i, line in enumerate(lines) if '"record":"checkpoint"' in line)
    record = json.loads(lines[at])
    record["root_hash"] = "0" * 64
    lines[at] = json.dumps(record) + "\n"
    with (
        closing(
            SQLiteEventStore(tmp_path / "target.db", projections=PROJECTIONS, recorder=RECORDER)
        ) as target,
        pytest.raises(
            InvalidExport, match="the checkpoint's signature does not verify; nothing was imported"
        ),
    ):
        target.load(read_jsonl(lines), TRUST)


# -- PostgreSQL: a checkpoint never covers a position that may still fill in ---------------------------
def test_postgresql_checkpoints_wait_for_an_append_still_open_below_the_end(pg_url: str) -> None:
    store = PostgresEventStore(pg_url, projections=PROJECTIONS, recorder=RECORDER)
    conn = psycopg.connect(split_url(pg_url)[0], autocommit=False)
    try:
        slow = scenario("withdrawn", "req-slow")
        append_in(store, _Tx(conn), slow.request_id, 0, slow.batches[0])  # draws a position, not committed
        append_all(store, scenarios(2))  # later positions, committed
        done: list[Checkpoint] = []
        maker = threading.Thread(target=lambda: done.append(store.make_checkpoint()))
        maker.start()
        time.sleep(0.5)
        assert not done, "the checkpoint passed a position that could still commit"
        conn.commit()
        maker.join(timeout=30)
        size, root = log_root(store)
        assert done and (done[0].tree_size, done[0].root_hash) == (size, root.hex())
        assert store.check_checkpoint(done[0], TRUSTED).ok
    finally:
        conn.close()
        store.close()


# -- the worker's checkpointer and its key -------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_worker_signs_every_n_events_or_t_seconds_from_its_frontier(event_store: EventStore) -> None:
    found = scenarios(7)  # 10, 6, 8, 12, 3, 4 and 4 events
    append_all(event_store, found[:1])
    clock = Clock()
    worker = Checkpointer(event_store, RECORDER, CheckpointSchedule(every=20, seconds=60), clock)
    assert worker.tick() is None  # 10 events: fewer than 20, and no time has passed
    clock.now = 61
    timed = worker.tick()
    assert timed is not None and (timed.tree_size, timed.root_hash) == (10, log_root(event_store)[1].hex())
    append_all(event_store, found[1:3])
    assert worker.tick() is None  # 14 new events: fewer than 20, and the clock was reset
    append_all(event_store, found[3:4])
    counted = worker.tick()  # 26 new
    size, root = log_root(event_store)
    assert size == 36 and counted is not None and (counted.tree_size, counted.root_hash) == (size, root.hex())
    assert event_store.checkpoints() == [timed, counted]
    # The frontier grew from what it read since, and still gives the root of the whole log.
    assert worker.frontier.root() == root
    # A second worker catching up finds the size already signed and skips it; a forced tick with no
    # new event signs nothing either; a forced one after an event does.
    other = Checkpointer(event_store, RECORDER, CheckpointSchedule(every=1, seconds=60), clock)
    assert other.tick() is None and other.tick(force=True) is None
    assert len(event_store.checkpoints()) == 2
    append_all(event_store, found[4:5])
    last = worker.tick(force=True)
    assert last is not None and last.tree_size == 39 and last.root_hash == log_root(event_store)[1].hex()


async def test_a_worker_signs_in_the_background_and_once_more_as_it_stops(tmp_path: Path) -> None:
    found = scenarios(2)
    with closing(
        SQLiteEventStore(tmp_path / "events.db", projections=PROJECTIONS, recorder=RECORDER)
    ) as store:
        async with checkpointing(store, RECORDER, CheckpointSchedule(every=1, seconds=0.05)):
            append_all(store, found[:1])
            for _ in range(100):
                if store.checkpoints():
                    break
                await asyncio.sleep(0.02)
            assert [c.tree_size for c in store.checkpoints()] == [len(found[0].events)]
            append_all(store, found[1:])  # the worker stops before its next tick
        last = store.checkpoints()[-1]
        size, root = log_root(store)
        assert (last.tree_size, last.root_hash) == (size, root.hex())


async def test_a_tick_that_only_reads_does_not_end_a_store_outage(tmp_path: Path) -> None:
    """Reads go on under SQLite's write lock: a checkpoint tick with nothing to sign succeeded while every
    write still failed, and told operators the outage had ended (seen in the store-lock fault drill)."""
    found = scenarios(2)
    path = tmp_path / "events.db"
    with closing(SQLiteEventStore(path, projections=PROJECTIONS, recorder=RECORDER)) as store:
        append_all(store, found[:1])
        worker = Checkpointer(store, RECORDER, CheckpointSchedule(every=1, seconds=3600))
        assert worker.tick() is not None  # everything so far is signed: the next ticks have nothing due
        outage = StoreOutage()
        outage.failing(StoreUnavailable("the event store is locked"))
        lock = sqlite3.connect(path, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # every write waits; reads go on
        ticking = asyncio.create_task(worker.run(poll=0.01, outage=outage))
        try:
            await asyncio.sleep(0.3)
            assert outage.since is not None  # ticks ran and read, but nothing was written
            lock.execute("ROLLBACK")
            append_all(store, found[1:])
            for _ in range(200):
                if outage.since is None:
                    break
                await asyncio.sleep(0.01)
            assert outage.since is None and store.checkpoints()[-1].tree_size == log_root(store)[0]
        finally:
            ticking.cancel()
            lock.close()


def test_the_worker_needs_a_recorder_key_the_policy_trusts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read it: .*recorder\.key: no key file there"):
        load_recorder(tmp_path, AUTO, env={})
    keys.install(tmp_path)
    assert public_text(load_recorder(tmp_path, AUTO, env={}).public_key()) == keys.public(keys.RECORDER)
    stranger: Policy = AUTO.model_copy(update={"recorder": AUTO.recorder.model_copy(update={"keys": ()})})
    with pytest.raises(ConfigError, match=r"is not in policy test-auto's \[recorder\] keys"):
        load_recorder(tmp_path, stranger, env={})
    elsewhere = tmp_path / "keys" / "alice.key"
    with pytest.raises(ConfigError, match="is not in policy"):  # alice's key is not the recorder's
        load_recorder(tmp_path, AUTO, env={"CHIPCLEAR_RECORDER_KEY_FILE": str(elsewhere)})


def test_checkpoint_schedule_from_the_environment() -> None:
    assert CheckpointSchedule.from_env({}) == CheckpointSchedule(1000, 300.0)
    assert CheckpointSchedule.from_env(
        {"CHIPCLEAR_CHECKPOINT_EVERY": "50", "CHIPCLEAR_CHECKPOINT_SECONDS": "2.5"}
    ) == CheckpointSchedule(50, 2.5)
    for name, value in [("CHIPCLEAR_CHECKPOINT_EVERY", "0"), ("CHIPCLEAR_CHECKPOINT_SECONDS", "soon")]:
        with pytest.raises(ConfigError, match=f"{name}: expected"):
            CheckpointSchedule.from_env({name: value})
