"""Reading the JSON lines a worker logs (CHIPCLEAR_LOG_FORMAT=json), for tests that check what it said."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def log_events(path: Path) -> list[dict[str, Any]]:
    """Every JSON object logged in `path`, in order; other lines (the SDK's own output) are passed over."""
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
