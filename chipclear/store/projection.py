"""The inline projection: each request's current state, kept in the same transaction as its events.

Rows are computed with the domain's own `evolve`, so `rebuild` (a fresh fold of the log) must give
byte-identical rows; a difference means the projection or the log was tampered with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chipclear.domain.events import REQUEST_EVENT_TYPES, Event
from chipclear.domain.state import RequestState
from chipclear.store.chain import timestamp


def is_request_stream(events: Sequence[Event]) -> bool:
    return all(event.type in REQUEST_EVENT_TYPES for event in events)


def row(state: RequestState) -> dict[str, Any]:
    """The projection row for a state: summary columns for queries, the whole state as JSON."""
    assert state.request_id and state.status and state.request and state.policy_version
    assert state.submitted_at and state.updated_at
    return {
        "request_id": state.request_id,
        "status": state.status,
        "gate": state.gate,
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


COLUMNS = (
    "request_id",
    "status",
    "gate",
    "buyer",
    "units_requested",
    "units_approved",
    "policy_version",
    "version",
    "submitted_at",
    "updated_at",
    "state",
    "flags",
)
