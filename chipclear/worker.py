"""The chipclear worker: everything chipclear registers on a task queue, and the process that runs it.

`main()` is the process entry (`python worker.py`, `chipclear worker`); `run_worker()` runs one inside
another program (`chipclear up`, the demo, the bench); `build_worker()` builds one for tests. Start as
many worker processes as you like against one Temporal cluster and one event store; SIGINT/SIGTERM drain
in-flight tasks before exiting.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.service import RPCError
from temporalio.worker import PollerBehaviorSimpleMaximum, UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxRestrictions

from activities.allocation import AllocationActivities
from activities.events import EventActivities
from activities.rescreening import RescreeningActivities
from activities.screening import ScreeningActivities
from chipclear import search_attributes
from chipclear.config import Settings, WorkerTuning
from chipclear.contracts import entity_queue, ledger_calls_queue
from chipclear.domain.policy import Policy, load_policy, require_keys
from chipclear.health import Health
from chipclear.health import serve as serve_health
from chipclear.logs import configure, get_logger
from chipclear.policy_record import record_policy
from chipclear.projections import open_event_store
from chipclear.recorder import CheckpointSchedule, checkpointing, load_recorder
from chipclear.store.outage import StoreOutage
from chipclear.store.protocol import EventStore
from chipclear.store.urls import redact
from chipclear.temporal import DATA_CONVERTER, connect_patiently
from chipclear.workflow_code import compile_once
from chipclear.workflow_sandbox import sandbox_for
from workflows.allocation import AllocationLedgerWorkflow
from workflows.exporter import ExporterWorkflow
from workflows.import_request import ImportRequestWorkflow
from workflows.licence import LicenceWorkflow
from workflows.rescreening import RescreeningWorkflow

# The production set, on the main queue. The bench adds its bare yardstick workflow to its own worker only.
WORKFLOWS: Sequence[type] = (ImportRequestWorkflow, LicenceWorkflow, RescreeningWorkflow)
# The entity workflows, on the entity queue (chipclear/contracts.py `entity_queue`).
ENTITY_WORKFLOWS: Sequence[type] = (AllocationLedgerWorkflow, ExporterWorkflow)
# Every workflow a deployment runs, on either queue: what a replayer of its histories needs.
ALL_WORKFLOWS: Sequence[type] = (*WORKFLOWS, *ENTITY_WORKFLOWS)
LOCAL_ACTIVITY_SLOTS = 200
# SIGTERM: in-flight tasks get GRACE to finish (a store call ends within its 5 s busy timeout), then are
# cancelled; the process is gone within SHUTDOWN_LIMIT whatever still hangs (a second signal: at once).
GRACE = timedelta(seconds=10)
SHUTDOWN_LIMIT = 30.0


class ChipclearWorker:
    """The worker for a deployment's task queue and its two side queues: the requests and licences,
    the entity workflows, and the activities that call the entities."""

    def __init__(self, main: Worker, entities: Worker, ledger_calls: Worker) -> None:
        self.main = main
        self.entities = entities
        self.ledger_calls = ledger_calls

    @property
    def task_queue(self) -> str:
        return self.main.task_queue

    async def __aenter__(self) -> ChipclearWorker:
        await self.main.__aenter__()
        await self.entities.__aenter__()
        await self.ledger_calls.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        # Callers drain before what they call: a request's first workflow task waits on local
        # activities that update the ledger, and the entity-call activities update it too. With the
        # entities stopped first, those updates were never answered, the local activities retried,
        # and the drain hung until the process was killed.
        callers = await asyncio.gather(
            self.main.__aexit__(*exc), self.ledger_calls.__aexit__(*exc), return_exceptions=True
        )
        await self.entities.__aexit__(*exc)  # stopped whatever the callers' drains raised
        for failed in callers:
            if isinstance(failed, BaseException):
                raise failed


def workflow_runner(sandbox: bool = True, converter: DataConverter = DATA_CONVERTER) -> WorkflowRunner:
    """How workflow code runs, the same in a worker and in the replayer.

    The sandbox passes `cryptography` through: a signature that fails to verify raises
    InvalidSignature from cryptography's Rust core, which cannot import a sandbox-made copy of the
    exception module; passed through, a forged act is refused instead of aborting the process.

    It passes `chipclear` and `activities` through too. The workflow modules import them only inside
    `imports_passed_through()` already, but the sandbox still re-imported what those imports pulled in
    for every new workflow run: measured, 0.2-0.3 s of CPU per run against 0.05-0.1 s passed through.
    After a restart a worker replays every open workflow at once, so that cost made its first workflow
    tasks take seconds each (issue 16). `workflows` stays sandboxed: its code is what must be checked.
    """
    if not sandbox:
        return UnsandboxedWorkflowRunner()
    compile_once()  # each run imports its workflow module afresh: compiled once (chipclear/workflow_code.py)
    # Per payload, the sandbox is asked about contexts that `converter` never reads: answered outside it.
    return sandbox_for(
        converter,
        SandboxRestrictions.default.with_passthrough_modules("cryptography", "chipclear", "activities"),
    )


def build_worker(
    client: Client,
    *,
    task_queue: str,
    store: EventStore,
    policy: Policy,
    executor: ThreadPoolExecutor,
    sandbox: bool = True,
    replace: Sequence[Callable[..., Any]] = (),
    search_attributes: bool = False,
    extra_workflows: Sequence[type] = (),
    extra_activities: Sequence[Callable[..., Any]] = (),
    outage: StoreOutage | None = None,
    tuning: WorkerTuning = WorkerTuning(),
    **options: Any,
) -> ChipclearWorker:
    """Everything chipclear registers for one task queue. Tests build their workers here too.

    `replace`: activities that stand in for the real ones of the same name (tests inject failures).
    `extra_workflows`, `extra_activities`: registered beside chipclear's own on the main task queue
    (the bench's yardstick workflow and its activity). `outage`: where the store activities note an
    outage (the readiness probe reads it). `tuning`: its slots, pollers and cache (the caller sizes
    the executor).
    """
    outage = outage or StoreOutage()
    events = EventActivities(store, policy, search_attributes=search_attributes, outage=outage)
    screening = ScreeningActivities(store, outage)
    ledger = AllocationActivities(client)
    rescreening = RescreeningActivities(client, store)
    options.setdefault("workflow_runner", workflow_runner(sandbox, client.data_converter))
    stand_ins = {_activity_name(fake): fake for fake in replace}

    def swapped(activities: list[Callable[..., Any]]) -> list[Callable[..., Any]]:
        return [stand_ins.get(_activity_name(real), real) for real in activities]

    # The two workers that run workflows and their store activities, on the same threads and tuning.
    workflows_and_appends: dict[str, Any] = dict(
        activity_executor=executor,
        max_concurrent_activities=tuning.activity_threads,
        workflow_task_poller_behavior=PollerBehaviorSimpleMaximum(tuning.workflow_task_pollers),
        max_cached_workflows=tuning.sticky_cache,
        graceful_shutdown_timeout=GRACE,
        **options,
    )
    main = Worker(
        client,
        task_queue=task_queue,
        workflows=[*WORKFLOWS, *extra_workflows],
        activities=swapped(
            [
                events.append_events,
                events.current_policy,
                events.register_invoices,
                events.release_invoices,
                screening.screen_parties,
                # A local activity on the hot path (workflows/import_request.py `_fetch`).
                events.claim_buyer_units,
                # The ledger's reservation, a local activity in the request's first task (histories
                # recorded before `reserve-in-first-task` schedule it on the entity-call queue instead).
                ledger.reserve_units,
                # The licence's opening read; and its start by a request, in histories recorded before
                # licences opened at their first use (chipclear.licence_opening).
                events.open_licence,
                ledger.start_licence,
                *extra_activities,
            ]
        ),
        max_concurrent_workflow_tasks=tuning.workflow_task_slots,
        # The sync ones queue for the thread pool anyway; the async entity calls mostly wait.
        max_concurrent_local_activities=LOCAL_ACTIVITY_SLOTS,
        **workflows_and_appends,
    )
    # Apart from the requests, on slots of their own (chipclear/contracts.py `entity_queue`).
    entities = Worker(
        client,
        task_queue=entity_queue(task_queue),
        workflows=ENTITY_WORKFLOWS,
        # The entities' appends and reads: the policy, and which requests they carry hold their licence.
        activities=swapped([events.append_events, events.current_policy, events.licensed_requests]),
        max_concurrent_workflow_tasks=tuning.entity_task_slots,
        **workflows_and_appends,
    )
    ledger_calls = Worker(
        client,
        task_queue=ledger_calls_queue(task_queue),
        activities=swapped(
            [
                ledger.reserve_units,
                ledger.release_units,
                # Scheduled on this queue by requests (a regular activity): the store's call, in a thread.
                events.release_buyer_units,
                ledger.count_china_shipment,
                rescreening.live_targets,
                rescreening.rescreen_target,
            ]
        ),
        # Async and mostly waiting on the ledger: many may be in flight at little cost.
        max_concurrent_activities=1_000,
        graceful_shutdown_timeout=GRACE,
    )
    return ChipclearWorker(main, entities, ledger_calls)


def _activity_name(function: Callable[..., Any]) -> str:
    # Every chipclear activity is registered under its function's name (`@activity.defn(name=…)`).
    return function.__name__


async def run_worker(
    settings: Settings,
    *,
    policy: Policy | None = None,
    client: Client | None = None,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
    extra_workflows: Sequence[type] = (),
    extra_activities: Sequence[Callable[..., Any]] = (),
) -> None:
    """Run a worker until `stop` is set; `ready` is set once it polls. See `build_worker` for the extras."""
    log = get_logger("chipclear.worker")
    policy = require_keys(policy or load_policy(settings.policy, home=settings.home))
    # Every event is sealed with the recorder key, and it must be one the policy trusts: checked first.
    recorder = load_recorder(settings.home, policy)
    schedule = CheckpointSchedule.from_env()
    # Probes first: alive while connecting (which may take a minute), ready only once polling.
    health = Health()
    probes = (
        await serve_health(health, settings.health_port, settings.health_host)
        if settings.health_port
        else None
    )
    store: EventStore | None = None
    try:
        # The store first: a wrong URL or an unmigrated schema fails at once, before a minute of retries.
        store = health.store = open_event_store(settings.event_store_url).seal_with(recorder)
        # One version label, one content, for good: refused here (exit 2) if the label is taken.
        log.info("policy", version=policy.version, sha256=record_policy(store, policy))
        if client is None:
            log.info("connecting to Temporal")
            client = await connect_patiently(
                metrics_port=settings.metrics_port, metrics_host=settings.metrics_host
            )
        async with checkpointing(store, recorder, schedule, health.outage):
            await _serve(
                client,
                store,
                policy,
                settings,
                health,
                stop or asyncio.Event(),
                ready,
                extra_workflows=extra_workflows,
                extra_activities=extra_activities,
            )
    finally:
        if probes is not None:
            await probes.cleanup()
        if store is not None:
            store.close()
    log.info("worker stopped", task_queue=settings.task_queue)


async def _serve(
    client: Client,
    store: EventStore,
    policy: Policy,
    settings: Settings,
    health: Health,
    stop: asyncio.Event,
    ready: asyncio.Event | None,
    *,
    extra_workflows: Sequence[type],
    extra_activities: Sequence[Callable[..., Any]],
) -> None:
    log = get_logger("chipclear.worker")
    try:
        indexed = await search_attributes.ready(client)
    except RPCError as exc:  # a cluster that does not let this worker list them
        log.warning("cannot check search attributes", error=str(exc))
        indexed = False
    if not indexed:
        log.warning("search attributes missing: the Web UI cannot filter requests; run `chipclear setup`")
    tuning = settings.tuning
    with ThreadPoolExecutor(max_workers=tuning.activity_threads, thread_name_prefix="activity") as executor:
        worker = build_worker(
            client,
            task_queue=settings.task_queue,
            store=store,
            policy=policy,
            executor=executor,
            sandbox=settings.sandbox,
            search_attributes=indexed,
            extra_workflows=extra_workflows,
            extra_activities=extra_activities,
            outage=health.outage,
            tuning=tuning,
        )
        async with worker:
            log.info(
                "worker started",
                task_queue=settings.task_queue,
                namespace=client.namespace,
                policy_version=policy.version,
                event_store=redact(settings.event_store_url),
                sandbox=settings.sandbox,
                metrics_port=settings.metrics_port,
                health_port=settings.health_port,
            )
            health.polling = True
            if ready is not None:
                ready.set()
            await stop.wait()
            health.polling = False
            log.info("worker draining", task_queue=settings.task_queue)


def install_signal_handlers(stop: asyncio.Event, limit: float | None = None) -> None:
    """The first SIGINT/SIGTERM drains (GRACE for in-flight tasks). With `limit` (the worker process),
    the process ends within `limit` seconds even if something hangs (a store that never answers), and at
    once on a second signal; without it (`chipclear up`, which must stop its dev server after the
    worker), a second signal is ignored like the first."""
    loop = asyncio.get_running_loop()

    def stop_or_exit(sig: signal.Signals) -> None:
        if limit is None:
            stop.set()
            return
        if stop.is_set():
            _exit_now(f"second {sig.name}")
        stop.set()
        watchdog = threading.Timer(limit, _exit_now, (f"not stopped {limit:.0f}s after {sig.name}",))
        watchdog.daemon = True
        watchdog.start()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_or_exit, sig)


def _exit_now(reason: str) -> None:
    get_logger("chipclear.worker").error("worker exiting without draining", reason=reason)
    logging.shutdown()
    os._exit(1)


async def _until_signalled(settings: Settings) -> None:
    stop = asyncio.Event()
    install_signal_handlers(stop, SHUTDOWN_LIMIT)
    await run_worker(settings, stop=stop)


def main(settings: Settings | None = None) -> None:
    """The worker process: configure logging, run until SIGINT/SIGTERM, drain, return.

    `settings`: as the environment gives them unless the caller (the CLI, with its options) has its own.
    """
    configure()
    asyncio.run(_until_signalled(settings or Settings.from_env()))
