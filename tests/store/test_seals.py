"""Recorder seals and signed acts: who wrote each event, and who asked for it.

The chain alone cannot tell a forgery from the record: anyone with the database can append an event and
recompute the hashes and the stream head (as `forge` does below, with the project's own `chain`
functions). Every stored event is therefore sealed by the recorder key when it is appended, and every
event a person caused carries their signed act. `verify(trust)` checks both against the keys the policy
names. Every test that takes `event_store` runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import base64
import io
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chipclear.domain.commands import Decide, Submit, Withdraw
from chipclear.domain.events import (
    Event,
    EventData,
    GateApproved,
    LicenseIssued,
    RequestWithdrawn,
    schema_versions,
)
from chipclear.domain.signing import sign
from chipclear.keys import load_private
from chipclear.projections import PROJECTIONS, open_event_store
from chipclear.store.chain import canonical, chained_bytes, link, timestamp
from chipclear.store.errors import CannotSeal
from chipclear.store.protocol import EventStore
from chipclear.store.sqlite import SQLiteEventStore
from chipclear.store.transfer import InvalidExport, read_jsonl, write_jsonl
from chipclear.store.trust import EventRow, SealChecks, Sealer, Trust, seal_message, seal_verifies
from tests import keys
from tests.factories import make_policy, make_request
from tests.store.support import (
    AUTO,
    CN_IMPORT,
    NOW,
    RECORDER,
    US_EXPORT,
    Raw,
    append_all,
    evaluations,
    minutes,
    play,
    scenario,
    scenarios,
    snapshot,
    store_url,
)

TRUST = Trust.from_policy(AUTO)  # the test recorder, and every test person's key
STREAM = "forge-1"
AT_CN_IMPORT = 5  # events of a request that passed us-export and waits for a cn-import reviewer
MALLORY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))  # a key of the attacker's own


def at_cn_import(request_id: str = STREAM) -> Any:
    policy = make_policy("auto", cn_import={"mode": "manual"})
    found = play(
        policy,
        [
            (minutes(0), Submit(request=make_request(request_id=request_id))),
            *evaluations(US_EXPORT, CN_IMPORT),
        ],
    )
    assert (found.state.status, found.state.gate, len(found.events)) == (
        "cn_import_review",
        CN_IMPORT,
        AT_CN_IMPORT,
    )
    return found


@pytest.fixture
def waiting(event_store: EventStore) -> EventStore:
    """Three requests, one of them (`STREAM`) waiting at cn-import."""
    append_all(event_store, [*scenarios(2, prefix="other"), at_cn_import()])
    assert event_store.verify(TRUST).ok
    return event_store


def forge(
    store: EventStore,
    data: EventData,
    *,
    stream_id: str = STREAM,
    actor: str = "policy",
    act: dict[str, Any] | None = None,
    sealed_with: Ed25519PrivateKey | None = None,
    seal: tuple[str, str] = ("", ""),
) -> int:
    """Append an event behind the store's back, as an attacker with the database would: the chain and
    the stream head recomputed with the project's own code, sealed with `sealed_with` (a stolen or
    an own key) or carrying `seal` as given (none, or one copied from elsewhere). Returns its version."""
    head = store.read_stream(stream_id)[-1]
    event = Event(
        event_id=str(uuid.uuid4()),
        stream_id=stream_id,
        version=head.version + 1,
        data=data,
        occurred_at=NOW + timedelta(hours=1),
        policy_version=head.policy_version,
        actor=actor,
        act=act,
    )
    recorded_at = timestamp(datetime.now(UTC))
    chained = chained_bytes(
        event_id=event.event_id,
        stream_id=stream_id,
        version=event.version,
        type_=event.type,
        schema_version=schema_versions()[event.type],
        data=canonical(event.data_json()),
        occurred_at=timestamp(event.occurred_at),
        recorded_at=recorded_at,
        policy_version=event.policy_version,
        actor=actor,
        act=None if act is None else canonical(act),
    )
    hash_ = link(head.hash, chained)
    if sealed_with is not None:
        sealer = Sealer.of(sealed_with)
        seal = (sealer.public, sealer.seal(hash_))
    raw = Raw(store)
    with closing(raw.conn):
        raw.execute(
            "INSERT INTO events (event_id, stream_id, version, type, schema_version, data, occurred_at,"
            " recorded_at, policy_version, actor, act, prev_hash, hash, sealed_by, seal)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.event_id,
                stream_id,
                event.version,
                event.type,
                schema_versions()[event.type],
                canonical(event.data_json()),
                timestamp(event.occurred_at),
                recorded_at,
                event.policy_version,
                actor,
                None if act is None else canonical(act),
                head.hash,
                hash_,
                *seal,
            ),
        )
        raw.execute(
            "UPDATE streams SET version = ?, head_hash = ? WHERE stream_id = ?",
            (event.version, hash_, stream_id),
        )
    return event.version


def licence() -> LicenseIssued:
    return LicenseIssued(
        licence_id=f"LIC-{STREAM}", units=50_000, conditions=[], valid_until=NOW + timedelta(days=1460)
    )


def breaks(store: EventStore, trust: Trust | None = TRUST) -> list[tuple[str, int, str | None, str]]:
    report = store.verify(trust)
    return [(b.stream_id, b.version, b.event_type, b.problem) for b in report.breaks]


def signed_act(command: Any, version: int, by: str | None = None) -> dict[str, Any]:
    act: dict[str, Any] = keys.sign(command, STREAM, version, by=by).model_dump(mode="json")
    return act


# -- sealing at append -------------------------------------------------------------------------------
def test_every_stored_event_is_sealed_by_the_recorder_key(event_store: EventStore) -> None:
    append_all(event_store, scenarios(3))
    raw = Raw(event_store)
    with closing(raw.conn):
        rows = raw.execute("SELECT hash, sealed_by, seal FROM events ORDER BY position").fetchall()
    assert rows and {sealed_by for _, sealed_by, _ in rows} == {keys.public(keys.RECORDER)}
    assert all(seal_verifies(sealed_by, hash_, seal) for hash_, sealed_by, seal in rows)
    # A seal is over one event's hash: it proves nothing about another.
    assert not seal_verifies(rows[0][1], rows[1][0], rows[0][2])
    report = event_store.verify(TRUST)
    assert report.ok and report.trusted_policy == AUTO.version and report.acts_checked > 0


def test_a_seal_is_standard_ed25519_whichever_library_made_or_checks_it() -> None:
    """The store seals and the audit checks through libsodium; an auditor's own script may use any RFC 8032
    library. The seal is the very signature cryptography makes (Ed25519 is deterministic) and cryptography
    accepts it; a signature cryptography made passes the audit's check; neither passes for another hash."""
    recorder = Ed25519PrivateKey.generate()
    sealer = Sealer.of(recorder)
    chain_hash, other = "ab" * 32, "cd" * 32
    value, by_cryptography = sealer.seal(chain_hash), sign(recorder, seal_message(chain_hash))
    assert value == by_cryptography
    recorder.public_key().verify(base64.b64decode(value), seal_message(chain_hash))  # raises if not
    assert seal_verifies(sealer.public, chain_hash, by_cryptography)
    assert not seal_verifies(sealer.public, other, value)
    assert not seal_verifies(sealer.public, chain_hash, base64.b64encode(b"\0" * 64).decode())
    assert not seal_verifies(sealer.public, chain_hash, value[:-4])  # too short to be a signature
    assert not seal_verifies(keys.public(keys.RECORDER), chain_hash, value)  # another key
    # The secret's raw bytes never show in a repr (a traceback's locals, a log line).
    assert repr(sealer._secret) not in repr(sealer) and "_secret" not in repr(sealer)


