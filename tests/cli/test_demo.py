"""`chipclear demo` ends clean: every request final with its compensations stored, nothing left running.

One run of the demo against the session's real dev server, in a home of its own; then the server and
the event store are asked what the demo left behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from chipclear.config import Settings
from chipclear.contracts import ledger_id, ledger_stream, workflow_id
from chipclear.demo import DemoRun, run_demo
from chipclear.domain import events as ev
from chipclear.domain.allocation import UnitsGranted, UnitsReleased
from chipclear.domain.events import StoredEvent
from chipclear.projections import open_event_store
from chipclear.store.protocol import EventStore
from tests.wedge_check import on_deployment


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo-home")


@pytest.fixture(scope="module")
def settings(home: Path) -> Settings:
    return Settings(
        home=home, event_store_url=f"sqlite:///{home / 'events.db'}", task_queue="demo-test", policy=None
    )


@pytest.fixture(scope="module")
async def demo(client: Client, settings: Settings) -> DemoRun:
    return await run_demo(settings, client=client)


@pytest.fixture
def store(settings: Settings) -> Iterator[EventStore]:
    with closing(open_event_store(settings.event_store_url)) as events:
        yield events


async def test_no_workflow_of_the_demo_is_left_running(client: Client, demo: DemoRun) -> None:
    ids = [workflow_id(rid) for rid in demo.request_ids] + demo.entity_ids
    assert ledger_id(demo.task_queue) in ids and len(demo.entity_ids) > 1  # the ledger and buyer caps
    for found in ids:
        try:
            description = await client.get_workflow_handle(found).describe()
        except Exception:  # a buyer cap never started (screening stopped its only request): nothing runs
            assert found in demo.entity_ids, found
            continue
        assert description.status != WorkflowExecutionStatus.RUNNING, f"{found} is still running"
        if found in demo.entity_ids:  # the Web UI's list says at once that these are not requests
            summary = await description.static_summary()
            assert summary is not None and summary.startswith("not a request: "), (found, summary)
    # And nothing else on the demo's task queue: visibility catches up within moments of the closes.
    query = f'{on_deployment(demo.task_queue)} AND ExecutionStatus = "Running"'
    running: list[str] = []
    for _ in range(50):
        running = [execution.id async for execution in client.list_workflows(query)]
        if not running:
            break
        await asyncio.sleep(0.2)
    assert running == []


def _of(stored: list[StoredEvent], kind: type[object]) -> list[object]:
    return [event.data for event in stored if isinstance(event.data, kind)]


async def test_every_request_is_final_with_the_compensations_the_ledger_implies(
    demo: DemoRun, store: EventStore
) -> None:
    ledger = store.read_stream(ledger_stream(ledger_id(demo.task_queue)))
    granted = {g.request_id: g for g in _of(ledger, UnitsGranted) if isinstance(g, UnitsGranted)}
    released = {r.request_id: r for r in _of(ledger, UnitsReleased) if isinstance(r, UnitsReleased)}
    assert released, "the demo's state-funded data centre gives its units back: the ledger records it"
    outcomes: dict[str, str] = {}
    for request_id in demo.request_ids:
        stream = store.read_stream(request_id)
        final = [e for e in stream if isinstance(e.data, ev.LicenseIssued | ev.GateDenied)]
        assert final, f"{request_id} has no final event: {[e.type for e in stream]}"
        licensed = isinstance(final[-1].data, ev.LicenseIssued)
        outcomes[request_id] = "licensed" if licensed else "denied"
        # What the ledger gave back, the request's own stream records, unit for unit and batch for batch.
        gave_back = [e for e in _of(stream, ev.AllocationReleased) if isinstance(e, ev.AllocationReleased)]
        if request_id in released:
            assert [(e.batch_id, e.units) for e in gave_back] == [
                (released[request_id].batch_id, released[request_id].units)
            ], request_id
        # Units the ledger granted to a request that holds no licence must have gone back.
        if request_id in granted and not licensed:
            assert request_id in released, (
                f"{request_id} was denied but kept its {granted[request_id].units} units"
            )
        # An export approval a request never used goes back to its buyer's cap.
        approved_export = any(
            isinstance(e.data, ev.GateApproved) and e.data.gate == "us-export" for e in stream
        )
        export_back = _of(stream, ev.ExportApprovalReleased)
        assert bool(export_back) == (approved_export and not licensed), request_id
    assert sorted(outcomes.values()).count("denied") == 3 and "licensed" in outcomes.values()
