"""Checkpoints: signed heads of the Merkle tree over the whole log (RFC 9162's signed tree heads).

A checkpoint says "the first `tree_size` events of the log, in position order, hash to `root_hash`",
signed by the recorder key. An auditor who keeps one can later prove that the log they are shown is
an append-only extension of it: nothing before it was removed, reordered or rewritten, whatever hashes
were recomputed since (`consistency`). And any event it covers can be proven to be in it (`inclusion`).

The signature covers `CHECKPOINT_LABEL + canonical(body)`, where the body is every field but the
signature, as JSON with sorted keys: an auditor's script rebuilds the bytes from the file alone.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chipclear.domain.input_gate import read_as, read_text
from chipclear.domain.signing import CHECKPOINT_LABEL, PublicKeyText, canonical, public_text, sign, verify
from chipclear.store import merkle
from chipclear.store.chain import timestamp

Hex32 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class InvalidCheckpoint(ValueError):
    """A checkpoint file that cannot be read as one; the message names the file and the field."""


class Checkpoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Annotated[str, Field(pattern=r"^chipclear-checkpoint-v1$")] = "chipclear-checkpoint-v1"
    tree_size: Annotated[int, Field(ge=0)]
    root_hash: Hex32
    # The position of the last event it covers (0 for an empty log): positions may skip numbers (a
    # rolled-back append on PostgreSQL), so the size alone does not say where the checkpoint ends.
    last_position: Annotated[int, Field(ge=0)]
    timestamp: str
    key: PublicKeyText
    signature: Annotated[str, Field(min_length=1, max_length=200)]

    def body(self) -> bytes:
        return CHECKPOINT_LABEL + canonical(self.model_dump(exclude={"signature"}))

    def signature_verifies(self) -> bool:
        return verify(self.key, self.body(), self.signature)

    def root(self) -> bytes:
        return bytes.fromhex(self.root_hash)


def sign_checkpoint(
    recorder: Ed25519PrivateKey, tree_size: int, root_hash: bytes, last_position: int, now: datetime
) -> Checkpoint:
    unsigned = Checkpoint.model_construct(
        format="chipclear-checkpoint-v1",
        tree_size=tree_size,
        root_hash=root_hash.hex(),
        last_position=last_position,
        timestamp=timestamp(now),
        key=public_text(recorder.public_key()),
        signature="",
    )
    return Checkpoint.model_validate(unsigned.model_dump() | {"signature": sign(recorder, unsigned.body())})


def checkpoint_problem(checkpoint: Checkpoint, trusted: frozenset[str] | None) -> str | None:
    """Why this checkpoint's signature proves nothing, or None when it is good (and by a trusted key)."""
    if not checkpoint.signature_verifies():
        return "the checkpoint's signature does not verify"
    if trusted is not None and checkpoint.key not in trusted:
        return (
            f"the checkpoint is signed by {checkpoint.key}, which the policy does not name as a recorder key"
        )
    return None


# -- files ------------------------------------------------------------------------------------------
def write_checkpoint(checkpoint: Checkpoint, path: Path) -> None:
    """Write the file whole or not at all, readable by its owner only (0600).

    Only a file is ever replaced: the rename that makes the write whole would otherwise put a regular
    file where a device stood (`--out /dev/null`, run as root, would replace /dev/null itself)."""
    if path.exists() and not path.is_file():
        raise OSError(
            errno.EINVAL, "not a regular file: a checkpoint replaces a file, never a device or a folder"
        )
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:  # mkstemp makes it 0600
            out.write(checkpoint.model_dump_json(indent=2) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


MAX_CHECKPOINT_FILE = 64 * 1024


def read_checkpoint(path: Path) -> Checkpoint:
    # A checkpoint is a few hundred bytes: never read a device or a huge file whole.
    what, missing = "checkpoint file", "no such checkpoint file"
    text = read_as(InvalidCheckpoint, read_text, path, limit=MAX_CHECKPOINT_FILE, what=what, missing=missing)
    try:
        return Checkpoint.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "file"
        raise InvalidCheckpoint(f"{path}: not a chipclear checkpoint ({where}: {first['msg']})") from None


# -- what the store answers -----------------------------------------------------------------------
class LeafRef(BaseModel):
    """One event as a leaf of the tree: its index (0-based rank in position order) and where it is."""

    index: int
    position: int
    stream_id: str
    version: int
    type: str


class ConsistencyReport(BaseModel):
    """Whether the log now is an append-only extension of a checkpoint, and if not, what is known."""

    ok: bool
    checkpoint_size: int
    checkpoint_root: str
    log_size: int
    log_root: str
    proof: list[str]  # RFC 9162 consistency path, hex: verify with merkle.verify_consistency
    problem: str | None = None
    first_difference: LeafRef | None = None  # the earliest event that no longer matches, when known


class InclusionProof(BaseModel):
    """That one event is leaf `leaf_index` of the checkpoint's tree (RFC 9162 §2.1.3)."""

    event_id: str
    stream_id: str
    version: int
    position: int
    leaf_index: int
    tree_size: int
    leaf: Hex32  # the event's chain hash: the leaf; its leaf hash is SHA-256(0x00 || bytes)
    audit_path: list[Hex32]
    root_hash: Hex32
    checkpoint: Checkpoint

    def verifies(self) -> bool:
        return self.tree_size == self.checkpoint.tree_size and merkle.verify_inclusion(
            self.leaf_index,
            self.tree_size,
            merkle.event_leaf(self.leaf),
            [bytes.fromhex(p) for p in self.audit_path],
            bytes.fromhex(self.root_hash),
        )


def hexes(nodes: Sequence[bytes]) -> list[str]:
    return [node.hex() for node in nodes]
