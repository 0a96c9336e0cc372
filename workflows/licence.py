"""A licence once issued: one workflow per licence, from its opening to the day it is used up or expires.

It starts at the licence's first use (`licence-<request_id>`, chipclear.licence_opening: a shipment, a
suspension, a re-screening), and reads its terms from the request's stored record, never from its caller.
Every act on it (a shipment, a suspension, a reinstatement) is an Update whose validator refuses a bad one
before it enters history; the handler takes one step under a lock: check, count the shipment for its
exporter's 50% rule, decide once, store, fold. A durable timer expires the licence at the end of its
validity.
"""

import asyncio
import contextlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    import workflows.calls as calls  # by its full name, so it is passed through (workflows/import_request.py)
    import workflows.metrics as metrics
    from activities.allocation import AllocationActivities
    from activities.events import EventActivities, LicenceOpening, LicenceOpeningInput
    from chipclear import ui_text
    from chipclear.contracts import (
        ACT_UPDATE,
        LICENCE_OPENED_UPDATE,
        LICENCE_WORKFLOW,
        RESCREEN_UPDATE,
        ChinaCountAnswer,
        LicenceActResult,
        LicenceInput,
        LicenceResult,
        StateQuery,
    )
    from chipclear.domain import licence as rule
    from chipclear.domain.commands import Rescreen
    from chipclear.domain.errors import DomainError
    from chipclear.domain.events import Event
    from chipclear.domain.exporter import ChinaCount, CountChinaShipment
    from chipclear.domain.facts import ScreenParties
    from chipclear.domain.gates import us_export
    from chipclear.domain.policy import Policy
    from workflows.entity import Stateful


