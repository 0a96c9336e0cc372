"""The invoice registry on SQL: which request each domestic invoice counts for, across all requests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from chipclear.domain.evidence import InvoiceOwner
from chipclear.domain.names import normalise_buyer
from chipclear.store.chain import timestamp
from chipclear.store.sql_base import SQLBackend

INVOICE_COLUMNS = ("invoice_key", "request_id", "buyer", "buyer_key", "registered_at")


class SQLInvoiceRegistry(SQLBackend):
    def register_invoices(self, request_id: str, buyer: str, keys: Sequence[str]) -> dict[str, InvoiceOwner]:
        """Register each free invoice to `request_id`; answer who owns every key, in one transaction.

        First come, first served, atomically: two requests registering one invoice at the same
        moment cannot both get it. Registering again for the same request changes nothing. Keys are
        taken in sorted order, so two registrations of overlapping sets cannot deadlock.
        """
        keys = sorted(set(keys))
        if not keys:
            return {}
        now = timestamp(datetime.now(UTC))
        with self._transaction() as tx:
            tx.executemany(
                "INSERT INTO invoices (invoice_key, request_id, buyer, buyer_key, registered_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (invoice_key) DO UPDATE SET "
                "request_id = excluded.request_id, registered_at = excluded.registered_at "
                "WHERE invoices.request_id IS NULL AND invoices.buyer_key = excluded.buyer_key",
                [(key, request_id, buyer, normalise_buyer(buyer), now) for key in keys],
            )
            marks = ", ".join("?" * len(keys))
            rows = tx.execute(
                f"SELECT invoice_key, request_id, buyer FROM invoices WHERE invoice_key IN ({marks})", keys
            ).fetchall()
        return {
            key: InvoiceOwner(request_id=owner or "(ended unlicensed)", buyer=owner_buyer)
            for key, owner, owner_buyer in rows
        }

    def release_invoices(self, request_id: str) -> int:
        """A request that ended without a licence frees its invoices, for its own buyer only."""
        with self._transaction() as tx:
            cursor = tx.execute("UPDATE invoices SET request_id = NULL WHERE request_id = ?", (request_id,))
            return cursor.rowcount
