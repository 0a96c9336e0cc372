"""Workflow modules are compiled once per process and source, and every run still gets a fresh module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from chipclear.workflow_code import _Finder, compile_once


def _load(finder: _Finder, name: str, folder: Path) -> object:
    spec = finder.find_spec(name, [str(folder)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_workflow_module_is_compiled_once_and_executed_into_fresh_modules(tmp_path: Path) -> None:
    source = tmp_path / "counting.py"
    source.write_text("runs = []\nruns.append(1)\n")
    finder = _Finder()
    first, second = (
        _load(finder, "workflows.counting", tmp_path),
        _load(finder, "workflows.counting", tmp_path),
    )
    assert first is not second and first.runs == [1] and second.runs == [1]  # type: ignore[attr-defined]
    spec = finder.find_spec("workflows.counting", [str(tmp_path)])
    assert spec is not None and spec.loader is not None
    code = spec.loader.get_code("workflows.counting")  # type: ignore[attr-defined]
    assert code is spec.loader.get_code("workflows.counting")  # type: ignore[attr-defined]


def test_an_edited_workflow_module_is_compiled_again(tmp_path: Path) -> None:
    source = tmp_path / "edited.py"
    source.write_text("value = 1\n")
    finder = _Finder()
    assert _load(finder, "workflows.edited", tmp_path).value == 1  # type: ignore[attr-defined]
    source.write_text("value = 22\n")
    assert _load(finder, "workflows.edited", tmp_path).value == 22  # type: ignore[attr-defined]


def test_only_the_workflow_packages_are_taken(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.py").write_text("x = 1\n")
    assert _Finder().find_spec("elsewhere", [str(tmp_path)]) is None
    compile_once()
    compile_once()
    assert sum(isinstance(finder, _Finder) for finder in sys.meta_path) == 1
