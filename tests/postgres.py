"""A throwaway PostgreSQL cluster from the installed server binaries, for the tests' session.

pytest-postgresql's process fixture runs `initdb` as the current user, which PostgreSQL refuses for
root; here the cluster runs as the `postgres` system user when the tests run as root, and as the
current user otherwise. Each test gets its own schema (a `search_path` in its URL), so tests share one
server without sharing tables.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import psycopg

from chipclear.devserver import free_port

BIN = Path(os.environ.get("CHIPCLEAR_PG_BIN", "/usr/lib/postgresql/15/bin"))


class Cluster:
    def __init__(self) -> None:
        if not (BIN / "postgres").is_file():
            raise RuntimeError(
                f"no PostgreSQL server binaries in {BIN}: install postgresql-15 (apt-get install -y "
                "postgresql-15) or point CHIPCLEAR_PG_BIN at its bin directory"
            )
        self.base = Path(tempfile.mkdtemp(prefix="chipclear-pg-"))
        self.data = self.base / "data"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.as_postgres = os.geteuid() == 0  # initdb refuses root

    def _command(self, *args: str | Path) -> list[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_postgres else []
        return [*prefix, *map(str, args)]

    def start(self) -> Cluster:
        if self.as_postgres:
            shutil.chown(self.base, "postgres", "postgres")
        subprocess.run(
            self._command(
                BIN / "initdb",
                "-D",
                self.data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ),
            check=True,
            capture_output=True,
        )
        self.serve()
        return self

    def serve(self, log_mode: str = "wb") -> None:
        """Run the postmaster on the initialised data directory and wait until it answers (also after a
        stop: the fault drills restart it, appending to its log)."""
        self.process = subprocess.Popen(
            self._command(
                BIN / "postgres",
                "-D",
                self.data,
                "-p",
                str(self.port),
                "-k",
                self.base,
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=300",
            ),
            stdout=subprocess.DEVNULL,
            stderr=open(self.base / "server.log", log_mode),  # noqa: SIM115 - owned by the process
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (self.base / "server.log").read_text(errors="replace")
                    raise RuntimeError(f"PostgreSQL did not start:\n{log}") from None
                time.sleep(0.1)

    def url(self, database: str = "postgres", schema: str | None = None) -> str:
        url = f"postgresql://postgres@127.0.0.1:{self.port}/{database}"
        return url + (f"?options={quote(f'-csearch_path={schema}')}" if schema else "")

    def new_schema(self) -> str:
        """A fresh, empty schema; its URL opens a store that sees only it."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return self.url(schema=name)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()  # SIGTERM: smart shutdown once the clients are gone
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.base, ignore_errors=True)