def test_a_handle_without_the_recorder_key_stores_nothing(event_store: EventStore, tmp_path: Path) -> None:
    before = snapshot(event_store)
    found = scenario("licensed", "unsealed")
    with closing(open_event_store(store_url(event_store))) as unkeyed:
        with pytest.raises(CannotSeal, match=r"holds no recorder key.*CHIPCLEAR_RECORDER_KEY_FILE"):
            unkeyed.append(found.request_id, 0, found.batches[0])
        assert unkeyed.verify().ok  # reading and auditing need no key
    missing = tmp_path / "keys" / "recorder.key"
    lazy = open_event_store(store_url(event_store)).seal_with(lambda: load_private(missing))
    with closing(lazy), pytest.raises(CannotSeal, match=f"cannot seal events: {missing}: no key file there"):
        lazy.append(found.request_id, 0, found.batches[0])
    assert snapshot(event_store) == before


def test_the_recorder_key_is_read_at_the_first_append_only(event_store: EventStore) -> None:
    loads: list[int] = []

    def load() -> Ed25519PrivateKey:
        loads.append(1)
        return RECORDER

    with closing(open_event_store(store_url(event_store)).seal_with(load)) as handle:
        assert handle.verify().ok and loads == []
        append_all(handle, scenarios(2))
    assert loads == [1] and event_store.verify(TRUST).ok


