"""Rebuild from the log what the store keeps beside it, and name every stored row that differs.

The chain proves the log is whole. The tables beside it are not chained: the projections are written
by the appends, the invoice registry by activities, the screening lists by `screening load`. An edit to
one of them changes what a reviewer is shown, or what the next decision is told, without touching the
log. `reconcile` folds the whole log once, from one snapshot, and compares:

- **every projection** the store keeps (`requests`): each column of each row must equal
  `projection.row` of the fold of its stream, folded by `projection.evolve`, the code the inline
  projection and `projections rebuild` run. A row no stream folds to, or a folded stream without its
  row, is a difference.
- **the invoice registry** (`invoices`), when the policy keeps invoices unique. Activities fill it from
  facts, not from events, so what the log implies is rebuilt instead: a projection that can say which
  invoices a folded state holds (`HoldsInvoices`: the request projection names the invoice keys of the
  request's accepted evidence) gives each invoice to the one request that counted it and has not ended
  without a licence, or to no request (the row stays, released, with its buyer) when every request
  that counted it ended unlicensed. Compared for each invoice key: that the row exists, the request
  holding it (`request_id`, NULL when released) and the buyer (`buyer_key`, and that `buyer`
  normalises to it). Not compared: `registered_at` (the activity's clock). An invoice no accepted
  evidence names is a row no event registered.
- **the buyers' caps** (`buyer_claims`). Filled by the claims of requests' first steps, so again rebuilt
  from what the requests recorded: a projection that can say what a folded state holds of its buyer's
  cap (`HoldsBuyerUnits`: the claim behind the request's US export approval, and whether that approval
  went back) gives each row. Compared for each request: a row holding units must be a claim the log
  records, with its units and buyer; a row that gave units back must be an approval the log records as
  released; a row that gave back must belong to a request the log has ended; a claim the log records
  needs its row. A row that holds nothing and gave nothing back (a request that ended before any
  claim) changes no headroom and is not compared. Not compared: `claimed_at` (the activity's clock).
- **the screening lists** (`screening_lists`): every list a `ScreeningListLoaded` records is stored
  with the description the event gives it (checksum, source, counts, load time), no list is stored
  that no event records, and the entries of the list in force (the newest event's) hash to the
  event's `entries_sha256`. `verify` checks the entries of every list.

One pass over the log in stream order, paged, so memory holds one stream's fold at a time (plus a map
of the invoices counted); each table is read in key order beside it, a merge, never loaded whole.
A request that ended unlicensed a moment ago may still hold its invoices until its workflow gives them
back: run it again before acting on such a difference.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from chipclear.domain.events import ScreeningListLoaded, StoredEvent
from chipclear.domain.names import normalise_buyer
from chipclear.store.projection import Projection
from chipclear.store.protocol import PAGE, EventStore
from chipclear.store.screening_tables import DESCRIPTION
from chipclear.store.sql_base import EVENT_COLUMNS, SQLBackend, Tx, sha256, stored_event
from chipclear.store.sql_screening import SCREENING_STREAM, described, loaded_by

SHOWN = 60  # values longer than this (a state's JSON) are said to differ, not quoted


class Difference(BaseModel):
    """A stored row that is not what the log says it must be."""

    model_config = ConfigDict(frozen=True)
    table: str  # `requests`, `invoices`, `buyer_claims`, `screening_lists`
    key: str  # the row's key: a request id, an invoice key, a list version
    problem: str  # one sentence naming the table, the key and what differs

    def describe(self) -> str:
        return self.problem


class InvoiceClaim(BaseModel):
    """The invoices a request's accepted evidence counted: what it registered to itself."""

    model_config = ConfigDict(frozen=True)
    request_id: str
    buyer: str
    keys: tuple[str, ...]
    status: str
    # The request ended without a licence: its workflow released them (still its buyer's, no request's).
    released: bool


class BuyerUnits(BaseModel):
    """What a request's record says it holds of its buyer's cap."""

    model_config = ConfigDict(frozen=True)
    request_id: str
    buyer: str
    units: int  # the claim behind its US export approval (0: no claim recorded)
    released: bool  # the approval went unused and its units back to the cap
    ended: bool  # the request is final: only then may it have given anything back


@runtime_checkable
class HoldsBuyerUnits(Protocol):
    """A projection whose folded state knows its claim on the buyer's cap (the request projection)."""

    def buyer_units_held(self, state: Any) -> BuyerUnits | None: ...


