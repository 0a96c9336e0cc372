"""The store at scale (issue 19, item 4): a million events; `list`, `projections rebuild`, `audit verify`.

    .venv/bin/python benchmarks/store_scale.py [--requests 50000] [--folder DIR] [--keep]

Fills a fresh SQLite store (chipclear's schema) with real, valid rows: each request is a copy of one
decided history (the decider's `licensed_after_evidence` scenario, 12 events: submission, evidence,
every gate, the licence), given its own id and times, its signed acts signed again for its own stream by
the same test keys, every event chained and sealed by the test recorder key; and the allocation ledger's
one long stream gets 8 grants per request. 50,000 requests: 600,000 request events and 400,000 ledger
events. The rows are made by two processes and written in bulk (the store's API would take hours at one
fsync per append); `audit verify` proves they are what chipclear itself would have written.

Then, through the CLI in a fresh process each, as a person runs them: `list` (a page), `list --json`,
`list --status licensed`, `projections rebuild` (peak RSS from /usr/bin/time -v) and `audit verify`;
and two bare loops over the same stored rows in the same (stream, version) order for `audit verify`
to be compared with: sha256 of the chained bytes only, and that plus the Ed25519 check of each seal.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

# `tests` for the test keys and the decided history; appended, so PYTHONPATH comes first.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from chipclear.domain.signing import act_message, sign
from chipclear.store.chain import CHAINED_COLUMNS, GENESIS, canonical, chained_columns, link, timestamp
from chipclear.store.sql_log import INSERT_EVENTS as INSERT
from chipclear.store.sqlite import SQLiteEventStore
from chipclear.store.trust import Sealer
from chipclear.store.upcasting import UPCASTERS
from tests import keys
from tests.store.support import NOW, scenario, trusting_policy_toml

TEMPLATE = "req-TEMPLATE-0"
LEDGER = "allocation"
GRANTS = 8  # ledger events per request
CHUNK = 1000  # requests a worker makes at once


def template() -> list[dict[str, Any]]:
    found = scenario("licensed_after_evidence", TEMPLATE)
    return [
        {
            "type": e.type,
            "version": e.version,
            "data": canonical(e.data_json()),
            "occurred": e.occurred_at - NOW,
            "policy_version": e.policy_version,
            "actor": e.actor,
            "act": e.act,
        }
        for e in found.events
    ]


SIGNERS = {keys.public(name): keys.private(name) for name in (*keys.PEOPLE, keys.RECORDER)}


def request_rows(numbers: range) -> tuple[list[tuple[Any, ...]], list[tuple[str, int, str]]]:
    events, sealer = template(), Sealer.of(keys.private(keys.RECORDER))
    rows, heads = [], []
    for n in numbers:
        request_id = f"req-{n:07d}"
        start = NOW + timedelta(minutes=n)  # one a minute: newest first means something
        head = GENESIS
        for e in events:
            data = e["data"].replace(TEMPLATE, request_id)
            act = None
            if e["act"] is not None:
                body = json.loads(json.dumps(e["act"]).replace(TEMPLATE, request_id))
                signature = body.pop("signature")
                private = SIGNERS[signature["key"]]
                message = act_message(request_id, signature["expected_version"], body)
                body["signature"] = signature | {"value": sign(private, message)}
                act = canonical(body)
            occurred_at = timestamp(start + e["occurred"])
            recorded_at = timestamp(start + e["occurred"] + timedelta(milliseconds=5))
            fields = (str(uuid.uuid4()), request_id, e["version"], e["type"], UPCASTERS.current(e["type"]),
                      data, occurred_at, recorded_at, e["policy_version"], e["actor"], act)  # fmt: skip
            hash_ = link(head, chained_columns(fields))
            rows.append((*fields, head, hash_, sealer.public, sealer.seal(hash_)))
            head = hash_
        heads.append((request_id, events[-1]["version"], head))
    return rows, heads


def ledger_rows(requests: int) -> tuple[list[tuple[Any, ...]], tuple[str, int, str]]:
    sealer = Sealer.of(keys.private(keys.RECORDER))
    rows, head, version = [], GENESIS, 0
    for n in range(requests):
        for g in range(GRANTS):
            version += 1
            request_id = f"req-{n:07d}"
            grant = {"request_id": request_id, "buyer": "ByteDance Ltd.", "batch_id": f"2026-Q1-{g}",
                     "units": 1000, "requested": 1000, "workflow_id": f"import-{request_id}", "reason": None,
                     "from_queue": False}  # fmt: skip
            at = timestamp(NOW + timedelta(minutes=n, seconds=g))
            fields = (str(uuid.uuid4()), LEDGER, version, "UnitsGranted", UPCASTERS.current("UnitsGranted"),
                      canonical(grant), at, at, "bench-auto", "ledger", None)  # fmt: skip
            hash_ = link(head, chained_columns(fields))
            rows.append((*fields, head, hash_, sealer.public, sealer.seal(hash_)))
            head = hash_
    return rows, (LEDGER, version, head)


def fill(path: Path, requests: int) -> None:
    SQLiteEventStore(path).close()  # the schema
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    started = time.perf_counter()
    with multiprocessing.Pool(2) as pool:
        ledger = pool.apply_async(ledger_rows, (requests,))
        chunks = [range(s, min(s + CHUNK, requests)) for s in range(0, requests, CHUNK)]
        for rows, heads in pool.imap(request_rows, chunks):
            conn.execute("BEGIN")
            conn.executemany(INSERT, rows)
            conn.executemany("INSERT INTO streams VALUES (?, ?, ?)", heads)
            conn.execute("COMMIT")
        rows, head = ledger.get()
        conn.execute("BEGIN")
        conn.executemany(INSERT, rows)
        conn.execute("INSERT INTO streams VALUES (?, ?, ?)", head)
        conn.execute("COMMIT")
    count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    print(f"filled {count:,} events over {requests:,} requests in {time.perf_counter() - started:.0f} s; "
          f"{path.stat().st_size / 1e6:.0f} MB", flush=True)  # fmt: skip


def bare_loops(path: Path) -> dict[str, float]:
    """The anchors for `audit verify`: the same rows, the same order, the same pages, and nothing else."""
    from chipclear.store.trust import seal_verifies

    out = {}
    for name, seals in (("bare sha256 of the stored bytes", False), ("bare sha256 + seal check", True)):
        conn = sqlite3.connect(path)
        started = time.perf_counter()
        after: tuple[str, int] = ("", 0)
        while True:
            page = conn.execute(
                f"SELECT {', '.join(CHAINED_COLUMNS)}, prev_hash, hash, sealed_by, seal FROM events"
                " WHERE (stream_id, version) > (?, ?)"
                " ORDER BY stream_id, version LIMIT 1000",
                after,
            ).fetchall()
            for row in page:
                chained = chained_columns(row[:11])
                assert hashlib.sha256(row[11].encode("ascii") + chained).hexdigest() == row[12]
                if seals:
                    assert seal_verifies(row[13], row[12], row[14])
            if len(page) < 1000:
                break
            after = (page[-1][1], page[-1][2])
        out[name] = time.perf_counter() - started
        conn.close()
        print(f"{name}: {out[name]:.1f} s", flush=True)
    return out


def timed(env: dict[str, str], *args: str, rss: bool = False) -> tuple[float, float | None, str]:
    command = [str(Path(sys.executable).parent / "chipclear"), *args]
    if rss:
        command = ["/usr/bin/time", "-v", *command]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    peak = None
    if rss:
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
        peak = int(found.group(1)) / 1024 if found else None
    shown = f", peak RSS {peak:.0f} MB" if peak else ""
    print(f"chipclear {' '.join(args)}: {elapsed:.2f} s{shown} (exit {done.returncode})", flush=True)
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-2000:])
    return elapsed, peak, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--folder", type=Path, help="Where to make the store (default: a temporary folder).")
    parser.add_argument("--keep", action="store_true", help="Keep the folder afterwards.")
    parser.add_argument("--skip-fill", action="store_true", help="Reuse the store already in --folder.")
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="chipclear-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "events.db"
    print(f"load average {Path('/proc/loadavg').read_text().split()[:3]}, {os.cpu_count()} cores", flush=True)
    try:
        if not args.skip_fill:
            path.unlink(missing_ok=True)
            fill(path, args.requests)
        home = folder / "home"
        keys.install(home)
        policy = folder / "policy.toml"
        policy.write_text(trusting_policy_toml())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "CHIPCLEAR_"))} | {
            "CHIPCLEAR_HOME": str(home),
            "CHIPCLEAR_POLICY": str(policy),
            "CHIPCLEAR_EVENT_STORE": f"sqlite:///{path}",
        }
        timed(env, "projections", "rebuild", rss=True)
        for _ in range(3):
            timed(env, "list")
        timed(env, "list", "--json")
        timed(env, "list", "--status", "licensed")
        timed(env, "list", "--after", f"req-{args.requests // 2:07d}")
        timed(env, "list", "--all", "--json", rss=True)
        bare = bare_loops(path)
        _, _, out = timed(env, "audit", "verify", "--json", rss=True)
        report = json.loads(out)
        counts = f"{report['events_checked']:,} events, {report['acts_checked']:,} acts"
        print(f"audit verify: ok={report['ok']}, {counts}, {len(report['differences'])} differences")
        from chipclear.domain.policy import load_policy
        from chipclear.store.trust import Trust

        store = SQLiteEventStore(path)
        trust = Trust.from_policy(load_policy(str(policy), home=home))
        started = time.perf_counter()
        in_process = store.verify(trust)
        chain_only = time.perf_counter() - started
        store.close()
        print(f"store.verify alone (chains, seals, acts): {chain_only:.1f} s, ok={in_process.ok}")
        for name, seconds in bare.items():
            print(f"  vs {name}: {seconds / chain_only:.2f}")
        print(f"load average after {Path('/proc/loadavg').read_text().split()[:3]}")
    finally:
        if not args.keep and args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
