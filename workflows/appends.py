"""Storing a workflow's events: one call every workflow makes the same way.

A regular activity, recorded in history before it writes, so the store never holds an event from a
workflow task that was lost and then decided differently; waited out through a store outage
(workflows/patience.py). A retried append of a stored batch is a no-op in the store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.events import AppendInput, EventActivities
    from chipclear.domain.events import Event
    from workflows.options import APPEND_RETRY, APPEND_TIMEOUT
    from workflows.patience import patiently


async def append(
    events: Sequence[Event],
    expected_version: int,
    *,
    summary: str | None = None,
    details: Callable[[], str] = lambda: "",
) -> None:
    """Store `events` (one stream's, in order) after `expected_version`; `summary` names the activity in
    the Web UI (default: the event types), `details` is the current-details text to restore after an
    outage."""
    stored = AppendInput(
        stream_id=events[0].stream_id, expected_version=expected_version, events=list(events)
    )
    await patiently(
        partial(
            workflow.execute_activity_method,
            EventActivities.append_events,
            stored,
            start_to_close_timeout=APPEND_TIMEOUT,
            retry_policy=APPEND_RETRY,
            summary=summary or " + ".join(event.type for event in events),
        ),
        "the event store",
        details,
    )
