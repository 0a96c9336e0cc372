"""Test keys: each test person's (and the recorder's) Ed25519 key, derived from their name.

Deterministic, so a saved history or a policy written by one test run verifies in the next; never
used outside tests. `install(home)` writes them where `chipclear` looks for a person's key.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from chipclear.domain.commands import PersonAct
from chipclear.domain.signing import public_text, sign_act
from chipclear.keys import keys_dir, make_private_dir

PEOPLE = (
    "alice",
    "wang",
    "li",
    "chen",
    "applicant",
    "bd-legal",
    "buyer-portal",
    "bytedance-legal",
    "bob",
    "sam",
)
RECORDER = "recorder"


@cache
def private(name: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(f"chipclear test key {name}".encode()).digest()
    )


def public(name: str) -> str:
    return public_text(private(name).public_key())


def install(home: Path, names: tuple[str, ...] = (*PEOPLE, RECORDER)) -> Path:
    """Write `NAME.key` (0600) and `NAME.pub` under `home/keys` (0700), as `chipclear keys new` does."""
    make_private_dir(home)
    folder = keys_dir(home)
    make_private_dir(folder)
    for name in names:
        target = folder / f"{name}.key"
        target.write_bytes(private(name).private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        target.chmod(0o600)
        (folder / f"{name}.pub").write_text(public(name) + "\n")
    return folder


Act = TypeVar("Act", bound=PersonAct)


def sign(command: Act, stream_id: str, version: int, by: str | None = None) -> Act:
    """`command` signed as the client signs it: by its person's test key (or `by`'s), at `version`."""
    signature = sign_act(private(by or command.person), stream_id, version, command.model_dump(mode="json"))
    return command.model_copy(update={"signature": signature})


def signed_for(command: Act, state_version: int, stream_id: str) -> Act:
    """Signed, unless it already is or its person has no test key (a stranger's unsigned act)."""
    if command.signature is not None or command.person not in PEOPLE:
        return command
    return sign(command, stream_id, state_version)
