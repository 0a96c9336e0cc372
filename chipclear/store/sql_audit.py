"""`audit verify` on SQL: every chain, and every screening list against its event, from one snapshot."""

from __future__ import annotations

from chipclear.store.chain import AuditReport, ChainBreak, first_break
from chipclear.store.sql_base import EVENT_COLUMNS, SQLBackend, Tx, chain_row
from chipclear.store.sql_screening import screening_list_breaks


def audit(backend: SQLBackend, tx: Tx) -> AuditReport:
    heads = {
        row[0]: (row[1], row[2]) for row in tx.execute("SELECT stream_id, version, head_hash FROM streams")
    }
    stream_ids = sorted(set(heads) | {row[0] for row in tx.execute("SELECT DISTINCT stream_id FROM events")})
    breaks: list[ChainBreak] = []
    events_checked = 0
    for stream_id in stream_ids:
        # Hash what is on disk, column for column, before any upcasting: re-serialising through the
        # models could paper over an edit that the models happen to normalise.
        rows = tx.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ? ORDER BY version", (stream_id,)
        ).fetchall()
        events_checked += len(rows)
        problem = first_break(stream_id, (chain_row(row) for row in rows), heads.get(stream_id))
        if problem is not None:
            breaks.append(problem)
    breaks += screening_list_breaks(backend, tx)
    return AuditReport(
        ok=not breaks, streams_checked=len(stream_ids), events_checked=events_checked, breaks=breaks
    )


class SQLAudit(SQLBackend):
    def verify(self) -> AuditReport:
        # One read-only snapshot: consistent even while workers keep appending.
        with self._snapshot() as tx:
            return audit(self, tx)
