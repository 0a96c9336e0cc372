"""The SDK's workflow sandbox, without entering it once per payload to ask a question whose answer
chipclear's data converter never reads.

Before the worker encodes a workflow task's commands (and after it decodes an activation), the SDK visits
every payload and asks the workflow instance which serialization context and external-store context
that payload belongs to, so that a converter or codec that varies by activity or workflow can be given
it. The sandboxed instance answers by compiling and running a snippet inside the sandbox, for each
payload of each visit. Profiled with py-spy (`--gil`) at 200 requests in flight, those answers were 31%
of the worker's Python time, four times the time spent running the workflows' own code
(docs/performance.md, "The sandbox's questions").

The answers change nothing unless a part of the converter takes a context (`DataConverter.with_context`
returns the converter itself when none does) or external storage is configured. For such a converter,
`ContextFreeSandbox` answers "no context" at once, which the SDK turns into the converter itself: the
very converter it would have picked. Everything else (imports, restrictions, every activation) is the
SDK's sandbox unchanged. `sandbox_for` falls back to the plain sandbox for any other converter.
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    SerializationContext,
    StorageDriverStoreContext,
    WorkflowSerializationContext,
)
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
from temporalio.workflow import Info

_NO_STORE = StorageDriverStoreContext(target=None)
# One context of each kind a chipclear workflow's payloads are given: its own, and an activity's.
_SAMPLE_CONTEXTS: tuple[SerializationContext, ...] = (
    WorkflowSerializationContext(namespace="default", workflow_id="request-R-1"),
    ActivitySerializationContext(
        namespace="default",
        activity_id="1",
        activity_type="append_events",
        activity_task_queue="chipclear",
        workflow_id="request-R-1",
        workflow_type="ImportRequest",
        is_local=False,
    ),
)


def ignores_context(converter: DataConverter) -> bool:
    """True when no context can change how `converter` encodes: no part of it takes one (the SDK's own
    test: `with_context` hands back the converter itself) and no external storage is configured."""
    return converter.external_storage is None and all(
        converter.with_context(context) is converter for context in _SAMPLE_CONTEXTS
    )


def sandbox_for(converter: DataConverter, restrictions: SandboxRestrictions) -> SandboxedWorkflowRunner:
    """The sandbox with these restrictions, answering outside it where `converter` allows."""
    if ignores_context(converter):
        return ContextFreeSandbox(restrictions=restrictions)
    return SandboxedWorkflowRunner(restrictions=restrictions)


@dataclass(frozen=True)
class ContextFreeSandbox(SandboxedWorkflowRunner):
    """The SDK's sandbox, whose instances answer the payload visitors' questions without entering it.
    Only for a converter that `ignores_context` (`sandbox_for` chooses)."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _ContextFreeInstance(super().create_instance(det))


class _ContextFreeInstance(WorkflowInstance):
    """A sandboxed workflow instance; only the two context questions are answered here."""

    def __init__(self, sandboxed: WorkflowInstance) -> None:
        self._sandboxed = sandboxed

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        return self._sandboxed.activate(act)

    def get_info(self) -> Info:
        return self._sandboxed.get_info()

    def get_thread_id(self) -> int | None:
        # The deadlock detector names the thread that ran over.
        return self._sandboxed.get_thread_id()

    def get_serialization_context(self, command_info: object) -> SerializationContext | None:
        return None  # the converter without a context: for this converter, the one it would get

    def get_external_store_context(self, command_info: object) -> StorageDriverStoreContext:
        return _NO_STORE  # read only by external storage, which this converter has none of
