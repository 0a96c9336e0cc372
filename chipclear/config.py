"""Settings from the environment: Temporal's own variable names first, ours prefixed CHIPCLEAR_."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TASK_QUEUE = "chipclear"
DEFAULT_ADDRESS = "127.0.0.1:7233"


@dataclass(frozen=True)
class Settings:
    home: Path
    event_store_url: str
    task_queue: str
    policy: str | None  # a path, or a bundled policy name; None = bundled default

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get("CHIPCLEAR_HOME") or "./.chipclear")
        return cls(
            home=home,
            event_store_url=env.get("CHIPCLEAR_EVENT_STORE") or f"sqlite:///{home / 'events.db'}",
            task_queue=env.get("CHIPCLEAR_TASK_QUEUE") or DEFAULT_TASK_QUEUE,
            policy=env.get("CHIPCLEAR_POLICY") or None,
        )
