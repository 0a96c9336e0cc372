"""The event store contract every backend honours; one conformance suite runs against each."""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, Field, field_validator

from chipclear.domain.events import Event, StoredEvent
from chipclear.domain.evidence import InvoiceOwner
from chipclear.domain.models import Status
from chipclear.domain.screening import ScreeningList, ScreeningListInfo
from chipclear.domain.state import RequestState

if TYPE_CHECKING:
    from chipclear.store.follow import LogFollower
    from chipclear.store.migrations import Migration
    from chipclear.store.transfer import ExportRecord, ImportSummary


class ConcurrencyError(Exception):
    """Another writer got to the stream first, or an event id is reused with different content."""


class StoreUnavailable(RuntimeError):
    """The event store cannot be reached; the message names it (never its password)."""


class AppendResult(BaseModel):
    stream_id: str
    version: int  # the stream's version after the append
    written: bool  # False when every event was already stored (an activity retry)


class RequestSummary(BaseModel):
    """One row of the inline projection: what `chipclear list` shows without folding any events."""

    request_id: str
    status: Status
    gate: str | None
    buyer: str
    units_requested: int
    units_approved: int | None
    policy_version: str
    version: int
    submitted_at: str
    updated_at: str
    flags: list[str] = Field(default_factory=list)  # held, awaiting-applicant, escalated

    @field_validator("flags", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return [flag for flag in value.split(",") if flag] if isinstance(value, str) else value


class ChainBreak(BaseModel):
    stream_id: str
    version: int
    problem: str


class AuditReport(BaseModel):
    ok: bool
    streams_checked: int
    events_checked: int
    breaks: list[ChainBreak]


class EventStore(Protocol):
    def append(self, stream_id: str, expected_version: int, events: Sequence[Event]) -> AppendResult:
        """Append atomically if the stream is at `expected_version`.

        Re-appending events whose ids are stored with identical content is a no-op success, so an
        activity retried after a lost acknowledgement never writes twice.
        """
        ...

    def read_stream(self, stream_id: str) -> list[StoredEvent]: ...

    def read_all(self, after_position: int = 0) -> Iterator[StoredEvent]:
        """A one-off read of what is committed now; to keep reading as writers append, use `follow`."""
        ...

    def follow(self, after_position: int = 0) -> LogFollower:
        """Hands out each event once, in position order, and never passes one that may still commit."""
        ...

    def get_request(self, request_id: str) -> RequestState | None: ...

    def list_requests(self, status: Status | None = None, flags: Sequence[str] = ()) -> list[RequestSummary]:
        """Projection rows, oldest first; `flags` keeps rows carrying every one (`escalated`, `held`, …)."""
        ...

    def verify(self) -> AuditReport: ...

    def rebuild_projection(self) -> int:
        """Replay the whole log through `evolve` into fresh projection rows; returns the row count."""
        ...

    def dump(self) -> Generator[ExportRecord, None, None]:
        """Everything stored, exactly as stored, from one snapshot (an export's header first)."""
        ...

    def load(self, records: Iterable[ExportRecord]) -> ImportSummary:
        """Import an export into this empty store; commits only if every chain verifies."""
        ...

    def register_invoices(self, request_id: str, buyer: str, keys: Sequence[str]) -> dict[str, InvoiceOwner]:
        """Register the free invoices to `request_id` atomically; who owns each of `keys` now."""
        ...

    def release_invoices(self, request_id: str) -> int:
        """Free the invoices of a request that ended unlicensed (its buyer may count them again)."""
        ...

    def save_screening_list(self, screening_list: ScreeningList, *, actor: str) -> bool:
        """Store a loaded list and its `ScreeningListLoaded` event atomically; False if unchanged."""
        ...

    def screening_list_versions(self) -> list[ScreeningListInfo]: ...

    def current_screening_info(self) -> ScreeningListInfo | None: ...

    def screening_list(self, info: ScreeningListInfo) -> ScreeningList: ...

    def current_screening_list(self) -> ScreeningList | None: ...

    def schema_version(self) -> int: ...

    def pending_migrations(self) -> list[Migration]: ...

    def migrate(self) -> list[Migration]:
        """Apply the pending schema migrations in order; returns those applied."""
        ...

    def ping(self) -> None:
        """Raise if the store cannot be reached."""
        ...

    def close(self) -> None: ...
