"""Workflow modules compiled once per process, not once per workflow run.

The workflow sandbox imports each workflow's module afresh for every run, so that no state leaks from one
run to another. Where Python keeps no bytecode cache (`PYTHONDONTWRITEBYTECODE`, a read-only install,
a fresh checkout) every such import compiles the source again: measured on this 2-core machine, 18 ms of
CPU for `workflows/import_request.py` alone and about 50 ms for everything a licensed request's runs
import, per request, which made compiling the single largest cost of the worker under load.

A code object is immutable, so one compiled per source file (and per change to it) can be executed into
every fresh module the sandbox makes: each run still gets its own module, with its own globals.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import threading
from collections.abc import Sequence
from types import CodeType, ModuleType

_PACKAGES = ("workflows",)


_CODES: dict[tuple[str, int, int], CodeType] = {}
_LOCK = threading.Lock()


class _CachedLoader(importlib.machinery.SourceFileLoader):
    def get_code(self, fullname: str) -> CodeType:
        path = self.get_filename(fullname)
        stat = os.stat(path)
        key = (path, stat.st_mtime_ns, stat.st_size)  # an edited file is compiled again
        code = _CODES.get(key)
        if code is None:
            code = super().get_code(fullname)
            assert code is not None  # a source file always compiles to code, or raises
            with _LOCK:
                _CODES[key] = code
        return code


class _Finder(importlib.abc.MetaPathFinder):
    """Finds chipclear's workflow modules as the path finder would, loaded through the cache."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] not in _PACKAGES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            spec.loader = _CachedLoader(spec.loader.name, spec.loader.path)
        return spec


_FINDER = _Finder()


def compile_once() -> None:
    """Install the cache for this process (idempotent): before any worker runs a workflow."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
