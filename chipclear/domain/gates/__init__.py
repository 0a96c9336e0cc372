"""The gates, one module each: the three built in register here on import.

A new gate is a module that subclasses `GateRules` and calls `register` (see docs/extending.md). The
decider core, the workflow loop and the CLI's output reach a gate only through the registry.
"""

from __future__ import annotations

from chipclear.domain.gates import cn_import, domestic_quota, us_export
from chipclear.domain.registry import gate_of, register, registered, statuses

for _module in (us_export, cn_import, domestic_quota):
    register(_module.GATE)

__all__ = ["cn_import", "domestic_quota", "gate_of", "register", "registered", "statuses", "us_export"]