@runtime_checkable
class HoldsInvoices(Protocol):
    """A projection whose folded state knows which invoices it counted (the request projection)."""

    def invoices_held(self, state: Any) -> InvoiceClaim | None: ...


def reconcile(store: EventStore, *, unique_invoices: bool = True) -> list[Difference]:
    """Every stored row of the projections, the invoice registry, the buyers' caps and the screening
    lists that the log does not give; empty when they all agree. `unique_invoices`: whether the policy in
    force keeps the invoice registry (`domestic_quota.unique_invoices`); when off, no registry is kept or
    compared."""
    if not isinstance(store, SQLBackend):
        raise TypeError(f"reconcile reads a SQL event store, not a {type(store).__name__}")
    # One read-only snapshot: a worker appending meanwhile cannot make the log and a table disagree.
    with store._snapshot() as tx:
        return _Reconciliation(store, tx, unique_invoices=unique_invoices).run()


class _Reconciliation:
    def __init__(self, backend: SQLBackend, tx: Tx, *, unique_invoices: bool) -> None:
        self.backend, self.tx = backend, tx
        self.unique_invoices = unique_invoices
        self.differences: list[Difference] = []
        self.tables = [_TableCheck(tx, projection, self.differences) for projection in backend.projections]
        self.claims: dict[str, list[InvoiceClaim]] = {}
        self.holdings: dict[str, BuyerUnits] = {}
        self.loaded: list[StoredEvent] = []

    def run(self) -> list[Difference]:
        projections = self.backend.projections
        stream: str | None = None
        states: list[Any] = []
        folded: list[int] = []
        for event in _log(self.backend, self.tx):
            if event.stream_id != stream:
                if stream is not None:
                    self._folded(stream, states, folded)
                stream, states, folded = event.stream_id, [None] * len(projections), [0] * len(projections)
            for n, projection in enumerate(projections):
                if projection.wants(event):
                    states[n] = projection.evolve(states[n], [event])
                    folded[n] += 1
            if event.stream_id == SCREENING_STREAM and isinstance(event.data, ScreeningListLoaded):
                self.loaded.append(event)
        if stream is not None:
            self._folded(stream, states, folded)
        for table in self.tables:
            table.finish()
        # Only a projection that knows which invoices a request holds says what the registry must be.
        if self.unique_invoices and any(isinstance(p, HoldsInvoices) for p in projections):
            self._invoices()
        if any(isinstance(p, HoldsBuyerUnits) for p in projections):
            self._buyer_claims()
        self._screening_lists()
        return self.differences

    def _folded(self, stream: str, states: Sequence[Any], folded: Sequence[int]) -> None:
        """One stream folded: compare its row in each projection, note the invoices it holds."""
        for projection, table, state, events in zip(
            self.backend.projections, self.tables, states, folded, strict=True
        ):
            if state is None:
                continue
            table.expect(stream, projection.row(state), events)
            claim = projection.invoices_held(state) if isinstance(projection, HoldsInvoices) else None
            if claim is not None:
                for key in claim.keys:
                    self.claims.setdefault(key, []).append(claim)
            holding = projection.buyer_units_held(state) if isinstance(projection, HoldsBuyerUnits) else None
            if holding is not None:
                self.holdings[holding.request_id] = holding

    # -- the invoice registry ------------------------------------------------------------------------
    def _invoices(self) -> None:
        stored: set[str] = set()
        for key, request_id, buyer, buyer_key in _pages(
            self.tx, "invoices", ("invoice_key", "request_id", "buyer", "buyer_key")
        ):
            stored.add(key)
            claims = self.claims.get(key)
            if claims is None:
                held = f"held by {request_id}" if request_id is not None else "released"
                self._differs("invoices", key, f"an invoices row for {key} ({held}) that no event registered")
                continue
            problems = _log_conflicts(claims)
            holder, owner = _holder(claims)
            if request_id != holder:
                was = f"held by {request_id}" if request_id is not None else "released"
                problems.append(f"{was} but the log gives it to {_given(holder, claims)}")
            if buyer_key != normalise_buyer(owner) or normalise_buyer(buyer) != normalise_buyer(owner):
                problems.append(
                    f"buyer {buyer!r} (key {buyer_key!r}) but the log gives it to buyer {owner!r}"
                )
            if problems:
                self._differs("invoices", key, f"invoices row {key}: {'; '.join(problems)}")
        for key in sorted(set(self.claims) - stored):
            claims = self.claims[key]
            holder, _ = _holder(claims)
            counted = " and ".join(claim.request_id for claim in claims)
            why = (
                f"request {holder}'s accepted evidence holds it"
                if holder is not None
                else f"{counted} counted it (released since, not deleted)"
            )
            self._differs("invoices", key, f"an invoices row for {key} missing: {why}")

    # -- the buyers' caps ----------------------------------------------------------------------------
    def _buyer_claims(self) -> None:
        stored: set[str] = set()
        for request_id, buyer, buyer_key, units, released in _pages(
            self.tx, "buyer_claims", ("request_id", "buyer", "buyer_key", "units", "released")
        ):
            stored.add(request_id)
            problem = _claim_problem(self.holdings.get(request_id), buyer, buyer_key, units, released)
            if problem is not None:
                self._differs("buyer_claims", request_id, f"buyer_claims row {request_id}: {problem}")
        for request_id in sorted(set(self.holdings) - stored):
            held = self.holdings[request_id]
            if held.units:
                what = "gave back" if held.released else "holds"
                self._differs(
                    "buyer_claims",
                    request_id,
                    f"a buyer_claims row for {request_id} missing: its record {what} {held.units} units "
                    f"of {held.buyer}'s cap",
                )

    # -- the screening lists -------------------------------------------------------------------------
    def _screening_lists(self) -> None:
        rows = {
            row[0]: tuple(row[1:])
            for row in self.tx.execute(
                f"SELECT version, {', '.join(DESCRIPTION)} FROM screening_lists ORDER BY version"
            ).fetchall()
        }
        recorded = {loaded_by(event).version for event in self.loaded}
        for version in sorted(set(rows) - recorded):
            self._differs(
                "screening_lists",
                version,
                f"a screening_lists row {version} that no ScreeningListLoaded event records",
            )
        newest = self.loaded[-1] if self.loaded else None
        for event in self.loaded:
            version = loaded_by(event).version
            in_force = " (the list in force)" if event is newest else ""
            stored = rows.get(version)
            if stored is None:
                self._differs(
                    "screening_lists",
                    version,
                    f"a screening_lists row {version}{in_force} missing: ScreeningListLoaded event "
                    f"{event.version} of {SCREENING_STREAM} records it",
                )
                continue
            problems = [
                f"{column} {_shown(have)} but the log records {_shown(want)}"
                for column, have, want in zip(DESCRIPTION, stored, described(event), strict=True)
                if have != want
            ]
            entries_sha256 = loaded_by(event).entries_sha256
            if event is newest and entries_sha256 is not None:
                (data,) = self.tx.execute(
                    "SELECT data FROM screening_lists WHERE version = ?", (version,)
                ).fetchone()
                if sha256(data) != entries_sha256:
                    problems.append("its entries differ from the list that was loaded (entries sha256)")
            if problems:
                self._differs(
                    "screening_lists",
                    version,
                    f"screening_lists row {version}{in_force}: {'; '.join(problems)}",
                )

    def _differs(self, table: str, key: str, problem: str) -> None:
        self.differences.append(Difference(table=table, key=key, problem=problem))


