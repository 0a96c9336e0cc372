"""Event-store activities: the only way a workflow's decisions reach the legal record, and the tables
kept beside it that decisions consult (the invoice registry, the buyers' caps)."""

from __future__ import annotations

import asyncio
from typing import Protocol

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.store_calls import StoreOutage, store_call
from chipclear.contracts import ReleasedUnits, deployment
from chipclear.domain.buyer_cap import BuyerClaim, ClaimUnits, ReleaseClaim
from chipclear.domain.errors import DomainError
from chipclear.domain.events import Event
from chipclear.domain.evidence import InvoiceOwner
from chipclear.domain.facts import RegisterInvoices, ReleaseInvoices
from chipclear.domain.licence import LicenceState, licence_stream
from chipclear.domain.licence_terms import licence_of
from chipclear.domain.policy import Policy
from chipclear.logs import get_logger
from chipclear.projections import licensed_among
from chipclear.store.protocol import AppendResult, BuyerCaps, EventLog, InvoiceRegistry, ProjectionRows


class AppendInput(BaseModel):
    stream_id: str
    expected_version: int
    events: list[Event]


class ReleasedInvoices(BaseModel):
    released: int


class InvoiceOwners(BaseModel):
    owners: dict[str, InvoiceOwner]


class PolicyInput(BaseModel):
    """Empty today; a model so a field (a policy name, say) can be added without breaking histories."""


class PolicyResult(BaseModel):
    policy: Policy
    # Whether the namespace has chipclear's search attributes: only then may the workflow upsert them.
    # Recorded in history with the policy, so a replay decides the same way.
    search_attributes: bool = False


class LicenceOpening(BaseModel):
    """Where a licence's workflow starts from: the policy, and the licence as the record gives it (its
    terms from the request's stream, what happened to it since from its own)."""

    policy: Policy
    state: LicenceState | None = None
    refused: str | None = None  # the request holds no licence: the run ends, recording nothing


class LicenceOpeningInput(BaseModel):
    request_id: str


class RequestIds(BaseModel):
    request_ids: list[str]


class LicensedQuestion(BaseModel):
    """Which of `request_ids` hold their licence: at most `at_most` of them, the answer being recorded."""

    request_ids: list[str]
    at_most: int


# The failure type of a claim the cap refuses: final, and the workflow turns it back into the rule's words.
CAP_REFUSED = "LedgerRefused"


class EventsStore(EventLog, InvoiceRegistry, BuyerCaps, ProjectionRows, Protocol):
    """What these activities use of the store: the log, the invoice registry, the buyers' caps and the
    projection's rows."""


class EventActivities:
    """Bound to one store and the worker's policy; methods run in the worker's thread pool.

    Every store call goes through `store_call`: failures classified (an unreachable store is retried,
    bad data is not), cancellation held off until the call has ended its transaction.
    """

    def __init__(
        self,
        store: EventsStore,
        policy: Policy,
        *,
        search_attributes: bool = False,
        outage: StoreOutage | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.search_attributes = search_attributes
        self.outage = outage or StoreOutage()

    @activity.defn(name="append_events")
    def append_events(self, input: AppendInput) -> AppendResult:
        # Safe to retry: the store accepts a batch already stored with identical content as a no-op.
        info = activity.info()
        log = get_logger("chipclear.activities").bind(
            workflow_id=info.workflow_id, run_id=info.workflow_run_id, activity_id=info.activity_id
        )
        with store_call(self.outage):
            result = self.store.append(input.stream_id, input.expected_version, input.events)
        log.info(
            "events appended" if result.written else "events already stored (retry)",
            stream_id=input.stream_id,
            version=result.version,
            types=[event.type for event in input.events],
            attempt=info.attempt,
        )
        return result

    @activity.defn(name="current_policy")
    def current_policy(self, input: PolicyInput) -> PolicyResult:
        # Read through an activity so the policy is recorded in history: replay never re-reads a file
        # that may have changed since.
        return PolicyResult(policy=self.policy, search_attributes=self.search_attributes)

    @activity.defn(name="register_invoices")
    def register_invoices(self, input: RegisterInvoices) -> InvoiceOwners:
        # Safe to repeat: registering for the same request again changes nothing and gives the same
        # answer, so it runs as a local activity on the evidence path.
        with store_call(self.outage):
            owners = self.store.register_invoices(input.request_id, input.buyer, input.keys)
        taken = sorted(key for key, owner in owners.items() if owner.request_id != input.request_id)
        if taken:
            get_logger("chipclear.activities").info(
                "invoices already counted elsewhere", request_id=input.request_id, invoices=taken
            )
        return InvoiceOwners(owners=owners)

    @activity.defn(name="release_invoices")
    def release_invoices(self, input: ReleaseInvoices) -> ReleasedInvoices:
        # Safe to repeat: freeing what is already free changes nothing.
        with store_call(self.outage):
            released = self.store.release_invoices(input.request_id)
        return ReleasedInvoices(released=released)

    @activity.defn(name="claim_buyer_units")
    def claim_buyer_units(self, command: ClaimUnits) -> BuyerClaim:
        # Safe to repeat: a request's later claim replaces its earlier one, so it runs as a local
        # activity in the request's first workflow task. A refusal names the headroom, and is final.
        scope = deployment(activity.info().task_queue)
        with store_call(self.outage):
            try:
                return self.store.claim_buyer_units(command, scope)
            except DomainError as exc:
                raise ApplicationError(str(exc), type=CAP_REFUSED, non_retryable=True) from None

    @activity.defn(name="release_buyer_units")
    async def release_buyer_units(self, command: ReleaseClaim) -> ReleasedUnits:
        # Safe to repeat: a second release gives back nothing. Async, as every activity on the entity-call
        # queue that requests schedule it on; the store's call runs in a thread and ends its transaction
        # even if the activity is cancelled meanwhile.
        scope = deployment(activity.info().task_queue)
        units = await asyncio.to_thread(self._release_buyer_units, command, scope)
        return ReleasedUnits(request_id=command.request_id, units=units)

    def _release_buyer_units(self, command: ReleaseClaim, scope: str) -> int:
        with store_call(self.outage):
            return self.store.release_buyer_units(command, scope)

    @activity.defn(name="open_licence")
    def open_licence(self, input: LicenceOpeningInput) -> LicenceOpening:
        # Safe to repeat: it only reads. The terms come from the request's chained record, never from
        # whoever started the workflow; what happened to the licence since (a workflow started again
        # after its run was lost) from the licence's own stream.
        with store_call(self.outage, reads_only=True):
            request = self.store.read_stream(input.request_id)
            licence = self.store.read_stream(licence_stream(input.request_id))
        try:
            state = licence_of(request, licence)
        except DomainError as exc:
            return LicenceOpening(policy=self.policy, refused=str(exc))
        return LicenceOpening(policy=self.policy, state=state)

    @activity.defn(name="licensed_requests")
    def licensed_requests(self, input: LicensedQuestion) -> RequestIds:
        # Safe to repeat: it only reads. The ledger asks it before it continues as new, to learn which
        # of the requests it carries it may stop carrying (chipclear.domain.settling).
        with store_call(self.outage, reads_only=True):
            licensed = licensed_among(self.store, input.request_ids, input.at_most)
        return RequestIds(request_ids=licensed)
