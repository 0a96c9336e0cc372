"""What a long-lived entity (the allocation ledger, an exporter) may stop carrying from run to run.

Each entity continues as new with its state as the input of its next run, and Temporal refuses an input
over 2 MB. An entity that carried every request it had ever served would reach that after some thousands
and stop. So as a run ends it settles the requests whose business with it is over: those holding its
units that now hold their licence (they never give the units back), and those that gave them back. Their
units stay in the entity's totals; their names leave its state.

Only requests carried in from the run before are settled: a request answered in the run that is ending
might still have an activity attempt in flight, and its repeat must get the same answer (a repeated claim
by a forgotten request would be granted again). Pure, like the rest of the domain.
"""

from __future__ import annotations

from collections.abc import Container, Iterable

from pydantic import BaseModel, ConfigDict

# At most this many requests settled by one run (the rest by the next): the run's recorded answer (which
# of them are licensed) stays some 40 kB however many were licensed while it ran.
SETTLED_PER_RUN = 1_000


class Carried(BaseModel):
    """The requests a run was started with: those holding the entity's units, and those that had given
    them back."""

    model_config = ConfigDict(frozen=True)
    held: tuple[str, ...] = ()
    released: tuple[str, ...] = ()

    @classmethod
    def of(cls, held: Iterable[str], released: Iterable[str]) -> Carried:
        return cls(held=tuple(held), released=tuple(released))

    def to_ask(self, held: Container[str]) -> list[str]:
        """The carried-in requests still holding units (`held`: as the run now stands): which of them hold
        their licence is the store's to say. Every one, not the first SETTLED_PER_RUN: holders that stay
        under review for months would otherwise fill the question every run, and licensed requests behind
        them would never be asked about. The answer is what is capped (`licensed_among`)."""
        return [rid for rid in self.held if rid in held]

    def any_given_back(self, released: Container[str]) -> bool:
        return any(rid in released for rid in self.released)

    def settleable(
        self, held: Container[str], released: Container[str], licensed: Container[str]
    ) -> tuple[list[str], list[str]]:
        """The carried-in requests to settle now: those still holding units that are `licensed`, then those
        that have given them back; at most SETTLED_PER_RUN in all."""
        licences = [rid for rid in self.to_ask(held) if rid in licensed][:SETTLED_PER_RUN]
        given_back = [rid for rid in self.released if rid in released][: SETTLED_PER_RUN - len(licences)]
        return licences, given_back
