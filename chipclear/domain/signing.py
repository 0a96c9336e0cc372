"""Signed acts: what a person's Ed25519 signature covers, and checking it.

A person signs the act itself, the stream it is addressed to and the stream's version as they saw
it. The version makes a signature count once: replayed later, the stream has moved on and the same
bytes no longer match. The encoding is canonical JSON (sorted keys, no spaces, UTF-8) behind a
domain-separation label, so an auditor's own script can rebuild the exact bytes, and a signature made
for one purpose (an act, a checkpoint) can never be passed off as another.

Pure: no files, no clock. Keys on disk are chipclear.keys's business.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from nacl.bindings import crypto_sign_BYTES, crypto_sign_open
from nacl.exceptions import BadSignatureError
from nacl.exceptions import ValueError as NaclValueError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from chipclear.domain.commands import PersonAct

KEY_PREFIX = "ed25519:"
ACT_LABEL = b"chipclear act v1\n"
CHECKPOINT_LABEL = b"chipclear checkpoint v1\n"
EVENT_SEAL_LABEL = b"chipclear event seal v1\n"

# The actors the system itself writes as: no person may be registered, or act, under these names.
RESERVED_ACTORS = frozenset(
    {"policy", "allocation-ledger", "deadline", "system", "recorder", "chipclear", "workflow", "temporal"}
)


# Acts signed for version 0 of their stream rather than the version they saw: each carries an id of its
# own that makes it count once (a shipment: a copy sent again is a repeat, recorded once), so two people
# acting at the same moment do not refuse each other's signatures. `audit verify` knows them too.
ID_BOUND_ACTS = frozenset({"ship"})


def _public_key_text(value: Any) -> Any:
    if isinstance(value, str):
        parse_public(value)  # one sentence saying what a key looks like, never pydantic's regex
    return value


PublicKeyText = Annotated[str, AfterValidator(_public_key_text)]


class SigningError(ValueError):
    """A key or signature that cannot be used; the message says which and why, never the key's secret."""


def parse_public(text: str, *, what: str = "key") -> Ed25519PublicKey:
    if not text.startswith(KEY_PREFIX):
        raise SigningError(f"{what}: expected 'ed25519:<base64 public key>'")
    try:
        raw = base64.b64decode(text[len(KEY_PREFIX) :], validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise SigningError(f"{what}: not a base64 Ed25519 public key (32 bytes)") from None


class ActSignature(BaseModel):
    """A person's signature on an act, as it travels with the act and is kept in the record."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: PublicKeyText
    expected_version: Annotated[int, Field(ge=0)]
    value: Annotated[str, Field(min_length=1, max_length=200)]


class ActorSignedAct(BaseModel):
    """An act outside a request whose `actor` is the person who signs it (a batch opening, a list load):
    the actor and signature these acts share, and the `person` the signature checks name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    actor: Annotated[str, Field(min_length=1, max_length=100)]
    signature: ActSignature | None = None

    @property
    def person(self) -> str:
        return self.actor


def public_text(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return KEY_PREFIX + base64.b64encode(raw).decode()


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def act_message(stream_id: str, expected_version: int, act: dict[str, Any]) -> bytes:
    """The bytes a person signs: `act` is the command as JSON, without its own signature."""
    body = {key: value for key, value in act.items() if key != "signature"}
    return ACT_LABEL + canonical({"stream": stream_id, "version": expected_version, "act": body})


def sign(private: Ed25519PrivateKey, message: bytes) -> str:
    return base64.b64encode(private.sign(message)).decode()


def verify(key: str, message: bytes, value: str) -> bool:
    """True only for a well-formed signature by `key` over exactly `message`.

    Checked by libsodium, which an audit needs: it verifies a signature in about 60% of the time
    cryptography's OpenSSL takes here (docs/performance.md), and an audit checks one per stored event.
    The signatures are the same standard Ed25519 (RFC 8032) that cryptography makes and checks;
    libsodium is the stricter of the two (it refuses small-order keys and non-canonical encodings)."""
    public = _public_bytes(key)
    if public is None:
        return False
    try:
        signature = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(signature) != crypto_sign_BYTES:
        return False
    try:
        crypto_sign_open(signature + message, public)
    except (BadSignatureError, NaclValueError):
        return False
    return True


@functools.lru_cache(maxsize=256)
def _public_bytes(key: str) -> bytes | None:
    """A key's 32 bytes, parsed once per process rather than once per signature (an audit meets a
    handful of recorder keys and one key per person, millions of times)."""
    try:
        return parse_public(key).public_bytes(Encoding.Raw, PublicFormat.Raw)
    except SigningError:
        return None


def sign_act(
    private: Ed25519PrivateKey, stream_id: str, expected_version: int, act: dict[str, Any]
) -> ActSignature:
    return ActSignature(
        key=public_text(private.public_key()),
        expected_version=expected_version,
        value=sign(private, act_message(stream_id, expected_version, act)),
    )


# An act a person signs: a request's (`PersonAct`, whose module imports this one) or one outside a request.
Act = TypeVar("Act", bound="PersonAct | ActorSignedAct")


def signed(command: Act, stream_id: str, version: int, key: Ed25519PrivateKey) -> Act:
    """`command` signed by `key` for `stream_id` as it stands at `version`: as the client signs every
    act (`chipclear.client` imports it from here), and the CLI's acts that need no Temporal."""
    signature = sign_act(key, stream_id, version, command.model_dump(mode="json"))
    return cast(Act, command.model_copy(update={"signature": signature}))


def act_verifies(stream_id: str, act: dict[str, Any], signature: ActSignature) -> bool:
    return verify(signature.key, act_message(stream_id, signature.expected_version, act), signature.value)
