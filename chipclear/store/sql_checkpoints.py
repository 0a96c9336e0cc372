"""Checkpoints on SQL: the Merkle tree over the log, signed heads kept in `checkpoints`, and the proofs.

The leaves are the `hash` column in position order, so the tree needs no table of its own. Building a
root reads one 64-character column per event and hashes each leaf once: about a second per million
events in Python. The worker keeps a `merkle.Frontier` in memory and reads only the events since its
last checkpoint; `make_checkpoint` (the CLI's on-demand checkpoint) and the audit read them all.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import UTC, datetime

from chipclear.store import merkle
from chipclear.store.checkpoint import (
    Checkpoint,
    ConsistencyReport,
    InclusionProof,
    LeafRef,
    checkpoint_problem,
    hexes,
    sign_checkpoint,
)
from chipclear.store.sql_base import SQLBackend, Tx

CHECKPOINT_COLUMNS = ("tree_size", "root_hash", "last_position", "timestamp", "key", "signature")


class CheckpointMismatch(LookupError):
    """The log does not extend the checkpoint given, or the event asked for is not in it."""


class UnknownEvent(LookupError):
    """No event with that id is stored."""


def log_leaves(tx: Tx, after_position: int = 0, through: int | None = None) -> list[tuple[int, str]]:
    """(position, chain hash) of every event in (after_position, through], in position order."""
    sql = "SELECT position, hash FROM events WHERE position > ?"
    params: tuple[int, ...] = (after_position,)
    if through is not None:
        sql, params = sql + " AND position <= ?", (after_position, through)
    sql += " ORDER BY position"
    return [(int(position), hash_) for position, hash_ in tx.execute(sql, params)]


def stored_checkpoints(tx: Tx) -> list[Checkpoint]:
    rows = tx.execute(
        f"SELECT {', '.join(CHECKPOINT_COLUMNS)} FROM checkpoints ORDER BY tree_size"
    ).fetchall()
    return [Checkpoint.model_validate(dict(zip(CHECKPOINT_COLUMNS, row, strict=True))) for row in rows]


def insert_checkpoint(tx: Tx, checkpoint: Checkpoint) -> bool:
    """Store it unless one of that size is stored (several workers may checkpoint the same size)."""
    found = tx.execute(
        "INSERT INTO checkpoints (tree_size, root_hash, last_position, timestamp, key, signature) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tree_size) DO NOTHING",
        tuple(getattr(checkpoint, column) for column in CHECKPOINT_COLUMNS),
    )
    return bool(found.rowcount)


def _ref(tx: Tx, index: int, position: int) -> LeafRef:
    stream_id, version, type_ = tx.execute(
        "SELECT stream_id, version, type FROM events WHERE position = ?", (position,)
    ).fetchone()
    return LeafRef(index=index, position=position, stream_id=stream_id, version=version, type=type_)


def consistency(
    tx: Tx, checkpoint: Checkpoint, trusted: frozenset[str] | None, *, others: Sequence[Checkpoint] = ()
) -> ConsistencyReport:
    """Is the log in `tx` an append-only extension of `checkpoint`? Named, and located when possible.

    `others`: further checkpoints whose signatures verify (the ones stored, say). Where the log no
    longer extends `checkpoint`, the largest of them that it still extends bounds the first change.
    """
    leaves = log_leaves(tx)
    positions = [position for position, _ in leaves]
    hashes = [merkle.event_leaf(hash_) for _, hash_ in leaves]
    m, n = checkpoint.tree_size, len(hashes)
    log_root = merkle.root(hashes)
    report = ConsistencyReport(
        ok=False,
        checkpoint_size=m,
        checkpoint_root=checkpoint.root_hash,
        log_size=n,
        log_root=log_root.hex(),
        proof=[],
    )
    signed = checkpoint_problem(checkpoint, trusted)
    if signed is not None:
        return report.model_copy(update={"problem": signed})
    # What the positions alone say: how many events now stand where the checkpoint ended.
    covered = bisect.bisect_right(positions, checkpoint.last_position)
    moved = ""
    if covered < m:
        moved = f"; {m - covered} of the events at or before position {checkpoint.last_position} are gone"
    elif covered > m:
        moved = (
            f"; {covered - m} events now stand at or before position {checkpoint.last_position}, added since"
        )
    if m > n:
        problem = (
            f"the log holds {n} events, fewer than the {m} the checkpoint covers: events were removed{moved}"
        )
    elif (prefix := merkle.root(hashes[:m])) != checkpoint.root():
        problem = (
            f"the log no longer extends the checkpoint of size {m}: its first {m} events hash to "
            f"{prefix.hex()}, the checkpoint says {checkpoint.root_hash}{moved}"
        )
    else:
        problem = None
    if problem is not None:
        first, where = _locate(tx, hashes, positions, m, others)
        return report.model_copy(update={"problem": problem + where, "first_difference": first})
    proof = merkle.consistency_path(m, hashes)
    # The proof an outside verifier would be given, checked here with the same pure verifier.
    assert merkle.verify_consistency(m, n, checkpoint.root(), log_root, proof)
    return report.model_copy(update={"ok": True, "proof": hexes(proof)})


def first_not_extended(
    tx: Tx, checkpoints: Sequence[Checkpoint], trusted: frozenset[str] | None
) -> ConsistencyReport | None:
    """The report on the first of `checkpoints` the log in `tx` does not extend, or None if it extends all.

    One pass over the log for all of them (an import may carry thousands): each prefix root is compared as
    the frontier passes its size; only a failure is worked out in full, with its proof and its place.
    """
    wanted = sorted(checkpoints, key=lambda c: c.tree_size)
    frontier = merkle.Frontier()
    roots = {0: frontier.root()}
    sizes = {c.tree_size for c in wanted}
    for _, hash_ in log_leaves(tx):
        frontier.append(merkle.event_leaf(hash_))
        if frontier.size in sizes:
            roots[frontier.size] = frontier.root()
    signed = [c for c in wanted if checkpoint_problem(c, trusted) is None]
    for checkpoint in wanted:
        if len(signed) < len(wanted) or roots.get(checkpoint.tree_size) != checkpoint.root():
            report = consistency(tx, checkpoint, trusted, others=signed)
            if not report.ok:
                return report
    return None


def _locate(
    tx: Tx, hashes: list[bytes], positions: list[int], m: int, others: Sequence[Checkpoint]
) -> tuple[LeafRef | None, str]:
    """Bound the first changed event with the other checkpoints: the log still extends those up to
    some size `low` and no longer those from some size `high` on, so the change lies in [low, high)."""
    sizes = sorted(
        {c.tree_size: c for c in others if 0 < c.tree_size < m and c.tree_size <= len(hashes)}.items()
    )
    frontier, low, high = merkle.Frontier(), 0, m
    for size, other in sizes:
        while frontier.size < size:
            frontier.append(hashes[frontier.size])
        if frontier.root() == other.root():
            low = size
        else:
            high = size
            break
    high = min(high, len(hashes))
    if low >= high:  # the log ends where the change starts: what is missing is its tail
        return None, f"; the events after #{low} are gone"
    first = _ref(tx, low, positions[low])
    named = f"{first.type} {first.stream_id} v{first.version} at position {first.position}"
    if high - low == 1:
        return first, f"; the first difference is event #{low + 1}: {named}"
    return None, (
        f"; the first difference is among events #{low + 1}-#{high} (positions {positions[low]}-"
        f"{positions[high - 1]}), from {named} on"
    )


class SQLCheckpoints(SQLBackend):
    def settled_position(self) -> int:
        """Every position up to this one is final: committed, or never to be (SQLite commits in order)."""
        with self._reader() as tx:
            return int(tx.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0])

    def leaves(self, after_position: int = 0, through: int | None = None) -> list[tuple[int, str]]:
        """(position, chain hash) of the events in (after_position, through], in position order."""
        with self._reader() as tx:
            return log_leaves(tx, after_position, through)

    def save_checkpoint(self, checkpoint: Checkpoint) -> bool:
        with self._transaction() as tx:
            return insert_checkpoint(tx, checkpoint)

    def checkpoints(self) -> list[Checkpoint]:
        with self._reader() as tx:
            return stored_checkpoints(tx)

    def make_checkpoint(self, now: datetime | None = None) -> Checkpoint:
        """Sign (with this handle's recorder key) and store a checkpoint of every settled event."""
        sealer = self.sealer()
        through = self.settled_position()
        leaves = self.leaves(0, through)
        root = merkle.root([merkle.event_leaf(hash_) for _, hash_ in leaves])
        last = leaves[-1][0] if leaves else 0
        checkpoint = sign_checkpoint(sealer.key, len(leaves), root, last, now or datetime.now(UTC))
        self.save_checkpoint(checkpoint)
        return checkpoint

    def check_checkpoint(
        self, checkpoint: Checkpoint, trusted: frozenset[str] | None = None
    ) -> ConsistencyReport:
        """Whether the log now extends `checkpoint` (whose key must be one of `trusted`, when given)."""
        with self._snapshot() as tx:
            others = [c for c in stored_checkpoints(tx) if checkpoint_problem(c, trusted) is None]
            return consistency(tx, checkpoint, trusted, others=others)

    def prove(
        self, event_id: str, checkpoint: Checkpoint, trusted: frozenset[str] | None = None
    ) -> InclusionProof:
        """That the event is in the checkpoint's tree: UnknownEvent, or CheckpointMismatch naming why not."""
        with self._snapshot() as tx:
            found = tx.execute(
                "SELECT position, stream_id, version FROM events WHERE event_id = ?", (event_id,)
            ).fetchone()
            if found is None:
                raise UnknownEvent(f"no event {event_id!r} in the event store")
            position, stream_id, version = found
            leaves = log_leaves(tx)
            report = consistency(tx, checkpoint, trusted)
            if not report.ok:
                raise CheckpointMismatch(f"cannot prove against this checkpoint: {report.problem}")
            index = bisect.bisect_left([p for p, _ in leaves], position)
            if index >= checkpoint.tree_size:
                raise CheckpointMismatch(
                    f"event {event_id} ({stream_id} v{version}, position {position}) was recorded after the "
                    f"checkpoint, which covers {checkpoint.tree_size} events up to position "
                    f"{checkpoint.last_position}: take a newer checkpoint"
                )
            hashes = [merkle.event_leaf(hash_) for _, hash_ in leaves[: checkpoint.tree_size]]
            proof = InclusionProof(
                event_id=event_id,
                stream_id=stream_id,
                version=version,
                position=position,
                leaf_index=index,
                tree_size=checkpoint.tree_size,
                leaf=leaves[index][1],
                audit_path=hexes(merkle.inclusion_path(index, hashes)),
                root_hash=checkpoint.root_hash,
                checkpoint=checkpoint,
            )
            assert proof.verifies()
            return proof
