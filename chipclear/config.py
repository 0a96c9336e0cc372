"""Settings from the environment: Temporal's own variable names first, ours prefixed CHIPCLEAR_."""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_TASK_QUEUE = "chipclear"
DEFAULT_ADDRESS = "127.0.0.1:7233"
# What the worker's own HTTP endpoints (metrics, health) listen on unless told otherwise: this machine
# only. A container sets 0.0.0.0 on purpose (deploy/), so the kubelet and Prometheus can reach them.
DEFAULT_LISTEN_HOST = "127.0.0.1"

# Every environment variable chipclear reads, and what it is for. Deployment files (deploy/) are checked
# against this list, so a misspelt name in a manifest fails a test instead of being silently ignored.
ENVIRONMENT: dict[str, str] = {
    "CHIPCLEAR_HOME": "directory for the SQLite event store, keys and the dev server's database "
    "(default: the platform's data directory, ~/.local/share/chipclear on Linux)",
    "CHIPCLEAR_EVENT_STORE": "event store URL: sqlite:///PATH or postgresql://USER@HOST:PORT/DB",
    "CHIPCLEAR_TASK_QUEUE": "task queue the workers poll and the CLI starts workflows on",
    "CHIPCLEAR_POLICY": "policy TOML file, or a bundled policy name",
    "CHIPCLEAR_KEY_FILE": "the private key that signs your acts (default $CHIPCLEAR_HOME/keys/NAME.key)",
    "CHIPCLEAR_RECORDER_KEY_FILE": "the worker's recorder key (default $CHIPCLEAR_HOME/keys/recorder.key)",
    "CHIPCLEAR_CHECKPOINT_EVERY": "events between the checkpoints a worker signs (default 1000)",
    "CHIPCLEAR_CHECKPOINT_SECONDS": "and seconds at most between them while events arrive (default 300)",
    "CHIPCLEAR_WORKFLOW_SANDBOX": "off runs workflows unsandboxed",
    "CHIPCLEAR_METRICS_PORT": "port for the worker's Prometheus /metrics",
    "CHIPCLEAR_METRICS_HOST": "IP address /metrics listens on (default 127.0.0.1; 0.0.0.0 for all)",
    "CHIPCLEAR_HEALTH_PORT": "port for the worker's /healthz (liveness) and /readyz (readiness)",
    "CHIPCLEAR_HEALTH_HOST": "IP address /healthz and /readyz listen on (default 127.0.0.1; 0.0.0.0 for all)",
    "CHIPCLEAR_CODEC_KEYS": "payload encryption keys (id=base64key, comma-separated; the first seals)",
    "CHIPCLEAR_CODEC_KEY_FILE": "file holding the payload encryption keys",
    "CHIPCLEAR_CODEC_TOKEN": "bearer token the codec server requires (needed to listen beyond loopback)",
    "CHIPCLEAR_WORKFLOW_TASK_SLOTS": "workflow tasks a worker holds at once (default 100)",
    "CHIPCLEAR_ENTITY_TASK_SLOTS": "the entity workflows' tasks a worker holds at once (default 50)",
    "CHIPCLEAR_WORKFLOW_TASK_POLLERS": "long polls a worker keeps open for workflow tasks (default 5)",
    "CHIPCLEAR_ACTIVITY_THREADS": "threads a worker runs its store activities on (default 16)",
    "CHIPCLEAR_STICKY_CACHE": "workflows a worker keeps in memory between their tasks (default 1000)",
    "CHIPCLEAR_LOG_LEVEL": "DEBUG, INFO, WARNING or ERROR",
    "CHIPCLEAR_LOG_FORMAT": "json or console",
    # Temporal's own client variables (temporalio.envconfig).
    "XDG_DATA_HOME": "the platform data directory the default home lives in (Linux; default ~/.local/share)",
    "TEMPORAL_ADDRESS": "Temporal frontend host:port",
    "TEMPORAL_NAMESPACE": "Temporal namespace",
    "TEMPORAL_API_KEY": "Temporal Cloud API key",
    "TEMPORAL_TLS": "true to connect with TLS",
    "TEMPORAL_TLS_CLIENT_CERT_PATH": "mTLS client certificate",
    "TEMPORAL_TLS_CLIENT_KEY_PATH": "mTLS client key",
    "TEMPORAL_TLS_SERVER_CA_CERT_PATH": "CA that signed the server's certificate",
    "TEMPORAL_TLS_SERVER_NAME": "server name to verify the certificate against",
    # libpq's: the PostgreSQL password stays out of the event store URL (and out of logs).
    "PGPASSWORD": "password for the PostgreSQL event store",
    "PGSSLMODE": "TLS mode for the PostgreSQL event store",
}


class ConfigError(ValueError):
    """An environment variable with a value chipclear cannot use; the message names it."""


def default_home(env: Mapping[str, str]) -> tuple[Path, str]:
    """The home and where it came from. Never the current directory: a CLI run from elsewhere must
    find the same store, not silently start an empty one beside it."""
    if env.get("CHIPCLEAR_HOME"):
        return Path(env["CHIPCLEAR_HOME"]).expanduser().absolute(), "$CHIPCLEAR_HOME"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "chipclear", "the platform data directory"
    xdg = env.get("XDG_DATA_HOME")
    # The XDG spec ignores a relative XDG_DATA_HOME: it would depend on the current directory again.
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "chipclear", "$XDG_DATA_HOME"
    return Path.home() / ".local" / "share" / "chipclear", "the platform data directory"


