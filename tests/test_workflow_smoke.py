from __future__ import annotations

from temporalio.client import Client

from chipclear.domain.models import Status
from chipclear.store.sqlite import SQLiteEventStore
from tests.conftest import running_worker
from tests.factories import make_policy, make_request
from workflows.import_request import ImportRequestInput, ImportRequestWorkflow, workflow_id


async def test_auto_path(client: Client, store: SQLiteEventStore) -> None:
    request = make_request()
    async with running_worker(client, store, make_policy("auto")) as worker:
        result = await client.execute_workflow(
            ImportRequestWorkflow.run,
            ImportRequestInput(request=request),
            id=workflow_id(request.request_id),
            task_queue=worker.task_queue,
        )
    assert result.status is Status.LICENSED
    assert [e.type for e in store.read_stream(request.request_id)][-1] == "LicenseIssued"
