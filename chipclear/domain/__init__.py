"""The pure domain: models, policy, events, the gates and the decider. Imports nothing from Temporal.

The gates are imported first, so the registry knows them whichever domain module a caller imports.
"""

from chipclear.domain import gates  # noqa: F401  (registers the built-in gates)
from chipclear.domain.commands import (
    AddEvidence,
    Command,
    Decide,
    Evaluate,
    Expire,
    Submit,
    Withdraw,
)
from chipclear.domain.decider import decide
from chipclear.domain.errors import DomainError
from chipclear.domain.events import Event, StoredEvent
from chipclear.domain.models import GateName, ImportRequest, Status
from chipclear.domain.policy import Policy, load_policy
from chipclear.domain.state import RequestState, evolve, fold, initial_state

__all__ = [
    "AddEvidence",
    "Command",
    "Decide",
    "DomainError",
    "Evaluate",
    "Event",
    "Expire",
    "GateName",
    "ImportRequest",
    "Policy",
    "RequestState",
    "Status",
    "StoredEvent",
    "Submit",
    "Withdraw",
    "decide",
    "evolve",
    "fold",
    "initial_state",
    "load_policy",
]
