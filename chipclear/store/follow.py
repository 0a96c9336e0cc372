"""Following the log while writers append: never skip an event that commits after a later one.

On SQLite writers are serialised, so positions commit in order and reading `position > last` is
enough. On PostgreSQL positions come from a sequence and transactions commit in any order: position
41 can become visible after 42. A reader that moved its checkpoint to 42 would never see 41. Like
Marten's async daemon and eventsourcing's notification log, the follower stops at a gap. Unlike a
timeout guess, it knows when the gap is final. A position is drawn by an INSERT into `events`, which
holds a lock on that table until its transaction ends. So the writers that could still fill a gap
are among those holding such a lock when the gap is seen, just after the read that showed it (the
gap lies below a committed position, so it was drawn before that read). Once all of them have
ended, a position still missing was rolled back and is passed. Only writers to this store's own
`events` table count: an unrelated long transaction elsewhere in the cluster holds nothing up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar

from chipclear.domain.events import StoredEvent

T = TypeVar("T")


class LogFollower(Protocol):
    @property
    def position(self) -> int:
        """The last position handed out: a checkpoint to resume from."""
        ...

    @property
    def waiting(self) -> bool:
        """True while a gap is not yet known to be final: polling again will pass it or fill it."""
        ...

    def poll(self) -> list[StoredEvent]:
        """The events that are final after `position`, in order; empty when there is nothing new."""
        ...


class PageReader(Protocol):
    def read_page(self, after_position: int) -> list[StoredEvent]:
        """The next page of events committed now after `after_position`, in position order."""
        ...


class InOrderFollower:
    """For a store whose positions commit in order (SQLite): the next page is always final."""

    waiting = False  # positions commit in order: there is never a gap to wait out

    def __init__(self, store: PageReader, after_position: int) -> None:
        self.store, self.position = store, after_position

    def poll(self) -> list[StoredEvent]:
        page = self.store.read_page(self.position)
        if page:
            self.position = page[-1].position
        return page


@dataclass(frozen=True)
class Gap:
    """A gap seen after `position`: final once none of `writers` is still running."""

    writers: frozenset[tuple[int, str]]  # (backend pid, virtual transaction id) of each writer then
    through: int  # the highest position visible then: every position up to it was drawn before


@dataclass(frozen=True)
class FollowerState:
    position: int = 0  # the last position handed out
    gap: Gap | None = None  # a gap waiting to become final
    final_through: int = 0  # every position up to here is final: missing ones were rolled back


def settled_run(
    rows: list[tuple[int, T]], state: FollowerState, *, gap_final: bool, complete: bool
) -> tuple[list[T], FollowerState, int | None]:
    """Which of `rows` (visible now, in position order) may be handed out, and where that leaves us.

    Pure, so the rule is tested on its own. Contiguous positions pass. At a gap the follower waits
    until the gap it saw is final (`gap_final`: every writer of that moment has ended, checked before
    `rows` were read); then every position up to the gap's `through` is final, and the visible ones
    pass while the missing ones (rolled back) are skipped. `complete` says `rows` holds every visible
    row after the follower's position (no page limit cut it short). The third value, when not None,
    is a new gap's `through`: the caller records who is writing now.
    """
    position, gap, final_through = state.position, state.gap, state.final_through
    if gap is not None and gap_final:
        final_through, gap = max(final_through, gap.through), None
    out: list[T] = []
    for at, event in rows:
        if at > final_through > position:
            # Every final row is visible and those below `at` are read: the rest of the final range
            # was rolled back, and the follower stands at its end.
            position = final_through
        if at != position + 1 and at > final_through:
            break
        out.append(event)
        position = at
    if complete and position < final_through:
        position = final_through  # the final range ends in rolled-back positions, all read
    new_gap = rows[-1][0] if gap is None and any(at > position for at, _ in rows) else None
    return out, FollowerState(position=position, gap=gap, final_through=final_through), new_gap