@workflow.defn(name=LICENCE_WORKFLOW)
class LicenceWorkflow(Stateful[rule.LicenceState]):
    @workflow.init
    def __init__(self, input: LicenceInput) -> None:
        self._request_id = input.request_id
        self._state = rule.LicenceState()
        self._policy: Policy | None = None
        self._lock = asyncio.Lock()
        self._metrics: metrics.LicenceMetrics | None = None

    @workflow.run
    async def run(self, input: LicenceInput) -> LicenceResult:
        opening: LicenceOpening = await calls.on_store(
            EventActivities.open_licence,
            LicenceOpeningInput(request_id=input.request_id),
            "read the licence's terms from the request's record",
        )
        if opening.state is None:
            raise ApplicationError(opening.refused or "no licence", type="NoLicence", non_retryable=True)
        self._policy, self._state = opening.policy, opening.state
        workflow.set_current_details(ui_text.licence_table(self._state))
        while (terms := self._state.terms) is not None and not self._final:
            remaining = terms.valid_until - workflow.now()
            if remaining > timedelta(0):
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: self._final,
                        timeout=remaining,
                        timeout_summary=f"expires {terms.valid_until:%Y-%m-%d %H:%M:%S} UTC",
                    )
                continue
            async with self._lock:
                if not self._final:
                    await self._step(rule.ExpireLicence(), workflow.now(), actor="deadline")
        # Let an act that is mid-append finish before the run closes under it.
        await workflow.wait_condition(workflow.all_handlers_finished)
        return LicenceResult(
            request_id=input.request_id,
            licence_id=self._state.terms.licence_id if self._state.terms else None,
            status=str(self._state.status),
            units_shipped=self._state.units_shipped,
        )

    @property
    def _final(self) -> bool:
        return self._state.status is not None and self._state.status.is_final

    # -- updates -------------------------------------------------------------------------------------
    @workflow.update(name=LICENCE_OPENED_UPDATE)
    async def opened(self, _: StateQuery) -> rule.LicenceState:
        """The licence as it stands once it has read its terms: what its opener (update-with-start, at
        its first use) signs the act against. Records nothing."""
        await workflow.wait_condition(lambda: self._state.status is not None)
        return self._state

    # Every act of a person on the licence (a shipment, a suspension, a reinstatement) is one Update with
    # a validator, as a request's are: what the person sends says which act it is (`kind`).
    @workflow.update(name=ACT_UPDATE)
    async def act(self, command: rule.LicenceActCommand) -> LicenceActResult:
        return await self._act(command)

    @act.validator
    def _validate_act(self, command: rule.LicenceActCommand) -> None:
        self._validate(command)

    @workflow.update(name=RESCREEN_UPDATE)
    async def rescreen(self, command: Rescreen) -> LicenceActResult:
        """A new list is in force: screen the licence's parties against it (this workflow's own
        activity reads the list); a match suspends a valid licence."""
        async with self._lock:
            assert self._policy is not None and self._state.terms is not None
            section = us_export.GATE.section(self._policy)
            if not section.screening:
                return self._result([])
            found = await calls.screen(
                ScreenParties(parties=self._state.terms.parties, threshold=section.screening_threshold),
                f"re-screening against list {command.list_version}",
            )
            try:
                events = await self._step(
                    rule.RescreenLicence(screening=found), workflow.now(), actor="system"
                )
            except DomainError as exc:
                raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from None
        return self._result(events)

    @rescreen.validator
    def _validate_rescreen(self, command: Rescreen) -> None:
        if self._policy is None or self._state.status is None:
            raise ApplicationError("the licence is still opening; try again", type="NotReady")
        if self._final:
            raise ApplicationError(
                f"the licence is {self._state.status}", type="DomainError", non_retryable=True
            )

    # -- one step -----------------------------------------------------------------------------------
    def _validate(self, command: rule.LicenceAct) -> None:
        """Dry-run the rules without the exporter's count: a refused act never enters history."""
        if self._policy is None or self._state.status is None:
            raise ApplicationError("the licence is still opening; try again", type="NotReady")
        try:
            rule.decide_licence(self._state, command, self._policy, workflow.now())
        except DomainError as exc:
            self._refused(command, rule.refusal_reason(exc))
            raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from None

    async def _act(self, command: rule.LicenceAct) -> LicenceActResult:
        try:
            async with self._lock:
                # One moment for the whole step: the count and the decision see the same time, so a
                # shipment counted for its exporter is never then refused for the clock moving on.
                now = workflow.now()
                events = await self._step(command, now, actor=command.actor)
        except DomainError as exc:
            self._refused(command, rule.refusal_reason(exc))
            raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from None
        return self._result(events)

    def _result(self, events: list[Event]) -> LicenceActResult:
        terms = self._state.terms
        assert terms is not None and self._state.status is not None
        return LicenceActResult(
            request_id=terms.request_id,
            licence_id=terms.licence_id,
            status=str(self._state.status),
            version=self._state.version,
            units_shipped=self._state.units_shipped,
            units_remaining=self._state.units_remaining,
            events=[event.type for event in events],
        )

    async def _step(self, command: rule.LicenceCommand, now: datetime, *, actor: str) -> list[Event]:
        """Check, fetch the exporter's count if a shipment needs it, decide once, store, fold. Lock held."""
        assert self._policy is not None
        rule.decide_licence(self._state, command, self._policy, now)  # refuses before asking anyone
        count: ChinaCount | None = None
        wanted = rule.needs_count(self._state, command, now)
        if wanted is not None:
            count = await self._count(wanted)
        decided = rule.decide_licence(self._state, command, self._policy, now, count)
        if not decided:
            return []
        act = command.model_dump(mode="json") if isinstance(command, rule.LicenceAct) else None
        events = [
            Event(
                event_id=str(workflow.uuid4()),
                stream_id=rule.licence_stream(self._request_id),
                version=self._state.version + index,
                data=data,
                occurred_at=now,
                policy_version=self._policy.version,
                actor=actor,
                act=act,
            )
            for index, data in enumerate(decided, start=1)
        ]
        await calls.append(events, self._state.version)
        before = self._state
        for event in events:
            self._state = rule.evolve_licence(self._state, event.data, now)  # type: ignore[arg-type]
        if self._metrics is None:
            self._metrics = metrics.LicenceMetrics()
        self._metrics.record(before, self._state, decided)
        workflow.set_current_details(ui_text.licence_table(self._state))
        return events

    async def _count(self, wanted: CountChinaShipment) -> ChinaCount:
        """The exporter's count, from its own workflow (a regular activity on the entity-call queue: the
        exporter answers only once the count is stored)."""
        answer: ChinaCountAnswer = await calls.on_entity_queue(
            AllocationActivities.count_china_shipment,
            wanted,
            "count the shipment for the exporter's 50% rule",
            "the exporter's record",
        )
        if answer.count is None:
            raise rule.ShipmentRefused(
                "fifty_percent_rule", answer.refused or "the exporter refused the count"
            )
        return answer.count

    def _refused(self, command: rule.LicenceAct, reason: str) -> None:
        if isinstance(command, rule.Ship):
            if self._metrics is None:
                self._metrics = metrics.LicenceMetrics()
            self._metrics.refused(reason)
