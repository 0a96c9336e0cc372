"""`chipclear bench`: how fast every gate of the route runs, measured against a workflow that does nothing.

The dev server is the bottleneck on a small machine, so the honest figure is a ratio: import requests
(every gate, every event appended and hash-chained) per second over bare three-activity workflows per
second, on the same server, worker and machine, in the same run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table
from temporalio.client import Client

from activities.bench import BareInput, bare_step
from chipclear import bench_report, keys
from chipclear.cli import output
from chipclear.client import open_batch
from chipclear.config import Settings, WorkerTuning
from chipclear.contracts import ImportRequestInput, workflow_id
from chipclear.devserver import DevServer, free_port, stop
from chipclear.domain.allocation import BatchSpec, OpenBatch
from chipclear.domain.gates import cn_import
from chipclear.domain.models import ImportRequest, Status
from chipclear.domain.policy import Policy, load_policy
from chipclear.logs import configure
from chipclear.temporal import connect
from workflows.bench import BareWorkflow
from workflows.import_request import ImportRequestWorkflow


def bench_request(run: str, index: int, *, prefix: str = "bench", buyers: int = 50) -> ImportRequest:
    """A request every gate passes under the auto policy: the benchmark's, and the fault drills'."""
    return ImportRequest.model_validate(
        {
            "request_id": f"{prefix}-{run}-{index:06d}",
            "buyer": {"name": f"{prefix.title()} Buyer {index % buyers}", "country": "CN", "kind": "private"},
            "exporter": {"name": "NVIDIA Corporation", "country": "US"},
            "end_use": prefix,
            "units": 1_000 + index % 500,
            "data_center": {"name": f"{prefix.title()} DC", "province": "Anhui", "state_funded": False},
            "domestic_procurement": [
                {
                    "vendor": "Huawei",
                    "product": "Ascend 910C",
                    "units": 2_000,
                    "invoice": f"{prefix}-{run}-{index}",
                }
            ],
        }
    )


def _policy(allocation: bool, home: Path) -> Policy:
    """The bundled auto policy; without allocation, cn-import decides by rule alone (no ledger).

    Its keys (the recorder's, the reviewers') are made in the benchmark's own throwaway home."""
    keys.provide_missing(home, "auto")
    return load_policy("auto", home=home).with_section(cn_import.NAME, allocate_from_batches=allocation)


@dataclasses.dataclass(frozen=True)
class CpuClock:
    """CPU seconds used so far by this process (the worker and the bench's own client) and by the dev
    server's, where it can be read. Per workflow, they say which side a gap comes from, and they vary
    far less from run to run than a throughput does on a shared machine."""

    server_pid: int | None = None

    def read(self) -> tuple[float, float | None]:
        return time.process_time(), _process_cpu(self.server_pid)


