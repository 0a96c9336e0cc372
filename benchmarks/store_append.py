"""Event appends through chipclear's store against the raw drivers doing the same work (issue 19, item 3).

    .venv/bin/python benchmarks/store_append.py [--backend sqlite|postgresql|all] [--rounds 3]

The anchor is the bare driver on chipclear's own schema and settings (SQLite: WAL, synchronous=FULL,
BEGIN IMMEDIATE; PostgreSQL: the stream head locked by the same upsert) doing the same work per append:
read the head, encode each event's payload as canonical JSON, hash the row's stored bytes into the
chain, seal the hash with Ed25519 (through libsodium, as the store does), insert the rows and move the
head, in one transaction. The store runs without projections (a ledger-like stream), so both sides
write the log and nothing else. Events are built before the clock starts on both sides: the decider's
cost is not the store's.

Each round runs raw then chipclear on fresh databases; the figures are per append, the best and the
median of the rounds, and the ratio is raw time / chipclear time (1.0: as fast as the bare driver).
PostgreSQL runs on a throwaway cluster (tests/postgres.py: /usr/lib/postgresql/15/bin).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# `tests.postgres` for the cluster; appended, so PYTHONPATH (another checkout, to compare) comes first.
sys.path.append(str(Path(__file__).resolve().parent.parent))

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chipclear.domain.events import Event
from chipclear.domain.signing import public_text
from chipclear.store.chain import timestamp
from chipclear.store.trust import Sealer
from tests.store.support import grant

STREAMS = 500
KEY = Ed25519PrivateKey.generate()
PUBLIC = public_text(KEY.public_key())
# The anchor seals as the store does (through libsodium, the faster of the two libraries here).
SEALER = Sealer.of(KEY)
INSERT = (
    "INSERT INTO events (event_id, stream_id, version, type, schema_version, data, occurred_at,"
    " recorded_at, policy_version, actor, act, prev_hash, hash, sealed_by, seal)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
HEAD_OF = "SELECT version, head_hash FROM streams WHERE stream_id = ?"
HEAD = (
    "INSERT INTO streams (stream_id, version, head_hash) VALUES (?, ?, ?) "
    "ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, head_hash = excluded.head_hash"
)


def event(stream_id: str, version: int) -> Event:
    """The store tests' ledger grant, padded to about the size of a request's event (a ~700-byte row)."""
    granted = grant(stream_id, version)
    reason = "the batch has fewer units left than requested; the rest is queued " * 3
    return granted.model_copy(update={"data": granted.data.model_copy(update={"reason": reason})})


def batches(appends: int, size: int, prefix: str) -> list[tuple[str, int, list[Event]]]:
    """`appends` appends of `size` events each, round-robin over STREAMS streams."""
    out, versions = [], dict.fromkeys(range(STREAMS), 0)
    for n in range(appends):
        s = n % STREAMS
        stream_id = f"{prefix}-{s}"
        out.append((stream_id, versions[s], [event(stream_id, versions[s] + i) for i in range(1, size + 1)]))
        versions[s] += size
    return out


# -- the raw anchor ---------------------------------------------------------------------------------


def _field(value: str | None) -> bytes:
    if value is None:
        return b"~,"
    data = value.encode()
    return b"%d:%s," % (len(data), data)


def raw_rows(stream_id: str, head: str, events: list[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], str]:
    recorded_at = datetime.now(UTC).isoformat(timespec="microseconds")
    rows = []
    for event_id, version, type_, data, occurred_at, policy_version, actor in events:
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        stored = (event_id, stream_id, str(version), type_, "1", text, occurred_at, recorded_at,
                  policy_version, actor, None)  # fmt: skip
        digest = hashlib.sha256(head.encode() + b"".join(map(_field, stored))).hexdigest()
        seal = SEALER.seal(digest)
        rows.append((event_id, stream_id, version, type_, 1, text, occurred_at, recorded_at, policy_version,
                     actor, None, head, digest, PUBLIC, seal))  # fmt: skip
        head = digest
    return rows, head


Plain = list[tuple[str, int, list[tuple[Any, ...]]]]  # an append's work as plain values


def plain(work: list[tuple[str, int, list[Event]]]) -> Plain:
    return [
        (
            stream_id,
            expected,
            [
                (
                    e.event_id,
                    e.version,
                    e.type,
                    e.data_json(),
                    timestamp(e.occurred_at),
                    e.policy_version,
                    e.actor,
                )
                for e in events
            ],
        )
        for stream_id, expected, events in work
    ]


def raw_sqlite(path: Path, work: Plain) -> float:
    conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")
    started = time.perf_counter()
    for stream_id, expected, events in work:
        conn.execute("BEGIN IMMEDIATE")
        found = conn.execute(HEAD_OF, (stream_id,)).fetchone()
        version, head = found if found else (0, "0" * 64)
        assert version == expected
        rows, head = raw_rows(stream_id, head, events)
        conn.executemany(INSERT, rows)
        conn.execute(HEAD, (stream_id, expected + len(events), head))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


PG_LOCK = (
    "INSERT INTO streams (stream_id, version, head_hash) VALUES (%s, 0, %s) "
    "ON CONFLICT (stream_id) DO UPDATE SET version = streams.version RETURNING version, head_hash"
)


def raw_postgres_one(conn: psycopg.Connection[Any], work: Plain) -> None:
    insert, head_sql = INSERT.replace("?", "%s"), HEAD.replace("?", "%s")
    for stream_id, expected, events in work:
        with conn.transaction():
            version, head = conn.execute(PG_LOCK, (stream_id, "0" * 64)).fetchone()  # type: ignore[misc]
            assert version == expected
            rows, head = raw_rows(stream_id, head, events)
            with conn.cursor() as cursor:
                cursor.executemany(insert, rows)
            conn.execute(head_sql, (stream_id, expected + len(events), head))


def timed(threads: list[threading.Thread]) -> float:
    """Seconds from starting every thread until the last has finished."""
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def raw_postgres(url: str, work: list[Plain]) -> float:
    conns = [psycopg.connect(url, autocommit=True) for _ in work]
    pairs = zip(conns, work, strict=True)
    elapsed = timed([threading.Thread(target=raw_postgres_one, args=pair) for pair in pairs])
    for conn in conns:
        conn.close()
    return elapsed


# -- chipclear --------------------------------------------------------------------------------------


def chipclear_appends(store: Any, work: list[tuple[str, int, list[Event]]]) -> None:
    for stream_id, expected, events in work:
        store.append(stream_id, expected, events)


def chipclear_sqlite(path: Path, work: list[tuple[str, int, list[Event]]]) -> float:
    from chipclear.store.sqlite import SQLiteEventStore

    store = SQLiteEventStore(path, recorder=KEY)
    store.sealer()  # the key loaded once, as a worker's store has it after its first append
    started = time.perf_counter()
    chipclear_appends(store, work)
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed


def chipclear_postgres(url: str, work: list[list[tuple[str, int, list[Event]]]]) -> float:
    from chipclear.store.postgres import PostgresEventStore

    store = PostgresEventStore(url, recorder=KEY)
    store.sealer()
    elapsed = timed([threading.Thread(target=chipclear_appends, args=(store, w)) for w in work])
    store.close()
    return elapsed


# -- the runs ---------------------------------------------------------------------------------------


def fresh_sqlite(folder: Path) -> Path:
    from chipclear.store.sqlite import SQLiteEventStore

    path = folder / f"{uuid.uuid4().hex}.db"
    SQLiteEventStore(path).close()  # chipclear's own schema, migrated
    return path


def split(work: list[Any], writers: int) -> list[list[Any]]:
    """Each writer its own streams (appends to one stream are served in turn, by design)."""
    by_stream: dict[str, list[Any]] = {}
    for item in work:
        by_stream.setdefault(item[0], []).append(item)
    shares: list[list[Any]] = [[] for _ in range(writers)]
    for n, items in enumerate(by_stream.values()):
        shares[n % writers].extend(items)
    return shares


def measure(
    name: str, rounds: int, appends: int, size: int, raw: Callable[[Any], float], ours: Callable[[Any], float]
) -> dict[str, Any]:
    raw_times, our_times = [], []
    for r in range(rounds):
        work = batches(appends, size, f"s{r}")
        raw_times.append(raw(plain(work)) / appends)
        work = batches(appends, size, f"c{r}")
        our_times.append(ours(work) / appends)
    result = {
        "case": name,
        "appends": appends,
        "events_per_append": size,
        "raw_us": [round(t * 1e6, 1) for t in raw_times],
        "chipclear_us": [round(t * 1e6, 1) for t in our_times],
        "ratio_best": round(min(raw_times) / min(our_times), 2),
        "ratio_median": round(statistics.median(raw_times) / statistics.median(our_times), 2),
    }
    print(
        f"{name:<34} raw {min(raw_times) * 1e6:7.1f} µs (median {statistics.median(raw_times) * 1e6:7.1f})"
        f"  chipclear {min(our_times) * 1e6:7.1f} µs (median {statistics.median(our_times) * 1e6:7.1f})"
        f"  ratio best {result['ratio_best']:.2f}, median {result['ratio_median']:.2f}",
        flush=True,
    )
    return result


def run_sqlite(rounds: int, folder: Path) -> list[dict[str, Any]]:
    return [
        measure(
            f"sqlite, {size} event(s) an append",
            rounds,
            appends,
            size,
            lambda w: raw_sqlite(fresh_sqlite(folder), w),
            lambda w: chipclear_sqlite(fresh_sqlite(folder), w),
        )
        for size, appends in ((1, 2000), (10, 500))
    ]


def run_postgres(rounds: int) -> list[dict[str, Any]]:
    from chipclear.store.postgres import PostgresEventStore
    from tests.postgres import Cluster

    cluster = Cluster().start()
    try:

        def fresh() -> str:
            url = cluster.new_schema()
            store = PostgresEventStore(url, require_schema=False)
            store.migrate()
            store.close()
            return url

        def raw(writers: int, work: Plain) -> float:
            return raw_postgres(fresh(), split(work, writers))

        def ours(writers: int, work: list[tuple[str, int, list[Event]]]) -> float:
            return chipclear_postgres(fresh(), split(work, writers))

        results = [
            measure(
                f"postgresql, {size} event(s), {writers} writer(s)",
                rounds,
                appends,
                size,
                functools.partial(raw, writers),
                functools.partial(ours, writers),
            )
            for size, appends, writers in ((1, 2000, 1), (10, 500, 1), (1, 4000, 8))
        ]
    finally:
        cluster.stop()
    one, eight = results[0], results[2]
    for side in ("raw_us", "chipclear_us"):
        print(f"8 writers vs 1, {side[:-3]}: {min(one[side]) / min(eight[side]):.2f}x the appends/s")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="Also write the figures to this file.")
    args = parser.parse_args()
    print(f"load average {Path('/proc/loadavg').read_text().split()[:3]}, {os.cpu_count()} cores", flush=True)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="chipclear-bench-") as folder:
        if args.backend in ("sqlite", "all"):
            results += run_sqlite(args.rounds, Path(folder))
        if args.backend in ("postgresql", "all"):
            results += run_postgres(args.rounds)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(f"load average after {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
