"""The cn-import allocation ledger: one long-lived entity workflow that owns every batch.

Every reservation, release and new batch is an Update, so Temporal serialises them and no batch is
ever promised twice, even across crashes. The ledger continues as new before its history grows large,
carrying its state less what is settled: the requests that hold their licence or have given their
units back (chipclear.domain.allocation.settle), so the carried state holds what can still change.
"""

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    import workflows.calls as calls  # by its full name, so it is passed through (workflows/import_request.py)
    from chipclear import contracts
    from chipclear.domain import allocation
    from chipclear.domain.errors import DomainError
    from chipclear.domain.events import Event
    from chipclear.domain.gates.base import LEDGER_ACTOR
    from chipclear.domain.settling import Carried
    from workflows.entity import (
        Stateful,
        admit,
        domain_refusals,
        history_is_long,
        licensed_to_settle,
        until_history_is_long,
    )

# Patch: the ledger settles (stops carrying) what is settled before it continues as new.
LEDGER_SETTLES = "ledger-settles"


@workflow.defn(name=contracts.LEDGER_WORKFLOW)
class AllocationLedgerWorkflow(Stateful[allocation.LedgerState]):
    @workflow.init
    def __init__(self, input: contracts.LedgerInput) -> None:
        self._pending: list[Event] = []  # decided, not yet stored
        self._state = input.state or allocation.LedgerState()
        # What this run may settle as it ends.
        self._carried = Carried.of(self._state.allocations, self._state.released)
        self._appended = self._state.version  # stored in the event store
        self._writing = False
        self._closing = False  # time to continue as new: new reservations are turned away

    @workflow.run
    async def run(self, input: contracts.LedgerInput) -> None:
        # Settled while reservations are still admitted, its events riding the group commit; then the
        # run closes and continues as new.
        await workflow.wait_condition(lambda: history_is_long(input.history_limit))
        await self._settle()
        await until_history_is_long(input.history_limit, self._close)
        workflow.continue_as_new(input.carrying(self._state))

    async def _settle(self) -> None:
        """Record what the next run need not carry (chipclear.domain.allocation.settle)."""
        state = self._state
        licensed = await licensed_to_settle(self._carried, state.allocations, state.released, LEDGER_SETTLES)
        if licensed is None:
            return
        events = allocation.settle(self._state, self._carried, licensed)
        if events:
            await self._stored(self._record(events, LEDGER_ACTOR))

    def _close(self) -> None:
        self._closing = True

    @workflow.update(name=contracts.LEDGER_RESERVE)
    async def reserve(self, command: allocation.Reserve) -> allocation.Reservation:
        # No lock: `_apply` decides and folds without awaiting, so commands are serialised by
        # construction; only the write is awaited, and it is shared (see `_stored`).
        events, upto = self._decide(command), self._state.version
        answer = self._state.answer(command.request_id, command.units)  # as decided, not as later
        assert answer is not None
        await self._commit(events, upto)
        return answer

    @reserve.validator
    def _validate_reserve(self, command: allocation.Reserve) -> None:
        admit(self._closing)  # requests send these in rushes; a batch opening is never turned away
        self._validate(command)

    @workflow.update(name=contracts.LEDGER_RELEASE)
    async def release(self, command: allocation.Release) -> contracts.ReleaseResult:
        await self._apply(command)
        # The same answer however often the request asks: what it gave back the first time.
        given = self._state.released.get(command.request_id)
        return contracts.ReleaseResult(
            request_id=command.request_id,
            batch_id=given.batch_id if given else None,
            units=given.units if given else 0,
            left_queue=given is not None and given.batch_id is None,
        )

    @release.validator
    def _validate_release(self, command: allocation.Release) -> None:
        admit(self._closing)
        self._validate(command)

    @workflow.update(name=contracts.LEDGER_OPEN_BATCH)
    async def open_batch(self, command: allocation.OpenBatch) -> contracts.OpenBatchResult:
        # Who may open a batch is the policy's word: read it (an activity, so it is recorded in
        # history), then check the signature against it and decide with nothing awaited in between.
        found = await calls.current_policy()
        with domain_refusals():
            stream = contracts.ledger_stream(workflow.info().workflow_id)
            allocation.require_opener(self._state, command, found.policy, stream)
        events = await self._apply(command)
        served = [e.request_id for e in events if isinstance(e, allocation.UnitsGranted)]
        return contracts.OpenBatchResult(
            batch_id=command.batch.batch_id, capacity=command.batch.capacity, served=served
        )

    @open_batch.validator
    def _validate_open_batch(self, command: allocation.OpenBatch) -> None:
        # An unsigned opening never enters history; the signature itself is checked against the
        # policy in the handler, which reads it.
        with domain_refusals():
            if command.signature is None:
                raise DomainError(f"the act is not signed: {command.actor} signs it with their key (--key)")
        self._validate(command)

    def _validate(self, command: allocation.Reserve | allocation.Release | allocation.OpenBatch) -> None:
        with domain_refusals():
            allocation.decide_ledger(self._state, command, workflow.now())

    async def _apply(
        self, command: allocation.Reserve | allocation.Release | allocation.OpenBatch
    ) -> list[allocation.LedgerEvent]:
        events, upto = self._decide(command), self._state.version
        await self._commit(events, upto)
        return events

    async def _commit(self, events: list[allocation.LedgerEvent], upto: int) -> None:
        """Answer only once everything this answer rests on is stored; then wake served requests."""
        await self._stored(upto)  # this command's events, not those decided after it
        await self._wake(events)

    def _decide(
        self, command: allocation.Reserve | allocation.Release | allocation.OpenBatch
    ) -> list[allocation.LedgerEvent]:
        """Decide and fold at once, without awaiting: commands are serialised by construction."""
        with domain_refusals():
            events = allocation.decide_ledger(self._state, command, workflow.now())
        # The import reviewer's signed act, kept with the events it caused.
        act = command.model_dump(mode="json") if isinstance(command, allocation.OpenBatch) else None
        self._record(events, _actor(command), act)
        return events

    def _record(
        self, events: list[allocation.LedgerEvent], actor: str, act: dict[str, object] | None = None
    ) -> int:
        """Fold `events` in and queue them for the store; the version they bring the ledger to."""
        stream = contracts.ledger_stream(workflow.info().workflow_id)
        now = workflow.now()
        for data in events:
            self._state = allocation.evolve_ledger(self._state, data)
            self._pending.append(
                Event(
                    event_id=str(workflow.uuid4()),
                    stream_id=stream,
                    version=self._state.version,
                    data=data,
                    occurred_at=now,
                    policy_version="allocation",
                    actor=actor,
                    act=act,
                )
            )
        return self._state.version

    async def _stored(self, version: int) -> None:
        """Group commit: whoever finds no write in flight writes everything pending in one append.

        Under a rush of reservations one activity stores the decisions of many updates, instead of
        one round trip each; every handler answers only once its own events are in the store.
        """
        while self._appended < version:
            if self._writing:
                await workflow.wait_condition(lambda: self._appended >= version or not self._writing)
                continue
            batch, self._pending = self._pending, []
            self._writing = True
            try:
                # Waited out through an outage: the decisions in `batch` are already answered for.
                await calls.append(batch, self._appended, summary=f"{len(batch)} ledger event(s)")
            finally:
                self._writing = False
            self._appended = batch[-1].version

    async def _wake(self, events: list[allocation.LedgerEvent]) -> None:
        """Tell queued requests that a batch or a release has granted them units."""
        for event in events:
            if isinstance(event, allocation.UnitsGranted) and event.from_queue:
                answer = self._state.answer(event.request_id, event.requested)
                handle = workflow.get_external_workflow_handle(event.workflow_id)
                try:
                    await handle.signal(contracts.ALLOCATION_GRANTED_SIGNAL, answer)
                except Exception:
                    workflow.logger.warning("could not wake %s", event.workflow_id)


def _actor(command: allocation.Reserve | allocation.Release | allocation.OpenBatch) -> str:
    match command:
        case allocation.Reserve(request_id=request_id) | allocation.Release(request_id=request_id):
            return f"request:{request_id}"
        case allocation.OpenBatch(actor=actor):
            return actor
