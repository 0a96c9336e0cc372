"""The checks that bad input left nothing broken behind: no wedged workflow, no row without its event.

A workflow is wedged when its last workflow task failed (a payload over Temporal's limit, an exception
on data the code did not expect): the server retries that task forever and nothing but a hand
`terminate` ends it. A store row without its event (an invoice registered to a request that recorded
nothing, a projection row with no stream) is a fact the legal record cannot explain.

The no-wedge property test, the bad-input corpus and the end-of-session check in tests/conftest.py all
call these, so "nothing broken behind" means the same thing everywhere.
"""

from __future__ import annotations

from collections import Counter
from contextlib import closing
from typing import Any

from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle

from chipclear.contracts import entity_queue
from chipclear.projections import list_requests, open_event_store
from chipclear.store.protocol import EventStore
from chipclear.store.transfer import ExportedEvent, ExportedInvoice, ExportedStream
from tests.store.support import store_url

# The events after which a workflow task is (again) due or under way, and those that end one.
_TASK_FAILED = {EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED, EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT}


# Failures the server itself causes as a matter of course and that retry cleanly: a signal or update that
# arrived while the task completed (the worker runs it again with the news), a lost sticky cache.
_ROUTINE = {
    WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND,
    WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_RESET_STICKY_TASK_QUEUE,
}


def on_deployment(task_queue: str) -> str:
    """A visibility query for every workflow of the deployment on `task_queue`: its requests and
    licences, and its entities on their own queue."""
    return f'(TaskQueue = "{task_queue}" OR TaskQueue = "{entity_queue(task_queue)}")'


async def task_failures(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """Every failed workflow task in the run's history, with its cause, but for the routine ones above.
    (A task that timed out on a busy machine is retried; one that keeps failing shows in `wedged`.)"""
    found = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            attributes = event.workflow_task_failed_event_attributes
            if attributes.cause in _ROUTINE:
                continue
            found.append(f"{handle.id}: workflow task failed ({attributes.failure.message[:200]})")
    return found


async def wedged(client: Client, query: str = "") -> list[str]:
    """Running workflows (matching the visibility `query`) that cannot move: one whose last workflow
    task failed, and which is therefore stuck retrying it. A request waiting for a person or a timer
    has its last workflow task completed and is not wedged."""
    stuck = []
    async for execution in client.list_workflows(query or None):
        if execution.status != WorkflowExecutionStatus.RUNNING:
            continue
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        description = await handle.describe()
        pending = description.raw_description.pending_workflow_task
        if pending.attempt > 1:  # a task is being retried after a failure: wedged
            stuck.append(f"{execution.id}: workflow task on attempt {pending.attempt}")
            continue
        last_task_event = None
        async for event in handle.fetch_history_events():
            if event.event_type in (
                *_TASK_FAILED,
                EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
            ):
                last_task_event = event.event_type
        if last_task_event in _TASK_FAILED:
            stuck.append(f"{execution.id}: its last workflow task failed")
    return stuck


async def assert_no_wedged_workflows(client: Client, query: str = "") -> None:
    stuck = await wedged(client, query)
    assert not stuck, "wedged workflows: " + "; ".join(stuck)


def orphan_rows(store: EventStore) -> list[str]:
    """Store rows that no stored event explains: invoices held for a request with no stream, projection
    rows for a request with no stream, stream heads ahead of their events."""
    records = list(store.dump())
    heads = {r.stream_id: r.version for r in records if isinstance(r, ExportedStream)}
    stored = Counter(r.stream_id for r in records if isinstance(r, ExportedEvent))
    streams = set(stored)
    found = [
        f"invoice {r.invoice_key} is registered to {r.request_id}, which has no stored event"
        for r in records
        if isinstance(r, ExportedInvoice) and r.request_id is not None and r.request_id not in streams
    ]
    found += [
        f"projection row {row.request_id} has no stored event"
        for row in list_requests(store)
        if row.request_id not in streams
    ]
    found += [
        f"stream {stream}: head at version {heads.get(stream, 0)}, {stored[stream]} event(s) stored"
        for stream in set(heads) | streams
        if heads.get(stream, 0) != stored[stream]
    ]
    return found


def assert_no_orphan_rows(*stores: EventStore) -> None:
    found = [problem for store in stores for problem in orphan_rows(store)]
    assert not found, "rows without their event: " + "; ".join(found[:10])


class WedgeWatch:
    """The task queues and stores that bad-input tests used, checked once more at the end of the session
    (the `wedge_watch` fixture in tests/conftest.py): a workflow may wedge after its test has passed, on
    a timer or a late task, and a row may be orphaned by a compensation that never ran."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.queues: set[str] = set()
        self.stores: set[str] = set()

    def watch(self, store: EventStore | None = None, task_queue: str | None = None) -> None:
        """Check this store (it may be closed by then: it is opened again by URL) and the workflows on
        this task queue at the end of the session."""
        if store is not None:
            self.stores.add(store_url(store))
        if task_queue is not None:
            self.queues.add(task_queue)

    async def check(self) -> None:
        problems = [
            problem
            for queue in sorted(self.queues)
            for problem in await wedged(self.client, on_deployment(queue))
        ]
        for url in sorted(self.stores):
            with closing(open_event_store(url)) as store:
                problems += orphan_rows(store)
        assert not problems, "left behind by bad-input tests: " + "; ".join(problems[:10])