def _process_cpu(pid: int | None) -> float | None:
    """A child process's user and system CPU seconds, from Linux's /proc; None elsewhere."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    # The fields after the command name (which may hold spaces) start at its closing parenthesis;
    # utime and stime are the 14th and 15th fields of the line, in clock ticks.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(
    count: int, concurrency: int, one: Callable[[int], Awaitable[None]], clock: CpuClock = CpuClock()
) -> dict[str, Any]:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def timed(index: int) -> None:
        async with gate:
            began = time.perf_counter()
            await one(index)
            latencies.append(time.perf_counter() - began)

    (ours_before, server_before), began = clock.read(), time.perf_counter()
    await asyncio.gather(*(timed(i) for i in range(count)))
    wall = time.perf_counter() - began
    ours_after, server_after = clock.read()
    latencies.sort()
    server = None if server_before is None or server_after is None else server_after - server_before
    return {
        "workflows": count,
        "seconds": round(wall, 2),
        "per_second": round(count / wall, 2),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 1),
        "worker_cpu_ms": round((ours_after - ours_before) / count * 1000, 2),
        "server_cpu_ms": None if server is None else round(server / count * 1000, 2),
    }


async def _suite(
    client: Client,
    task_queue: str,
    requests: int,
    concurrency: int,
    policy: Policy,
    home: Path,
    clock: CpuClock = CpuClock(),
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]

    async def import_request(index: int) -> None:
        request = bench_request(run, index)
        result = await client.execute_workflow(
            ImportRequestWorkflow.run,
            ImportRequestInput(request=request, actor="bench"),
            id=workflow_id(request.request_id),
            task_queue=task_queue,
        )
        if result.status is not Status.LICENSED:
            raise RuntimeError(f"{request.request_id} ended {result.status}, expected licensed")

    def bare(local: bool) -> Callable[[int], Awaitable[None]]:
        async def one(index: int) -> None:
            await client.execute_workflow(
                BareWorkflow.run,
                BareInput(local=local),
                id=f"bare-{run}-{'local' if local else 'plain'}-{index}",
                task_queue=task_queue,
            )

        return one

    async def warm(index: int) -> None:
        await import_request(requests + index)
        await bare(True)(requests + index)
        await bare(False)(requests + index)

    # Enough units for every request: the benchmark measures the gates, not a queue.
    if cn_import.GATE.section(policy).allocate_from_batches:
        batch = BatchSpec(batch_id=f"bench-{run}", capacity=2_000 * (requests + 20))
        # Opened as an import reviewer of the auto policy would, with the key made in this home.
        opener = keys.load_private(keys.private_path(home, "wang"))
        await open_batch(client, task_queue, OpenBatch(batch=batch, actor="wang"), key=opener)
    await _measure(min(20, requests), concurrency, warm)
    results = {
        f"chipclear ({len(policy.route)} gates, auto policy)": await _measure(
            requests, concurrency, import_request, clock
        ),
        "bare: 3 regular activities": await _measure(requests, concurrency, bare(False), clock),
        "bare: 3 local activities": await _measure(requests, concurrency, bare(True), clock),
    }
    chipclear, plain, local = (r["per_second"] for r in results.values())
    return {
        "results": results,
        "ratio_vs_regular": round(chipclear / plain, 2),
        "ratio_vs_local": round(chipclear / local, 2),
        "concurrency": concurrency,
    }


@asynccontextmanager
async def bench_worker(
    settings: Settings, policy: Policy, client: Client, extra_workflows: Sequence[type]
) -> AsyncIterator[None]:
    """A worker running beside a benchmark in this process, with the benchmark's own yardstick workflows
    (and the no-op activity they call) registered only here, never by the production worker."""
    from chipclear.worker import run_worker

    stop_event, ready = asyncio.Event(), asyncio.Event()
    worker = asyncio.create_task(
        run_worker(
            settings,
            policy=policy,
            client=client,
            stop=stop_event,
            ready=ready,
            extra_workflows=list(extra_workflows),
            extra_activities=[bare_step],
        )
    )
    # A worker that fails to start (a bad store URL, a missing key) ends its task: say so, never wait on.
    started = asyncio.ensure_future(ready.wait())
    await asyncio.wait({worker, started}, return_when=asyncio.FIRST_COMPLETED)
    if not ready.is_set():
        started.cancel()
        await worker  # raises the worker's own error
        raise RuntimeError("the bench's worker stopped before it was ready")
    try:
        yield
    finally:
        stop_event.set()
        await worker


async def run_bench(
    *,
    requests: int,
    concurrency: int,
    embedded: bool,
    sandbox: bool,
    allocation: bool,
    as_json: bool,
    event_store: str | None = None,
    write_docs: Path | None = None,
) -> None:
    # The machine and its load before the run (not the bench's own), for the docs alone.
    host = bench_report.machine() if write_docs is not None else None

    configure(level="WARNING")
    with tempfile.TemporaryDirectory(prefix="chipclear-bench-") as tmp:
        home = Path(tmp)
        store_url = event_store or f"sqlite:///{home / 'events.db'}"
        # The worker takes the environment's tuning, as `chipclear worker` does (docs/operations.md).
        tuning = WorkerTuning.from_env(os.environ)
        settings = Settings(home, store_url, f"bench-{uuid.uuid4().hex[:8]}", "auto", sandbox, tuning=tuning)
        process = None
        if embedded:
            dev = DevServer(port=free_port(), ui_port=None, db=home / "temporal.db")
            process = dev.start(log=home / "temporal.log")
            client = await dev.wait_ready(process)
        else:
            client = await connect()
        try:
            policy = _policy(allocation, home)
            # The bare yardstick runs on the same worker as the import workflow, and only on the bench's.
            async with bench_worker(settings, policy, client, [BareWorkflow]):
                clock = CpuClock(process.pid if process is not None else None)
                report = await _suite(client, settings.task_queue, requests, concurrency, policy, home, clock)
            report["sandbox"] = sandbox
            report["tuning"] = dataclasses.asdict(tuning)
            report["allocation"] = allocation
            report["event_store"] = "postgresql" if store_url.startswith("postgres") else "sqlite"
        finally:
            if process is not None:
                stop(process)
    if write_docs is not None:
        assert host is not None
        bench_report.rewrite(write_docs, bench_report.render(report, host, datetime.now(UTC)))
    if as_json:
        output.print_json(report)
        return
    table = Table(
        "workload", "workflows", "seconds", "per second", "p50 ms", "p99 ms", "worker CPU ms", "server CPU ms"
    )
    for name, row in report["results"].items():
        table.add_row(
            name,
            str(row["workflows"]),
            str(row["seconds"]),
            str(row["per_second"]),
            str(row["p50_ms"]),
            str(row["p99_ms"]),
            str(row["worker_cpu_ms"]),
            "-" if row["server_cpu_ms"] is None else str(row["server_cpu_ms"]),
        )
    output.console.print(table)
    output.console.print(
        f"ratio chipclear / bare regular: [bold]{report['ratio_vs_regular']}[/]   "
        f"chipclear / bare local: [bold]{report['ratio_vs_local']}[/]   "
        f"(concurrency {concurrency}, workflow sandbox {'on' if sandbox else 'off'}, "
        f"allocation batches {'on' if allocation else 'off'}, event store {report['event_store']})"
    )
