"""The store's interfaces, each small enough to fake in a test; one conformance suite per interface.

A backend (SQLite, PostgreSQL) implements all of them as one object, `EventStore`; a caller names the
narrow one it uses (the append activity an `EventLog`, screening a `ScreeningLists`, …).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol, Self

from pydantic import BaseModel

from chipclear.domain.buyer_cap import BuyerCapState, BuyerClaim, ClaimUnits, ReleaseClaim
from chipclear.domain.events import Event, StoredEvent
from chipclear.domain.evidence import InvoiceOwner
from chipclear.domain.screening import DumpedList, ScreeningList, ScreeningListInfo
from chipclear.domain.screening_act import LoadScreeningList
from chipclear.store.chain import AuditReport
from chipclear.store.checkpoint import Checkpoint, ConsistencyReport, InclusionProof

# The errors a caller of these interfaces catches, importable from here with the interfaces.
from chipclear.store.errors import CannotSeal as CannotSeal
from chipclear.store.errors import ConcurrencyError as ConcurrencyError
from chipclear.store.errors import StoreUnavailable as StoreUnavailable
from chipclear.store.follow import LogFollower
from chipclear.store.migrations import Migration
from chipclear.store.projection import Projection, RowQuery
from chipclear.store.transfer import ExportRecord, ImportSummary
from chipclear.store.trust import RecorderKey, Trust

# Told how many more events an audit has checked, stream by stream (the CLI's progress bar).
AuditProgress = Callable[[int], None]
PAGE = 1000  # events per read: a long log is read in pages, never all at once into memory


class AppendResult(BaseModel):
    stream_id: str
    version: int  # the stream's version after the append
    written: bool  # False when every event was already stored (an activity retry)


class LogReader(Protocol):
    def read_stream(self, stream_id: str) -> list[StoredEvent]: ...

    def read_all(self, after_position: int = 0, types: Sequence[str] | None = None) -> Iterator[StoredEvent]:
        """A one-off read of what is committed now (`types`: only events of these types, chosen by the
        database, so the others are never parsed); to keep reading as writers append, use `follow`."""
        ...

    def read_page(
        self, after_position: int, limit: int = PAGE, types: Sequence[str] | None = None
    ) -> list[StoredEvent]: ...


class EventLog(LogReader, Protocol):
    """The append-only, hash-chained log: write, read, follow, audit."""

    def append(self, stream_id: str, expected_version: int, events: Sequence[Event]) -> AppendResult:
        """Append atomically if the stream is at `expected_version`.

        Re-appending events whose ids are stored with identical content is a no-op success, so an
        activity retried after a lost acknowledgement never writes twice. Every event written is
        sealed with the handle's recorder key; a handle without one raises CannotSeal.
        """
        ...

    def seal_with(self, recorder: RecorderKey | None) -> Self:
        """The recorder key (or a function loading it at the first append) this handle seals with."""
        ...

    def follow(self, after_position: int = 0) -> LogFollower:
        """Hands out each event once, in position order, and never passes one that may still commit."""
        ...

    def event_count(self) -> int:
        """How many events the log holds now."""
        ...

    def verify(self, trust: Trust | None = None, progress: AuditProgress | None = None) -> AuditReport:
        """Check every chain, seal and signed act (and every stored screening list against its event)
        from one snapshot; `trust`: the keys the policy names (without it, a seal only has to verify
        under the key it names); `progress`: told how many more events were checked, stream by stream."""
        ...


class Checkpoints(Protocol):
    """The Merkle tree over the whole log and its signed heads (RFC 9162 style)."""

    def settled_position(self) -> int:
        """Every position up to this one is final now: committed, or never to be."""
        ...

    def leaves(self, after_position: int = 0, through: int | None = None) -> list[tuple[int, str]]:
        """(position, chain hash) of the events in (after_position, through], in position order."""
        ...

    def save_checkpoint(self, checkpoint: Checkpoint) -> bool: ...

    def checkpoints(self) -> list[Checkpoint]:
        """Every stored checkpoint, smallest first."""
        ...

    def make_checkpoint(self, now: datetime | None = None) -> Checkpoint:
        """Sign with the recorder key, and store, a checkpoint of every settled event."""
        ...

    def check_checkpoint(
        self, checkpoint: Checkpoint, trusted: frozenset[str] | None = None
    ) -> ConsistencyReport:
        """Whether the log now is an append-only extension of `checkpoint`."""
        ...

    def prove(
        self, event_id: str, checkpoint: Checkpoint, trusted: frozenset[str] | None = None
    ) -> InclusionProof:
        """An inclusion proof of one event in the checkpoint's tree."""
        ...


