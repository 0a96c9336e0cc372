"""The chipclear worker process: runs the import workflow and its activities until told to stop.

Run it as `python worker.py` or `chipclear worker`; start as many as you like against one Temporal
cluster and one event store. SIGINT/SIGTERM drain in-flight tasks before exiting.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.allocation import AllocationActivities
from activities.bench import bare_step
from activities.events import EventActivities
from chipclear.config import DEFAULT_TASK_QUEUE, Settings
from chipclear.domain.policy import Policy, load_policy
from chipclear.logs import configure, get_logger
from chipclear.store import EventStore, open_store
from chipclear.temporal import connect_patiently
from workflows.allocation import AllocationLedgerWorkflow
from workflows.bench import BareWorkflow
from workflows.import_request import ImportRequestWorkflow

WORKFLOWS: Sequence[type] = (ImportRequestWorkflow, AllocationLedgerWorkflow, BareWorkflow)
# SQLite has one writer at a time; more threads than this only queue on its lock.
ACTIVITY_THREADS = 16


def build_worker(
    client: Client,
    *,
    task_queue: str,
    store: EventStore,
    policy: Policy,
    executor: ThreadPoolExecutor,
    sandbox: bool = True,
    **options: Any,
) -> Worker:
    """Everything chipclear registers, on one task queue. Tests build their workers here too."""
    events = EventActivities(store, policy)
    ledger = AllocationActivities(client, DEFAULT_TASK_QUEUE)
    if not sandbox:
        options.setdefault("workflow_runner", UnsandboxedWorkflowRunner())
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(WORKFLOWS),
        activities=[
            events.append_events,
            events.current_policy,
            ledger.reserve_units,
            ledger.release_units,
            bare_step,
        ],
        activity_executor=executor,
        max_concurrent_activities=ACTIVITY_THREADS,
        max_concurrent_local_activities=ACTIVITY_THREADS,
        graceful_shutdown_timeout=timedelta(seconds=10),
        **options,
    )


async def run_worker(
    settings: Settings,
    *,
    policy: Policy | None = None,
    client: Client | None = None,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Run until `stop` is set (or SIGINT/SIGTERM when running as the main process)."""
    log = get_logger("chipclear.worker")
    policy = policy or load_policy(settings.policy)
    if client is None:
        log.info("connecting to Temporal")
        client = await connect_patiently()
    store = open_store(settings.event_store_url)
    stop = stop or asyncio.Event()
    with ThreadPoolExecutor(max_workers=ACTIVITY_THREADS, thread_name_prefix="activity") as executor:
        worker = build_worker(
            client,
            task_queue=settings.task_queue,
            store=store,
            policy=policy,
            executor=executor,
            sandbox=settings.sandbox,
        )
        async with worker:
            log.info(
                "worker started",
                task_queue=settings.task_queue,
                namespace=client.namespace,
                policy_version=policy.version,
                event_store=settings.event_store_url,
                sandbox=settings.sandbox,
            )
            if ready is not None:
                ready.set()
            await stop.wait()
            log.info("worker draining", task_queue=settings.task_queue)
    store.close()
    log.info("worker stopped", task_queue=settings.task_queue)


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def _main(settings: Settings) -> None:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    await run_worker(settings, stop=stop)


def main() -> None:
    configure()
    asyncio.run(_main(Settings.from_env()))


if __name__ == "__main__":
    main()