# -- a forged event, the chain recomputed ------------------------------------------------------------
def test_a_forged_licence_without_a_seal_fails_the_audit(waiting: EventStore) -> None:
    version = forge(waiting, licence())
    assert version == AT_CN_IMPORT + 1
    report = waiting.verify(TRUST)
    assert not report.ok
    assert [b.describe() for b in report.breaks] == [f"stream {STREAM!r}: LicenseIssued v6: no recorder seal"]
    assert breaks(waiting, None) == [
        (STREAM, 6, "LicenseIssued", "no recorder seal")
    ]  # even without a policy


def test_a_forged_licence_sealed_with_the_attackers_own_key_fails_against_the_policy(
    waiting: EventStore,
) -> None:
    forge(waiting, licence(), sealed_with=MALLORY)
    mallory = Sealer.of(MALLORY).public
    assert breaks(waiting) == [
        (
            STREAM,
            6,
            "LicenseIssued",
            f"sealed by {mallory}, which policy {AUTO.version} does not name as a recorder key",
        )
    ]
    # Without the policy's keys a seal only has to verify under the key it names: why the CLI always
    # passes the policy.
    assert breaks(waiting, None) == []


def test_a_seal_copied_from_another_event_does_not_verify(waiting: EventStore) -> None:
    raw = Raw(waiting)
    with closing(raw.conn):
        copied = raw.execute(
            "SELECT sealed_by, seal FROM events WHERE stream_id = ? AND version = 5", (STREAM,)
        ).fetchone()
    forge(waiting, licence(), seal=(copied[0], copied[1]))
    assert breaks(waiting) == [(STREAM, 6, "LicenseIssued", "the recorder seal does not verify")]


def test_a_stolen_recorder_key_seals_a_forgery_the_seals_cannot_tell(waiting: EventStore) -> None:
    """What seals cannot do: a forgery sealed with the real key passes them. A checkpoint the auditor
    holds bounds it (tests/store/test_checkpoints.py); the people's signatures bound what it can claim."""
    forge(waiting, licence(), sealed_with=RECORDER)
    assert waiting.verify(TRUST).ok


# -- signed acts -------------------------------------------------------------------------------------
def approval(units: int = 50_000) -> GateApproved:
    return GateApproved(gate=CN_IMPORT, units_approved=units, conditions=[])


def wang_approves(units: int = 50_000) -> Decide:
    return Decide(gate=CN_IMPORT, reviewer="wang", approve=True, units=units)