class ProjectionRows(Protocol):
    """Reading what the inline projections keep."""

    def projection_row(self, projection: Projection[Any], key: str) -> dict[str, Any] | None: ...

    def projection_rows(
        self, projection: Projection[Any], query: RowQuery = RowQuery()
    ) -> list[dict[str, Any]]:
        """The rows `query` picks (default: every row, every column), in its order."""
        ...


class Projections(ProjectionRows, Protocol):
    def rebuild_projection(self) -> int:
        """Replay the whole log into fresh rows of every registered projection; returns the row count."""
        ...


class InvoiceRegistry(Protocol):
    def register_invoices(self, request_id: str, buyer: str, keys: Sequence[str]) -> dict[str, InvoiceOwner]:
        """Register the free invoices to `request_id` atomically; who owns each of `keys` now."""
        ...

    def release_invoices(self, request_id: str) -> int:
        """Free the invoices of a request that ended unlicensed (its buyer may count them again)."""
        ...


class BuyerCaps(Protocol):
    def claim_buyer_units(self, command: ClaimUnits, deployment: str = "") -> BuyerClaim:
        """Check and take the units atomically for the buyer; DomainError naming the headroom if refused.
        `deployment`: '' for production, the suffix of another deployment's task queue beside it."""
        ...

    def release_buyer_units(self, command: ReleaseClaim, deployment: str = "") -> int:
        """Give back what a request that ended unlicensed holds; 0 the second time."""
        ...

    def buyer_cap(self, buyer: str, deployment: str = "") -> BuyerCapState:
        """Every claim and release of the buyer, by its normalised name."""
        ...


class ScreeningLists(Protocol):
    def save_screening_list(self, listing: ScreeningList | DumpedList, by: LoadScreeningList | str) -> bool:
        """Store a loaded list and its `ScreeningListLoaded` event atomically; False if unchanged.

        `by`: the person's signed load (kept on the event; refused if the stream moved on since the version
        it was signed at), or only who loaded it, unsigned (the tests' lists)."""
        ...

    def screening_list_versions(self) -> list[ScreeningListInfo]: ...

    def current_screening_info(self) -> ScreeningListInfo | None: ...

    def screening_list(self, info: ScreeningListInfo) -> ScreeningList: ...

    def current_screening_list(self) -> ScreeningList | None: ...


class Transfer(Protocol):
    def dump(self) -> Generator[ExportRecord, None, None]:
        """Everything stored, exactly as stored, from one snapshot (an export's header first)."""
        ...

    def load(self, records: Iterable[ExportRecord], trust: Trust | None = None) -> ImportSummary:
        """Import an export into this empty store; commits only if every chain, seal, signed act and
        checkpoint verifies (seals and checkpoints by keys `trust` names, when given)."""
        ...


class Schema(Protocol):
    def schema_version(self) -> int: ...

    def pending_migrations(self) -> list[Migration]: ...

    def migrate(self) -> list[Migration]:
        """Apply the pending schema migrations in order; returns those applied."""
        ...

    def require_schema(self) -> None:
        """Raise SchemaError unless the schema is the one this release was written for."""
        ...


class Connection(Protocol):
    def ping(self) -> None:
        """Raise if the store cannot be reached."""
        ...

    def close(self) -> None: ...


class EventStore(
    EventLog,
    Checkpoints,
    Projections,
    InvoiceRegistry,
    BuyerCaps,
    ScreeningLists,
    Transfer,
    Schema,
    Connection,
    Protocol,
):
    """A whole backend: what `open_store` returns and a worker is built with."""