class _TableCheck:
    """One projection's table read in key order beside the log's streams (a merge join)."""

    def __init__(self, tx: Tx, projection: Projection[Any], differences: list[Difference]) -> None:
        self.projection = projection
        self.table, self.columns = projection.table, tuple(projection.columns)
        self.rows = _pages(tx, self.table, self.columns)
        self.next: tuple[Any, ...] | None = next(self.rows, None)
        self.differences = differences

    def expect(self, key: str, row: dict[str, Any], events: int) -> None:
        """The stream `key` folds to `row` (streams come in key order)."""
        while self.next is not None and self.next[0] < key:
            self._extra(self.next[0])
            self.next = next(self.rows, None)
        if self.next is None or self.next[0] != key:
            self._differs(
                key,
                f"a {self.table} row {key} missing: the log folds {events} event(s) of stream {key} to one",
            )
            return
        stored, self.next = self.next, next(self.rows, None)
        problems = [
            f"{column} {_shown(have)} but the log folds to {_shown(row[column])}"
            if _short(have) and _short(row[column])
            else f"{column} differs from the log's fold"
            for column, have in zip(self.columns, stored, strict=True)
            if have != row[column]
        ]
        if problems:
            self._differs(key, f"{self.table} row {key}: {'; '.join(problems)}")

    def finish(self) -> None:
        while self.next is not None:
            self._extra(self.next[0])
            self.next = next(self.rows, None)

    def _extra(self, key: str) -> None:
        self._differs(key, f"a {self.table} row {key} that no event of the log folds to")

    def _differs(self, key: str, problem: str) -> None:
        self.differences.append(Difference(table=self.table, key=key, problem=problem))


