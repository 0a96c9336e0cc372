"""Since when the event store has failed calls: one WARNING per outage, and the worker's readiness.

An outage fails hundreds of calls. Each is logged at DEBUG where it happens; this keeps the outage's
start and logs one WARNING when the store takes a write again, with how long it was away and how many
calls it failed. The readiness probe asks it how long the current outage has lasted.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from chipclear.logs import get_logger


class StoreOutage:
    """Since when the store has failed calls (None while it answers), shared by a worker's activities.

    The readiness probe reads it too: a worker whose writes all fail is not ready.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.since: datetime | None = None
        self._began = 0.0
        self.failed = 0

    def failing(self, error: Exception) -> None:
        with self._lock:
            self.failed += 1
            if self.since is not None:
                return
            self.since, self._began = datetime.now(UTC), time.monotonic()
        get_logger("chipclear.store").info("event store unavailable", error=str(error))

    def wrote(self) -> None:
        """A write went through: the outage, if any, is over. Only a write says so: with SQLite's
        write-ahead log a read succeeds while a held lock keeps every write out (a checkpoint tick that
        only read once ended outages that way, mid-lock)."""
        if self.since is None:  # the common case, without the lock
            return
        with self._lock:
            if self.since is None:
                return
            since, seconds, failed = self.since, time.monotonic() - self._began, self.failed
            self.since, self.failed = None, 0
        get_logger("chipclear.store").warning(
            "event store outage ended",
            since=since.isoformat(),
            seconds=round(seconds, 1),
            failed_calls=failed,
        )

    def seconds(self) -> float:
        """How long the current outage has lasted (0 while the store answers)."""
        began = self._began if self.since is not None else None
        return 0.0 if began is None else time.monotonic() - began
