"""A workflow that reports whether the sandbox still guards it (tests/workflows/test_workflow_sandbox.py).

Its own module, importing little: the sandbox imports a workflow's module afresh for every run."""

from __future__ import annotations

import datetime
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.worker.workflow_sandbox import RestrictedWorkflowAccessError


@activity.defn(name="probe_echo")
def probe_echo(text: str) -> str:
    return f"echo {text}"


@workflow.defn(name="SandboxProbe")
class SandboxProbe:
    @workflow.run
    async def run(self, text: str) -> str:
        echoed: str = await workflow.execute_activity(
            probe_echo, text, start_to_close_timeout=timedelta(seconds=10)
        )
        try:
            datetime.datetime.now()  # a clock read: what the sandbox exists to refuse
        except RestrictedWorkflowAccessError:
            return f"restricted, {echoed}"
        return f"unrestricted, {echoed}"
