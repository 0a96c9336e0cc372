"""The event store: the legal record. One protocol; backends chosen by URL."""

from chipclear.store.factory import open_store
from chipclear.store.protocol import AppendResult, AuditReport, ConcurrencyError, EventStore, RequestSummary

__all__ = ["AppendResult", "AuditReport", "ConcurrencyError", "EventStore", "RequestSummary", "open_store"]
