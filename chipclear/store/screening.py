"""The screening list in force: the newest one loaded into the store, else the bundled sample."""

from __future__ import annotations

import threading

from chipclear.domain.screening import ScreeningIndex, bundled_list
from chipclear.store.protocol import ScreeningLists


class CurrentList:
    """Keeps one prepared index per list version: a full list is parsed once, not per request."""

    def __init__(self, store: ScreeningLists) -> None:
        self.store = store
        self._index: ScreeningIndex | None = None
        self._lock = threading.Lock()

    def index(self) -> ScreeningIndex:
        with self._lock:
            current = self.store.current_screening_info()
            if current is None:
                # No list loaded yet: the sample bundled with the package, named as such in every event.
                if self._index is None or self._index.info.loaded_at is not None:
                    self._index = ScreeningIndex(bundled_list())
            elif self._index is None or current.version != self._index.info.version:
                self._index = ScreeningIndex(self.store.screening_list(current))
            return self._index