def _log(backend: SQLBackend, tx: Tx) -> Iterator[StoredEvent]:
    """Every event in (stream, version) order, a page at a time: keys compare byte by byte on both
    backends (SQLite's BINARY, PostgreSQL's COLLATE "C"), as Python compares str."""
    after: tuple[str, int] | None = None
    while True:
        where = "WHERE (stream_id, version) > (?, ?) " if after is not None else ""
        rows = tx.execute(
            f"SELECT {EVENT_COLUMNS} FROM events {where}ORDER BY stream_id, version LIMIT {PAGE}",
            after or (),
        ).fetchall()
        for row in rows:
            event = stored_event(row, backend.upcasters)
            yield event
        if len(rows) < PAGE:
            return
        after = (event.stream_id, event.version)


def _pages(tx: Tx, table: str, columns: Sequence[str]) -> Iterator[tuple[Any, ...]]:
    """A table's rows in key order (the first column), a page at a time."""
    key = columns[0]
    after: tuple[Any] | None = None
    while True:
        where = f"WHERE {key} > ? " if after is not None else ""
        rows = tx.execute(
            f"SELECT {', '.join(columns)} FROM {table} {where}ORDER BY {key} LIMIT {PAGE}", after or ()
        ).fetchall()
        yield from (tuple(row) for row in rows)
        if len(rows) < PAGE:
            return
        after = (rows[-1][0],)


def _claim_problem(
    held: BuyerUnits | None, buyer: str, buyer_key: str, units: int, released: int | None
) -> str | None:
    """What is wrong with one stored row of a buyer's cap, given what the request's record says."""
    if held is None or not held.units:
        if units:
            return f"holds {units} units of {buyer}'s cap, but no event records a claim by the request"
        if released:
            return f"gave back {released} units of {buyer}'s cap, but no event records a claim by the request"
        if released is not None and held is not None and not held.ended:
            return "records a release, but the request's record has not ended"
        return None
    problems = []
    if buyer_key != normalise_buyer(held.buyer) or normalise_buyer(buyer) != normalise_buyer(held.buyer):
        problems.append(f"buyer {buyer!r} (key {buyer_key!r}) but the log records buyer {held.buyer!r}")
    if held.released:
        if released != held.units or units:
            problems.append(
                f"holds {units} and gave back {released} units, but the log records {held.units} given back"
            )
    elif released is not None:
        problems.append(f"records {released} units given back, but the log records the claim still held")
    elif units != held.units:
        problems.append(f"holds {units} units, but the log records a claim of {held.units}")
    return "; ".join(problems) or None


def _holder(claims: Sequence[InvoiceClaim]) -> tuple[str | None, str]:
    """The request the log gives an invoice to (None: released by all that counted it), and its buyer."""
    holding = [claim for claim in claims if not claim.released]
    first = holding[0] if holding else claims[-1]
    return (first.request_id if holding else None), first.buyer


def _given(holder: str | None, claims: Sequence[InvoiceClaim]) -> str:
    if holder is not None:
        return holder
    ended = ", ".join(f"{claim.request_id} ended {claim.status}" for claim in claims)
    return f"no request ({ended} without a licence, so it is released)"


def _log_conflicts(claims: Sequence[InvoiceClaim]) -> list[str]:
    """What the registry should have prevented, found in the log itself: an invoice counted twice."""
    problems = []
    holding = [claim.request_id for claim in claims if not claim.released]
    if len(holding) > 1:
        problems.append(f"the log counts it for {' and '.join(holding)} at once")
    buyers = {normalise_buyer(claim.buyer): claim.buyer for claim in claims}
    if len(buyers) > 1:
        problems.append(
            f"the log counts it for requests of {len(buyers)} buyers ({', '.join(buyers.values())})"
        )
    return problems


def _short(value: Any) -> bool:
    return len(repr(value)) <= SHOWN


def _shown(value: Any) -> str:
    return repr(value) if _short(value) else f"{repr(value)[:SHOWN]}…"
