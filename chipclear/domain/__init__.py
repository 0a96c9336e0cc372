"""The pure domain: models, policy, events and the decider. Imports nothing from Temporal."""

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
from chipclear.domain.models import Gate, ImportRequest, Status
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
    "Gate",
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
