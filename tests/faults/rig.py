"""The fault rig: a real dev server and a real worker process, a load of auto-policy requests, the faults
an operator meets (kill -9, a server restart, a held store lock, a PostgreSQL outage), and the
invariants that must hold after each.

Everything is a real process so it can be killed: the dev server (file-backed, so its state survives a
restart) and `chipclear worker`, as `chipclear up` runs them. The load is the benchmark's: requests
through every gate of the auto policy, one allocation batch sized to the exact demand. `tests/faults`
runs it at about 40 requests per fault; `make chaos` (tests/faults/chaos.py) at 400, with figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHistory
from temporalio.service import RPCError
from temporalio.worker import Replayer

from chipclear import keys
from chipclear.bench import bench_request
from chipclear.client import open_batch
from chipclear.contracts import ImportRequestInput, ledger_id, ledger_stream, workflow_id
from chipclear.devserver import DevServer, free_port
from chipclear.domain.allocation import BatchSpec, OpenBatch, UnitsGranted, fold_ledger
from chipclear.domain.models import ImportRequest, Status
from chipclear.projections import open_event_store
from chipclear.store.protocol import EventStore
from chipclear.temporal import DATA_CONVERTER
from chipclear.worker import ALL_WORKFLOWS, workflow_runner
from tests.log_events import log_events
from tests.wedge_check import on_deployment
from workflows.import_request import ImportRequestWorkflow

CHIPCLEAR = Path(sys.executable).parent / "chipclear"
FINAL = {Status.LICENSED, Status.DENIED, Status.WITHDRAWN, Status.EXPIRED}


def hermetic_env(**values: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TEMPORAL_", "CHIPCLEAR_"))}
    return env | values


def request(run: str, index: int) -> ImportRequest:
    """The benchmark's request (every gate passes under the auto policy), under the drill's own ids."""
    return bench_request(run, index, prefix="fault", buyers=20)


@dataclass
class Rig:
    """One home, one file-backed dev server, one worker process (replaceable), one event store."""

    home: Path
    store_url: str
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    task_queue: str = field(default_factory=lambda: f"faults-{uuid.uuid4().hex[:8]}")
    dev: DevServer = field(init=False)
    server: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None  # the last one started
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)  # every one started
    workers_started: int = 0
    worker_alive: bool = False  # whether the last worker still ran when the load had ended
    exit_code: int | None = None  # the last worker's, once stopped with SIGTERM
    drained: int | None = None  # the exit code of a worker stopped with SIGTERM mid-run (a drill's)
    # `chipclear status` asked while the store was down
    status_in_outage: list[subprocess.CompletedProcess[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dev = DevServer(port=free_port(), ui_port=None, db=self.home / "temporal.db")
        keys.provide_missing(self.home, "auto")

    # -- processes ------------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        return hermetic_env(
            TEMPORAL_ADDRESS=self.dev.address,
            CHIPCLEAR_HOME=str(self.home),
            CHIPCLEAR_TASK_QUEUE=self.task_queue,
            CHIPCLEAR_POLICY="auto",
            CHIPCLEAR_EVENT_STORE=self.store_url,
            CHIPCLEAR_LOG_FORMAT="json",
        )

    async def start_server(self) -> Client:
        self.server = self.dev.start(log=self.home / "temporal.log")
        return await self.dev.wait_ready(self.server)

    def kill_server(self) -> None:
        """SIGKILL: no chance to flush anything but what its database already holds."""
        assert self.server is not None
        self.server.kill()
        self.server.wait()

    def start_worker(self) -> subprocess.Popen[bytes]:
        self.workers_started += 1
        log = self.home / f"worker-{self.workers_started}.log"
        with log.open("wb") as sink:
            self.worker = subprocess.Popen(
                [str(CHIPCLEAR), "worker"], env=self.env(), stdout=subprocess.DEVNULL, stderr=sink
            )
        self.workers.append(self.worker)
        return self.worker

    def worker_logs(self) -> list[dict[str, Any]]:
        return [record for path in sorted(self.home.glob("worker-*.log")) for record in log_events(path)]

    async def worker_ready(self, within: float = 60.0) -> None:
        """Until the last worker started has said so in its log."""
        deadline = time.monotonic() + within
        log = self.home / f"worker-{self.workers_started}.log"
        while not any(r.get("event") == "worker started" for r in log_events(log)[:50]):
            assert self.worker is not None and self.worker.poll() is None, self.tail()
            assert time.monotonic() < deadline, "no `worker started` in time\n" + self.tail()
            await asyncio.sleep(0.2)

    def kill_worker(self) -> None:
        assert self.worker is not None
        self.worker.send_signal(signal.SIGKILL)
        self.worker.wait()

    def stop_worker(self, within: float = 40.0) -> int:
        """SIGTERM, as an orchestrator stops it; the exit code (it must come within `within`)."""
        assert self.worker is not None
        self.worker.send_signal(signal.SIGTERM)
        return self.worker.wait(timeout=within)

    def tail(self, lines: int = 40) -> str:
        logs = sorted(self.home.glob("worker-*.log"))
        return "\n".join(logs[-1].read_text(errors="replace").splitlines()[-lines:]) if logs else ""

    def cleanup(self) -> None:
        for process in (*self.workers, self.server):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()

    def open_store(self) -> EventStore:
        return open_event_store(self.store_url)


@dataclass
class Load:
    """Requests in flight: each one's start time and, once it ended, its latency and status."""

    requests: list[ImportRequest]
    began: float = field(default_factory=time.monotonic)
    latencies: dict[str, float] = field(default_factory=dict)
    statuses: dict[str, Status] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def done(self) -> int:
        return len(self.statuses)

    async def finished(self, within: float) -> float:
        """Seconds from the first start until every request ended (or `within` passed: then stuck)."""
        _, pending = await asyncio.wait(self.tasks, timeout=within)
        for task in pending:
            task.cancel()
        return time.monotonic() - self.began

    def percentile(self, q: float) -> float:
        values = sorted(self.latencies.values())
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(len(values) * q))]


