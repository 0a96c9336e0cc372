"""The sandbox answers the payload visitors outside it only for a converter that reads no context, and it
still guards workflow code (chipclear/workflow_sandbox.py)."""

from __future__ import annotations

import base64
import dataclasses
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Self

from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.converter import PayloadCodec, SerializationContext, WithSerializationContext
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from chipclear.codec import data_converter, new_key
from chipclear.temporal import DATA_CONVERTER
from chipclear.worker import workflow_runner
from chipclear.workflow_sandbox import ContextFreeSandbox, ignores_context
from tests.workflows.sandbox_probe import SandboxProbe, probe_echo


class ContextReading(PayloadCodec, WithSerializationContext):
    """A codec that would encode differently per workflow or activity (a key per tenant, say)."""

    def __init__(self, context: SerializationContext | None = None) -> None:
        self.context = context

    def with_context(self, context: SerializationContext) -> Self:
        return type(self)(context)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)


def test_chipclears_converters_read_no_context_so_the_sandbox_answers_outside() -> None:
    sealed = data_converter({"2026-12": base64.b64decode(new_key())})
    for converter in (DATA_CONVERTER, sealed, data_converter({}, refuse_sealed=True)):
        assert ignores_context(converter)
        assert isinstance(workflow_runner(True, converter), ContextFreeSandbox)


def test_a_converter_that_reads_a_context_keeps_the_sdks_own_sandbox() -> None:
    reading = dataclasses.replace(DATA_CONVERTER, payload_codec=ContextReading())
    assert not ignores_context(reading)
    runner = workflow_runner(True, reading)
    assert type(runner) is SandboxedWorkflowRunner  # asked per payload, inside the sandbox, as the SDK does


async def test_the_context_free_sandbox_still_refuses_a_clock_read_and_runs_activities(
    client: Client,
) -> None:
    runner = workflow_runner(True, client.data_converter)
    assert isinstance(runner, ContextFreeSandbox)
    queue = f"sandbox-{uuid.uuid4().hex[:12]}"
    with ThreadPoolExecutor(max_workers=2) as executor:
        async with Worker(
            client,
            task_queue=queue,
            workflows=[SandboxProbe],
            activities=[probe_echo],
            activity_executor=executor,
            workflow_runner=runner,
        ):
            said = await client.execute_workflow(
                SandboxProbe.run, "受控 payload", id=f"probe-{queue}", task_queue=queue
            )
    assert said == "restricted, echo 受控 payload"
