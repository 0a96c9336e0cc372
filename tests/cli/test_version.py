"""`chipclear --version`, through the console script as a user runs it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

CHIPCLEAR = Path(sys.executable).parent / "chipclear"
ROOT = Path(__file__).resolve().parents[2]


def test_version_prints_the_package_version_and_exits_0() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    result = subprocess.run([str(CHIPCLEAR), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"chipclear {project['version']}\n", (
        f"{result.stdout!r}: the installed metadata differs from pyproject.toml? (`make` reinstalls)"
    )
    assert result.stderr == ""
