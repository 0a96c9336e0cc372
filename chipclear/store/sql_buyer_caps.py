"""The buyers' caps on SQL: the units each request holds against its buyer's cap on US export approvals.

One row per request that claimed or gave back (`buyer_claims`): the units it holds, and once it ended
unlicensed, what it handed back. A claim is checked and written in one transaction that holds the
buyer's lock (`_lock_buyer`), so two requests of one buyer claiming at the same moment cannot both see
the same headroom. The rule is the domain's (`chipclear.domain.buyer_cap.check_claim`), given only the
claiming request's own row and the sum of the others: one indexed read, however many requests the
buyer has had.

Each deployment (task queue) has caps of its own, as it has its own allocation ledger: a demo's requests
(`chipclear demo`, on a queue of its own) never take a real buyer's headroom in the same store. Rows of the
production deployment have `deployment` ''.
"""

from __future__ import annotations

from datetime import UTC, datetime

from chipclear.domain.buyer_cap import BuyerCapState, BuyerClaim, ClaimUnits, ReleaseClaim, check_claim
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
            claim = check_claim(_standing(tx, key, deployment, command.request_id), command)
            if claim.units:
                now = timestamp(datetime.now(UTC))
                tx.execute(
                    _WRITE, (command.request_id, command.buyer, key, deployment, claim.units, None, now)
                )
            else:  # a partial claim that found no headroom holds nothing
                tx.execute(
                    "DELETE FROM buyer_claims WHERE request_id = ? AND released IS NULL",
                    (command.request_id,),
                )
        return claim

    def release_buyer_units(self, command: ReleaseClaim, deployment: str = "") -> int:
        """Give back what the request holds (it ended unlicensed); a second release gives back 0, and a
        request that has given back may claim no more."""
        key = normalise_buyer(command.buyer)
        with self._transaction() as tx:
            self._lock_buyer(tx, f"{deployment}:{key}")
            own = tx.execute(
                "SELECT units, released FROM buyer_claims WHERE request_id = ?", (command.request_id,)
            ).fetchone()
            if own is not None and own[1] is not None:
                return 0
            units = own[0] if own is not None else 0
            now = timestamp(datetime.now(UTC))
            tx.execute(_WRITE, (command.request_id, command.buyer, key, deployment, 0, units, now))
        return int(units)

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


def _standing(tx: Tx, key: str, deployment: str, request_id: str) -> BuyerCapState:
    """The cap as one claim meets it: the request's own row, and what the buyer's others hold."""
    own = tx.execute(
        "SELECT units, released FROM buyer_claims WHERE request_id = ?", (request_id,)
    ).fetchone()
    (others,) = tx.execute(
        "SELECT COALESCE(SUM(units), 0) FROM buyer_claims "
        "WHERE buyer_key = ? AND deployment = ? AND request_id <> ?",
        (key, deployment, request_id),
    ).fetchone()
    holds = own is not None and own[1] is None and own[0] > 0
    return BuyerCapState(
        buyer_key=key,
        claims={request_id: own[0]} if holds else {},
        released={request_id: own[1]} if own is not None and own[1] is not None else {},
        held_elsewhere=int(others),
    )
