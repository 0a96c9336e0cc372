"""Forked CLI calls (tests/cli/forked.py) print and exit as a fresh interpreter does."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import forked
from tests.cli.test_cli import CHIPCLEAR, hermetic_env, ok

CALLS = [
    ("--help",),
    ("decide",),  # a usage error: exit 2, the program named `chipclear`
    ("list",),  # an empty table, as wide as COLUMNS allows
    ("status", "nobody"),  # exit 1, one sentence
    ("submit", "/nowhere/" + "a-long-directory-name/" * 4 + "request.yaml"),  # a long error, never wrapped
    ("store", "export", "-o", "{home}/" + "a-long-file-name-" * 6 + ".jsonl"),  # a long report, never wrapped
    ("doctor",),  # a table of findings, and exit 1: no server answers
]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("forked-home")
    ok(
        subprocess.run(
            [str(CHIPCLEAR), "store", "migrate"],
            env=hermetic_env(CHIPCLEAR_HOME=str(home)),
            capture_output=True,
            text=True,
            timeout=60,
        )
    )
    return home


@pytest.fixture(scope="module")
def server() -> Iterator[forked.Server]:
    """Started with COLUMNS and LINES set, as pytest-xdist sets them: a call's own must win."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "CHIPCLEAR_"))}
    server = forked.Server(env | {"COLUMNS": "80", "LINES": "24"})
    yield server
    server.stop()


@pytest.mark.parametrize("args", CALLS, ids=" ".join)
@pytest.mark.parametrize("columns", [None, "40"])
def test_a_forked_call_prints_and_exits_as_a_fresh_one(
    args: tuple[str, ...], columns: str | None, home: Path, server: forked.Server
) -> None:
    env = hermetic_env(CHIPCLEAR_HOME=str(home), TEMPORAL_ADDRESS="127.0.0.1:1")
    if columns is not None:
        env["COLUMNS"] = columns  # read when the CLI's consoles are made: made again in each forked call
    argv = [str(CHIPCLEAR), *(arg.format(home=home) for arg in args)]
    fresh = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    child = server.run(argv, env, timeout=60)
    assert (child.returncode, child.stdout, child.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert "Traceback" not in child.stderr
