"""Opening a licence's workflow at its first use: a shipment, a suspension or a re-screening.

A request that ends licensed starts nothing: most of a licence's four years pass with nobody acting on it,
and a workflow, a task and an expiry timer for every licence was a quarter of a request's cost to the server.
Until its first act the licence is wholly its stored record (its terms in the request's stream), which every
reader folds the same way, expiry included (chipclear.domain.licence_terms). Whoever acts first starts its
workflow with update-with-start and waits for it to read those terms; whoever comes after finds it running.
The CLI's acts and the re-screening fan-out share this one way in.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from chipclear.contracts import (
    LICENCE_OPENED_UPDATE,
    StateQuery,
    licence_start,
    licence_workflow_id,
)
from chipclear.domain.licence import LicenceState
from chipclear.domain.state import RequestState


class LicenceEnded(Exception):
    """The licence's workflow ran and has ended (used up or expired): its id is never used again."""


async def open_licence(client: Client, task_queue: str, request: RequestState) -> LicenceState:
    """The licence of `request` (a licensed request's stored state) as its running workflow holds it,
    starting that workflow on the deployment's queue if nobody has yet. LicenceEnded if it has ended."""
    assert request.request is not None and request.licence_id is not None, "a licensed request"
    ended = LicenceEnded(f"licence of {request.request_id!r} has ended")
    if await _closed(client.get_workflow_handle(licence_workflow_id(request.request.request_id))):
        raise ended
    try:
        state: LicenceState = await client.execute_update_with_start_workflow(
            LICENCE_OPENED_UPDATE,
            StateQuery(),
            start_workflow_operation=licence_start(request.request, request.licence_id, task_queue),
            result_type=LicenceState,
        )
    except WorkflowAlreadyStartedError:
        raise ended from None
    except (WorkflowUpdateFailedError, WorkflowFailureError) as exc:
        # Its run ended while the update waited: it expired the moment it opened, or could not open.
        raise ended from exc
    except RPCError as exc:
        # How a server says the id is used up varies (the time-skipping server: ALREADY_EXISTS).
        used_up = exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.ALREADY_EXISTS)
        if not used_up and "already completed" not in exc.message:
            raise
        raise ended from None
    return state


async def _closed(handle: WorkflowHandle[Any, Any]) -> bool:
    """Whether the licence's workflow ran and has closed; asked first, so that an act on an ended
    licence costs one read rather than a refused start."""
    try:
        description = await handle.describe(rpc_timeout=timedelta(seconds=5))
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False  # never opened
        raise
    return description.status != WorkflowExecutionStatus.RUNNING
