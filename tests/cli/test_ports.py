"""`up` and `server` on a busy port: exit 1 naming the port and what to do, never a silent attach.

The port is held by a plain listening socket, or by the session's own Temporal dev server: the case
of a second `make up` while the first runs, which once attached its worker to the first one's server.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import Client

from chipclear.devserver import free_port
from tests.cli.test_cli import chipclear, flat, hermetic_env, parallel, refused


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _env(home: Path) -> dict[str, str]:
    return hermetic_env(CHIPCLEAR_HOME=str(home))


def test_up_and_server_on_a_busy_port_exit_1_naming_it(held_port: int, tmp_path: Path) -> None:
    free = str(free_port())
    up_grpc, up_ui, server_grpc, server_ui = parallel(
        _env(tmp_path),
        [
            ("up", "--port", str(held_port), "--ui-port", free),
            ("up", "--port", free, "--ui-port", str(held_port)),
            ("server", "--port", str(held_port), "--ui-port", free),
            ("server", "--port", free, "--ui-port", str(held_port)),
        ],
        workers=4,
    )
    for result, option in ((up_grpc, "--port"), (up_ui, "--ui-port")):
        refused(result, f"port {held_port} ({option})", "address already in use", "make up PORT=")
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for result, option in ((server_grpc, "--port"), (server_ui, "--ui-port")):
        refused(result, f"port {held_port} ({option})", "address already in use", "--port")
    # Refused before anything was made: no keys, no database, no log.
    assert not (tmp_path / "keys").exists() and not (tmp_path / "temporal.db").exists()


def test_a_second_up_never_attaches_to_the_server_already_there(client: Client, tmp_path: Path) -> None:
    """The session's dev server holds the port: `up` says so and exits, starting no worker on it."""
    taken = int(client.service_client.config.target_host.rsplit(":", 1)[1])
    result = chipclear(_env(tmp_path), "up", "--port", str(taken), "--ui-port", str(free_port()))
    refused(result, f"port {taken} (--port)", "address already in use")
    assert "chipclear is up" not in flat(result.stdout)
    assert not (tmp_path / "keys").exists()