def test_a_genuine_act_forged_onto_a_sealed_event_is_checked_again(waiting: EventStore) -> None:
    """Even with the recorder key stolen, a person's decision cannot be made up: the act on the event
    must carry their signature, for this request, at the version it is recorded at, once."""
    act = signed_act(wang_approves(), AT_CN_IMPORT)
    forge(waiting, approval(), actor="wang", act=act, sealed_with=RECORDER)
    assert breaks(waiting) == []


def test_an_act_edited_after_it_was_signed(waiting: EventStore) -> None:
    act = signed_act(wang_approves(10_000), AT_CN_IMPORT) | {"units": 50_000}
    forge(waiting, approval(), actor="wang", act=act, sealed_with=RECORDER)
    assert breaks(waiting) == [(STREAM, 6, "GateApproved", "the act's signature does not verify")]


def test_an_act_without_a_signature(waiting: EventStore) -> None:
    act = wang_approves().model_dump(mode="json")
    forge(waiting, approval(), actor="wang", act=act, sealed_with=RECORDER)
    assert breaks(waiting) == [(STREAM, 6, "GateApproved", "the act carries no well-formed signature")]


def test_an_act_signed_by_someone_else(waiting: EventStore) -> None:
    act = signed_act(wang_approves(), AT_CN_IMPORT, by="alice")  # alice signs wang's decision
    forge(waiting, approval(), actor="wang", act=act, sealed_with=RECORDER)
    assert breaks(waiting) == [
        (STREAM, 6, "GateApproved", "the act is signed with a key that is not wang's in the policy")
    ]
    assert breaks(waiting, None) == []  # the signature itself is good: only the policy says whose key it is


def test_an_act_signed_for_another_version(waiting: EventStore) -> None:
    act = signed_act(wang_approves(), 2)
    forge(waiting, approval(), actor="wang", act=act, sealed_with=RECORDER)
    assert breaks(waiting) == [
        (
            STREAM,
            6,
            "GateApproved",
            "the act was signed for version 2 of the stream, but its first event is v6",
        )
    ]


def test_a_signature_counts_once(waiting: EventStore) -> None:
    """The submission's signed act, replayed onto a later event: the same signature on a second append."""
    submitted = waiting.read_stream(STREAM)[0]
    assert submitted.act is not None
    forge(
        waiting,
        RequestWithdrawn(gate=CN_IMPORT, reason="replayed"),
        actor=submitted.actor,
        act=submitted.act,
        sealed_with=RECORDER,
    )
    assert breaks(waiting) == [
        (STREAM, 6, "RequestWithdrawn", "the act's signature was already used at v1: a signature counts once")
    ]


def test_one_act_over_several_events_of_one_append_counts_once(waiting: EventStore) -> None:
    """The decider puts a person's act on every event it caused in one batch (here the submission's
    three): that is one use. Two appends that each carry a fresh signature are two acts."""
    events = waiting.read_stream(STREAM)
    assert [e.act is not None for e in events] == [True, True, True, False, False]
    assert len({e.recorded_at for e in events[:3]}) == 1
    withdraw = Withdraw(reason="changed plans")
    act = keys.sign(withdraw, STREAM, AT_CN_IMPORT).model_dump(mode="json")
    forge(
        waiting,
        RequestWithdrawn(gate=CN_IMPORT, reason="changed plans"),
        actor="applicant",
        act=act,
        sealed_with=RECORDER,
    )
    assert breaks(waiting) == []


# -- import ------------------------------------------------------------------------------------------
def export_of(store: EventStore) -> list[str]:
    out = io.StringIO()
    write_jsonl(store.dump(), out)
    return out.getvalue().splitlines(keepends=True)


