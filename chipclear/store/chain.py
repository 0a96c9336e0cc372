"""The hash chain: each event's hash covers its stored columns, byte for byte, and the previous event's hash.

Kept apart from any backend so SQLite, PostgreSQL and an auditor's own script compute it identically:

    hash = sha256(prev_hash ‖ field(event_id) ‖ field(stream_id) ‖ field(version) ‖ field(type)
                  ‖ field(schema_version) ‖ field(data) ‖ field(occurred_at) ‖ field(recorded_at)
                  ‖ field(policy_version) ‖ field(actor) ‖ field(act))

`prev_hash` is its 64 hex digits (ASCII); `field(text)` is the column's UTF-8 bytes as a netstring,
`<byte length in decimal>:<bytes>,` (integers as their decimal text), and a NULL (`act` without a
signed act) is `~,`. The hash is over the columns exactly as stored, not over a re-encoding of them:
the writer encodes the payload once (`canonical`, the text it stores) and hashes those bytes, and the
audit hashes what it reads without parsing it, so any change of a stored byte is a break, white space
included. The length prefixes keep the fields apart: bytes cannot move from one column to the next.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
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
    """The one text a payload (or a signed act) is stored as: sorted keys, no spaces, UTF-8."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _field(value: str | int | None) -> bytes:
    if value is None:
        return b"~,"
    raw = str(value).encode()
    return b"%d:%b," % (len(raw), raw)


# The stored columns an event's hash covers, in the order it takes them (the events table's order).
# The act (a person's signed command, or None) is chained: swapping it for another act, or dropping it,
# breaks the chain like editing the payload would. The recorder's seal is not: it signs the hash, so it
# is computed after it. The schema version is chained with the data it describes: relabelling a stored
# payload as another shape (so that an upcaster rewrites it on read) breaks the chain like editing the
# payload would.
CHAINED_COLUMNS = (
    "event_id",
    "stream_id",
    "version",
    "type",
    "schema_version",
    "data",
    "occurred_at",
    "recorded_at",
    "policy_version",
    "actor",
    "act",
)


def chained_columns(columns: Sequence[str | int | None]) -> bytes:
    """What an event's hash covers after `prev_hash`: its CHAINED_COLUMNS as stored, each a netstring.

    `data` and `act` are the stored JSON texts (canonical when written; hashed as they stand).
    """
    return b"".join(map(_field, columns))


def chained_bytes(
    *,
    event_id: str,
    stream_id: str,
    version: int,
    type_: str,
    schema_version: int,
    data: str,
    occurred_at: str,
    recorded_at: str,
    policy_version: str,
    actor: str,
    act: str | None,
) -> bytes:
    """`chained_columns` by name, for a writer that has the values rather than a stored row."""
    values: list[str | int | None] = [event_id, stream_id, version, type_, schema_version, data, occurred_at]
    return chained_columns([*values, recorded_at, policy_version, actor, act])


def link(prev_hash: str, chained: bytes) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + chained).hexdigest()


def first_break(
    stream_id: str, rows: Iterable[tuple[int, int, str, str, bytes]], head: tuple[int, str] | None
) -> ChainBreak | None:
    """Check one stream: rows are (position, version, prev_hash, hash, chained bytes) in version order.

    Catches an edited row (hash mismatch), a deleted row (version gap or broken link), a reordered row
    (positions out of step with versions) and a truncated tail (the stream head no longer matches).
    """
    expected_prev, expected_version, last_position = GENESIS, 1, 0
    for position, version, prev_hash, hash_, chained in rows:
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
        if link(prev_hash, chained) != hash_:
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