async def open_exact_batch(client: Client, rig: Rig, requests: list[ImportRequest]) -> BatchSpec:
    batch = BatchSpec(batch_id=f"drill-{rig.run}", capacity=sum(r.units for r in requests))
    opener = keys.load_private(keys.private_path(rig.home, "wang"))
    await open_batch(client, rig.task_queue, OpenBatch(batch=batch, actor="wang"), key=opener)
    return batch


async def start_load(client: Client, rig: Rig, count: int, concurrency: int = 40) -> Load:
    """Start `count` requests, at most `concurrency` in flight at once (as `chipclear bench` does), and
    follow each to its end; a latency runs from a request's start to its result.

    Calls are retried through a server restart (RPC errors), as a user's script would retry them."""
    load = Load([request(rig.run, i) for i in range(count)])
    gate = asyncio.Semaphore(concurrency)

    async def one(item: ImportRequest) -> None:
        async with gate:
            began = time.monotonic()
            handle = await _patiently(
                lambda: client.start_workflow(
                    ImportRequestWorkflow.run,
                    ImportRequestInput(request=item, actor="drill"),
                    id=workflow_id(item.request_id),
                    task_queue=rig.task_queue,
                )
            )
            result = await _patiently(handle.result)
            load.latencies[item.request_id] = time.monotonic() - began
            load.statuses[item.request_id] = result.status

    load.tasks = [asyncio.create_task(one(item)) for item in load.requests]
    return load