@pytest.mark.parametrize(
    ("sealed_with", "problem"),
    [
        (None, "no recorder seal"),
        (MALLORY, f"sealed by {Sealer.of(MALLORY).public}, which policy {AUTO.version} does not name"),
    ],
    ids=["unsealed", "sealed-by-another-key"],
)
def test_an_export_holding_a_forged_licence_is_refused(
    waiting: EventStore, tmp_path: Path, sealed_with: Ed25519PrivateKey | None, problem: str
) -> None:
    forge(waiting, licence(), sealed_with=sealed_with)
    lines = export_of(waiting)
    with closing(
        SQLiteEventStore(tmp_path / "target.db", projections=PROJECTIONS, recorder=RECORDER)
    ) as target:
        with pytest.raises(InvalidExport) as refusal:
            target.load(read_jsonl(lines), TRUST)
        assert f"stream {STREAM!r} at version 6: LicenseIssued: {problem}" in str(refusal.value)
        assert "nothing was imported" in str(refusal.value)
        assert list(target.read_all()) == [] and target.checkpoints() == []


def test_an_act_signed_with_a_retired_key_still_verifies_and_no_other(waiting: EventStore) -> None:
    """wang rotated his key: his past acts (signed with what is now `retired_keys`) still verify; a key
    the policy never gave him does not."""
    act = signed_act(wang_approves(), AT_CN_IMPORT, by="li")  # li's key stands for wang's old one
    forge(waiting, approval(), actor="wang", act=act, sealed_with=RECORDER)
    policy = make_policy()
    rotated = policy.reviewers["wang"].model_copy(
        update={"key": keys.public("bob"), "retired_keys": (keys.public("li"),)}
    )
    trust = Trust.from_policy(policy.model_copy(update={"reviewers": {**policy.reviewers, "wang": rotated}}))
    assert breaks(waiting, trust) == []
    never = rotated.model_copy(update={"retired_keys": ()})
    untrusted = Trust.from_policy(
        policy.model_copy(update={"reviewers": {**policy.reviewers, "wang": never}})
    )
    assert breaks(waiting, untrusted) == [
        (STREAM, 6, "GateApproved", "the act is signed with a key that is not wang's in the policy")
    ]


def sealed_rows(count: int, sealer: Sealer) -> list[EventRow]:
    """`count` rows of one stream, each sealed by `sealer` over a hash of its own."""
    rows = []
    for version in range(1, count + 1):
        hash_ = f"{version:064x}"
        rows.append(
            EventRow(
                version, str(uuid.uuid4()), STREAM, version, "GateApproved", 1, "{}", "t", "t", "p", "wang",
                None, "0" * 64, hash_, sealer.public, sealer.seal(hash_),
            )
        )  # fmt: skip
    return rows


def test_seals_checked_on_threads_name_every_bad_one_as_in_one_thread() -> None:
    """Many batches of rows, a few of them with a seal that is missing, does not verify, or is by a
    key the policy does not trust: named once each, in order, on threads as without them."""
    rows = sealed_rows(5 * SealChecks.BATCH + 7, Sealer.of(RECORDER))
    stranger = Sealer.of(Ed25519PrivateKey.generate())
    rows[2] = rows[2]._replace(seal=rows[3].seal)  # another event's seal
    rows[300] = rows[300]._replace(sealed_by=None, seal=None)
    rows[777] = rows[777]._replace(sealed_by=stranger.public, seal=stranger.seal(rows[777].hash))
    rows[-1] = rows[-1]._replace(seal="not base64!")
    expected = [
        (3, "the recorder seal does not verify"),
        (301, "no recorder seal"),
        (
            778,
            f"sealed by {stranger.public}, which policy {TRUST.policy_version} does not name as a "
            "recorder key",
        ),
        (len(rows), "the recorder seal does not verify"),
    ]
    alone = SealChecks(TRUST)
    with ThreadPoolExecutor(2) as pool:
        threaded = SealChecks(TRUST, pool, threads=2)
        for row in rows:
            alone.add(row)
            threaded.add(row)
        found = threaded.problems()
    assert [(b.version, b.problem) for b in found] == expected
    assert found == alone.problems()
    # Without the policy's keys, a seal by any key that verifies is a seal.
    untrusting = SealChecks(None)
    for row in rows:
        untrusting.add(row)
    assert [b.version for b in untrusting.problems()] == [3, 301, len(rows)]
