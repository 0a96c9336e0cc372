"""The screening list in force: the newest one loaded into the store, else the bundled sample."""

from __future__ import annotations

import threading

from chipclear.domain.screening import ScreeningIndex, bundled_list
from chipclear.store.protocol import EventStore


class CurrentList:
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
