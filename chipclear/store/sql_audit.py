"""`audit verify` on SQL: every chain, seal and signed act, and every screening list, from one snapshot."""

from __future__ import annotations

from chipclear.store.chain import AuditReport, ChainBreak, first_break
from chipclear.store.sql_base import EVENT_COLUMNS, SQLBackend, Tx, chain_row
from chipclear.store.sql_screening import screening_list_breaks
from chipclear.store.trust import EventRow, StreamChecker, Trust


def audit(backend: SQLBackend, tx: Tx, trust: Trust | None = None) -> AuditReport:
    heads = {
        row[0]: (row[1], row[2]) for row in tx.execute("SELECT stream_id, version, head_hash FROM streams")
    }
    stream_ids = sorted(set(heads) | {row[0] for row in tx.execute("SELECT DISTINCT stream_id FROM events")})
    breaks: list[ChainBreak] = []
    events_checked = acts_checked = 0
    for stream_id in stream_ids:
        # Hash what is on disk, column for column, before any upcasting: re-serialising through the
        # models could paper over an edit that the models happen to normalise.
        rows = tx.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ? ORDER BY version", (stream_id,)
        ).fetchall()
        events_checked += len(rows)
        found: list[ChainBreak] = []
        problem = first_break(stream_id, (chain_row(row) for row in rows), heads.get(stream_id))
        if problem is not None:
            found.append(problem)
        checker = StreamChecker(stream_id, trust)
        for row in rows:
            found += checker.check(EventRow(*row[:16]))
        acts_checked += checker.acts_checked
        breaks += sorted(found, key=lambda b: b.version)
    breaks += screening_list_breaks(backend, tx)
    return AuditReport(
        ok=not breaks,
        streams_checked=len(stream_ids),
        events_checked=events_checked,
        breaks=breaks,
        acts_checked=acts_checked,
        trusted_policy=None if trust is None else (trust.policy_version or "(unnamed)"),
    )


class SQLAudit(SQLBackend):
    def verify(self, trust: Trust | None = None) -> AuditReport:
        """Every chain and head; every seal (by a key `trust` names, when given) and every signed act.

        Without `trust` each seal is checked against the key it names: that proves an event was sealed
        when stored, not by whom. The CLI always passes the policy's keys.
        """
        # One read-only snapshot: consistent even while workers keep appending.
        with self._snapshot() as tx:
            return audit(self, tx, trust)
