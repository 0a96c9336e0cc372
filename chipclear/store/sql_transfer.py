"""Export and import on SQL: the whole store exactly as stored, and back into an empty one."""

from __future__ import annotations

import json
from collections.abc import Generator, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from chipclear.store.chain import timestamp
from chipclear.store.checkpoint import Checkpoint
from chipclear.store.errors import StoreNotEmpty
from chipclear.store.protocol import PAGE
from chipclear.store.screening_tables import SCREENING_COLUMNS
from chipclear.store.sql_audit import audit
from chipclear.store.sql_base import EVENT_COLUMNS, SQLBackend, Tx, set_head
from chipclear.store.sql_buyer_caps import BUYER_CLAIM_COLUMNS
from chipclear.store.sql_checkpoints import (
    CHECKPOINT_COLUMNS,
    first_not_extended,
    insert_checkpoint,
    stored_checkpoints,
)
from chipclear.store.sql_invoices import INVOICE_COLUMNS
from chipclear.store.sql_projection import rebuild
from chipclear.store.sql_schema import schema_version
from chipclear.store.transfer import (
    ExportedBuyerClaim,
    ExportedCheckpoint,
    ExportedEvent,
    ExportedInvoice,
    ExportedScreeningList,
    ExportedStream,
    ExportHeader,
    ExportRecord,
    ImportSummary,
    InvalidExport,
)
from chipclear.store.trust import Trust

EXPORTED_EVENT_COLUMNS = tuple(column.strip() for column in EVENT_COLUMNS.split(","))
DATA = EXPORTED_EVENT_COLUMNS.index("data")
ACT = EXPORTED_EVENT_COLUMNS.index("act")


