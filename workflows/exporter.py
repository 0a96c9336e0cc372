"""An exporter's 50% rule: one small entity workflow per exporter, across every licence it holds.

A China shipment is checked and counted in one step under the workflow's lock, and stored in the
exporter's stream before it is answered, so two shipments under two licences at the same instant never
both take the same room, and the room each saw is on record. The exporter's officer declares its US
end-user shipments per quarter here too (a signed act).

An entity workflow rather than a store transaction: the rule needs the quarter's running totals, which
one owner holds in memory and serialises for free, on either store backend and with workers on many
machines; a transaction would need the same totals read under a lock of its own in SQL, per backend.
"""

import asyncio

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    import workflows.calls as calls  # by its full name, so it is passed through (workflows/import_request.py)
    from chipclear import contracts
    from chipclear.domain import exporter as rule
    from chipclear.domain.errors import DomainError
    from chipclear.domain.events import Event
    from chipclear.domain.people import require_exporter_officer, require_signature
    from workflows.entity import Stateful, domain_refusals, history_is_long, live_then_continue

# Patch: the exporter settles (stops carrying) the counts it carried in before it continues as new.
EXPORTER_SETTLES = "exporter-settles"


@workflow.defn(name=contracts.EXPORTER_WORKFLOW)
class ExporterWorkflow(Stateful[rule.ExporterState]):
    @workflow.init
    def __init__(self, input: contracts.ExporterInput) -> None:
        # Each update decides against the state as stored, appends, then folds: one at a time.
        self._lock = asyncio.Lock()
        self._state = input.state or rule.ExporterState()
        # What this run may settle as it ends (chipclear.domain.exporter.settle_exporter).
        self._carried = rule.carried_counts(self._state)

    @workflow.run
    async def run(self, input: contracts.ExporterInput) -> None:
        await workflow.wait_condition(lambda: history_is_long(input.history_limit))
        if self._carried and workflow.patched(EXPORTER_SETTLES):
            async with self._lock:  # between two counts, never inside one
                self._state = rule.settle_exporter(self._state, self._carried)
        await live_then_continue(input, lambda: self._state)

    @workflow.update(name=contracts.EXPORTER_COUNT)
    async def count(self, command: rule.CountChinaShipment) -> rule.ChinaCount:
        async with self._lock:
            with domain_refusals():
                count = rule.check_count(self._state, command)
                if count is None:
                    return rule.counted(self._state, command)
            shipment = command.shipment
            await self._append(
                rule.ChinaShipmentCounted(**count.model_dump()), actor=f"licence:{shipment.split('/')[0]}"
            )
            return count

    @count.validator
    def _validate_count(self, command: rule.CountChinaShipment) -> None:
        with domain_refusals():
            if rule.check_count(self._state, command) is None:
                rule.counted(self._state, command)

    @workflow.update(name=contracts.EXPORTER_DECLARE)
    async def declare(self, command: rule.DeclareUsShipments) -> contracts.DeclaredResult:
        async with self._lock:
            # Who acts for the exporter is the policy's word: read it (recorded in history), then check
            # the officer and the signature with nothing awaited in between.
            found = await calls.current_policy()
            with domain_refusals():
                require_exporter_officer(found.policy, command.actor, command.exporter)
                require_signature(
                    found.policy,
                    command.actor,
                    command.model_dump(mode="json"),
                    command.signature,
                    stream=self._stream,
                    version=self._state.version,
                )
                declared = rule.decide_declaration(self._state, command)
            await self._append(declared, actor=command.actor, act=command.model_dump(mode="json"))
        quarter = self._state.quarter(command.period)
        return contracts.DeclaredResult(
            exporter=self._state.exporter or command.exporter,
            period=command.period,
            us_units=quarter.us_units,
            china_units=quarter.china_units,
            version=self._state.version,
        )

    @declare.validator
    def _validate_declare(self, command: rule.DeclareUsShipments) -> None:
        # An unsigned declaration never enters history; the signature itself is checked against the
        # policy in the handler, which reads it.
        with domain_refusals():
            if command.signature is None:
                raise DomainError(f"the act is not signed: {command.actor} signs it with their key (--key)")
            rule.decide_declaration(self._state, command)

    @property
    def _stream(self) -> str:
        return contracts.exporter_stream(workflow.info().workflow_id)

    async def _append(
        self, data: rule.ExporterPayload, *, actor: str, act: dict[str, object] | None = None
    ) -> None:
        """Store one event, then fold it: nobody is answered from a state the store does not hold."""
        event = Event(
            event_id=str(workflow.uuid4()),
            stream_id=self._stream,
            version=self._state.version + 1,
            data=data,
            occurred_at=workflow.now(),
            policy_version="exporter",
            actor=actor,
            act=act,
        )
        await calls.append([event], self._state.version)
        self._state = rule.evolve_exporter(self._state, data, actor)
