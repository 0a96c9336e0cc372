"""Driving one request through the pure decider, command by command, as the workflow does.

Decider tests subclass `Run` only to give `now` their own default.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import pytest

from chipclear.domain.commands import Command, Decide, Evaluate
from chipclear.domain.decider import decide
from chipclear.domain.errors import DomainError
from chipclear.domain.events import Event
from chipclear.domain.models import Gate
from chipclear.domain.policy import Policy
from chipclear.domain.state import RequestState, evolve, fold

# The reviewers tests.factories.make_policy names for each gate.
REVIEWER = {Gate.US_EXPORT: "alice", Gate.CN_IMPORT: "wang", Gate.DOMESTIC_QUOTA: "wang"}


class Ids:
    """A counter-based `new_id`: deterministic event ids."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"evt-{next(self._counter):06d}"


@dataclass
class Run:
    """A request driven command by command, keeping its history and checking every step's envelope."""

    policy: Policy
    now: datetime
    state: RequestState = field(default_factory=RequestState)
    history: list[Event] = field(default_factory=list)
    new_id: Ids = field(default_factory=Ids)

    @property
    def request_id(self) -> str:
        assert self.state.request_id is not None
        return self.state.request_id

    def send(self, command: Command, at: datetime | None = None) -> list[Event]:
        when = self.now if at is None else at
        before = self.state
        events = decide(before, command, self.policy, when, new_id=self.new_id)
        versions = [event.version for event in events]
        assert versions == list(range(before.version + 1, before.version + 1 + len(events)))
        for event in events:
            assert event.policy_version == self.policy.version
            assert event.occurred_at == when
            assert event.stream_id == (before.request_id or event.stream_id)
            self.state = evolve(self.state, event)
        self.history.extend(events)
        assert fold(self.history) == self.state  # the live fold and a fresh one agree
        return events

    def refuse(self, command: Command, match: str, at: datetime | None = None) -> DomainError:
        """The command is refused with `match` in the message, and nothing changes."""
        before = self.state
        with pytest.raises(DomainError, match=match) as info:
            decide(before, command, self.policy, self.now if at is None else at, new_id=self.new_id)
        assert self.state == before
        return info.value

    def to(self, gate: Gate) -> None:
        """Move on to `gate` as the workflow does: Evaluate, then a reviewer approves each gate before."""
        for earlier in list(Gate)[: list(Gate).index(gate)]:
            if self.state.gate is earlier:
                self.send(Evaluate(gate=earlier))
            if self.state.gate is earlier:
                self.send(Decide(gate=earlier, reviewer=REVIEWER[earlier], approve=True))
        assert self.state.gate is gate, self.state.status


def types(events: Sequence[Event]) -> list[str]:
    return [event.type for event in events]


T = TypeVar("T")


def only(events: Sequence[Event], kind: type[T]) -> T:
    """The one event payload of `kind` among `events`."""
    found = [event.data for event in events if isinstance(event.data, kind)]
    assert len(found) == 1, types(events)
    return found[0]
