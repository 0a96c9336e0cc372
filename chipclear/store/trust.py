"""Who the audit trusts, and the checks that need it: recorder seals and people's signed acts.

The chain proves each stream is whole as written; it cannot say *who* wrote it, since anyone with the
database can recompute hashes. Two signatures do:

- The **recorder seal**: at append the writer signs `EVENT_SEAL_LABEL + hash` (the event's chain hash,
  as its 64 hex digits) with the recorder key. An event forged with the chain recomputed has no seal
  that verifies under a key the policy trusts.
- The **act**: the command a person signed, kept on the events it caused. Its signature must verify,
  be by that person's key (the actor of the event) in the policy, and count once: the events carrying
  it were written by one append, the first of them at the version the person signed for, plus one.

The trusted keys come from the policy (`Trust.from_policy`), never from the store: a key found in the
store proves nothing. The SQL audit (which `store import` runs) feeds `StreamChecker` (the acts) and
`SealChecks` (the seals, on threads of their own) row by row.
"""

from __future__ import annotations

import base64
import json
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from nacl.bindings import crypto_sign, crypto_sign_BYTES, crypto_sign_seed_keypair
from pydantic import ValidationError

from chipclear.domain.policy import Policy
from chipclear.domain.signing import (
    EVENT_SEAL_LABEL,
    ID_BOUND_ACTS,
    ActSignature,
    act_verifies,
    public_text,
    verify,
)
from chipclear.store.chain import ChainBreak

# The recorder key a store seals with: the key itself, or a function that loads it at the first append
# (so a handle that only reads never touches the key file).
RecorderKey = Ed25519PrivateKey | Callable[[], Ed25519PrivateKey]


def seal_message(chain_hash: str) -> bytes:
    return EVENT_SEAL_LABEL + chain_hash.encode("ascii")


def seal_verifies(key: str, chain_hash: str, value: str) -> bool:
    return verify(key, seal_message(chain_hash), value)


@dataclass(frozen=True)
class Sealer:
    """The recorder key a store handle seals with, and its public text (computed once).

    Sealing goes through libsodium (about 60% of cryptography's time per signature here, once per
    appended event); the seal is the same deterministic Ed25519 signature cryptography's `sign` makes."""

    key: Ed25519PrivateKey
    public: str
    # libsodium's form of the same key (its seed, then its public key): never in a repr or a log line.
    _secret: bytes = field(repr=False)

    @classmethod
    def of(cls, key: Ed25519PrivateKey) -> Sealer:
        seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        _, secret = crypto_sign_seed_keypair(seed)
        return cls(key, public_text(key.public_key()), secret)

    def seal(self, chain_hash: str) -> str:
        signed = crypto_sign(seal_message(chain_hash), self._secret)
        return base64.b64encode(signed[:crypto_sign_BYTES]).decode()


@dataclass(frozen=True)
class Trust:
    """The keys an audit accepts: the recorder's, and each person's by name."""

    recorder_keys: frozenset[str]
    people: Mapping[str, frozenset[str]] = field(default_factory=dict)
    policy_version: str | None = None

    @classmethod
    def from_policy(cls, policy: Policy) -> Trust:
        people = {
            name: frozenset({*([p.key] if p.key is not None else []), *p.retired_keys})
            for name, p in policy.reviewers.items()
        }
        return cls(frozenset(policy.recorder.keys), people, policy.version)

    def keys_of(self, person: str) -> frozenset[str]:
        """The keys `person` may sign with: their key and their retired keys in the policy."""
        return self.people.get(person, frozenset())


class EventRow(NamedTuple):
    """One `events` row, column by column, exactly as stored (the JSON columns as text): what the chain,
    seal and act checks read, so that no check sees the row through the models."""

    position: int
    event_id: str
    stream_id: str
    version: int
    type: str
    schema_version: int
    data: str
    occurred_at: str
    recorded_at: str
    policy_version: str
    actor: str
    act: str | None
    prev_hash: str
    hash: str
    sealed_by: str | None
    seal: str | None


# One row's seal, as `SealChecks` hands it to a thread: (stream_id, version, type, sealed_by, hash, seal).
_Sealed = tuple[str, int, str, str | None, str, str | None]


def _seal_problems(sealed: _Sealed, trust: Trust | None) -> list[str]:
    _, _, _, sealed_by, hash_, seal_ = sealed
    if not sealed_by or not seal_:
        return ["no recorder seal"]
    if not seal_verifies(sealed_by, hash_, seal_):
        return ["the recorder seal does not verify"]
    if trust is not None and sealed_by not in trust.recorder_keys:
        where = f"policy {trust.policy_version}" if trust.policy_version else "the policy"
        return [f"sealed by {sealed_by}, which {where} does not name as a recorder key"]
    return []


