"""The conformance fixture: every test that takes `event_store` runs on SQLite and on PostgreSQL.

Add a backend by adding its name to `support.BACKENDS` and a branch to `support.open_backend`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chipclear.store.protocol import EventStore
from tests.store.support import BACKENDS, open_backend


@pytest.fixture(params=BACKENDS)
def event_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    store = open_backend(request.param, request, tmp_path)
    yield store
    store.close()
