"""The allocation ledger's cost per reservation, pure and on a real server (issue 19, item 2).

    .venv/bin/python benchmarks/ledger.py [--pure-only | --server-only] [--repeats N] [--json]

(a) Pure, no server: the workflow's own CPU for one reservation with 40, 1,200 and 4,000 requests
    already queued: what `AllocationLedgerWorkflow` runs per `reserve` Update (the validator's
    `decide_ledger`, the handler's `decide_ledger`, `evolve_ledger` over its events, the stored
    `Event`s, and `answer`). Two cases: the newcomer queues too, or it is granted from a priority-only
    batch while the others wait.
(b) A dev server of its own: reservations per second at 100 and 1,000 in flight, each an update as
    the request workflow's activity sends it (`chipclear.temporal.update_entity`), against
    `NoOpLedgerWorkflow` (the same group-commit shape, a no-op activity) on the same server and worker,
    in the same run. A fresh ledger (task queue) for every measurement; the ledger is checked never to
    exceed its capacity.

Run against an older tree with PYTHONPATH=/path/to/tree (copy workflows/ledger_bench.py there first); a
tree older than `update_entity` needs its own copy of this script.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.client import Client

from activities.bench import NOOP_LEDGER_RESERVE, noop_ledger
from chipclear import bench_report, keys
from chipclear.bench import bench_worker
from chipclear.client import ledger_state, open_batch
from chipclear.config import Settings
from chipclear.contracts import LEDGER_RESERVE, ledger_entity
from chipclear.devserver import DevServer, free_port, stop
from chipclear.domain import allocation
from chipclear.domain.allocation import BatchSpec, OpenBatch, Reservation, Reserve
from chipclear.domain.events import Event
from chipclear.domain.gates import cn_import
from chipclear.domain.policy import load_policy
from chipclear.logs import configure
from chipclear.projections import open_event_store
from chipclear.temporal import EntityCallError, send_again_because, update_entity
from workflows.ledger_bench import NoOpLedgerWorkflow

NOW = datetime(2026, 1, 28, tzinfo=UTC)
BUYERS = 50
QUEUED = (40, 1_200, 4_000)
IN_FLIGHT = (100, 1_000)
GIVE_UP_AFTER = 240.0  # seconds for one measurement: a ledger that cannot keep up is reported, not waited on


# -- (a) pure -------------------------------------------------------------------------------------------
def _buyer(index: int) -> str:
    return f"Bench Buyer {index % BUYERS} Co., Ltd."


def _queued_ledger(waiting: int) -> allocation.LedgerState:
    """A full batch, a priority-only batch with room for its one priority buyer, `waiting` queued."""
    state = allocation.LedgerState()
    events: list[Any] = [
        allocation.BatchOpened(batch=BatchSpec(batch_id="full", capacity=10), opened_at=NOW),
        allocation.BatchOpened(
            batch=BatchSpec(
                batch_id="vip", capacity=10**8, priority=["Priority Holdings Ltd."], eligible="priority"
            ),
            opened_at=NOW,
        ),
        allocation.UnitsGranted(
            request_id="first", buyer=_buyer(0), batch_id="full", units=10, requested=10, workflow_id="wf"
        ),
    ]
    events += [
        allocation.RequestQueued(
            request_id=f"q{i}", buyer=_buyer(i), units=1 + i % 7, workflow_id=f"wf-q{i}", seq=i + 1
        )
        for i in range(waiting)
    ]
    for event in events:
        state = allocation.evolve_ledger(state, event)
    return state


def _one_reservation(state: allocation.LedgerState, command: Reserve) -> allocation.LedgerState:
    """What the ledger workflow does for one `reserve` Update (validator, handler, answer)."""
    allocation.decide_ledger(state, command, NOW)  # the validator
    events = allocation.decide_ledger(state, command, NOW)
    for data in events:
        state = allocation.evolve_ledger(state, data)
        Event(
            event_id=str(uuid.uuid4()),
            stream_id="allocation",
            version=state.version,
            data=data,
            occurred_at=NOW,
            policy_version="allocation",
            actor=f"request:{command.request_id}",
        )
    assert state.answer(command.request_id, command.units) is not None
    return state


def pure(repeats: int, count: int = 200) -> list[dict[str, Any]]:
    rows = []
    for waiting in QUEUED:
        for case, buyer in (("queued", None), ("granted", "Priority Holdings")):
            samples = []
            for _ in range(repeats):
                state = _queued_ledger(waiting)
                commands = [
                    Reserve(request_id=f"n{i}", buyer=buyer or _buyer(i), units=3, workflow_id=f"wf-n{i}")
                    for i in range(count)
                ]
                began = time.process_time()
                for command in commands:
                    state = _one_reservation(state, command)
                samples.append((time.process_time() - began) / count * 1000)
            rows.append(
                {
                    "queued": waiting,
                    "newcomer": case,
                    "best_ms": round(min(samples), 3),
                    "median_ms": round(statistics.median(samples), 3),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


# -- (b) on a server ------------------------------------------------------------------------------------
async def _patiently(call: Callable[[], Awaitable[Any]]) -> Any:
    """As the reserve activity does: whatever `send_again_because` says sending again will cure, retry
    soon, with jitter."""
    delay = 0.05
    while True:
        try:
            return await call()
        except EntityCallError as exc:
            if send_again_because(exc) is None:
                raise
        await asyncio.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 1.5, 2.0)


async def _rush(count: int, in_flight: int, one: Callable[[int], Awaitable[Any]]) -> float:
    gate = asyncio.Semaphore(in_flight)

    async def bounded(index: int) -> Any:
        async with gate:
            return await one(index)

    began = time.perf_counter()
    await asyncio.gather(*(bounded(i) for i in range(count)))
    return count / (time.perf_counter() - began)


async def _measure(
    client: Client, home: Path, kind: str, count: int, in_flight: int, capacity: int
) -> dict[str, Any]:
    """One fresh worker and task queue: warm up, then `count` reservations with `in_flight` at once."""
    queue = f"ledger-bench-{uuid.uuid4().hex[:8]}"
    settings = Settings(home, f"sqlite:///{home / (queue + '.db')}", queue, "auto", True)
    policy = load_policy("auto", home=home).with_section(cn_import.NAME, allocate_from_batches=True)
    async with bench_worker(settings, policy, client, [NoOpLedgerWorkflow]):
        if kind == "ledger":
            opener = keys.load_private(keys.private_path(home, "wang"))
            spec = BatchSpec(batch_id="rush", capacity=capacity)
            await open_batch(client, queue, OpenBatch(batch=spec, actor="wang"), key=opener)
            entity, name = ledger_entity(queue), LEDGER_RESERVE
        else:
            entity, name = noop_ledger(queue), NOOP_LEDGER_RESERVE

        async def one(index: int) -> Reservation:
            command = Reserve(
                request_id=f"{queue}-{index}", buyer=_buyer(index), units=1 + index % 3, workflow_id="none"
            )
            # As the reserve activity sends it: plainly, with the start only when the entity is not running.
            answer: Reservation = await _patiently(
                lambda: update_entity(client, entity, name, command, Reservation)
            )
            return answer

        await _rush(20, 20, lambda i: one(count + i))  # warm: the workflow started, the worker's caches
        try:
            rate = await asyncio.wait_for(_rush(count, in_flight, one), GIVE_UP_AFTER)
        except TimeoutError:
            return {"workflow": kind, "in_flight": in_flight, "count": count, "per_second": 0.0}
        row: dict[str, Any] = {"workflow": kind, "in_flight": in_flight, "count": count, "per_second": rate}
        if kind == "ledger":
            store = open_event_store(settings.event_store_url)
            try:
                state = await ledger_state(client, store, queue)
            finally:
                store.close()
            held = state.batches["rush"]
            assert held.allocated <= held.capacity, "over capacity"
            assert len(state.allocations) + len(state.queue) == count + 20
            row["granted"], row["queued"] = len(state.allocations), len(state.queue)
        return row


async def server(repeats: int, count: int) -> list[dict[str, Any]]:
    configure(level="WARNING")
    rows = []
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
        home = Path(tmp)
        keys.provide_missing(home, "auto")
        dev = DevServer(port=free_port(), ui_port=None, db=home / "temporal.db")
        process = dev.start(log=home / "temporal.log")
        try:
            client = await dev.wait_ready(process)
            for in_flight in IN_FLIGHT:
                rates: dict[str, list[float]] = {"ledger": [], "no-op": []}
                for _ in range(repeats):
                    for kind in rates:  # alternated, so a slow spell of the machine hits both
                        row = await _measure(client, home, kind, count, in_flight, capacity=count)
                        rates[kind].append(row["per_second"])
                        print(json.dumps(row), file=sys.stderr)
                ledger, noop = (statistics.median(r) for r in rates.values())
                rows.append(
                    {
                        "in_flight": in_flight,
                        "count": count,
                        "ledger_best": round(max(rates["ledger"]), 1),
                        "ledger_median": round(ledger, 1),
                        "noop_best": round(max(rates["no-op"]), 1),
                        "noop_median": round(noop, 1),
                        # None when the yardstick timed out: no ratio to give, and the others stand.
                        "ratio_median": round(ledger / noop, 2) if noop else None,
                    }
                )
        finally:
            stop(process)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pure-only", action="store_true")
    parser.add_argument("--server-only", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--count", type=int, default=2_000, help="reservations per server measurement")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": bench_report.machine(),
    }
    if not args.server_only:
        report["pure_ms_per_reservation"] = pure(args.repeats)
    if not args.pure_only:
        report["server"] = asyncio.run(server(args.repeats, args.count))
    report["load_average_after"] = bench_report.machine()["load_average"]
    print(json.dumps(report, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
