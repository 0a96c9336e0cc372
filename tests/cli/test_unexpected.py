"""The last guard: whatever no command expected is one sentence and a log file, never a traceback."""

from __future__ import annotations

import stat
from pathlib import Path

from tests.cli.test_cli import chipclear, hermetic_env, refused


def test_a_corrupt_database_is_one_sentence_and_a_private_log(tmp_path: Path) -> None:
    # A SQLite header over garbage passes every check the store makes of its URL and file (a text file or
    # /dev/null is refused as bad input, exit 2: tests/corpus), so only the driver finds it broken.
    home = tmp_path / "home"
    path = tmp_path / "events.db"
    path.write_bytes(b"SQLite format 3\x00" + b"\x07" * 5000)
    store = str(path)
    env = hermetic_env(CHIPCLEAR_HOME=str(home), CHIPCLEAR_EVENT_STORE=f"sqlite:///{store}")
    result = refused(chipclear(env, "list", "--status", "licensed"), "unexpected", "the details are in")
    assert len(result.stderr.strip().splitlines()) <= 2  # one sentence, soft-wrapped at most once
    (log,) = (home / "logs").iterdir()
    assert str(log) in " ".join(result.stderr.split())
    assert "Traceback (most recent call last)" in log.read_text()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "logs").stat().st_mode) == 0o700


def test_a_position_beyond_64_bits_is_bad_input(tmp_path: Path) -> None:
    env = hermetic_env(CHIPCLEAR_HOME=str(tmp_path / "home"))
    refused(chipclear(env, "events", "--after", "99999999999999999999"), "--after", code=2)
    assert not (tmp_path / "home" / "logs").exists()
