"""The yardstick for `chipclear bench`: a workflow that does nothing but three activity calls.

It measures what the server alone costs, so the import workflow's figure can be read as a ratio.
"""

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    # Its models too: defined here, they would be built afresh for every run (activities/bench.py).
    from activities.bench import BareInput, BareResult, BareStepInput, bare_step


@workflow.defn(name="BareThreeActivities")
class BareWorkflow:
    @workflow.run
    async def run(self, input: BareInput) -> BareResult:
        timeout = timedelta(seconds=30)
        for step in range(3):
            if input.local:
                await workflow.execute_local_activity(
                    bare_step, BareStepInput(step=step), start_to_close_timeout=timeout
                )
            else:
                await workflow.execute_activity(
                    bare_step, BareStepInput(step=step), start_to_close_timeout=timeout
                )
        return BareResult(steps=3)
