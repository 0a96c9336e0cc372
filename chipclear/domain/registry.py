"""The registry of gates, by name: how the core, the state and the policy reach a gate.

It imports only the request's vocabulary (models), so every domain module may import it; the gates
register themselves when chipclear.domain.gates is imported (the domain package does that first
thing), and a new gate calls `register` (see docs/extending.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chipclear.domain.models import Status

if TYPE_CHECKING:
    from chipclear.domain.gates.base import GateRules

_GATES: dict[str, GateRules[Any, Any]] = {}


def register(gate: GateRules[Any, Any]) -> GateRules[Any, Any]:
    """Make `gate` known by its name; registering an equal gate again is harmless."""
    known = _GATES.get(gate.name)
    if known is not None and type(known) is not type(gate):
        raise ValueError(f"a different gate is already registered as {gate.name!r}")
    _GATES[gate.name] = gate
    return gate


def unregister(name: str) -> None:
    """Forget a gate (a plug-in unloaded, a test's own gate after the test); unknown names are ignored."""
    _GATES.pop(name, None)


def registered() -> dict[str, GateRules[Any, Any]]:
    return _GATES


def gate_of(name: str) -> GateRules[Any, Any]:
    try:
        return _GATES[name]
    except KeyError:
        raise KeyError(f"unknown gate {name!r} (known gates: {', '.join(sorted(_GATES))})") from None


def statuses() -> list[str]:
    """Every status a request can have: submitted, each registered gate's own, and the final ones."""
    at_gates = [status for gate in _GATES.values() for status in gate.statuses()]
    return [Status.SUBMITTED, *at_gates, *(status for status in Status if status.is_final)]