class SQLTransfer(SQLBackend):
    def dump(self) -> Generator[ExportRecord, None, None]:
        """Everything the store holds, as stored, from one consistent snapshot: header first."""
        version = schema_version(self)
        with self._snapshot() as tx:
            yield ExportHeader(exported_at=timestamp(datetime.now(UTC)), schema_version=version)
            after = 0
            while True:
                rows = tx.execute(
                    f"SELECT {EVENT_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?",
                    (after, PAGE),
                ).fetchall()
                for row in rows:
                    yield ExportedEvent.model_validate(
                        dict(zip(EXPORTED_EVENT_COLUMNS, row, strict=True))
                        | {
                            "data": json.loads(row[DATA]),
                            "act": None if row[ACT] is None else json.loads(row[ACT]),
                        }
                    )
                if len(rows) < PAGE:
                    break
                after = rows[-1][0]
            for stream_id, version, head_hash in tx.execute(
                "SELECT stream_id, version, head_hash FROM streams ORDER BY stream_id"
            ).fetchall():
                yield ExportedStream(stream_id=stream_id, version=version, head_hash=head_hash)
            for row in tx.execute(
                f"SELECT {', '.join(SCREENING_COLUMNS)} FROM screening_lists ORDER BY {self.SCREENING_ORDER}"
            ).fetchall():
                yield ExportedScreeningList.model_validate(dict(zip(SCREENING_COLUMNS, row, strict=True)))
            for row in tx.execute(
                f"SELECT {', '.join(INVOICE_COLUMNS)} FROM invoices ORDER BY invoice_key"
            ).fetchall():
                yield ExportedInvoice.model_validate(dict(zip(INVOICE_COLUMNS, row, strict=True)))
            for row in tx.execute(
                f"SELECT {', '.join(BUYER_CLAIM_COLUMNS)} FROM buyer_claims ORDER BY request_id"
            ).fetchall():
                yield ExportedBuyerClaim.model_validate(dict(zip(BUYER_CLAIM_COLUMNS, row, strict=True)))
            for checkpoint in stored_checkpoints(tx):
                yield ExportedCheckpoint.model_validate(
                    checkpoint.model_dump(include=set(CHECKPOINT_COLUMNS))
                )

    def load(self, records: Iterable[ExportRecord], trust: Trust | None = None) -> ImportSummary:
        """Import an export into this empty store, in one transaction that commits only if it verifies.

        The chains, seals and signed acts are checked by the same audit as `verify` (with `trust`, the
        keys the policy names), and the log is proven to extend every checkpoint in the export, inside
        the transaction, before commit: a broken, edited or forged export leaves nothing behind.
        Positions are kept, so an auditor's references into the old log still point at the same events.
        """
        with self._transaction() as tx:
            self._lock_for_import(tx)
            for table in ("events", "streams", "screening_lists", "invoices", "buyer_claims", "checkpoints"):
                if tx.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone():
                    raise StoreNotEmpty(
                        f"the target event store is not empty ({table}): import only into a new one"
                    )
            heads: dict[str, tuple[int, str]] = {}  # from the export's stream records
            tails: dict[str, tuple[int, str]] = {}  # from its events (a CSV has no stream records)
            seen: set[tuple[str, str]] = set()
            pending: list[tuple[Any, ...]] = []
            counts = {"events": 0, "screening_lists": 0, "invoices": 0, "buyer_claims": 0}
            checkpoints: list[Checkpoint] = []
            last_position = 0
            with_heads = False  # a JSON Lines export (it has a header) carries every stream's head
            for record in records:
                with_heads = with_heads or isinstance(record, ExportHeader)
                if isinstance(record, ExportedEvent):
                    _once(seen, "event id", record.event_id)
                    _once(seen, "stream version", f"{record.stream_id}@{record.version}")
                    if record.position <= last_position:
                        raise InvalidExport(
                            f"event {record.event_id} at position {record.position}: positions must rise "
                            f"(the one before is {last_position}); nothing was imported"
                        )
                    last_position = record.position
                    stored = record.model_dump() | {"data": record.data_text(), "act": record.act_text()}
                    pending.append(tuple(stored[c] for c in EXPORTED_EVENT_COLUMNS))
                    tails[record.stream_id] = (record.version, record.hash)
                    counts["events"] += 1
                    if len(pending) >= PAGE:
                        _insert(tx, "events", EXPORTED_EVENT_COLUMNS, pending)
                        pending = []
                elif isinstance(record, ExportedStream):
                    _once(seen, "stream", record.stream_id)
                    heads[record.stream_id] = (record.version, record.head_hash)
                elif isinstance(record, ExportedScreeningList):
                    _once(seen, "screening list", record.version)
                    _insert(tx, "screening_lists", SCREENING_COLUMNS, [_values(record, SCREENING_COLUMNS)])
                    counts["screening_lists"] += 1
                elif isinstance(record, ExportedInvoice):
                    _once(seen, "invoice", record.invoice_key)
                    _insert(tx, "invoices", INVOICE_COLUMNS, [_values(record, INVOICE_COLUMNS)])
                    counts["invoices"] += 1
                elif isinstance(record, ExportedBuyerClaim):
                    _once(seen, "buyer claim", record.request_id)
                    _insert(tx, "buyer_claims", BUYER_CLAIM_COLUMNS, [_values(record, BUYER_CLAIM_COLUMNS)])
                    counts["buyer_claims"] += 1
                elif isinstance(record, ExportedCheckpoint):
                    _once(seen, "checkpoint of size", str(record.tree_size))
                    checkpoints.append(_checkpoint(record))
            _insert(tx, "events", EXPORTED_EVENT_COLUMNS, pending)
            if with_heads and set(tails) - set(heads):
                missing = sorted(set(tails) - set(heads))
                raise InvalidExport(
                    f"the export has events but no stream record for {missing[0]!r}"
                    + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                    + "; nothing was imported"
                )
            for stream_id, (version, head_hash) in (heads if with_heads else tails).items():
                set_head(tx, stream_id, version, head_hash)
            self._after_import(tx)
            # The audit first: a broken log may not even fold into states.
            report = audit(self, tx, trust)
            if not report.ok:
                first = report.breaks[0]
                raise InvalidExport(
                    f"the export does not verify: stream {first.stream_id!r} at version {first.version}: "
                    + (f"{first.event_type}: " if first.event_type else "")
                    + f"{first.problem} ({len(report.breaks)} broken); nothing was imported"
                )
            # Then the checkpoints: a stream removed whole, or a tail cut and its head set back, leaves
            # chains that verify, but not a log that extends what the recorder signed.
            trusted = None if trust is None else trust.recorder_keys
            failed = first_not_extended(tx, checkpoints, trusted)
            if failed is not None:
                raise InvalidExport(
                    f"the export does not verify: checkpoint of size {failed.checkpoint_size}: "
                    f"{failed.problem}; nothing was imported"
                )
            for checkpoint in checkpoints:
                insert_checkpoint(tx, checkpoint)
            try:
                rows = rebuild(self, tx)
            except (LookupError, ValueError, TypeError, AssertionError) as exc:  # a forged, re-hashed log
                raise InvalidExport(
                    f"the export verifies but its events do not replay ({type(exc).__name__}: {exc}); "
                    "nothing was imported"
                ) from None
            return ImportSummary(
                streams=len(heads if with_heads else tails),
                requests=rows,
                checkpoints=len(checkpoints),
                **counts,
            )


def _checkpoint(record: ExportedCheckpoint) -> Checkpoint:
    try:
        return Checkpoint.model_validate(record.model_dump(exclude={"record"}))
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidExport(
            f"checkpoint of size {record.tree_size}: {'.'.join(map(str, first['loc']))}: {first['msg']}; "
            "nothing was imported"
        ) from None


def _once(seen: set[tuple[str, str]], kind: str, key: str) -> None:
    if (kind, key) in seen:
        raise InvalidExport(f"the export holds {kind} {key!r} twice; nothing was imported")
    seen.add((kind, key))


def _insert(tx: Tx, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
    if rows:
        marks = ", ".join("?" * len(columns))
        tx.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)


def _values(record: BaseModel, columns: Sequence[str]) -> tuple[Any, ...]:
    return tuple(getattr(record, column) for column in columns)
