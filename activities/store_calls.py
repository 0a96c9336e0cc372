"""How every activity calls the event store: classified failures, cancellation kept out, outages told once.

Three rules, each from an incident (issue 16):
- **Classified.** A store that cannot be reached (a held lock, a stopped server) is `StoreUnavailable`:
  retried with backoff by the activity's retry policy, up to its ceiling, after which the workflow waits
  and tries again (workflows/patience.py). Data that can never be stored (a conflict, a malformed batch) is
  non-retryable at once: retrying would fail the same way forever.
- **Cancellation kept out.** Temporal cancels a timed-out sync activity by raising into its thread. The
  store ends its transactions on every path, but an exception raised mid-commit could still split a
  transaction from its bookkeeping; shielded, the call finishes (within the store's busy timeout) and the
  cancellation lands after it, on an activity whose work is idempotent.
- **Told once.** An outage fails hundreds of calls; each failure is logged at DEBUG (a `BENIGN`
  ApplicationError, which the SDK logs without a traceback), and `StoreOutage` (chipclear.store.outage)
  logs one WARNING when the store takes a write again, with how long it was away and how many calls failed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from chipclear.store.outage import StoreOutage
from chipclear.store.protocol import ConcurrencyError, StoreUnavailable

STORE_UNAVAILABLE = "StoreUnavailable"
CONFLICT = "ConcurrencyError"
INVALID = "InvalidBatch"
# The failure types no retry can fix: retry policies list them as non-retryable too.
NON_RETRYABLE = (CONFLICT, INVALID)

__all__ = ["CONFLICT", "INVALID", "NON_RETRYABLE", "STORE_UNAVAILABLE", "StoreOutage", "store_call"]


@contextmanager
def store_call(outage: StoreOutage, *, reads_only: bool = False) -> Iterator[None]:
    """Run one store call inside an activity: shielded from cancellation, its failures classified.

    A call that `reads_only` does not end an outage when it succeeds: with SQLite's write-ahead log, reads
    go on while a held lock keeps every write out, and the outage is not over until the store writes."""
    # Outside an activity (a test, the CLI) there is no cancellation to shield from.
    shield = activity.shield_thread_cancel_exception() if activity.in_activity() else nullcontext()
    try:
        with shield:
            yield
    except (StoreUnavailable, sqlite3.OperationalError) as exc:
        outage.failing(exc)
        raise ApplicationError(
            str(exc), type=STORE_UNAVAILABLE, category=ApplicationErrorCategory.BENIGN
        ) from exc
    except ConcurrencyError as exc:
        # Retrying cannot fix a conflict: fail the transition and let the workflow say so.
        raise ApplicationError(str(exc), type=CONFLICT, non_retryable=True) from exc
    except (ValueError, ValidationError) as exc:
        # A malformed batch is a bug in the caller; retrying would fail the same way forever.
        raise ApplicationError(str(exc), type=INVALID, non_retryable=True) from exc
    if not reads_only:
        outage.wrote()
