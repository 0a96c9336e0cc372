"""The re-screening fan-out's calls: find the live requests and valid licences, ask each to screen again.

Each target screens itself (its own activity reads the list in force and its own rules decide), so
these only find and ask. Asking again is harmless: a target already screened against the list records
nothing new. They run on the entity-call queue, beside the other calls that wait on a workflow.

Live requests are found in the visibility store (their workflows run); valid licences in the event store,
because a licence's workflow starts only at its first act (chipclear.licence_opening) and a licensed
request's closed workflow leaves visibility after the namespace's retention, years before its licence
ends. One page token walks both: the visibility store's pages, then the store's licensed requests.
"""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime

from temporalio import activity
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from chipclear.contracts import (
    LICENCE_PREFIX,
    LICENCE_WORKFLOW,
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
    licence_workflow_id,
    live_targets_query,
)
from chipclear.domain.commands import Rescreen
from chipclear.domain.licence_terms import recorded_licence
from chipclear.domain.models import Status
from chipclear.licence_opening import LicenceEnded, open_licence
from chipclear.projections import get_request, newest_requests, request_summary
from chipclear.store.protocol import EventStore
from chipclear.temporal import refusal

# A page token that has left the visibility store's pages for the store's licences: what follows the
# prefix is the last licensed request of the page before (empty on the first licence page).
LICENCES_FROM = "licences:"


class RescreeningActivities:
    def __init__(self, client: Client, store: EventStore) -> None:
        self.client = client
        self.store = store

    @activity.defn(name="live_targets")
    async def live_targets(self, input: RescreenPageInput) -> RescreenPage:
        """One page of the running requests (visibility store), then of the valid licences (event store)."""
        if input.page_token is not None and input.page_token.startswith(LICENCES_FROM):
            after = input.page_token.removeprefix(LICENCES_FROM) or None
            return await asyncio.to_thread(self._licences, after, input.page_size)
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
            targets=found,
            next_page_token=base64.b64encode(following).decode() if following else LICENCES_FROM,
        )

    def _licences(self, after: str | None, page_size: int) -> RescreenPage:
        """One page of licensed requests, newest first, and of them the licences still valid or
        suspended as their stored record stands (an unopened licence past its validity is expired)."""
        last = request_summary(self.store, after) if after is not None else None
        rows = newest_requests(self.store, Status.LICENSED.value, limit=page_size, after=last)
        now = datetime.now(UTC)
        found = [
            LiveWorkflow(workflow_id=licence_workflow_id(row.request_id), workflow_type=LICENCE_WORKFLOW)
            for row in rows
            if self._can_act_on(row.request_id, now)
        ]
        following = LICENCES_FROM + rows[-1].request_id if len(rows) == page_size else None
        return RescreenPage(targets=found, next_page_token=following)

    def _can_act_on(self, request_id: str, now: datetime) -> bool:
        """Neither used up nor expired as its record stands (an unopened licence past its validity is
        expired): a re-screening may suspend it, or find a suspended one listed."""
        status = recorded_licence(self.store.read_stream, request_id).status_at(now)
        return status is not None and not status.is_final

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
                licence = await self._rescreen_licence(target, command)
                if licence is None:
                    return RescreenOutcome(workflow_id=target.workflow_id, kind="licence", outcome="closed")
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

    async def _rescreen_licence(self, target: RescreenTarget, command: Rescreen) -> LicenceActResult | None:
        """Screen a licence again, opening its workflow first if nobody has acted on it yet; None when
        its workflow has ended."""
        handle = self.client.get_workflow_handle(target.workflow_id)
        try:
            answer: LicenceActResult = await handle.execute_update(
                RESCREEN_UPDATE, command, result_type=LicenceActResult
            )
            return answer
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
        # Never opened: open it (the first act on it), then ask.
        request_id = target.workflow_id.removeprefix(LICENCE_PREFIX)
        request = await asyncio.to_thread(get_request, self.store, request_id)
        if request is None or request.licence_id is None:
            return None
        try:
            await open_licence(self.client, activity.info().task_queue, request)
        except LicenceEnded:
            return None
        opened: LicenceActResult = await handle.execute_update(
            RESCREEN_UPDATE, command, result_type=LicenceActResult
        )
        return opened
