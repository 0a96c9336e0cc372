"""Connecting to Temporal the same way everywhere: worker, CLI, replayer and tests.

One data converter for all of them, because a payload written by one must be read by every other,
including histories replayed years later.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.envconfig import ClientConfig
from temporalio.exceptions import ApplicationError
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.service import RPCError, RPCStatusCode

from chipclear.codec import data_converter, keys_from_env
from chipclear.config import DEFAULT_ADDRESS, DEFAULT_LISTEN_HOST, ConfigError
from chipclear.domain.limits import cut, cut_text
from chipclear.payload_converter import PYDANTIC_CONVERTER

if TYPE_CHECKING:
    from chipclear.contracts import Entity  # the contracts import the domain's models

# The converter without encryption: tests, the replayer and anything that must read payloads as stored.
DATA_CONVERTER = PYDANTIC_CONVERTER


def turned_away_to_continue(exc: WorkflowUpdateFailedError) -> bool:
    """An entity turned the update away only because its run is about to continue as new: send it
    again, and it reaches the next run (workflows/entity.py `admit`)."""
    from chipclear.contracts import CONTINUING_AS_NEW  # here: the contracts import the domain's models

    return isinstance(exc.cause, ApplicationError) and exc.cause.type == CONTINUING_AS_NEW


# How the server words its refusal of an update once a run has taken its budget of distinct updates.
_BUDGET_SPENT = "limit on the total number of distinct updates"
# ...and while the entity's last workflow task has failed (under a rush, its completion can itself run into
# the budget), until the server's retry of that task succeeds.
_TASK_FAILED = "workflow task in failed state"
# The server is busy: past its limit of updates in flight on one workflow, or unavailable for a moment.
_BUSY = frozenset({RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.UNAVAILABLE, RPCStatusCode.ABORTED})

# An update call that failed for a reason sending it again can cure.
EntityCallError = (WorkflowUpdateFailedError, RPCError, WorkflowUpdateRPCTimeoutOrCancelledError)


def update_budget_spent(exc: RPCError) -> bool:
    """The server refused an update because the run has taken all the updates it may
    (`history.maxTotalUpdates`, 2,000 by default: those it completed and those it holds). An entity's
    run comes near it only while it closes under a rush (workflows/entity.py `admit`), and the next run
    takes the update."""
    return exc.status == RPCStatusCode.FAILED_PRECONDITION and _BUDGET_SPENT in exc.message.lower()


def send_again_because(exc: BaseException) -> str | None:
    """Why an update to an entity (the ledger, an exporter) failed for now only, so that sending it again
    soon will do (the entity is continuing as new, the server is busy, the closing run has spent its update
    budget, or its last workflow task failed and the server is retrying it); None when the failure is the
    answer (the entity's rules refused it, a bad call), or when the caller is being cancelled.

    The SDK reports a call cancelled by its caller as WorkflowUpdateRPCTimeoutOrCancelledError, like one the
    server did not answer in time, and the cancellation itself is spent on it: a caller that sent such a
    call again would outlive its own cancellation, retrying for ever (a benchmark whose measurement timed
    out kept thousands of calls going after its server had stopped).
    """
    if _being_cancelled():
        return None
    if isinstance(exc, WorkflowUpdateFailedError):
        return "continuing as new" if turned_away_to_continue(exc) else None
    if isinstance(exc, WorkflowUpdateRPCTimeoutOrCancelledError):
        return "no answer in time"
    if isinstance(exc, RPCError):
        if update_budget_spent(exc):
            return "its run has spent its update budget"
        if exc.status == RPCStatusCode.FAILED_PRECONDITION and _TASK_FAILED in exc.message.lower():
            return "its workflow task failed and is being retried"
        if exc.status in _BUSY:
            return "the server is busy"
    return None


T = TypeVar("T", bound=BaseModel)


async def update_entity(
    client: Client, entity: Entity, name: str, command: BaseModel, result_type: type[T]
) -> T:
    """Send one update to `entity`, starting it if it is not running (never started, or ended).

    Plainly first: nearly every call finds the entity running, and an update-with-start makes the server
    try a start each time (measured: 20% more of the dev server's CPU a reservation, and 10% fewer
    reservations a second; docs/performance.md). A call that finds no running workflow sends it again
    with the start, which starts one or uses the one a concurrent caller just started."""
    answer: T
    try:
        answer = await client.get_workflow_handle(entity.workflow_id).execute_update(
            name, command, result_type=result_type
        )
        return answer
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
    operation = entity.start()
    try:
        answer = await client.execute_update_with_start_workflow(
            name, command, start_workflow_operation=operation, result_type=result_type
        )
        return answer
    finally:
        settle_start(operation)


def settle_start(operation: WithStartWorkflowOperation[Any, Any]) -> None:
    """Take the start operation's outcome whenever it comes, so a failed start is not logged as an
    ERROR "Future exception was never retrieved" traceback when it is collected: the update's own error
    already says it all.

    The SDK keeps the outcome in a private future, which may settle after the call has failed (a
    cancellation); awaiting `workflow_handle()` would wait forever when the call failed before the
    start was even tried."""
    operation._workflow_handle.add_done_callback(taken)


def taken(future: asyncio.Future[Any]) -> None:
    """A done callback that retrieves a future's outcome and drops it."""
    if not future.cancelled():
        future.exception()


def _being_cancelled() -> bool:
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no event loop runs here: nothing to cancel
        return False
    return task is not None and task.cancelling() > 0


def refusal(exc: WorkflowUpdateFailedError) -> str:
    """What a refused update says, in the handler's or validator's own words, without the error type."""
    return getattr(exc.cause, "message", None) or str(exc.cause or exc)


class ServerUnavailable(RuntimeError):
    """The Temporal server cannot be reached; the message tells the user what to start."""


def connect_config() -> dict[str, Any]:
    """TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TLS and envconfig profiles."""
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    config.setdefault("target_host", DEFAULT_ADDRESS)
    return config


def _core_logging() -> LoggingConfig:
    """The SDK core's own log lines (a slow workflow task, a poll that failed) go through Python's
    logging, and so to stderr with chipclear's own: by default the core prints them to stdout, in the
    middle of a command's output (`bench --json` did not parse)."""
    return LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
    )


