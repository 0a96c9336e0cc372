"""The event store: the legal record. Small interfaces (`protocol`); backends chosen by URL (`factory`)."""

from chipclear.store.chain import AuditReport
from chipclear.store.errors import ConcurrencyError, StoreUnavailable
from chipclear.store.factory import open_store
from chipclear.store.protocol import (
    AppendResult,
    EventLog,
    EventStore,
    InvoiceRegistry,
    LogReader,
    ProjectionRows,
    Projections,
    Schema,
    ScreeningLists,
    Transfer,
)

__all__ = [
    "AppendResult",
    "AuditReport",
    "ConcurrencyError",
    "EventLog",
    "EventStore",
    "InvoiceRegistry",
    "LogReader",
    "ProjectionRows",
    "Projections",
    "Schema",
    "ScreeningLists",
    "StoreUnavailable",
    "Transfer",
    "open_store",
]
