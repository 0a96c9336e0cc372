"""Waiting out an outage inside a workflow: when an activity's bounded retries give up, wait, then again.

An activity's retry policy stops after a few attempts (workflows/options.py) so that an outage never
becomes an endless retry loop inside one workflow task. The workflow must not fail for it either: the
request is fine, the event store (or the ledger) is away. So the call is made again after a timer,
5 s, then 10, 20, 40, and every 60 s after that, while the Web UI's current details say what the
request waits for and since when. A failure no retry can fix (non-retryable: a conflict, bad data, a
refusal) is raised at once, as before.

Guarded by the `wait-out-outages` patch: the wait (a timer) is a new command. A history recorded
before it never holds an activity that gave up retrying (retries were unbounded then), so its replay
never comes here; the saved history `import-request/store-outage.json` replays the new path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, RetryState, TimeoutError

with workflow.unsafe.imports_passed_through():
    from activities.store_calls import NON_RETRYABLE

PATCH = "wait-out-outages"
FIRST_WAIT = timedelta(seconds=5)
LONGEST_WAIT = timedelta(seconds=60)

T = TypeVar("T")
# Failure types that are final however often asked: the store's, and a refusal by an entity's rules.
FINAL = frozenset((*NON_RETRYABLE, "LedgerRefused"))


def _for_good(exc: Exception) -> bool:
    """Whether no later try can succeed. A regular activity fails with an ActivityError that says why
    it stopped retrying; a local activity with its own error (its retries exhausted, or a timeout)."""
    if isinstance(exc, ActivityError):
        return exc.retry_state == RetryState.NON_RETRYABLE_FAILURE
    if isinstance(exc, ApplicationError):
        return exc.non_retryable or exc.type in FINAL
    return not isinstance(exc, TimeoutError)


def _cause(exc: Exception) -> str:
    cause = exc.cause if isinstance(exc, ActivityError) else exc
    message = getattr(cause, "message", None) or str(cause or exc)
    return " ".join(message.split())[:200]


async def patiently(
    call: Callable[[], Awaitable[T]], waiting_for: str, details: Callable[[], str] = lambda: ""
) -> T:
    """`call()` until it succeeds or fails for good, waiting between tries; `details()` gives the
    current-details text to put back once it succeeds after a wait."""
    since = None
    wait = FIRST_WAIT
    while True:
        try:
            result = await call()
        except (ActivityError, ApplicationError, TimeoutError) as exc:
            if _for_good(exc) or not workflow.patched(PATCH):
                raise
            since = since or workflow.now()
            workflow.set_current_details(
                f"**waiting for {waiting_for} since {since:%Y-%m-%d %H:%M:%S} UTC**, "
                f"next try in {wait.total_seconds():.0f} s: {_cause(exc)}"
            )
            await workflow.sleep(wait, summary=f"waiting for {waiting_for}")
            wait = min(wait * 2, LONGEST_WAIT)
            continue
        if since is not None:
            workflow.set_current_details(details())
        return result
