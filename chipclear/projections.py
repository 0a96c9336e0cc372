"""The request projection: each request's current state, kept by the event store in its `requests` table.

The store knows no aggregate; this module hands it one. `open_event_store` opens a store with this
projection registered (the worker, the CLI, the demo and the bench all open it so), and the store then
runs it inside every append's transaction. Rows are computed with the domain's own `evolve`, so a
rebuild (a fresh fold of the log) must give byte-identical rows; a difference means the projection or
the log was tampered with. The table's columns and `RequestSummary` live in chipclear.request_rows,
which `chipclear list` reads without importing the domain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from chipclear.domain.events import REQUEST_EVENT_TYPES, Event
from chipclear.domain.gates import domestic_quota, us_export
from chipclear.domain.models import Status, invoice_key
from chipclear.domain.state import RequestState, fold
from chipclear.request_rows import COLUMNS, SUMMARY_COLUMNS, TABLE, RequestSummary, summary_query
from chipclear.store.chain import timestamp
from chipclear.store.factory import open_store
from chipclear.store.projection import Projection, RowQuery
from chipclear.store.protocol import EventStore, ProjectionRows
from chipclear.store.reconcile import BuyerUnits, InvoiceClaim

__all__ = [
    "COLUMNS",
    "PROJECTIONS",
    "REQUESTS",
    "SUMMARY_COLUMNS",
    "RequestProjection",
    "RequestSummary",
    "get_request",
    "licensed_among",
    "list_requests",
    "newest_requests",
    "open_event_store",
    "request_summary",
    "requests_by_id",
]


class RequestProjection:
    """Implements the store's `Projection` for the request aggregate (state: `RequestState`)."""

    table = TABLE
    columns = COLUMNS

    def wants(self, event: Event) -> bool:
        return event.type in REQUEST_EVENT_TYPES

    def load(self, row: Mapping[str, Any]) -> RequestState:
        return RequestState.model_validate_json(row["state"])

    def evolve(self, state: RequestState | None, events: Sequence[Event]) -> RequestState:
        return fold(events, state)

    def row(self, state: RequestState) -> dict[str, Any]:
        """Summary columns for queries, the whole state as JSON."""
        assert state.request_id and state.status and state.request and state.policy_version
        assert state.submitted_at and state.updated_at
        return {
            "request_id": state.request_id,
            "status": str(state.status),
            "gate": str(state.gate) if state.gate else None,
            "buyer": state.request.buyer.name,
            "units_requested": state.units_requested,
            "units_approved": state.units_approved,
            "policy_version": state.policy_version,
            "version": state.version,
            "submitted_at": timestamp(state.submitted_at),
            "updated_at": timestamp(state.updated_at),
            "state": state.model_dump_json(),
            "flags": ",".join(state.flags),
        }

    def invoices_held(self, state: RequestState) -> InvoiceClaim | None:
        """The invoices the request's accepted evidence registered to it: `reconcile` rebuilds the
        invoice registry from these (released, as compensation releases them, once it ended unlicensed)."""
        evidence = domestic_quota.GATE.slice(state).evidence
        if not evidence or state.request_id is None or state.buyer is None or state.status is None:
            return None
        return InvoiceClaim(
            request_id=state.request_id,
            buyer=state.buyer,
            keys=tuple(invoice_key(record) for record in evidence),
            status=str(state.status),
            released=state.is_final and state.licence_id is None,
        )

    def buyer_units_held(self, state: RequestState) -> BuyerUnits | None:
        """The claim on its buyer's cap that the request's US export approval recorded, and whether the
        approval went back: `reconcile` compares the store's `buyer_claims` row with it."""
        if state.request_id is None or state.buyer is None or state.status is None:
            return None
        part = us_export.GATE.slice(state)
        claim = part.buyer_claim
        return BuyerUnits(
            request_id=state.request_id,
            buyer=claim.buyer if claim is not None else state.buyer,
            units=claim.units if claim is not None else 0,
            released=part.export_released,
            ended=state.is_final,
        )


REQUESTS = RequestProjection()
# What every store chipclear opens keeps inline.
PROJECTIONS: tuple[Projection[Any], ...] = (REQUESTS,)


def open_event_store(url: str, *, require_schema: bool = True) -> EventStore:
    """The event store at `url` with chipclear's projections registered: what the worker and the CLI use."""
    return open_store(url, require_schema=require_schema, projections=PROJECTIONS)


def get_request(store: ProjectionRows, request_id: str) -> RequestState | None:
    """A request's current state from the projection (the fold of its events), or None if unknown."""
    row = store.projection_row(REQUESTS, request_id)
    return REQUESTS.load(row) if row is not None else None


def list_requests(
    store: ProjectionRows, status: str | None = None, flags: Sequence[str] = ()
) -> list[RequestSummary]:
    """Projection rows, oldest first; `flags` keeps rows carrying every one (`escalated`, `held`, …)."""
    rows = store.projection_rows(REQUESTS, summary_query(status, flags))
    return [RequestSummary.model_validate(row) for row in rows]


def newest_requests(
    store: ProjectionRows,
    status: str | None = None,
    flags: Sequence[str] = (),
    *,
    limit: int,
    after: RequestSummary | None = None,
) -> list[RequestSummary]:
    """One page of projection rows, newest first (by submission, then id): at most `limit`, those
    listed after `after` (the last row of the page before). Keyset pagination on an index, so any
    page costs about the same at 50 or 50,000 requests."""
    query = summary_query(status, flags, newest_first=True, limit=limit, after=after)
    return [RequestSummary.model_validate(row) for row in store.projection_rows(REQUESTS, query)]


def request_summary(store: ProjectionRows, request_id: str) -> RequestSummary | None:
    """One request's projection row, without its state."""
    rows = store.projection_rows(REQUESTS, RowQuery(columns=SUMMARY_COLUMNS, keys=[request_id]))
    return RequestSummary.model_validate(rows[0]) if rows else None


def licensed_among(store: ProjectionRows, request_ids: Sequence[str], at_most: int) -> list[str]:
    """The first `at_most` of these requests (in the order given) that hold their licence: a page of keys
    per query, well under either database's limit on a statement's parameters, however many an entity
    carries."""
    licensed: list[str] = []
    for start in range(0, len(request_ids), _KEYS_PER_QUERY):
        page = request_ids[start : start + _KEYS_PER_QUERY]
        query = RowQuery(equal={"status": Status.LICENSED.value}, columns=["request_id"], keys=page)
        found = {row["request_id"] for row in store.projection_rows(REQUESTS, query)}
        licensed += [request_id for request_id in page if request_id in found]
        if len(licensed) >= at_most:
            break
    return licensed[:at_most]


_KEYS_PER_QUERY = 500


def requests_by_id(store: ProjectionRows, request_ids: Sequence[str]) -> dict[str, RequestSummary]:
    """The projection rows of these requests (those the store holds), by id."""
    rows = store.projection_rows(REQUESTS, RowQuery(columns=SUMMARY_COLUMNS, keys=request_ids))
    return {row["request_id"]: RequestSummary.model_validate(row) for row in rows}