@functools.cache
def runtime() -> Runtime:
    """The one runtime of a process without a metrics endpoint."""
    return Runtime(telemetry=TelemetryConfig(logging=_core_logging()))


@functools.cache
def metrics_runtime(port: int, host: str = DEFAULT_LISTEN_HOST) -> Runtime:
    """One runtime per process and address: it serves Prometheus /metrics for the SDK's own metrics
    (prefixed temporal_) and chipclear's (prefixed chipclear_)."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # an IPv6 address in brackets
    metrics = PrometheusConfig(bind_address=address, counters_total_suffix=True)
    telemetry = TelemetryConfig(logging=_core_logging(), metrics=metrics, metric_prefix="temporal_")
    return Runtime(telemetry=telemetry)


async def connect(
    *, metrics_port: int | None = None, metrics_host: str = DEFAULT_LISTEN_HOST, **overrides: Any
) -> Client:
    config = connect_config() | overrides
    if "runtime" not in config:
        config["runtime"] = runtime() if metrics_port is None else metrics_runtime(metrics_port, metrics_host)
    try:
        # Sealed with CHIPCLEAR_CODEC_KEYS when set: the worker and every CLI command alike.
        # Without keys, a sealed payload is named as a key mismatch (one sentence), not a parse error.
        converter = data_converter(keys_from_env(), refuse_sealed=True)
        client = await Client.connect(**config, data_converter=converter)
    except ValueError as exc:  # the SDK's own check of the address: not a server that is down
        raise ConfigError(
            f"TEMPORAL_ADDRESS {cut(str(config['target_host']))} is not a host:port address "
            f"({cut_text(str(exc))}); e.g. TEMPORAL_ADDRESS=127.0.0.1:7233"
        ) from None
    except RuntimeError as exc:
        raise ServerUnavailable(
            f"cannot reach the Temporal server at {config['target_host']} "
            f"(namespace {config.get('namespace', 'default')}): start it with `chipclear server` "
            "or `make up`, or set TEMPORAL_ADDRESS"
        ) from exc
    await _require_namespace(client, config)
    return client


async def _require_namespace(client: Client, config: dict[str, Any]) -> None:
    """A namespace that does not exist is named now: later, every call would answer "not found" and
    the user would look for a missing request instead of a misspelt TEMPORAL_NAMESPACE."""
    namespace = client.namespace
    try:
        await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=namespace))
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise ConfigError(
                f"TEMPORAL_NAMESPACE {cut(namespace)}: no such namespace on the Temporal server at "
                f"{cut_text(str(config['target_host']))} (create it, or name one that exists)"
            ) from None
        # Anything else (a key that may not describe namespaces) is left to the first real call.


async def connect_patiently(within: float = 60.0, **overrides: Any) -> Client:
    """Connect, retrying while the server starts: workers often start alongside it (up, compose, k8s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            return await connect(**overrides)
        except ServerUnavailable:
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(1.0)
