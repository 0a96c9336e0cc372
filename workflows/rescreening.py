"""Re-screening when a new list comes into force: every live request and every valid licence screens
its parties again (the trade-compliance tools' "screen again when lists change").

A fan-out workflow, `rescreen-<list version>`, started when a list is loaded: it reads the running
requests and licences a page at a time from the visibility store, asks each to screen itself (a bounded
number at once), counts the outcomes and continues as new after each page, so its history stays short
however many there are. Each target records its own result as an event in its own stream.
"""

import asyncio
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.rescreening import RescreeningActivities
    from chipclear.contracts import (
        FAILURES_KEPT,
        RESCREENING_WORKFLOW,
        RescreeningInput,
        RescreeningTally,
        RescreenOutcome,
        RescreenPage,
        RescreenPageInput,
        RescreenTarget,
        ledger_calls_queue,
    )
    from workflows.options import LEDGER_HEARTBEAT, LEDGER_RETRY, LEDGER_TIMEOUT

# Targets asked at once: enough to keep the worker busy, few enough not to crowd out live work.
AT_ONCE = 20


@workflow.defn(name=RESCREENING_WORKFLOW)
class RescreeningWorkflow:
    @workflow.run
    async def run(self, input: RescreeningInput) -> RescreeningTally:
        calls = ledger_calls_queue(workflow.info().task_queue)
        page: RescreenPage = await workflow.execute_activity_method(
            RescreeningActivities.live_targets,
            RescreenPageInput(page_token=input.page_token),
            task_queue=calls,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=LEDGER_RETRY,
            summary="find the live requests and licences",
        )
        tally = input.tally.model_copy(deep=True)
        targets = [
            RescreenTarget(**found.model_dump(), list_version=input.list_version) for found in page.targets
        ]
        for start in range(0, len(targets), AT_ONCE):
            outcomes: list[RescreenOutcome] = await asyncio.gather(
                *(
                    workflow.execute_activity_method(
                        RescreeningActivities.rescreen_target,
                        target,
                        task_queue=calls,
                        start_to_close_timeout=LEDGER_TIMEOUT,
                        heartbeat_timeout=LEDGER_HEARTBEAT,
                        retry_policy=LEDGER_RETRY,
                        summary=f"re-screen {target.workflow_id}",
                    )
                    for target in targets[start : start + AT_ONCE]
                )
            )
            for outcome in outcomes:
                _count(tally, outcome)
            workflow.set_current_details(_details(input.list_version, tally))
        if page.next_page_token is not None:
            workflow.continue_as_new(
                RescreeningInput(
                    list_version=input.list_version, page_token=page.next_page_token, tally=tally
                )
            )
        return tally


def _count(tally: RescreeningTally, outcome: RescreenOutcome) -> None:
    if outcome.outcome == "closed":
        tally.closed += 1
    elif outcome.outcome == "failed":
        tally.failures += 1
        if len(tally.failed) < FAILURES_KEPT:
            tally.failed.append(f"{outcome.workflow_id}: {outcome.detail}"[:300])
    elif outcome.kind == "request":
        tally.requests += 1
        tally.requests_held += outcome.outcome == "held"
        tally.requests_denied += outcome.outcome == "denied"
    else:
        tally.licences += 1
        tally.licences_suspended += outcome.outcome == "suspended"


def _details(list_version: str, tally: RescreeningTally) -> str:
    return (
        f"**list {list_version}**: {tally.requests} request(s) screened again ({tally.requests_held} held, "
        f"{tally.requests_denied} denied), {tally.licences} licence(s) "
        f"({tally.licences_suspended} suspended), {tally.closed} closed meanwhile, {tally.failures} failed"
    )
