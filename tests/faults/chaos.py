"""`make chaos`: the fault drills at full size (400 requests each), with the figures docs/operations.md shows.

    .venv/bin/python -m tests.faults.chaos [--requests 400] [--json]

Each fault runs on a fresh home, dev server, worker and event store: a fault-free run first (the
yardstick), then kill -9 of the worker, a dev-server kill and restart, a 75 s exclusive lock on the
SQLite store, and PostgreSQL stopped for 20 s. For each: requests right, stuck, duplicates, seconds
until all were final, p50/p90 latency. Every invariant of tests/faults is checked; the exit code is 1
if any failed. Minutes of work on a small machine: run it on a quiet one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter

from tests.faults import drills
from tests.faults.rig import Rig, summary

Drill = Callable[[Path, int], Awaitable[dict[str, Any]]]


def on_sqlite(name: str, fault: drills.Fault) -> Drill:
    async def run(home: Path, requests: int) -> dict[str, Any]:
        rig = Rig(home, f"sqlite:///{home / 'events.db'}")
        result = await drills.drill(rig, requests, fault, within=900)
        row = summary(name, result) | {"workers": rig.workers_started, "sigterm_exit": rig.exit_code}
        if rig.drained is not None:  # stopped mid-run: it must have drained, not hit its hard limit
            row["drained_exit"] = rig.drained
            if rig.drained != 0:
                row["problems"] = [*row["problems"], f"SIGTERM mid-run: exit {rig.drained}, not drained"]
        return row

    return run


def on_postgres(
    name: str, strike: Callable[[drills.RestartableCluster], drills.Fault], workers: int = 1
) -> Drill:
    """On a PostgreSQL server of the drill's own, struck by the fault `strike` makes for it, with
    `workers` worker processes from the start."""

    async def run(home: Path, requests: int) -> dict[str, Any]:
        cluster = drills.RestartableCluster().start()
        try:
            rig = drills.postgres_rig(home, cluster)
            result = await drills.drill(rig, requests, strike(cluster), within=900, workers=workers)
            return summary(name, result) | {"workers": rig.workers_started, "sigterm_exit": rig.exit_code}
        finally:
            cluster.stop()

    return run


DRILLS: dict[str, Drill] = {
    "none (sqlite)": on_sqlite("none (sqlite)", drills.no_fault),
    "worker kill -9": on_sqlite("worker kill -9", drills.kill_worker),
    "worker SIGTERM mid-run + replaced": on_sqlite("worker SIGTERM mid-run + replaced", drills.drain_worker),
    "dev server kill + restart": on_sqlite("dev server kill + restart", drills.restart_server),
    "store lock 75 s": on_sqlite("store lock 75 s", drills.lock_store(hold=75.0)),
    "none (postgresql)": on_postgres("none (postgresql)", lambda _: drills.no_fault),
    "two workers (postgresql)": on_postgres("two workers (postgresql)", lambda _: drills.no_fault, workers=2),
    "postgresql down 20 s": on_postgres(
        "postgresql down 20 s", lambda cluster: drills.stop_postgres(cluster, 20.0)
    ),
}


async def main(requests: int, as_json: bool) -> int:
    rows = []
    for name, run in DRILLS.items():
        print(f"chaos: {name}, {requests} requests …", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="chipclear-chaos-") as tmp:
            try:
                row = await run(Path(tmp), requests)
            except Exception as exc:  # one drill that cannot finish is a finding, not the end of the run
                row = {"fault": name, "requests": requests, "right": 0, "stuck": requests, "duplicates": 0}
                row |= {"seconds_to_all_final": "-", "p50_s": "-", "p90_s": "-", "workers": "-"}
                row["problems"] = [f"{type(exc).__name__}: {exc}"]
        print(f"chaos: {json.dumps(row)}", file=sys.stderr, flush=True)
        rows.append(row)
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        columns = ("fault", "right", "stuck", "dup.", "all final s", "p50 s", "p90 s", "workers", "problems")
        table = Table(*columns)
        for row in rows:
            table.add_row(
                row["fault"],
                f"{row['right']}/{row['requests']}",
                str(row["stuck"]),
                str(row["duplicates"]),
                str(row["seconds_to_all_final"]),
                str(row["p50_s"]),
                str(row["p90_s"]),
                str(row["workers"]),
                "; ".join(row["problems"]) or "none",
            )
        Console().print(table)
    return 1 if any(row["problems"] for row in rows) else 0


def quiet_core_logs() -> None:
    """The SDK core prints a WARN line to stdout for every retried gRPC call while the server is down;
    the drill's own client retries on purpose, and `--json` must stay one JSON document."""
    filter_ = TelemetryFilter(core_level="ERROR", other_level="ERROR")
    Runtime.set_default(Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(filter=filter_))))


if __name__ == "__main__":
    quiet_core_logs()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()
    raise SystemExit(asyncio.run(main(arguments.requests, arguments.json)))
