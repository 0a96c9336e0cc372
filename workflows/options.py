"""Activity options shared by the workflows: one place to tune timeouts and retries."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

# Appends run as *regular* activities. Local ones were measured faster (they skip a server round trip)
# but they write from inside a workflow task that can still be lost: a retried task may decide other
# events (another update order, another workflow.now()) for versions the lost one already stored.
# A regular activity is recorded in history before it runs, so every stored event matches history, and
# a retry re-sends the very same batch, which the store accepts without writing twice.
APPEND_TIMEOUT = timedelta(seconds=30)
APPEND_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=["ConcurrencyError", "InvalidBatch"],
)


# Talking to the ledger crosses the server, so these are regular activities with their own retries.
LEDGER_TIMEOUT = timedelta(seconds=60)
LEDGER_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=1.5,
    maximum_interval=timedelta(seconds=5),
    non_retryable_error_types=["LedgerRefused"],
)


# Screening only reads the store: a local activity, retried briefly, then the workflow task fails and
# Temporal retries it (the request waits, unscreened, rather than skip the check).
SCREENING_TIMEOUT = timedelta(seconds=30)
SCREENING_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=5)
)
