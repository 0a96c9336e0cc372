"""`audit verify` on SQL: every chain, seal and signed act, and every screening list, from one snapshot."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from operator import itemgetter
from typing import Any

from chipclear.store.chain import AuditReport, ChainBreak, first_break
from chipclear.store.protocol import AuditProgress
from chipclear.store.sql_base import SQLBackend, Tx, chain_row, streams_in_order
from chipclear.store.sql_screening import screening_list_breaks
from chipclear.store.trust import EventRow, SealChecks, StreamChecker, Trust


def audit(
    backend: SQLBackend, tx: Tx, trust: Trust | None = None, progress: AuditProgress | None = None
) -> AuditReport:
    """Every stream read once, in (stream, version) order a page at a time: memory holds one stream.
    The seals are checked on threads of their own meanwhile (`SealChecks`)."""
    heads = {
        row[0]: (row[1], row[2]) for row in tx.execute("SELECT stream_id, version, head_hash FROM streams")
    }
    found: dict[str, list[ChainBreak]] = {}
    events_checked = acts_checked = 0
    threads = os.cpu_count() or 1
    with ThreadPoolExecutor(threads, thread_name_prefix="seal") as pool:
        seals = SealChecks(trust, pool, threads)
        for stream_id, rows in streams_in_order(tx):
            problems, checker = _check_stream(stream_id, rows, heads.get(stream_id), seals, trust)
            acts_checked += checker.acts_checked
            events_checked += checker.rows_checked
            found[stream_id] = problems
            if progress is not None:
                progress(checker.rows_checked)
        unsealed = seals.problems()
    for stream_id, head in heads.items():
        if stream_id not in found:  # a head without a single event: its whole stream is gone
            problem = first_break(stream_id, (), head)
            found[stream_id] = [problem] if problem is not None else []
    # Each stream's problems by version; at one version, the seal's, then the act's, then the chain's.
    ranked = {stream_id: [(b.version, 1, b) for b in problems] for stream_id, problems in found.items()}
    for b in unsealed:
        ranked[b.stream_id].append((b.version, 0, b))
    by_version = itemgetter(0, 1)
    breaks = [b for stream_id in sorted(ranked) for _, _, b in sorted(ranked[stream_id], key=by_version)]
    breaks += screening_list_breaks(backend, tx)
    return AuditReport(
        ok=not breaks,
        streams_checked=len(found),
        events_checked=events_checked,
        breaks=breaks,
        acts_checked=acts_checked,
        trusted_policy=None if trust is None else (trust.policy_version or "(unnamed)"),
    )


def _check_stream(
    stream_id: str, rows: Iterator[Any], head: tuple[int, str] | None, seals: SealChecks, trust: Trust | None
) -> tuple[list[ChainBreak], StreamChecker]:
    """One pass over a stream's rows: the chain, and each row's act as the chain reads it (and its seal
    handed to `seals`). The act's problems come before the chain's, at one version."""
    checker = StreamChecker(stream_id, trust)
    problems: list[ChainBreak] = []

    def links() -> Iterator[tuple[int, int, str, str, bytes]]:
        for row in rows:
            event = EventRow(*row[:16])
            seals.add(event)
            problems.extend(checker.check(event))
            # Hash what is on disk, column for column, without parsing: the chain covers the bytes.
            yield chain_row(row)

    chain = links()
    problem = first_break(stream_id, chain, head)
    for _ in chain:  # the chain stops at its first break; the seals and acts are checked to the end
        pass
    if problem is not None:
        problems.append(problem)
    return problems, checker


class SQLAudit(SQLBackend):
    def event_count(self) -> int:
        with self._reader() as tx:
            return int(tx.execute("SELECT count(*) FROM events").fetchone()[0])

    def verify(self, trust: Trust | None = None, progress: AuditProgress | None = None) -> AuditReport:
        """Every chain and head; every seal (by a key `trust` names, when given) and every signed act.

        Without `trust` each seal is checked against the key it names: that proves an event was sealed
        when stored, not by whom. The CLI always passes the policy's keys. `progress` is told how many
        more events were checked, a stream at a time (the CLI's progress bar).
        """
        # One read-only snapshot: consistent even while workers keep appending.
        with self._snapshot() as tx:
            return audit(self, tx, trust, progress)
