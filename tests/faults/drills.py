"""The faults, each a coroutine that strikes a running load: the same drills for `tests/faults` (about
40 requests each) and `make chaos` (400, with figures)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path

from temporalio.client import Client

from chipclear.store.factory import open_store
from chipclear.store.protocol import EventStore
from tests.faults.rig import (
    CHIPCLEAR,
    Load,
    Rig,
    Verdict,
    open_exact_batch,
    request,
    running,
    start_load,
    verdict,
)
from tests.postgres import Cluster

Fault = Callable[[Client, Rig, Load], Awaitable[None]]


async def under_way(rig: Rig, load: Load, share: float = 0.25, within: float = 120.0) -> None:
    """Strike once a share of the requests is recorded in the store and not yet all done: work is in
    flight at every stage of the route then (the ledger's, the appends, the local activities)."""
    wanted = max(1, int(len(load.requests) * share))

    def submitted(store: EventStore) -> int:
        return sum(1 for r in load.requests if store.read_stream(r.request_id))

    with closing(rig.open_store()) as store:
        deadline = time.monotonic() + within
        while await asyncio.to_thread(submitted, store) < wanted:
            assert time.monotonic() < deadline, "the load did not get going"
            await asyncio.sleep(0.2)


async def no_fault(client: Client, rig: Rig, load: Load) -> None:
    return None


async def kill_worker(client: Client, rig: Rig, load: Load) -> None:
    """kill -9 the worker mid-run; a fresh worker takes over (as an orchestrator restarts it)."""
    await under_way(rig, load)
    rig.kill_worker()
    rig.start_worker()


async def hold_store(rig: Rig, hold: float, meanwhile: Callable[[], object] = lambda: None) -> None:
    """An exclusive lock on the rig's events.db for `hold` seconds; `meanwhile` runs once it is taken."""
    path = Path(rig.store_url.removeprefix("sqlite:///"))
    with closing(sqlite3.connect(path, isolation_level=None, timeout=60, check_same_thread=False)) as conn:
        await asyncio.to_thread(conn.execute, "BEGIN EXCLUSIVE")
        meanwhile()
        await asyncio.sleep(hold)
        conn.execute("ROLLBACK")


async def drain_worker(client: Client, rig: Rig, load: Load, hold: float = 3.0) -> None:
    """SIGTERM the worker mid-run, as a rolling deploy stops it, then start a fresh one.

    The store is held locked for `hold` seconds around the signal, so that the drain begins with the
    ledger's group commit waiting on it and requests' first workflow tasks waiting, in local activities,
    on the ledger's answers: the drain must let the ledger (run by this same worker) answer them."""
    await under_way(rig, load)
    worker = rig.worker
    assert worker is not None
    await hold_store(rig, hold, lambda: worker.send_signal(signal.SIGTERM))
    rig.drained = await asyncio.to_thread(worker.wait, 40.0)
    rig.start_worker()


async def restart_server(client: Client, rig: Rig, load: Load, down: float = 3.0) -> None:
    """SIGKILL the dev server mid-run and start it again on its database; the worker stays."""
    await under_way(rig, load)
    rig.kill_server()
    await asyncio.sleep(down)
    await rig.start_server()


def lock_store(hold: float) -> Fault:
    """An exclusive lock on events.db for `hold` seconds (longer than an append's start-to-close
    timeout): every writer waits, times out, and must carry on by itself once it is released."""

    async def strike(client: Client, rig: Rig, load: Load) -> None:
        await under_way(rig, load)
        await hold_store(rig, hold)

    return strike


class RestartableCluster(Cluster):
    """A PostgreSQL server of the drill's own (never the session's shared one), stopped and started."""

    def start(self) -> RestartableCluster:
        super().start()
        return self

    def stop_fast(self) -> None:
        assert self.process is not None
        # SIGINT to the postmaster itself (`runuser` in between does not pass it on): fast shutdown,
        # every client disconnected at once.
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGINT)
        self.process.wait(timeout=30)

    def restart(self) -> None:
        self.serve(log_mode="ab")


def postgres_rig(home: Path, cluster: RestartableCluster) -> Rig:
    """A rig whose event store is a fresh, migrated schema on `cluster`."""
    url = cluster.new_schema()
    with closing(open_store(url, require_schema=False)) as fresh:
        fresh.migrate()
    return Rig(home, url)


def stop_postgres(cluster: RestartableCluster, down: float) -> Fault:
    """PostgreSQL stopped for `down` seconds mid-run, then started again on its data."""

    async def strike(client: Client, rig: Rig, load: Load) -> None:
        await under_way(rig, load)
        await asyncio.to_thread(cluster.stop_fast)
        began = time.monotonic()
        # Meanwhile `chipclear status` is asked about requests under way: it answers from a workflow
        # that can answer, and otherwise says in one sentence that the store is unreachable.
        for request_id in [r.request_id for r in load.requests][-3:]:
            rig.status_in_outage.append(
                await asyncio.to_thread(
                    subprocess.run,
                    [str(CHIPCLEAR), "status", "--json", request_id],
                    env=rig.env(),
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
            )
        await asyncio.sleep(max(0.0, down - (time.monotonic() - began)))
        await asyncio.to_thread(cluster.restart)

    return strike


async def drill(rig: Rig, count: int, fault: Fault, *, within: float = 300.0, workers: int = 1) -> Verdict:
    """Run `count` requests on the rig while `fault` strikes; the verdict once all have ended (or
    `within` seconds passed). `rig.worker_alive` says whether the last worker was still running.

    `workers` > 1: more worker processes on the same queue and event store (PostgreSQL: SQLite is one
    machine's file), each polling before the first request starts, so that they share the requests,
    the ledger's calls and the appends from the start. A worker that joined once the load was under way
    could find every request's first task taken (a run stays on the worker that took it)."""
    async with running(rig) as client:
        for _ in range(workers - 1):
            rig.start_worker()
            await rig.worker_ready()
        batch = await open_exact_batch(client, rig, [request(rig.run, i) for i in range(count)])
        load = await start_load(client, rig, count)
        await fault(client, rig, load)
        seconds = await load.finished(within)
        rig.worker_alive = rig.worker is not None and rig.worker.poll() is None
        found = await verdict(client, rig, load, batch, seconds)
        if rig.worker_alive:
            rig.exit_code = await asyncio.to_thread(rig.stop_worker)  # SIGTERM, as an orchestrator
        return found
