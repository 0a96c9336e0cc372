"""Payload encryption (opt-in): AES-256-GCM over every payload Temporal stores.

Requests name buyers, prices, invoices and reviewers' reasons; a Temporal cluster run by someone else
should hold ciphertext only. Each payload carries the id of the key that sealed it, so keys rotate:
the first key seals, every listed key opens, and old histories stay readable while their key is kept.
Search attributes are not payloads and stay clear text: keep them to what may be public.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter, PayloadCodec

from chipclear.domain.input_gate import InputRefused, read_text
from chipclear.domain.limits import cut
from chipclear.payload_converter import PYDANTIC_CONVERTER

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
# Key ids travel in clear in every payload's metadata: short names like 2026-11, never long enough to be
# a pasted key (a 32-byte key is 43 base64 characters before its `=`).
MAX_KEY_ID = 32


class CodecKeyError(ValueError):
    """Keys that cannot be used: the message names the variable or file and what is wrong."""


class CodecMismatch(CodecKeyError):
    """A payload this process cannot open: the CLI and the worker were given different codec keys.
    One sentence (exit 2), never a traceback from deep inside the SDK's payload decoding."""


class UnknownKey(CodecMismatch, KeyError):
    """A payload sealed with a key this process was not given."""

    def __str__(self) -> str:  # a KeyError quotes its message; this one is a sentence
        return str(self.args[0]) if self.args else ""


MISMATCH_HINT = "the CLI and the worker must be given the same CHIPCLEAR_CODEC_KEYS (or key file)"


class EncryptionCodec(PayloadCodec):
    def __init__(self, keys: Mapping[str, bytes]) -> None:
        """`keys` in order: the first seals new payloads; all of them open old ones."""
        if not keys:
            raise CodecKeyError("at least one key is needed")
        self.active = next(iter(keys))
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        cipher = self._ciphers[self.active]
        sealed = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            data = nonce + cipher.encrypt(nonce, payload.SerializeToString(), None)
            sealed.append(Payload(metadata={"encoding": ENCODING, KEY_ID: self.active.encode()}, data=data))
        return sealed

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        opened = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                opened.append(payload)  # written before encryption was turned on
                continue
            key_id = payload.metadata.get(KEY_ID, b"").decode()
            cipher = self._ciphers.get(key_id)
            if cipher is None:
                raise UnknownKey(
                    f"a payload is sealed with codec key {key_id[:MAX_KEY_ID]!r}, which this process was "
                    f"not given: {MISMATCH_HINT}"
                )
            nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
            try:
                opened.append(Payload.FromString(cipher.decrypt(nonce, sealed, None)))
            except InvalidTag:
                raise CodecMismatch(
                    f"a payload sealed with codec key {key_id[:MAX_KEY_ID]!r} fails authentication (a "
                    f"different key under the same id?): {MISMATCH_HINT}"
                ) from None
        return opened


def parse_keys(text: str, *, source: str) -> dict[str, bytes]:
    """`id=base64key` entries separated by commas or new lines; the first one seals.

    An error names the entry by its position and never quotes it: a key pasted without its `ID=` is key
    material where the id should be (a base64 key ends in `=`), and error messages end up in logs.
    """
    keys: dict[str, bytes] = {}
    for number, entry in enumerate((e.strip() for e in text.replace("\n", ",").split(",")), start=1):
        if not entry or entry.startswith("#"):
            continue
        where = f"{source}, entry {number}"
        key_id, sep, encoded = entry.partition("=")
        key_id, encoded = key_id.strip(), encoded.strip()
        if not sep or not key_id or not encoded.strip("="):
            raise CodecKeyError(f"{where}: expected ID=BASE64KEY (is the ID= missing?)")
        if len(key_id) > MAX_KEY_ID:
            raise CodecKeyError(f"{where}: a key id is at most {MAX_KEY_ID} characters (is the ID= missing?)")
        # From here on the id is an id, not key material, and may be named.
        try:
            key = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise CodecKeyError(f"{where} (key {key_id!r}): not valid base64") from None
        if len(key) != 32:
            raise CodecKeyError(f"{where} (key {key_id!r}): AES-256 needs 32 bytes, got {len(key)}")
        if key_id in keys:
            raise CodecKeyError(f"{where} (key {key_id!r}): listed twice")
        keys[key_id] = key
    return keys


def keys_from_env(env: Mapping[str, str] | None = None) -> dict[str, bytes]:
    """CHIPCLEAR_CODEC_KEYS, or the file CHIPCLEAR_CODEC_KEY_FILE; none: encryption off."""
    env = os.environ if env is None else env
    if env.get("CHIPCLEAR_CODEC_KEYS"):
        return parse_keys(env["CHIPCLEAR_CODEC_KEYS"], source="CHIPCLEAR_CODEC_KEYS")
    if path := env.get("CHIPCLEAR_CODEC_KEY_FILE"):
        try:
            # A key file holds a few keys: a device or a huge file is refused, not read whole.
            text = read_text(Path(path), limit=64 * 1024, what="CHIPCLEAR_CODEC_KEY_FILE")
        except InputRefused as exc:
            raise CodecKeyError(str(exc)) from None
        return parse_keys(text, source=path)
    return {}


KEY_ID_PATTERN = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_KEY_ID}}}")


def key_line(key_id: str) -> str:
    """`ID=BASE64` with a fresh key, for CHIPCLEAR_CODEC_KEYS or a key file; the id is checked first
    (an id with `=`, `,` or a new line would not read back)."""
    if not KEY_ID_PATTERN.fullmatch(key_id):
        raise CodecKeyError(
            f"KEY_ID {cut(key_id)}: a key id is 1 to {MAX_KEY_ID} of A-Z, a-z, 0-9, '.', '_', '-' "
            "(e.g. 2026-11)"
        )
    return f"{key_id}={new_key()}"


def new_key() -> str:
    """A fresh random AES-256 key, base64, for a key file or CHIPCLEAR_CODEC_KEYS."""
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()


class RefuseSealed(PayloadCodec):
    """No keys: payloads pass as they are, and a sealed one is refused in one sentence (the worker was
    given keys and this process none) rather than failing deep in the JSON converter."""

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        for payload in payloads:
            if payload.metadata.get("encoding") == ENCODING:
                key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")[:MAX_KEY_ID]
                raise CodecMismatch(
                    f"a payload is sealed with codec key {key_id!r} but this process has no codec keys: "
                    f"{MISMATCH_HINT}"
                )
        return list(payloads)


def data_converter(keys: Mapping[str, bytes], *, refuse_sealed: bool = False) -> DataConverter:
    """The pydantic converter, sealed with `keys` when there are any. Without keys, `refuse_sealed`
    (the CLI) names a sealed payload as a key mismatch instead of failing to parse it."""
    if not keys:
        if refuse_sealed:
            return dataclasses.replace(PYDANTIC_CONVERTER, payload_codec=RefuseSealed())
        return PYDANTIC_CONVERTER
    return dataclasses.replace(PYDANTIC_CONVERTER, payload_codec=EncryptionCodec(keys))
