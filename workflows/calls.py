"""How a workflow calls the world: every activity call chipclear's workflows make, made one way.

Each call is waited out through an outage (workflows/patience.py) and carries the options of its kind
(workflows/options.py):
- `on_store` and `local`: local activities, for calls that are safe to repeat after a lost workflow
  task (reads, a claim or a registration that replaces its own, a reservation the ledger answers
  again as it did the first time), sparing the server a round trip;
- `append`: a regular activity, recorded in history before it writes, so the store never holds an event
  from a workflow task that was lost and then decided differently (a retried append of a stored batch is
  a no-op in the store);
- `on_entity_queue`: a regular activity on the entity-call queue, for the calls at the end of a
  request or a shipment (a release, a count), recorded in history before they act.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.events import (
        AppendInput,
        EventActivities,
        LicensedQuestion,
        PolicyInput,
        PolicyResult,
        RequestIds,
    )
    from activities.screening import ScreeningActivities
    from chipclear.contracts import ledger_calls_queue
    from chipclear.domain.events import Event
    from chipclear.domain.facts import Screening, ScreenParties
    from workflows.options import (
        APPEND_RETRY,
        APPEND_TIMEOUT,
        LEDGER_HEARTBEAT,
        LEDGER_RETRY,
        LEDGER_TIMEOUT,
        LOCAL_STORE_RETRY,
        LOCAL_STORE_TIMEOUT,
        SCREENING_RETRY,
        SCREENING_TIMEOUT,
    )
    from workflows.patience import patiently

_Self = TypeVar("_Self")
_Arg = TypeVar("_Arg")
_Result = TypeVar("_Result")


def _no_details() -> str:
    return ""


async def local(
    activity: Callable[..., Any],
    arg: object,
    summary: str,
    start_to_close: timedelta,
    retry: RetryPolicy,
    waiting_for: str = "the event store",
    details: Callable[[], str] = _no_details,
) -> Any:
    """A local activity with these options; it may be sync or async, so callers annotate the result.
    `details` gives the current-details text to put back once it succeeds after a wait."""
    return await patiently(
        partial(
            workflow.execute_local_activity_method,
            activity,
            arg,
            start_to_close_timeout=start_to_close,
            retry_policy=retry,
            summary=summary,
        ),
        waiting_for,
        details,
    )


async def on_store(
    activity: Callable[..., Any],
    arg: object,
    summary: str,
    waiting_for: str = "the event store",
    details: Callable[[], str] = _no_details,
) -> Any:
    """A local activity on the event store, with the local store calls' timeout and retries."""
    return await local(activity, arg, summary, LOCAL_STORE_TIMEOUT, LOCAL_STORE_RETRY, waiting_for, details)


async def current_policy() -> PolicyResult:
    """The policy in force, read through a local activity so that it is recorded in history: replay
    never reads a policy file that may have changed since."""
    found: PolicyResult = await on_store(
        EventActivities.current_policy, PolicyInput(), "read the policy in force", "the policy"
    )
    return found


async def licensed_requests(request_ids: Sequence[str], at_most: int) -> list[str]:
    """The first `at_most` of these requests that hold their licence, as the store's projection says (a
    local activity: it only reads)."""
    found: RequestIds = await on_store(
        EventActivities.licensed_requests,
        LicensedQuestion(request_ids=list(request_ids), at_most=at_most),
        f"which of {len(request_ids)} request(s) hold their licence",
    )
    return found.request_ids


async def screen(parties: ScreenParties, summary: str, details: Callable[[], str] = _no_details) -> Screening:
    """The parties screened against the list in force (a local activity: it only reads the store)."""
    found: Screening = await local(
        ScreeningActivities.screen_parties,
        parties,
        summary,
        SCREENING_TIMEOUT,
        SCREENING_RETRY,
        details=details,
    )
    return found


async def on_entity_queue(
    activity: Callable[[_Self, _Arg], Awaitable[_Result]],
    arg: _Arg,
    summary: str,
    waiting_for: str,
    details: Callable[[], str] = _no_details,
) -> _Result:
    """A regular activity on the entity-call queue, with the ledger's timeout, heartbeat and retries."""
    return await patiently(
        lambda: workflow.execute_activity_method(
            activity,
            arg,
            task_queue=ledger_calls_queue(workflow.info().task_queue),
            start_to_close_timeout=LEDGER_TIMEOUT,
            heartbeat_timeout=LEDGER_HEARTBEAT,
            retry_policy=LEDGER_RETRY,
            summary=summary,
        ),
        waiting_for,
        details,
    )


async def append(
    events: Sequence[Event],
    expected_version: int,
    *,
    summary: str | None = None,
    details: Callable[[], str] = _no_details,
) -> None:
    """Store `events` (one stream's, in order) after `expected_version`; `summary` names the activity in
    the Web UI (default: the event types)."""
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