async def _patiently(call: Callable[[], Awaitable[Any]], within: float = 300.0) -> Any:
    """A client call retried while the server restarts (RPC errors), as a user's script would."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except Exception as exc:
            if not isinstance(exc, RPCError) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def until(predicate: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not reached within {within:.0f}s"
        await asyncio.sleep(0.1)


@dataclass
class Verdict:
    """What a run left behind, checked against every invariant."""

    requests: int
    right: int
    stuck: list[str]
    duplicates: list[str]
    gaps: list[str]
    allocated: int
    licensed_units: int
    capacity: int
    audit_ok: bool
    replayed: int
    replay_failures: list[str]
    seconds: float
    p50: float
    p90: float
    # How many worker processes took the requests' workflow or activity tasks (each its own identity).
    worker_identities: int = 0

    def problems(self) -> list[str]:
        found = []
        if self.right != self.requests:
            found.append(f"{self.requests - self.right} of {self.requests} requests not licensed")
        if self.stuck:
            found.append(f"stuck: {self.stuck[:5]}")
        if self.duplicates:
            found.append(f"duplicate logical events: {self.duplicates[:5]}")
        if self.gaps:
            found.append(f"versions not 1..n: {self.gaps[:5]}")
        if not (self.allocated == self.licensed_units and self.allocated <= self.capacity):
            found.append(
                f"allocation not exact: {self.allocated} allocated, {self.licensed_units} licensed, "
                f"capacity {self.capacity}"
            )
        if not self.audit_ok:
            found.append("audit verify failed")
        if self.replay_failures:
            found.append(f"histories that do not replay: {self.replay_failures[:5]}")
        return found


def _duplicates(stream_id: str, events: list[Any]) -> list[str]:
    """The same fact stored twice: equal type and data under another event id or version."""
    seen = Counter(
        (event.type, json.dumps(event.data.model_dump(mode="json"), sort_keys=True)) for event in events
    )
    return [f"{stream_id}: {kind} x{count}" for (kind, _), count in seen.items() if count > 1]


async def verdict(client: Client, rig: Rig, load: Load, batch: BatchSpec, seconds: float) -> Verdict:
    stuck = [r.request_id for r in load.requests if load.statuses.get(r.request_id) not in FINAL]
    right = sum(1 for status in load.statuses.values() if status == Status.LICENSED)
    duplicates: list[str] = []
    gaps: list[str] = []
    licensed_units = 0
    with closing(rig.open_store()) as store:
        for item in load.requests:
            events = store.read_stream(item.request_id)
            if [e.version for e in events] != list(range(1, len(events) + 1)):
                gaps.append(item.request_id)
            duplicates += _duplicates(item.request_id, events)
            licensed_units += sum(getattr(e.data, "units", 0) for e in events if e.type == "LicenseIssued")
        ledger_events = store.read_stream(ledger_stream(ledger_id(rig.task_queue)))
        if [e.version for e in ledger_events] != list(range(1, len(ledger_events) + 1)):
            gaps.append("ledger")
        duplicates += _duplicates("ledger", ledger_events)
        grants = Counter(e.data.request_id for e in ledger_events if isinstance(e.data, UnitsGranted))
        duplicates += [f"ledger: {rid} granted x{n}" for rid, n in grants.items() if n > 1]
        ledger = fold_ledger(e.data for e in ledger_events)
        audit_ok = store.verify().ok
    held = ledger.batches.get(batch.batch_id)
    replayed, failures, identities = await replay_all(client, rig, load)
    return Verdict(
        requests=len(load.requests),
        right=right,
        stuck=stuck,
        duplicates=duplicates,
        gaps=gaps,
        allocated=held.allocated if held else 0,
        licensed_units=licensed_units,
        capacity=batch.capacity,
        audit_ok=audit_ok,
        replayed=replayed,
        replay_failures=failures,
        worker_identities=len(identities),
        seconds=seconds,
        p50=load.percentile(0.5),
        p90=load.percentile(0.9),
    )


async def replay_all(client: Client, rig: Rig, load: Load) -> tuple[int, list[str], set[str]]:
    """Every workflow of the run (each request, every run of the ledger) replayed on today's code; and
    the identities of the workers that took the requests' workflow or activity tasks."""
    replayer = Replayer(
        workflows=list(ALL_WORKFLOWS), data_converter=DATA_CONVERTER, workflow_runner=workflow_runner()
    )
    histories: list[WorkflowHistory] = []
    # Every run on the rig's queue: the requests and each run of the ledger.
    async for execution in client.list_workflows(on_deployment(rig.task_queue)):
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        histories.append(await handle.fetch_history())
    expected = {workflow_id(r.request_id) for r in load.requests} | {ledger_id(rig.task_queue)}
    missing = expected - {history.workflow_id for history in histories}
    failures = [f"{wid}: no history listed" for wid in sorted(missing)]
    for history in histories:
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        if result.replay_failure is not None:
            failures.append(f"{history.workflow_id}: {result.replay_failure}")
    requests = {workflow_id(r.request_id) for r in load.requests}
    identities = {
        identity
        for history in histories
        if history.workflow_id in requests
        for event in history.events
        for identity in (
            event.workflow_task_completed_event_attributes.identity,
            event.activity_task_started_event_attributes.identity,
        )
        if identity
    }
    return len(histories), failures, identities


@asynccontextmanager
async def running(rig: Rig) -> AsyncIterator[Client]:
    """The rig's server and first worker, stopped (killed if need be) however the block ends."""
    try:
        client = await rig.start_server()
        rig.start_worker()
        await rig.worker_ready()
        yield client
    finally:
        rig.cleanup()


def summary(name: str, result: Verdict) -> dict[str, Any]:
    return {
        "fault": name,
        "requests": result.requests,
        "right": result.right,
        "stuck": len(result.stuck),
        "duplicates": len(result.duplicates),
        "seconds_to_all_final": round(result.seconds, 1),
        "p50_s": round(result.p50, 2),
        "p90_s": round(result.p90, 2),
        "histories_replayed": result.replayed,
        "workers_that_took_tasks": result.worker_identities,
        "problems": result.problems(),
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