def _unsealed(rows: list[_Sealed], trust: Trust | None) -> list[ChainBreak]:
    return [
        ChainBreak(stream_id=row[0], version=row[1], event_type=row[2], problem=problem)
        for row in rows
        for problem in _seal_problems(row, trust)
    ]


class SealChecks:
    """Every row's recorder seal, checked on `pool`'s threads while the audit reads and hashes on.

    An Ed25519 verification costs about a hundred times a row's sha256, and cryptography releases the
    interpreter's lock while it verifies: on threads of their own the seals use the other cores instead
    of setting the audit's pace alone. Rows go in batches; at most `pool`'s threads times four batches
    wait at once, so memory stays bounded however long the log. Without a pool, each batch is checked
    when full, in this thread."""

    BATCH = 256

    def __init__(self, trust: Trust | None, pool: Executor | None = None, threads: int = 1) -> None:
        self.trust = trust
        self._pool = pool
        self._waiting = 4 * threads
        self._batch: list[_Sealed] = []
        self._pending: deque[Future[list[ChainBreak]]] = deque()
        self._found: list[ChainBreak] = []

    def add(self, row: EventRow) -> None:
        self._batch.append((row.stream_id, row.version, row.type, row.sealed_by, row.hash, row.seal))
        if len(self._batch) >= self.BATCH:
            self._hand_on()

    def _hand_on(self) -> None:
        batch, self._batch = self._batch, []
        if self._pool is None:
            self._found += _unsealed(batch, self.trust)
            return
        while len(self._pending) >= self._waiting:
            self._found += self._pending.popleft().result()
        self._pending.append(self._pool.submit(_unsealed, batch, self.trust))

    def problems(self) -> list[ChainBreak]:
        """Every seal's problem, once every row was added."""
        if self._batch:
            self._hand_on()
        while self._pending:
            self._found += self._pending.popleft().result()
        return self._found


@dataclass
class _Use:
    """Where a signature was first used (its first event, that append's time) and how far it reaches."""

    first: int
    recorded_at: str
    last: int
    act: dict[str, Any]


@dataclass
class StreamChecker:
    """Seal and act checks over one stream, its rows fed in version order."""

    stream_id: str
    trust: Trust | None
    acts_checked: int = 0
    rows_checked: int = 0
    _uses: dict[str, _Use] = field(default_factory=dict)
    _appends: dict[int, str] = field(default_factory=dict)  # version -> recorded_at, for the "once" rule

    def check(self, row: EventRow) -> list[ChainBreak]:
        """The row's act checked (its seal is `SealChecks`'s)."""
        self.rows_checked += 1
        return [
            ChainBreak(stream_id=row.stream_id, version=row.version, event_type=row.type, problem=p)
            for p in self._act(row)
        ]

    def _act(self, row: EventRow) -> Iterable[str]:
        self._appends[row.version] = row.recorded_at
        act = act_of(row.act)
        if act is None:
            return
        self.acts_checked += 1
        try:
            signature = ActSignature.model_validate(act.get("signature"))
        except ValidationError:
            yield "the act carries no well-formed signature"
            return
        use = self._uses.get(signature.value)
        # The events one act caused carry it identically: its signature is checked once per stream.
        if (use is None or act != use.act) and not act_verifies(self.stream_id, act, signature):
            yield "the act's signature does not verify"
            return
        if self.trust is not None and signature.key not in self.trust.keys_of(row.actor):
            yield f"the act is signed with a key that is not {row.actor}'s in the policy"
        if use is None:
            self._uses[signature.value] = _Use(row.version, row.recorded_at, row.version, act)
            if act.get("kind") in ID_BOUND_ACTS:
                if signature.expected_version != 0:
                    yield f"the {act.get('kind')} act is signed for v{signature.expected_version}, not 0"
            elif signature.expected_version + 1 != row.version:
                yield (
                    f"the act was signed for version {signature.expected_version} of the stream, "
                    f"but its first event is v{row.version}"
                )
            return
        # Every event an act caused was written by one append: versions from its first event to this
        # one were all recorded together. Anything else is the same signature counted twice.
        between = range(use.last + 1, row.version)
        if row.recorded_at != use.recorded_at or any(
            self._appends.get(v) != use.recorded_at for v in between
        ):
            yield f"the act's signature was already used at v{use.first}: a signature counts once"
        use.last = row.version


def act_of(text: str | None) -> dict[str, Any] | None:
    """An `act` column as stored (canonical JSON text, or NULL) as the dict that was chained."""
    return None if text is None else json.loads(text)
