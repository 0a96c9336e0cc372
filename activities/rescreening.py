"""The re-screening fan-out's calls: find the live requests and licences, ask each to screen again.

Each target screens itself (its own activity reads the list in force and its own rules decide), so
these only find and ask. Asking again is harmless: a target already screened against the list records
nothing new. They run on the entity-call queue, beside the other calls that wait on a workflow.
"""

from __future__ import annotations

import base64

from temporalio import activity
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from chipclear.contracts import (
    REQUEST_WORKFLOW,
    RESCREEN_UPDATE,
    LicenceActResult,
    LiveWorkflow,
    RescreenOutcome,
    RescreenPage,
    RescreenPageInput,
    RescreenTarget,
    TransitionResult,
    home_queue,
    live_targets_query,
)
from chipclear.domain.commands import Rescreen
from chipclear.temporal import refusal


class RescreeningActivities:
    def __init__(self, client: Client) -> None:
        self.client = client

    @activity.defn(name="live_targets")
    async def live_targets(self, input: RescreenPageInput) -> RescreenPage:
        """One page of the running requests and licences of this deployment (visibility store)."""
        queue = home_queue(activity.info().task_queue)
        token = base64.b64decode(input.page_token) if input.page_token else None
        pages = self.client.list_workflows(
            live_targets_query(queue), page_size=input.page_size, next_page_token=token
        )
        await pages.fetch_next_page()
        found = [
            LiveWorkflow(workflow_id=execution.id, workflow_type=execution.workflow_type)
            for execution in pages.current_page or []
        ]
        following = pages.next_page_token
        return RescreenPage(
            targets=found, next_page_token=base64.b64encode(following).decode() if following else None
        )

    @activity.defn(name="rescreen_target")
    async def rescreen_target(self, target: RescreenTarget) -> RescreenOutcome:
        """Ask one request or licence to screen its parties against the list in force."""
        is_request = target.workflow_type == REQUEST_WORKFLOW
        kind: str = "request" if is_request else "licence"
        handle = self.client.get_workflow_handle(target.workflow_id)
        command = Rescreen(list_version=target.list_version)
        try:
            if is_request:
                moved = await handle.execute_update(RESCREEN_UPDATE, command, result_type=TransitionResult)
                outcome = "denied" if "GateDenied" in moved.events else "held" if moved.held else "clear"
            else:
                licence = await handle.execute_update(RESCREEN_UPDATE, command, result_type=LicenceActResult)
                outcome = "suspended" if "LicenceSuspended" in licence.events else "clear"
        except WorkflowUpdateFailedError as exc:
            said = refusal(exc)
            # A target that became final since the page was read has nothing left to screen.
            final = any(word in said for word in ("already final", "exhausted", "expired"))
            return RescreenOutcome.model_validate(
                {
                    "workflow_id": target.workflow_id,
                    "kind": kind,
                    "outcome": "closed" if final else "failed",
                    "detail": said,
                }
            )
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND and "already completed" not in exc.message:
                raise
            return RescreenOutcome.model_validate(
                {"workflow_id": target.workflow_id, "kind": kind, "outcome": "closed"}
            )
        return RescreenOutcome.model_validate(
            {"workflow_id": target.workflow_id, "kind": kind, "outcome": outcome}
        )
