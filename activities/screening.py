"""Restricted-party screening as an activity: reads the current list from the event store.

Read-only, so it runs as a local activity (no side effect to repeat if a workflow task is retried),
and its answer, list version included, is recorded in history for replay.
"""

from __future__ import annotations

from temporalio import activity

from activities.store_calls import StoreOutage, store_call
from chipclear.domain.facts import Screening, ScreenParties
from chipclear.domain.screening import ScreeningIndex
from chipclear.logs import get_logger
from chipclear.store.protocol import ScreeningLists
from chipclear.store.screening import CurrentList


class ScreeningActivities:
    def __init__(self, store: ScreeningLists, outage: StoreOutage | None = None) -> None:
        self.current = CurrentList(store)
        self.outage = outage or StoreOutage()

    def index(self) -> ScreeningIndex:
        with store_call(self.outage, reads_only=True):
            return self.current.index()

    @activity.defn(name="screen_parties")
    def screen_parties(self, input: ScreenParties) -> Screening:
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
        return Screening(
            list_version=index.info.version,
            threshold=input.threshold,
            parties=input.parties,
            matches=matches,
        )
