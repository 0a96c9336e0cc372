"""How much one request may hold, and how much one act may record at once.

Temporal refuses any payload over its blob size limit (2 MiB by default) and, worse, a workflow task
that would schedule one fails and is retried forever: the request is wedged. What a person sends is
copied several times on its way (the events that record it, the signed act each event carries, the
state a query returns), and what a request accumulates (evidence, correspondence) only grows. So the
rules bound both, well below the limit, and refuse an act that would pass them with one sentence,
before anything is recorded or registered. The client's own check on each message it sends
(chipclear.payload_limits) comes first; these bounds are the workflow's own, for any caller.
"""

from __future__ import annotations

from collections.abc import Sequence

from chipclear.domain.errors import DomainError
from chipclear.domain.events import Event
from chipclear.domain.state import RequestState, evolve

KIB = 1024
MIB = 1024 * KIB
# What one act may record in one append (the activity input that carries the events): 1.5 MiB, so the
# codec's framing and the input's own fields stay far from Temporal's 2 MiB.
MAX_EVENTS_BYTES = 3 * MIB // 2
# What one request may hold (the state a query returns, evidence and correspondence included): 1 MiB,
# half of Temporal's limit, so the answer to `status` always fits, encrypted or not. Only the acts that
# bring material in (a submission, evidence, an answer) are held to it; the rest (a decision, a
# question, a withdrawal) only decide on what is held, and have the reserve up to STATE_CEILING, so a
# request filled to its bound can still be decided, withdrawn or expire.
MAX_STATE_BYTES = 1 * MIB
STATE_CEILING = 3 * MIB // 2
MATERIAL_ACTS = frozenset({"submit", "add_evidence", "respond"})


class TooLarge(DomainError):
    """An act whose events, or the request they would leave, exceed the bounds above."""


def size(nbytes: int) -> str:
    """A byte count as a person reads it: `1.5 MiB`, `300 KiB`, `12 bytes`."""
    if nbytes >= MIB:
        return f"{nbytes / MIB:.1f} MiB"
    if nbytes >= KIB:
        return f"{nbytes // KIB} KiB"
    return f"{nbytes} bytes"


def events_bytes(events: Sequence[Event]) -> int:
    """The events' size as the data converter writes them (pydantic JSON, UTF-8)."""
    return sum(len(event.model_dump_json().encode()) for event in events)


def state_bytes(state: RequestState) -> int:
    return len(state.model_dump_json().encode())


def problem(state: RequestState, events: Sequence[Event], kind: str) -> str | None:
    """Why recording `events` on `state` (what a `kind` act decided) would pass a bound, or None."""
    recorded = events_bytes(events)
    if recorded > MAX_EVENTS_BYTES:
        return (
            f"{kind} refused: it would record {size(recorded)} at once, more than the "
            f"{size(MAX_EVENTS_BYTES)} one act may (send fewer or shorter records); nothing was recorded"
        )
    after = state
    for event in events:
        after = evolve(after, event)
    held = state_bytes(after)
    if held > (MAX_STATE_BYTES if kind in MATERIAL_ACTS else STATE_CEILING):
        return (
            f"{kind} refused: the request would hold {size(held)}, more than the {size(MAX_STATE_BYTES)} "
            "one request may (evidence and answers included); nothing was recorded"
        )
    return None


def check(state: RequestState, events: Sequence[Event], kind: str) -> None:
    """Raise TooLarge when `problem` finds one."""
    if (found := problem(state, events, kind)) is not None:
        raise TooLarge(found)
