"""What the long-lived entity workflows (the allocation ledger, each exporter) share.

An entity's update handlers do its work, and a refusal by its domain rule fails the update (see
`domain_refusals`); its run only waits for its history to grow long, then continues as new, carrying
its state. Temporal wants `@workflow.run` on the workflow class itself, so each entity keeps a short
run that awaits `live_then_continue` or its parts; the ledger's first settles what it need not carry
(`licensed_to_settle`, chipclear.domain.settling).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Generic, NoReturn, TypeVar

from pydantic import BaseModel
from temporalio import workflow
from temporalio.exceptions import ApplicationError

from chipclear.contracts import CONTINUING_AS_NEW, STATE_QUERY, StateQuery
from chipclear.domain.errors import DomainError
from chipclear.domain.settling import SETTLED_PER_RUN, Carried
from workflows import calls

if TYPE_CHECKING:
    from chipclear.contracts import EntityInput

StateT = TypeVar("StateT", bound=BaseModel)


class Stateful(Generic[StateT]):
    """A workflow whose state is what the event store holds of it, answered by the one query every
    workflow answers (`STATE_QUERY`): an entity or a licence folds an event only once it is stored."""

    _state: StateT

    @workflow.query(name=STATE_QUERY)
    def state(self, _: StateQuery | None = None) -> StateT:
        return self._state


async def live_then_continue(
    input: EntityInput[StateT], state: Callable[[], StateT], closing: Callable[[], None] = lambda: None
) -> NoReturn:
    """Live until the history is long, then continue as new with the state as it is by then.
    `closing` is called once it is time, before the handlers in flight are waited for."""
    await until_history_is_long(input.history_limit, closing)
    workflow.continue_as_new(input.carrying(state()))


async def until_history_is_long(limit: int, closing: Callable[[], None] = lambda: None) -> None:
    """For entity workflows that live for years: return when it is time to continue as new (past
    `limit` history events, or when the server suggests it) and no update handler is mid-flight."""
    await workflow.wait_condition(lambda: history_is_long(limit))
    closing()
    # Finish every in-flight update before handing the state to the next run.
    await workflow.wait_condition(workflow.all_handlers_finished)


async def licensed_to_settle(
    carried: Carried, held: Container[str], released: Container[str], patch: str
) -> set[str] | None:
    """For an entity about to continue as new (chipclear.domain.settling): which of the requests it carried
    in and that still hold its units now hold their licence, as the store says (a local activity).

    None when the run has nothing it could settle: nothing is asked, and no marker of `patch` (the change
    that brought settling to this entity) is recorded."""
    asked = carried.to_ask(held)
    if not (asked or carried.any_given_back(released)) or not workflow.patched(patch):
        return None
    return set(await calls.licensed_requests(asked, SETTLED_PER_RUN)) if asked else set()


def history_is_long(limit: int) -> bool:
    """Past `limit` history events, or the server suggests continuing as new."""
    return (
        workflow.info().get_current_history_length() > limit or workflow.info().is_continue_as_new_suggested()
    )


def admit(closing: bool) -> None:
    """For the validators of an entity under a rush (the ledger's reservations): once its run is
    closing (`live_then_continue` said so), turn new updates away, so that the ones in flight can
    finish and the run can continue as new.

    Without it a sustained rush keeps handlers in flight, the run never continues, and it runs into the
    server's limit on updates per run (2,000): then every update is refused until the rush ebbs. A
    validator's refusal never enters history, so it needs no patch; the caller sends it again
    (activities/allocation.py), and it reaches the next run. The run's own word, not the history
    length, decides: a validator runs in the update's speculative task, whose history is longer than
    the run's by that task's own events, and would turn updates away from a run that is not closing.
    """
    if closing:
        raise ApplicationError("continuing as new: send it again", type=CONTINUING_AS_NEW)


@contextmanager
def domain_refusals() -> Iterator[None]:
    """A DomainError raised inside fails the update (or, in a validator, rejects it before it enters
    history): non-retryable, of type `DomainError`, with the rule's own message for the caller."""
    try:
        yield
    except DomainError as exc:
        raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from None
