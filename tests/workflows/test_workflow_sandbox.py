"""The sandbox answers the payload visitors outside it only for a converter that reads no context, and it
still guards workflow code (chipclear/workflow_sandbox.py)."""

from __future__ import annotations
import __future__

import base64
import dataclasses
import importlib
import pkgutil
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any, Self

import pytest
from pydantic import BaseModel
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import PydanticPayloadConverter, pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
)
from temporalio.worker import Replayer, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

import workflows
from chipclear import workflow_code
from chipclear.codec import data_converter, new_key
from chipclear.payload_converter import SharedPydanticPayloadConverter
from chipclear.temporal import DATA_CONVERTER
from chipclear.worker import workflow_runner
from chipclear.workflow_sandbox import ContextFreeSandbox, ignores_context
from tests.factories import make_request
from tests.workflows.sandbox_probe import SandboxProbe, probe_echo
from workflows.import_request import ImportRequestWorkflow


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


async def test_each_run_imports_its_workflow_module_afresh_and_passes_the_helpers_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run's sandbox imports the workflow's own module afresh (no state leaks between runs), but the
    helpers it imports passed through (`workflows.calls`, `workflows.metrics`) come from the worker's
    process, not compiled and executed again for every run: `from workflows import calls` did that."""
    runner = workflow_runner()  # installs the compile-once finder that every import of `workflows` meets
    found: list[str] = []
    original = workflow_code._Finder.find_spec

    def spy(self: Any, fullname: str, *args: Any) -> Any:
        found.append(fullname)
        return original(self, fullname, *args)

    monkeypatch.setattr(workflow_code._Finder, "find_spec", spy)
    replayer = Replayer(
        workflows=[ImportRequestWorkflow], data_converter=DATA_CONVERTER, workflow_runner=runner
    )
    history = (Path(__file__).parents[1] / "histories" / "import-request" / "auto-evidence.json").read_text()
    found.clear()
    for n in range(2):
        result = await replayer.replay_workflow(WorkflowHistory.from_json(f"import-sandbox-{n}", history))
        assert result.replay_failure is None
    assert found.count("workflows.import_request") >= 2, found  # once a run, at least
    assert "workflows.calls" not in found and "workflows.metrics" not in found, found


async def _replays_building_converters(monkeypatch: pytest.MonkeyPatch, converter: DataConverter) -> int:
    """How many pydantic payload converters two replays of one request build."""
    built: list[object] = []
    original = PydanticPayloadConverter.__init__

    def counting(self: PydanticPayloadConverter, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(PydanticPayloadConverter, "__init__", counting)
    replayer = Replayer(
        workflows=[ImportRequestWorkflow], data_converter=converter, workflow_runner=workflow_runner()
    )
    history = (Path(__file__).parents[1] / "histories" / "import-request" / "auto-evidence.json").read_text()
    built.clear()
    for n in range(2):
        result = await replayer.replay_workflow(WorkflowHistory.from_json(f"import-converter-{n}", history))
        assert result.replay_failure is None
    monkeypatch.setattr(PydanticPayloadConverter, "__init__", original)
    return len(built)


async def test_runs_and_activations_share_one_payload_converter(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK builds a payload converter per run and two per activation, each with an empty cache of
    pydantic type adapters; chipclear's converter class hands back the process's one instead."""
    assert SharedPydanticPayloadConverter() is SharedPydanticPayloadConverter()
    assert await _replays_building_converters(monkeypatch, pydantic_data_converter) > 2  # the SDK's own
    assert await _replays_building_converters(monkeypatch, DATA_CONVERTER) == 0


def test_the_shared_converter_writes_the_sdks_bytes() -> None:
    values: list[Any] = [make_request(), {"units": 8, "note": "受控"}, None, "H200", 3.5]
    ours = DATA_CONVERTER.payload_converter.to_payloads(values)
    theirs = PydanticPayloadConverter().to_payloads(values)
    assert ours == theirs
    request = DATA_CONVERTER.payload_converter.from_payloads(ours[:1], [type(values[0])])[0]
    assert request == values[0]


def _workflow_modules() -> list[ModuleType]:
    """Every module under workflows/ that defines a workflow: the ones each run's sandbox imports afresh."""
    defining = []
    for info in pkgutil.iter_modules(workflows.__path__, "workflows."):
        module = importlib.import_module(info.name)
        if any(hasattr(v, "__temporal_workflow_definition") for v in vars(module).values()):
            defining.append(module)
    assert {"workflows.import_request", "workflows.bench", "workflows.ledger_bench"} <= {
        m.__name__ for m in defining
    }
    return defining


def test_sandboxed_workflow_modules_keep_their_annotations_evaluated() -> None:
    """`from __future__ import annotations` makes `@workflow.defn` evaluate every handler's string
    annotations again each time a run's sandbox re-imports the module; the modules it re-imports go
    without."""
    for module in _workflow_modules():
        assert getattr(module, "annotations", None) is not __future__.annotations, module.__name__


def test_sandboxed_workflow_modules_define_no_model() -> None:
    """A pydantic model defined in a module the sandbox re-imports is a new class every run: its schema
    built again, and a new entry in the one payload converter's cache of type adapters each time."""
    for module in _workflow_modules():
        models = [
            name
            for name, value in vars(module).items()
            if isinstance(value, type)
            and issubclass(value, BaseModel)
            and value.__module__ == module.__name__
        ]
        assert models == [], module.__name__