# What a SQLite store URL may ask of `synchronous` (chipclear.store.factory refuses anything else).
SQLITE_SYNCHRONOUS = frozenset({"full", "normal", "extra"})


def sqlite_file(url: str) -> Path | None:
    """The file a `sqlite:///PATH[?options]` store URL names (None for any other URL, or no path)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").partition("?")[0]
    return Path(path) if path else None


@dataclass(frozen=True)
class WorkerTuning:
    """How much a worker process takes on at once. The defaults were chosen by `chipclear bench` on a
    2-core machine (docs/performance.md, "Worker tuning"); an operator with more cores or a remote
    cluster measures again and sets them (docs/operations.md)."""

    # The requests' and licences' workflow tasks held at once (the SDK's default). Many more let 300
    # requests' tasks crowd the allocation ledger's out of the worker's CPU in a reservation rush:
    # docs/performance.md, "Worker tuning".
    workflow_task_slots: int = 100
    # The entity workflows' own (the ledger, each exporter: a few workflows, each task short), so that
    # a rush of requests never holds the slots the ledger needs (docs/performance.md, "Worker tuning").
    entity_task_slots: int = 50
    # Long polls held open for workflow tasks (the SDK's default).
    workflow_task_pollers: int = 5
    # Threads for the store's activities (appends, reads): SQLite has one writer at a time, and more
    # threads than this only queue on its lock.
    activity_threads: int = 16
    # Workflows kept in memory between their tasks (sticky): one evicted replays its whole history at
    # its next task. Above the workflows in flight at once (requests, licences and entities).
    sticky_cache: int = 1000

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WorkerTuning:
        return cls(
            workflow_task_slots=_count(
                env, "CHIPCLEAR_WORKFLOW_TASK_SLOTS", cls.workflow_task_slots, 2, 10_000
            ),
            entity_task_slots=_count(env, "CHIPCLEAR_ENTITY_TASK_SLOTS", cls.entity_task_slots, 2, 10_000),
            workflow_task_pollers=_count(
                env, "CHIPCLEAR_WORKFLOW_TASK_POLLERS", cls.workflow_task_pollers, 2, 100
            ),
            activity_threads=_count(env, "CHIPCLEAR_ACTIVITY_THREADS", cls.activity_threads, 1, 1_000),
            sticky_cache=_count(env, "CHIPCLEAR_STICKY_CACHE", cls.sticky_cache, 0, 1_000_000),
        )


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
    health_port: int | None = None  # /healthz and /readyz for an orchestrator's probes
    metrics_host: str = DEFAULT_LISTEN_HOST
    health_host: str = DEFAULT_LISTEN_HOST
    home_source: str = "$CHIPCLEAR_HOME"  # where `home` came from, for `up` and `doctor` to say
    tuning: WorkerTuning = WorkerTuning()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home, source = default_home(env)
        return cls(
            home=home,
            home_source=source,
            event_store_url=env.get("CHIPCLEAR_EVENT_STORE") or f"sqlite:///{home / 'events.db'}",
            task_queue=env.get("CHIPCLEAR_TASK_QUEUE") or DEFAULT_TASK_QUEUE,
            policy=env.get("CHIPCLEAR_POLICY") or None,
            sandbox=(env.get("CHIPCLEAR_WORKFLOW_SANDBOX") or "on").lower() not in {"off", "0", "false"},
            metrics_port=_port(env, "CHIPCLEAR_METRICS_PORT"),
            health_port=_port(env, "CHIPCLEAR_HEALTH_PORT"),
            metrics_host=_host(env, "CHIPCLEAR_METRICS_HOST"),
            health_host=_host(env, "CHIPCLEAR_HEALTH_HOST"),
            tuning=WorkerTuning.from_env(env),
        )

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def store_file(self) -> Path | None:
        """The SQLite event store's file (None for PostgreSQL): what a read command must find."""
        return sqlite_file(self.event_store_url)

    def missing_store(self) -> str | None:
        """One sentence if the SQLite store does not exist yet; reading commands stop there rather
        than create an empty store and answer "0 requests" from it."""
        path = self.store_file
        if path is None or path.exists():
            return None
        return (
            f"no event store at {path}: start chipclear there first (`make up` or `chipclear up`), "
            "or point CHIPCLEAR_HOME or CHIPCLEAR_EVENT_STORE at the store you mean"
        )


def _port(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if not value:
        return None
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ConfigError(f"{name}: expected a port number 1-65535, got {value!r}")
    return int(value)


def _count(env: Mapping[str, str], name: str, default: int, least: int, most: int) -> int:
    value = env.get(name)
    if not value:
        return default
    if not value.isdigit() or not least <= int(value) <= most:
        raise ConfigError(f"{name}: expected a whole number from {least} to {most:,}, got {value!r}")
    return int(value)


def _host(env: Mapping[str, str], name: str) -> str:
    value = env.get(name)
    if not value:
        return DEFAULT_LISTEN_HOST
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ConfigError(
            f"{name}: expected an IP address to listen on (127.0.0.1, 0.0.0.0, ::1, ::), got {value!r}"
        ) from None
