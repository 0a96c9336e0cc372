"""Activity options shared by the workflows: one place to tune timeouts and retries."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

# Appends run as *local* activities, chosen by measurement (`chipclear bench`, 2 cores, dev server):
# a regular activity costs a server round trip and a new workflow task per call; a local one runs
# inside the workflow task that asked for it. Bare workflows: 3 regular activities ~20-28/s, 3 local
# ~26-40/s. They are safe because an append is idempotent: a local activity re-run after a worker
# crash re-appends the same event ids (workflow.uuid4(), stable on replay) and nothing is written twice.
APPEND_TIMEOUT = timedelta(seconds=30)
APPEND_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=["ConcurrencyError", "InvalidBatch"],
)


# Talking to the ledger crosses the server, so these are regular activities with their own retries.
LEDGER_TIMEOUT = timedelta(seconds=60)
LEDGER_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=["LedgerRefused"],
)
