"""Each policy version, bound to its content for good: recorded in the event store when a worker first
starts under it, and a different content under a recorded version refused when a worker starts.

Every event names the policy version it was decided under; the label is only worth something if one
label means one set of rules. The binding lives in the event log itself (stream `policies`, one
`PolicyRecorded` event per version), so it is hash-chained, sealed with the recorder key and covered by
`audit verify` like every other fact, and it lasts as long as the records do.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from chipclear.domain.events import Event, PolicyRecorded
from chipclear.domain.policy import Policy, PolicyError, content_hash
from chipclear.store.errors import ConcurrencyError
from chipclear.store.protocol import EventStore

POLICY_STREAM = "policies"
# The worker records the binding as the system, not as a person: no act is signed for it.
RECORDER_ACTOR = "recorder"
# Two workers starting at once under a new version: one records it, the other reads it back.
ATTEMPTS = 3


def recorded_hashes(store: EventStore) -> dict[str, str]:
    """Every recorded policy version and its content hash (the first record of a version wins)."""
    found: dict[str, str] = {}
    for event in store.read_stream(POLICY_STREAM):
        if isinstance(event.data, PolicyRecorded):
            found.setdefault(event.data.version, event.data.sha256)
    return found


def record_policy(store: EventStore, policy: Policy, now: datetime | None = None) -> str:
    """The policy's content hash, once its version is bound to it in the store; PolicyError (exit 2,
    naming the version and both hashes) if the version is already bound to other content."""
    sha256 = content_hash(policy)
    for _ in range(ATTEMPTS):
        stream = store.read_stream(POLICY_STREAM)
        recorded = recorded_hashes(store)
        if policy.version in recorded:
            if recorded[policy.version] != sha256:
                raise PolicyError(
                    f"policy version {policy.version!r} is recorded with content sha256 "
                    f"{recorded[policy.version][:16]}…, but this policy file has sha256 {sha256[:16]}…: give "
                    "changed rules a new version label"
                )
            return sha256
        event = Event(
            event_id=str(uuid.uuid4()),
            stream_id=POLICY_STREAM,
            version=len(stream) + 1,
            data=PolicyRecorded(version=policy.version, sha256=sha256),
            occurred_at=now or datetime.now(UTC),
            policy_version=policy.version,
            actor=RECORDER_ACTOR,
        )
        try:
            store.append(POLICY_STREAM, len(stream), [event])
        except ConcurrencyError:
            continue  # another worker recorded something first: read again
        return sha256
    raise PolicyError(f"policy version {policy.version!r} could not be recorded: the store kept changing")
