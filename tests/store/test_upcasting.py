"""Event schema versions and upcasting at the store's read boundary.

Every event is stored with its payload's schema version, chained with its data. A test registry plays
a release in which `RequestWithdrawn` went to version 2 (its `why` renamed `reason`): a row written in
the old shape (version 1) reads back upcast, while `verify` still checks the bytes as stored. The
conformance tests run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import io
import json
import uuid
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest
from pydantic import ValidationError

from chipclear.domain.events import Event, EventData, RequestWithdrawn, schema_versions
from chipclear.projections import PROJECTIONS, get_request
from chipclear.store.chain import canonical, chained_bytes, link, timestamp
from chipclear.store.factory import open_store
from chipclear.store.protocol import EventStore
from chipclear.store.transfer import ExportedEvent, InvalidExport, read_jsonl, write_jsonl
from chipclear.store.trust import Sealer
from chipclear.store.upcasting import UPCASTERS, UpcastError, Upcasters
from tests.store.support import NOW, RECORDER, Raw, append_all, scenario, store_url


def rename_why(data: dict[str, Any]) -> dict[str, Any]:
    """RequestWithdrawn 1 -> 2: `why` became `reason`."""
    data["reason"] = data.pop("why")
    return data


def release_two() -> Upcasters:
    """The registry of a release in which RequestWithdrawn is at schema version 2."""
    upcasters = Upcasters({**schema_versions(), "RequestWithdrawn": 2})
    upcasters.register("RequestWithdrawn", 1, rename_why)
    return upcasters


# -- the registry on its own ------------------------------------------------------------------------
def test_every_event_type_has_a_schema_version() -> None:
    types = {model.model_fields["type"].default for model in get_args(get_args(EventData)[0])}
    versions = schema_versions()
    assert set(versions) == types
    assert all(version >= 1 for version in versions.values())
    assert (
        RequestWithdrawn.SCHEMA_VERSION
        == versions["RequestWithdrawn"]
        == UPCASTERS.current("RequestWithdrawn")
    )


def test_upcasters_run_in_order_up_to_the_current_version() -> None:
    upcasters = Upcasters({"RequestWithdrawn": 3})
    upcasters.register("RequestWithdrawn", 2, lambda data: {**data, "steps": [*data["steps"], 2]})
    upcasters.register("RequestWithdrawn", 1, lambda data: {**data, "steps": [1]})
    stored = {"reason": "r"}
    assert upcasters.upcast("RequestWithdrawn", 1, stored) == {"reason": "r", "steps": [1, 2]}
    assert upcasters.upcast("RequestWithdrawn", 2, {"steps": []}) == {"steps": [2]}
    assert upcasters.upcast("RequestWithdrawn", 3, stored) == stored
    assert stored == {"reason": "r"}  # the caller's data is never changed in place


def test_the_registry_refuses_what_it_cannot_do() -> None:
    upcasters = Upcasters({"RequestWithdrawn": 2})
    for wrong in (0, 2, 3):
        with pytest.raises(ValueError, match=r"an upcaster goes from a version in 1\.\.1"):
            upcasters.register("RequestWithdrawn", wrong, rename_why)
    upcasters.register("RequestWithdrawn", 1, rename_why)
    with pytest.raises(ValueError, match="already has an upcaster from schema version 1"):
        upcasters.register("RequestWithdrawn", 1, rename_why)
    with pytest.raises(UpcastError, match="unknown event type 'RequestTeleported'"):
        upcasters.register("RequestTeleported", 1, rename_why)
    with pytest.raises(UpcastError, match=r"schema version 3, newer than this release reads \(2\)"):
        upcasters.upcast("RequestWithdrawn", 3, {})
    with pytest.raises(UpcastError, match="at schema version 1: no upcaster to version 2"):
        Upcasters({"RequestWithdrawn": 2}).upcast("RequestWithdrawn", 1, {})
    assert upcasters.upcast("RequestTeleported", 7, {"x": 1}) == {"x": 1}  # the parser names it


# -- through a store ------------------------------------------------------------------------------
def write_old_withdrawal(store: EventStore, request_id: str) -> str:
    """Append, as the earlier release did, a `RequestWithdrawn` in its version-1 shape; returns its id."""
    head = store.read_stream(request_id)[-1]
    state = get_request(store, request_id)
    assert state is not None
    current = Event(
        event_id=str(uuid.uuid4()),
        stream_id=request_id,
        version=head.version + 1,
        data=RequestWithdrawn(gate=state.gate, reason="order cancelled"),
        occurred_at=NOW + timedelta(hours=1),
        policy_version=head.policy_version,
        actor="applicant@example.com",
    )
    old = current.data_json()
    old["why"] = old.pop("reason")
    recorded_at = timestamp(datetime.now(UTC))
    chained = chained_bytes(
        event_id=current.event_id,
        stream_id=request_id,
        version=current.version,
        type_="RequestWithdrawn",
        schema_version=1,
        data=canonical(old),
        occurred_at=timestamp(current.occurred_at),
        recorded_at=recorded_at,
        policy_version=current.policy_version,
        actor=current.actor,
        act=None,
    )
    hash_ = link(head.hash, chained)
    sealer = Sealer.of(RECORDER)  # the earlier release sealed its events too
    raw = Raw(store)
    with closing(raw.conn):
        raw.execute(
            "INSERT INTO events (event_id, stream_id, version, type, schema_version, data, occurred_at,"
            " recorded_at, policy_version, actor, prev_hash, hash, sealed_by, seal)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                current.event_id,
                request_id,
                current.version,
                "RequestWithdrawn",
                1,
                canonical(old),
                timestamp(current.occurred_at),
                recorded_at,
                current.policy_version,
                current.actor,
                head.hash,
                hash_,
                sealer.public,
                sealer.seal(hash_),
            ),
        )
        raw.execute(
            "UPDATE streams SET version = ?, head_hash = ? WHERE stream_id = ?",
            (current.version, hash_, request_id),
        )
    return current.event_id


def stored_schema_versions(store: EventStore, stream_id: str) -> list[int]:
    raw = Raw(store)
    with closing(raw.conn):
        rows = raw.execute(
            "SELECT schema_version FROM events WHERE stream_id = ? ORDER BY version", (stream_id,)
        ).fetchall()
    return [row[0] for row in rows]


def test_new_events_are_stored_with_their_current_schema_version(event_store: EventStore) -> None:
    found = scenario("licensed")
    append_all(event_store, [found])
    versions = schema_versions()
    assert stored_schema_versions(event_store, found.request_id) == [versions[e.type] for e in found.events]


def test_an_old_shape_is_upcast_on_read_and_verified_as_stored(event_store: EventStore) -> None:
    found = scenario("awaiting_review", "req-old")
    append_all(event_store, [found])
    old_id = write_old_withdrawal(event_store, "req-old")

    # Without the version bump and its upcaster (an edit in place), the model cannot read the old shape.
    with pytest.raises(ValidationError, match="why"):
        event_store.read_stream("req-old")
    assert event_store.verify().ok  # the audit hashes the bytes as stored, whatever their shape

    with closing(
        open_store(
            store_url(event_store), projections=PROJECTIONS, upcasters=release_two(), recorder=RECORDER
        )
    ) as two:
        *earlier, withdrawn = two.read_stream("req-old")
        assert [e.event_id for e in earlier] == [e.event_id for e in found.events]
        assert withdrawn.event_id == old_id
        assert isinstance(withdrawn.data, RequestWithdrawn) and withdrawn.data.reason == "order cancelled"
        assert [e.event_id for e in two.read_all()][-1] == old_id
        assert two.verify().ok
        assert two.rebuild_projection() == 1
        state = get_request(two, "req-old")
        assert state is not None and state.status == "withdrawn" and state.version == len(found.events) + 1

        # The version-2 release writes version 2; the release before it refuses to guess at that shape.
        later = scenario("withdrawn", "req-new")
        append_all(two, [later])
        assert stored_schema_versions(two, "req-new")[-1] == 2
        assert stored_schema_versions(two, "req-old")[-1] == 1
        assert [e.data for e in two.read_stream("req-new")] == [e.data for e in later.events]
    with pytest.raises(UpcastError, match=r"RequestWithdrawn event stored at schema version 2, newer"):
        event_store.read_stream("req-new")
    assert event_store.verify().ok


def test_an_export_carries_schema_versions_and_an_import_upcasts_on_read(event_store: EventStore) -> None:
    append_all(event_store, [scenario("awaiting_review", "req-old")])
    write_old_withdrawal(event_store, "req-old")
    out = io.StringIO()
    write_jsonl(event_store.dump(), out)
    lines = out.getvalue().splitlines(keepends=True)
    [old] = [json.loads(line) for line in lines if '"why"' in line]
    assert (old["type"], old["schema_version"]) == ("RequestWithdrawn", 1)

    with pytest.raises(InvalidExport, match="RequestWithdrawn event"):
        list(read_jsonl(lines))  # no upcaster in this release: the import refuses what it cannot read
    records = list(read_jsonl(lines, upcasters=release_two()))
    assert [
        r.schema_version for r in records if isinstance(r, ExportedEvent) and r.type == "RequestWithdrawn"
    ] == [1]
