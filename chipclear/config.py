"""Settings from the environment: Temporal's own variable names first, ours prefixed CHIPCLEAR_."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_TASK_QUEUE = "chipclear"
DEFAULT_ADDRESS = "127.0.0.1:7233"


class ConfigError(ValueError):
    """An environment variable with a value chipclear cannot use; the message names it."""


@dataclass(frozen=True)
class Settings:
    home: Path
    event_store_url: str
    task_queue: str
    policy: str | None  # a path, or a bundled policy name; None = bundled default
    # The workflow sandbox re-imports and guards workflow code on every run; turning it off roughly
    # doubles throughput (see `chipclear bench --no-sandbox`) at the price of that guard.
    sandbox: bool = True
    metrics_port: int | None = None  # Prometheus /metrics for this worker process

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get("CHIPCLEAR_HOME") or "./.chipclear")
        return cls(
            home=home,
            event_store_url=env.get("CHIPCLEAR_EVENT_STORE") or f"sqlite:///{home / 'events.db'}",
            task_queue=env.get("CHIPCLEAR_TASK_QUEUE") or DEFAULT_TASK_QUEUE,
            policy=env.get("CHIPCLEAR_POLICY") or None,
            sandbox=(env.get("CHIPCLEAR_WORKFLOW_SANDBOX") or "on").lower() not in {"off", "0", "false"},
            metrics_port=_port(env.get("CHIPCLEAR_METRICS_PORT")),
        )

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def _port(value: str | None) -> int | None:
    if not value:
        return None
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ConfigError(f"CHIPCLEAR_METRICS_PORT: expected a port number 1-65535, got {value!r}")
    return int(value)
