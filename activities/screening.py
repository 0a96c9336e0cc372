"""Restricted-party screening as an activity: reads the current list from the event store.

Read-only, so it runs as a local activity (no side effect to repeat if a workflow task is retried),
and its answer, list version included, is recorded in history for replay.
"""

from __future__ import annotations

import threading

from pydantic import BaseModel
from temporalio import activity

from chipclear.domain.screening import ScreenedParty, ScreeningIndex, ScreeningMatch, bundled_list
from chipclear.logs import get_logger
from chipclear.store.protocol import EventStore


class ScreenInput(BaseModel):
    parties: list[ScreenedParty]
    threshold: float


class ScreeningResult(BaseModel):
    list_version: str
    threshold: float
    parties: list[ScreenedParty]
    matches: list[ScreeningMatch]


class ScreeningActivities:
    """Keeps one prepared index per list version: a full list is parsed once, not per request."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._index: ScreeningIndex | None = None
        self._lock = threading.Lock()

    def index(self) -> ScreeningIndex:
        with self._lock:
            known = self._index.info.version if self._index else None
            current = self.store.current_screening_list(known_version=known)
            if current is None:
                # No list loaded yet: the sample bundled with the package, named as such in every event.
                if self._index is None or self._index.info.loaded_at is not None:
                    self._index = ScreeningIndex(bundled_list())
            elif current.info.version != known:
                self._index = ScreeningIndex(current)
            assert self._index is not None
            return self._index

    @activity.defn(name="screen_parties")
    def screen_parties(self, input: ScreenInput) -> ScreeningResult:
        index = self.index()
        matches = index.screen(input.parties, input.threshold)
        info = activity.info()
        get_logger("chipclear.activities").info(
            "parties screened",
            workflow_id=info.workflow_id,
            list_version=index.info.version,
            parties=len(input.parties),
            matches=len(matches),
        )
        return ScreeningResult(
            list_version=index.info.version,
            threshold=input.threshold,
            parties=input.parties,
            matches=matches,
        )
