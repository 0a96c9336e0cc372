"""Worker tuning from the environment (CHIPCLEAR_WORKFLOW_TASK_SLOTS and the others): read and checked
like every setting, applied to the worker, and a worker at the small end still takes requests to the end.

The defaults' figures are in docs/performance.md ("Worker tuning"); no test times anything.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from chipclear.config import ConfigError, Settings, WorkerTuning
from chipclear.contracts import deployment
from chipclear.domain.models import Status
from chipclear.store.sqlite import SQLiteEventStore
from tests.cli.test_cli import chipclear, hermetic_env, refused
from tests.conftest import running_worker
from tests.factories import make_policy, make_request
from tests.workflows.support import assert_store_matches, start

SMALL = {
    "CHIPCLEAR_WORKFLOW_TASK_SLOTS": "2",
    "CHIPCLEAR_ENTITY_TASK_SLOTS": "2",
    "CHIPCLEAR_WORKFLOW_TASK_POLLERS": "2",
    "CHIPCLEAR_ACTIVITY_THREADS": "1",
    "CHIPCLEAR_STICKY_CACHE": "0",
}


def test_the_defaults_and_what_the_environment_sets() -> None:
    assert Settings.from_env({}).tuning == WorkerTuning(
        workflow_task_slots=100,
        entity_task_slots=50,
        workflow_task_pollers=5,
        activity_threads=16,
        sticky_cache=1000,
    )
    assert Settings.from_env(SMALL).tuning == WorkerTuning(
        workflow_task_slots=2,
        entity_task_slots=2,
        workflow_task_pollers=2,
        activity_threads=1,
        sticky_cache=0,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHIPCLEAR_WORKFLOW_TASK_SLOTS", "1"),  # the SDK needs two with a sticky cache
        ("CHIPCLEAR_WORKFLOW_TASK_SLOTS", "lots"),
        ("CHIPCLEAR_ENTITY_TASK_SLOTS", "0"),
        ("CHIPCLEAR_WORKFLOW_TASK_POLLERS", "0"),
        ("CHIPCLEAR_ACTIVITY_THREADS", "-4"),
        ("CHIPCLEAR_ACTIVITY_THREADS", "1e3"),
        ("CHIPCLEAR_STICKY_CACHE", "2000000"),
    ],
)
def test_a_value_out_of_range_is_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}: expected a whole number from "):
        Settings.from_env({name: value})


def test_a_worker_given_a_bad_value_exits_2_in_one_sentence(tmp_path: Path) -> None:
    env = hermetic_env(CHIPCLEAR_HOME=str(tmp_path), CHIPCLEAR_WORKFLOW_TASK_POLLERS="many")
    refused(chipclear(env, "worker"), "CHIPCLEAR_WORKFLOW_TASK_POLLERS: expected a whole number", code=2)


# With no sticky cache the SDK drops each run after its task, and cancels that run's local activities even
# when they have finished, and then warns it found none to cancel: expected here, and nothing else is.
@pytest.mark.filterwarnings("ignore:Cannot find activity to cancel for token:UserWarning")
async def test_a_worker_at_the_small_end_takes_requests_to_the_end(
    client: Client, store: SQLiteEventStore
) -> None:
    """Two workflow-task slots, one activity thread and no sticky cache (every task replays its
    history): slower, never stuck, and the record is the same."""
    tuning = Settings.from_env(SMALL).tuning
    requests = [make_request(request_id=f"small-{n}", units=1_000) for n in range(3)]
    async with running_worker(client, store, make_policy("auto"), tuning=tuning) as worker:
        config = worker.main.config()
        assert (config["max_concurrent_workflow_tasks"], config["max_cached_workflows"]) == (2, 0)
        assert config["max_concurrent_activities"] == 1
        assert worker.entities.config()["max_concurrent_workflow_tasks"] == 2
        handles = [await start(client, store, worker, request) for request in requests]
        results = [await handle.result() for handle in handles]
    for request, result in zip(requests, results, strict=True):
        assert result.status == Status.LICENSED
        assert_store_matches(store, request.request_id, result)


async def test_every_first_task_claims_its_cap_once_however_few_the_request_slots(
    client: Client, store: SQLiteEventStore
) -> None:
    """Two request slots and four requests of four buyers in their first workflow task at once, each
    claiming its buyer's cap in a local activity. When the caps were entity workflows, the claim waited
    for the cap's own workflow task, and on shared slots no cap could run until the claims' tasks gave up
    (the bench's slow mode); the claim is now one store transaction, and every first task ends having
    done its whole step."""
    tuning = WorkerTuning(workflow_task_slots=2, entity_task_slots=2)
    requests = [
        make_request(
            request_id=f"rush-{n}",
            units=1_000,
            buyer={"name": f"Rush Buyer {n}", "country": "CN", "kind": "private"},
        )
        for n in range(4)
    ]
    policy = make_policy("auto", us_export={"max_units_per_buyer": 10_000})
    async with running_worker(client, store, policy, tuning=tuning) as worker:
        handles = await asyncio.gather(*(start(client, store, worker, request) for request in requests))
        # On shared slots with caps as workflows these never finished: each claim timed out, and the
        # request's task failed and retried. The limit only turns such a wedge into a failure.
        results = await asyncio.wait_for(asyncio.gather(*(handle.result() for handle in handles)), 90)
        for request, handle, result in zip(requests, handles, results, strict=True):
            assert result.status == Status.LICENSED
            assert_store_matches(store, request.request_id, result)
            history = await handle.fetch_history()
            # Each buyer's cap holds the request's claim, as its approval records it.
            cap = store.buyer_cap(request.buyer.name, deployment(worker.task_queue))
            assert cap.claims == {request.request_id: 1_000}
            # The claim answered within the first workflow task: it completed once, with the append scheduled.
            kinds = [event.event_type for event in history.events]
            first_schedule = kinds.index(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
            assert kinds[:first_schedule].count(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED) == 1, (
                request.request_id,
                [EventType.Name(kind) for kind in kinds[: first_schedule + 1]],
            )
