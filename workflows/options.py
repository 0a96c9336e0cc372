"""Activity options shared by the workflows: one place to tune timeouts and retries.

Every retry policy is bounded (attempts, not time alone) and states why it retries; docs/operations.md
lists the limits. When a policy gives up, the workflow does not fail: it waits and tries the same call
again (workflows/patience.py), visibly, so a long outage costs a few history events per wait, never an
endless stream of retries inside one workflow task.

Timeouts are sized to the work: a store call waits at most 5 s for a lock or a connection
(chipclear/store: BUSY_TIMEOUT, WAIT), so its 10 s start-to-close is never the first to fire, and a
worker killed mid-call has its calls retried elsewhere within seconds.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

from activities.store_calls import NON_RETRYABLE


def bounded(attempts: int, *, longest_wait: timedelta, never: list[str], backoff: float = 2.0) -> RetryPolicy:
    """Every retry policy here: from 200 ms, growing by `backoff` up to `longest_wait` between tries,
    `attempts` tries in all; the error types in `never` are final at once."""
    return RetryPolicy(
        initial_interval=timedelta(milliseconds=200),
        backoff_coefficient=backoff,
        maximum_interval=longest_wait,
        maximum_attempts=attempts,
        non_retryable_error_types=never,
    )


# Appends run as *regular* activities. Local ones were measured faster (they skip a server round trip)
# but they write from inside a workflow task that can still be lost: a retried task may decide other
# events (another update order, another workflow.now()) for versions the lost one already stored.
# A regular activity is recorded in history before it runs, so every stored event matches history, and
# a retry re-sends the very same batch, which the store accepts without writing twice.
APPEND_TIMEOUT = timedelta(seconds=10)
# Safe to retry (an append already stored is a no-op). Retried while the store is unreachable, 8 attempts
# over about 10 s of backoff (plus up to 5 s of waiting each); conflicts and malformed batches never.
APPEND_RETRY = bounded(8, longest_wait=timedelta(seconds=2), never=list(NON_RETRYABLE))

# Store calls made as *local* activities (the policy read, invoice registration and release). A local
# activity retried for long holds its workflow task open and grows the history with task heartbeats,
# so these give up sooner (3 attempts, under 1 s of backoff) and leave the waiting to the workflow.
LOCAL_STORE_TIMEOUT = APPEND_TIMEOUT
LOCAL_STORE_RETRY = bounded(3, longest_wait=timedelta(seconds=1), never=list(NON_RETRYABLE))


# Talking to the ledger crosses the server, so these are regular activities with their own retries.
# Safe to retry (each ledger update is idempotent per request). They heartbeat while they wait, so a
# worker that dies mid-call loses them for LEDGER_HEARTBEAT, not the whole start-to-close timeout.
LEDGER_TIMEOUT = timedelta(seconds=60)
LEDGER_HEARTBEAT = timedelta(seconds=6)
# 10 attempts over about 30 s of backoff; a refusal by the ledger's rules is final at once.
LEDGER_RETRY = bounded(10, longest_wait=timedelta(seconds=5), never=["LedgerRefused"], backoff=1.5)
# The ledger's reservation runs as a local activity in the request's first workflow task (the ledger
# answers once its group commit is stored, well under a second unless a rush queues it): a shorter
# timeout and fewer attempts than the regular calls, for the same reason as the local store calls, and
# then the workflow waits and asks again.
LOCAL_LEDGER_TIMEOUT = timedelta(seconds=20)
LOCAL_LEDGER_RETRY = bounded(3, longest_wait=timedelta(seconds=1), never=["LedgerRefused"])


# Screening only reads the store: a local activity, retried briefly (3 attempts), then the workflow
# waits and screens again (the request waits, unscreened, rather than skip the check).
SCREENING_TIMEOUT = LOCAL_STORE_TIMEOUT
SCREENING_RETRY = LOCAL_STORE_RETRY
