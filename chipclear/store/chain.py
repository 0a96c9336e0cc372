"""The hash chain: each event's hash covers its immutable fields and the previous event's hash.

Kept apart from any backend so SQLite, PostgreSQL and an auditor's own script compute it identically.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

GENESIS = "0" * 64


class ChainBreak(BaseModel):
    stream_id: str
    version: int
    problem: str
    event_type: str | None = None  # the stored event's type, when the break is about one event

    def describe(self) -> str:
        """`stream 'req-7': LicenseIssued v7: no recorder seal`."""
        what = f"{self.event_type} v{self.version}" if self.event_type else f"version {self.version}"
        return f"stream {self.stream_id!r}: {what}: {self.problem}"


class AuditReport(BaseModel):
    ok: bool
    streams_checked: int
    events_checked: int
    breaks: list[ChainBreak]
    acts_checked: int = 0  # events carrying a person's signed act, each signature checked again
    # The policy whose keys the seals and acts were checked against; None: each seal was checked
    # against the key it names only (it proves the event was sealed, not by whom).
    trusted_policy: str | None = None


def timestamp(moment: datetime) -> str:
    """UTC, microseconds, fixed width: the one text form a timestamp takes in the chain."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def canonical(fields: dict[str, Any]) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chained_fields(
    *,
    event_id: str,
    stream_id: str,
    version: int,
    type_: str,
    schema_version: int,
    data: dict[str, Any],
    occurred_at: str,
    recorded_at: str,
    policy_version: str,
    actor: str,
    act: dict[str, Any] | None,
) -> dict[str, Any]:
    # The act (a person's signed command, or None) is chained: swapping it for another act, or
    # dropping it, breaks the chain like editing the payload would. The recorder's seal is not: it
    # signs the hash, so it is computed after it.
    # The schema version is chained with the data it describes: relabelling a stored payload as another
    # shape (so that an upcaster rewrites it on read) breaks the chain like editing the payload would.
    return {
        "event_id": event_id,
        "stream_id": stream_id,
        "version": version,
        "type": type_,
        "schema_version": schema_version,
        "data": data,
        "occurred_at": occurred_at,
        "recorded_at": recorded_at,
        "policy_version": policy_version,
        "actor": actor,
        "act": act,
    }


def link(prev_hash: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical(fields)).encode()).hexdigest()


def first_break(
    stream_id: str, rows: Iterable[tuple[int, int, str, str, dict[str, Any]]], head: tuple[int, str] | None
) -> ChainBreak | None:
    """Check one stream: rows are (position, version, prev_hash, hash, chained fields) in version order.

    Catches an edited row (hash mismatch), a deleted row (version gap or broken link), a reordered row
    (positions out of step with versions) and a truncated tail (the stream head no longer matches).
    """
    expected_prev, expected_version, last_position = GENESIS, 1, 0
    for position, version, prev_hash, hash_, fields in rows:
        if version != expected_version:
            return ChainBreak(
                stream_id=stream_id,
                version=expected_version,
                problem=f"version {expected_version} is missing (next stored is {version})",
            )
        if position <= last_position:
            return ChainBreak(stream_id=stream_id, version=version, problem="stored out of order (position)")
        if prev_hash != expected_prev:
            return ChainBreak(
                stream_id=stream_id, version=version, problem="prev_hash does not match the previous event"
            )
        if link(prev_hash, fields) != hash_:
            return ChainBreak(
                stream_id=stream_id, version=version, problem="hash does not match the event's content"
            )
        expected_prev, expected_version, last_position = hash_, version + 1, position
    last_version = expected_version - 1
    if head is None:
        return ChainBreak(stream_id=stream_id, version=last_version, problem="stream head is missing")
    head_version, head_hash = head
    if head_version > last_version:
        return ChainBreak(
            stream_id=stream_id,
            version=last_version + 1,
            problem=f"version {last_version + 1} is missing (the stream head says {head_version})",
        )
    if head_version < last_version:
        return ChainBreak(
            stream_id=stream_id,
            version=head_version + 1,
            problem=f"version {head_version + 1} is not covered by the stream head",
        )
    if head_hash != expected_prev:
        return ChainBreak(
            stream_id=stream_id, version=last_version, problem="stream head hash does not match the log"
        )
    return None
