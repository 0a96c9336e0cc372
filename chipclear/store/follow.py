"""Following the log while writers append: never skip an event that commits after a later one.

On SQLite writers are serialised, so positions commit in order and reading `position > last` is
enough. On PostgreSQL positions come from a sequence and transactions commit in any order: position
41 can become visible after 42. A reader that moved its checkpoint to 42 would never see 41. Like
Marten's async daemon and eventsourcing's notification log, the follower stops at a gap. Unlike a
timeout guess, it knows when the gap is final: every writer takes its stream (and so a transaction
id) before it draws a position, so once every transaction that was running when the gap was seen has
finished, a position still missing belongs to a rolled-back append and can be passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from chipclear.domain.events import StoredEvent

if TYPE_CHECKING:
    from chipclear.store.sql import SQLEventStore

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


class InOrderFollower:
    """For a store whose positions commit in order (SQLite): the next page is always final."""

    waiting = False  # positions commit in order: there is never a gap to wait out

    def __init__(self, store: SQLEventStore, after_position: int) -> None:
        self.store, self.position = store, after_position

    def poll(self) -> list[StoredEvent]:
        page = self.store.read_page(self.position)
        if page:
            self.position = page[-1].position
        return page


@dataclass(frozen=True)
class Gap:
    """A gap seen after `position`: final once no transaction older than `xmax` is running."""

    xmax: int  # the first transaction id not yet assigned when the gap was seen
    through: int  # the highest position visible then: every position up to it was drawn before


@dataclass(frozen=True)
class Cursor:
    position: int = 0  # the last position handed out
    gap: Gap | None = None  # a gap waiting to become final
    final_through: int = 0  # every position up to here is final: missing ones were rolled back


def settled_run(
    rows: list[tuple[int, T]], cursor: Cursor, *, xmin: int, xmax: int, complete: bool
) -> tuple[list[T], Cursor]:
    """Which of `rows` (visible now, in position order) may be handed out, and where that leaves us.

    Pure, so the rule is tested on its own. Contiguous positions pass. At a gap the follower waits
    until the gap it saw is final (`xmin`, the oldest transaction still running, has reached the
    gap's `xmax`); then every position up to the gap's `through` is final, and the visible ones pass
    while the missing ones (rolled back) are skipped. `complete` says `rows` holds every visible row
    after the cursor (no page limit cut it short).
    """
    position, gap, final_through = cursor.position, cursor.gap, cursor.final_through
    if gap is not None and xmin >= gap.xmax:
        final_through, gap = max(final_through, gap.through), None
    out: list[T] = []
    for at, event in rows:
        if at != position + 1 and at > final_through:
            break
        out.append(event)
        position = at
    # Rolled back at the end of the final range: every final row there is visible, so if none is left
    # unread, the follower may stand at the end of the range.
    if position < final_through and (complete or any(at > final_through for at, _ in rows)):
        position = final_through
    if gap is None and any(at > position for at, _ in rows):
        gap = Gap(xmax=xmax, through=rows[-1][0])
    return out, Cursor(position=position, gap=gap, final_through=final_through)
