"""The buyers' caps on SQL: the units each request holds against its buyer's cap on US export approvals.

One row per request that claimed or gave back (`buyer_claims`): the units it holds, and once it ended
unlicensed, what it handed back. A claim is checked and written in one transaction that holds the
buyer's lock (`_lock_buyer`), so two requests of one buyer claiming at the same moment cannot both see
the same headroom. The rules are the domain's (`check_claim`, then `apply_claim` or `apply_release` in
chipclear.domain.buyer_cap), given only the request's own row and, for a claim, the sum of the others:
one indexed read, however many requests the buyer has had; the row is written as they leave it.

Each deployment (task queue) has caps of its own, as it has its own allocation ledger: a demo's requests
(`chipclear demo`, on a queue of its own) never take a real buyer's headroom in the same store. Rows of the
production deployment have `deployment` ''.
"""

from __future__ import annotations

from datetime import UTC, datetime

from chipclear.domain.buyer_cap import (
    BuyerCapState,
    BuyerClaim,
    ClaimUnits,
    ReleaseClaim,
    apply_claim,
    apply_release,
    check_claim,
)
from chipclear.domain.names import normalise_buyer
from chipclear.store.chain import timestamp
from chipclear.store.sql_base import SQLBackend, Tx

BUYER_CLAIM_COLUMNS = ("request_id", "buyer", "buyer_key", "deployment", "units", "released", "claimed_at")

_WRITE = (
    "INSERT INTO buyer_claims (request_id, buyer, buyer_key, deployment, units, released, claimed_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO UPDATE SET "
    "units = excluded.units, released = excluded.released, claimed_at = excluded.claimed_at"
)


class SQLBuyerCaps(SQLBackend):
    def claim_buyer_units(self, command: ClaimUnits, deployment: str = "") -> BuyerClaim:
        """Grant `command` what the cap allows, or DomainError naming the headroom (nothing written).

        Safe to repeat: a request's later claim replaces its earlier one, so a claim repeated after a
        lost workflow task leaves what the request goes on to record."""
        key = normalise_buyer(command.buyer)
        with self._transaction() as tx:
            self._lock_buyer(tx, f"{deployment}:{key}")
            state = _own(tx, key, command.request_id)
            (others,) = tx.execute(
                "SELECT COALESCE(SUM(units), 0) FROM buyer_claims "
                "WHERE buyer_key = ? AND deployment = ? AND request_id <> ?",
                (key, deployment, command.request_id),
            ).fetchone()
            claim = check_claim(state.model_copy(update={"held_elsewhere": int(others)}), command)
            _write_own(tx, command.request_id, command.buyer, deployment, apply_claim(state, claim))
        return claim

    def release_buyer_units(self, command: ReleaseClaim, deployment: str = "") -> int:
        """Give back what the request holds (it ended unlicensed); a second release gives back 0, and a
        request that has given back may claim no more."""
        key = normalise_buyer(command.buyer)
        with self._transaction() as tx:
            self._lock_buyer(tx, f"{deployment}:{key}")
            state, units = apply_release(_own(tx, key, command.request_id), command)
            _write_own(tx, command.request_id, command.buyer, deployment, state)
        return units

    def buyer_cap(self, buyer: str, deployment: str = "") -> BuyerCapState:
        """Every claim and release of `buyer` (by its normalised name), for display and audit."""
        key = normalise_buyer(buyer)
        with self._reader() as tx:
            rows = tx.execute(
                "SELECT request_id, units, released FROM buyer_claims WHERE buyer_key = ? AND deployment = ? "
                "ORDER BY request_id",
                (key, deployment),
            ).fetchall()
        return BuyerCapState(
            buyer_key=key,
            claims={rid: units for rid, units, released in rows if released is None and units},
            released={rid: released for rid, _, released in rows if released is not None},
        )


def _own(tx: Tx, key: str, request_id: str) -> BuyerCapState:
    """The buyer's cap as one request's row gives it: its claim, or what it gave back."""
    row = tx.execute(
        "SELECT units, released FROM buyer_claims WHERE request_id = ?", (request_id,)
    ).fetchone()
    units, released = row if row is not None else (0, None)
    return BuyerCapState(
        buyer_key=key,
        claims={request_id: units} if released is None and units else {},
        released={request_id: released} if released is not None else {},
    )


def _write_own(tx: Tx, request_id: str, buyer: str, deployment: str, state: BuyerCapState) -> None:
    """Store the request's row as the domain left `state` (`apply_claim`, `apply_release`): a row holds
    units, or records what was given back; a request that holds nothing and gave nothing back has none."""
    released = state.released.get(request_id)
    units = state.claims.get(request_id, 0)
    if released is None and not units:
        tx.execute("DELETE FROM buyer_claims WHERE request_id = ?", (request_id,))
        return
    assert state.buyer_key is not None
    now = timestamp(datetime.now(UTC))
    tx.execute(_WRITE, (request_id, buyer, state.buyer_key, deployment, units, released, now))
