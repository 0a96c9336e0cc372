"""The SQL event store: one algorithm for SQLite and PostgreSQL, assembled from one mixin per interface.

Each mixin (`sql_log`, `sql_audit`, `sql_checkpoints`, `sql_projection`, `sql_invoices`,
`sql_buyer_caps`, `sql_screening`, `sql_transfer`, `sql_schema`) builds only on the hooks of
`sql_base.SQLBackend`, which a backend implements where its concurrency differs (see `sqlite.py`,
`postgres.py`).
"""

from __future__ import annotations

from chipclear.store.chain import GENESIS
from chipclear.store.errors import StoreNotEmpty
from chipclear.store.sql_audit import SQLAudit
from chipclear.store.sql_base import EVENT_COLUMNS, Tx, chain_row, sha256, stored_event
from chipclear.store.sql_buyer_caps import SQLBuyerCaps
from chipclear.store.sql_checkpoints import SQLCheckpoints
from chipclear.store.sql_invoices import SQLInvoiceRegistry
from chipclear.store.sql_log import SQLEventLog
from chipclear.store.sql_projection import SQLProjections
from chipclear.store.sql_schema import SQLSchema
from chipclear.store.sql_screening import SCREENING_STREAM, SQLScreeningLists
from chipclear.store.sql_transfer import SQLTransfer


class SQLEventStore(
    SQLEventLog,
    SQLAudit,
    SQLCheckpoints,
    SQLProjections,
    SQLInvoiceRegistry,
    SQLBuyerCaps,
    SQLScreeningLists,
    SQLTransfer,
    SQLSchema,
):
    """Every store interface (`protocol.EventStore`) over a SQL database that offers `SQLBackend`'s hooks."""


__all__ = [
    "EVENT_COLUMNS",
    "GENESIS",
    "SCREENING_STREAM",
    "SQLEventStore",
    "StoreNotEmpty",
    "Tx",
    "chain_row",
    "sha256",
    "stored_event",
]
