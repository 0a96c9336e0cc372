"""The registry of gates, by name: how the core, the state and the policy reach a gate.

It imports only the request's vocabulary (models), so every domain module may import it. The built-in
gates (chipclear.domain.gates) are imported, and register themselves, the first time the registry is
asked for a gate, not when the domain package is: a command that only reads a policy (`chipclear
screening check`, for its threshold) need not wait for every gate's rules, events and facts to import
(docs/performance.md, "CLI start-up"). A policy reads a built-in gate's section with its model alone
(`section_model`, from chipclear.domain.sections). A new gate calls `register` (see docs/extending.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from chipclear.domain.models import Status

if TYPE_CHECKING:
    from chipclear.domain.gates.base import GateRules
    from chipclear.domain.policy import GateSection

_GATES: dict[str, GateRules[Any, Any]] = {}
_built_in = False  # the built-in gates imported (or being imported: they register as they go)


def _with_built_in() -> dict[str, GateRules[Any, Any]]:
    """The gates, the built-in ones first: imported here once, before any other gate is registered
    or any gate looked up, so that the registry's order (their statuses' order) is always theirs first."""
    global _built_in
    if not _built_in:
        _built_in = True
        importlib.import_module("chipclear.domain.gates")  # registers us-export, cn-import, domestic-quota
    return _GATES


def register(gate: GateRules[Any, Any]) -> GateRules[Any, Any]:
    """Make `gate` known by its name; registering an equal gate again is harmless."""
    known = _with_built_in().get(gate.name)
    if known is not None and type(known) is not type(gate):
        raise ValueError(f"a different gate is already registered as {gate.name!r}")
    _GATES[gate.name] = gate
    return gate


def unregister(name: str) -> None:
    """Forget a gate (a plug-in unloaded, a test's own gate after the test); unknown names are ignored."""
    _with_built_in().pop(name, None)


def registered() -> dict[str, GateRules[Any, Any]]:
    return _with_built_in()


def gate_of(name: str) -> GateRules[Any, Any]:
    try:
        return _with_built_in()[name]
    except KeyError:
        raise KeyError(f"unknown gate {name!r} (known gates: {', '.join(sorted(_GATES))})") from None


def section_model(name: str) -> type[GateSection]:
    """The model of gate `name`'s policy section: a built-in gate's without importing the gates (their
    rules are not needed to read a policy); any other's from its registered gate (KeyError: none)."""
    if not _built_in:
        from chipclear.domain.sections import BUILT_IN_SECTIONS

        found = BUILT_IN_SECTIONS.get(name)
        if found is not None:
            return found
    return gate_of(name).section_model


def statuses() -> list[str]:
    """Every status a request can have: submitted, each registered gate's own, and the final ones."""
    at_gates = [status for gate in _with_built_in().values() for status in gate.statuses()]
    return [Status.SUBMITTED, *at_gates, *(status for status in Status if status.is_final)]
