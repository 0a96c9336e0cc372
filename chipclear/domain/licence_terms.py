"""A licence's terms as the request's own record states them: read when the licence opens, never sent.

Kept apart from chipclear.domain.licence, which the events import, because it reads a request's folded
state (chipclear.domain.state imports the events).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from chipclear.domain.errors import DomainError
from chipclear.domain.events import Event
from chipclear.domain.licence import (
    IMPORT_GATE,
    ApprovalRef,
    LicencePayload,
    LicenceState,
    LicenceTerms,
    fold_licence,
    licence_stream,
)
from chipclear.domain.screening import parties_of
from chipclear.domain.state import RequestState, fold


def terms_of(state: RequestState) -> LicenceTerms:
    """The terms of the licence `state` ended with, or DomainError when it holds none."""
    request = state.request
    if (
        state.licence_id is None
        or state.licence_valid_until is None
        or request is None
        or state.request_id is None
        or state.updated_at is None
    ):
        raise DomainError(f"request {state.request_id!r} has no licence (status {state.status})")
    approval = state.gates.get(IMPORT_GATE)
    return LicenceTerms(
        request_id=state.request_id,
        licence_id=state.licence_id,
        buyer=request.buyer.name,
        exporter=request.exporter,
        units=state.units_approved or 0,
        unit_price_usd=request.unit_price_usd,
        conditions=list(state.conditions),
        issued_at=state.updated_at,
        valid_until=state.licence_valid_until,
        import_approval=None
        if approval is None or approval.outcome != "approved"
        else ApprovalRef(
            gate=IMPORT_GATE,
            approved_by=approval.decided_by,
            approved_at=approval.decided_at,
            units=approval.units_approved,
        ),
        request_version=state.version,
        parties=parties_of(request),
    )


def licence_of(request: Iterable[Event], licence: Iterable[Event]) -> LicenceState:
    """A licence as the record gives it: its terms from the request's stream, then what its own stream
    holds. DomainError when the request holds no licence."""
    return fold_licence(
        terms_of(fold(request)),
        [(event.data, event.occurred_at) for event in licence if isinstance(event.data, LicencePayload)],
    )


def recorded_licence(read_stream: Callable[[str], Iterable[Event]], request_id: str) -> LicenceState:
    """The licence of `request_id` as a log holds it (`read_stream`: a store's, reading one stream):
    the request's stream, then the licence's own. DomainError when the request holds no licence."""
    return licence_of(read_stream(request_id), read_stream(licence_stream(request_id)))
