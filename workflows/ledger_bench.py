"""The yardstick for benchmarks/ledger.py: the allocation ledger's shape with nothing to decide or store.

Every reservation is an Update with a validator, answered once a group-committed activity has run,
and the workflow continues as new as the ledger does; but the activity is a no-op and the answer is a
constant. Reservations per second against the real ledger on the same server and worker, in the same
run, say what the ledger's own work (deciding, folding, appending to the event store) costs.
"""

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.bench import (
        NOOP_LEDGER_RESERVE,
        NOOP_LEDGER_WORKFLOW,
        BareStepInput,
        NoOpLedgerInput,
        NoOpLedgerState,
        bare_step,
    )
    from chipclear.domain.allocation import Reservation, Reserve
    from workflows.entity import admit, live_then_continue


@workflow.defn(name=NOOP_LEDGER_WORKFLOW)
class NoOpLedgerWorkflow:
    @workflow.init
    def __init__(self, input: NoOpLedgerInput) -> None:
        self._state = input.state or NoOpLedgerState()
        self._pending = 0  # answered, not yet "stored"
        self._appended = self._state.answered
        self._writing = False
        self._closing = False  # time to continue as new: new reservations are turned away

    @workflow.run
    async def run(self, input: NoOpLedgerInput) -> None:
        await live_then_continue(input, lambda: self._state, self._close)

    def _close(self) -> None:
        self._closing = True

    @workflow.update(name=NOOP_LEDGER_RESERVE)
    async def reserve(self, command: Reserve) -> Reservation:
        self._state.answered += 1
        self._pending += 1
        await self._stored(self._state.answered)
        return Reservation(request_id=command.request_id, outcome="granted", units=1, requested=1)

    @reserve.validator
    def _validate_reserve(self, command: Reserve) -> None:
        admit(self._closing)  # as the ledger's does

    async def _stored(self, version: int) -> None:
        """The ledger's group commit, storing nothing: one no-op activity for all that is pending."""
        while self._appended < version:
            if self._writing:
                await workflow.wait_condition(lambda: self._appended >= version or not self._writing)
                continue
            count, self._pending = self._pending, 0
            upto = self._appended + count
            self._writing = True
            try:
                await workflow.execute_activity(
                    bare_step,
                    BareStepInput(step=count),
                    start_to_close_timeout=timedelta(seconds=30),
                    summary=f"{count} no-op event(s)",
                )
            finally:
                self._writing = False
            self._appended = upto
