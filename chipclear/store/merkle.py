"""A Merkle tree over the whole log, as Certificate Transparency builds one (RFC 9162 §2.1).

The leaves are the events in position order; each leaf is the event's chain hash (32 bytes, the
`hash` column decoded from hex). That hash already covers every chained field of the event and the
event before it in its stream, so the tree commits to the content of every event and to the order of
the whole log, while an auditor who holds an export rebuilds it from one column.

Hashing is RFC 9162's: a leaf hash is SHA-256(0x00 || leaf), an interior node SHA-256(0x01 || left ||
right), the empty tree SHA-256(""). Functions here take *leaf hashes* (already prefixed and hashed)
so that proofs over a long log hash each leaf once. Proofs and their verifiers follow the RFC's
algorithms step by step (§2.1.3 inclusion, §2.1.4 consistency); nothing here does I/O, so an
auditor's own script can import this module alone (it needs only the standard library).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def event_leaf(chain_hash: str) -> bytes:
    """The leaf hash of an event, from its stored chain hash (64 hex digits)."""
    return leaf_hash(bytes.fromhex(chain_hash))


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1): where RFC 9162 splits a tree of n leaves."""
    return 1 << ((n - 1).bit_length() - 1)


class Frontier:
    """The roots of the perfect subtrees a log of `size` leaves decomposes into (its "compact range").

    Appending a leaf costs O(1) amortised and the root O(log n), so a worker keeps one in memory and
    checkpoints a growing log without reading it again.
    """

    def __init__(self) -> None:
        self.size = 0
        self._peaks: list[tuple[int, bytes]] = []  # (height, hash), tallest first

    def append(self, leaf_hash: bytes) -> None:
        height, node = 0, leaf_hash
        while self._peaks and self._peaks[-1][0] == height:
            _, left = self._peaks.pop()
            node, height = node_hash(left, node), height + 1
        self._peaks.append((height, node))
        self.size += 1

    def extend(self, leaf_hashes: Sequence[bytes]) -> None:
        for each in leaf_hashes:
            self.append(each)

    def root(self) -> bytes:
        """MTH of the leaves so far: the peaks folded from the right, as the RFC's recursion splits."""
        if not self._peaks:
            return EMPTY_ROOT
        node = self._peaks[-1][1]
        for _, left in reversed(self._peaks[:-1]):
            node = node_hash(left, node)
        return node


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over leaf hashes."""
    frontier = Frontier()
    frontier.extend(leaves)
    return frontier.root()


def _mth(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    if hi - lo == 1:
        return leaves[lo]
    frontier = Frontier()
    for i in range(lo, hi):
        frontier.append(leaves[i])
    return frontier.root()


# -- inclusion (RFC 9162 §2.1.3) ------------------------------------------------------------------
def inclusion_path(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) (§2.1.3.1): the audit path of leaf `index` in the tree of `leaves`."""
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf index {index} is outside a tree of {len(leaves)} leaves")
    path: list[bytes] = []
    lo, hi, m = 0, len(leaves), index
    # The recursion, unrolled: each level adds the root of the half that does not hold the leaf; the
    # RFC lists them from the leaf upwards, so they are collected top-down and reversed.
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            path.append(_mth(leaves, lo + k, hi))
            hi = lo + k
        else:
            path.append(_mth(leaves, lo, lo + k))
            lo, m = lo + k, m - k
    path.reverse()
    return path


def _past_left_edges(fn: int, sn: int) -> tuple[int, int]:
    """Step ii of both verifications: from a left child, climb past the levels where this subtree has
    no right sibling (until fn is a right child, or the root)."""
    if not fn & 1:
        while not (fn & 1 or fn == 0):
            fn, sn = fn >> 1, sn >> 1
    return fn, sn


def verify_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes], root_hash: bytes) -> bool:
    """§2.1.3.2: does `path` prove that leaf hash `leaf` is leaf `index` of the tree `root_hash` of `size`?"""
    # 1. leaf_index must lie inside the tree.
    if not 0 <= index < size:
        return False
    # 2. fn = leaf_index, sn = tree_size - 1.  3. r = hash.
    fn, sn, r = index, size - 1, leaf
    # 4. For each value p in the inclusion path:
    for p in path:
        # a. sn == 0: the path is too long.
        if sn == 0:
            return False
        # b. A right child, or the last node of its level: p is on the left.
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            fn, sn = _past_left_edges(fn, sn)
        else:
            r = node_hash(r, p)
        # c. Up one level.
        fn, sn = fn >> 1, sn >> 1
    # 5. The whole path used, and the root reached.
    return sn == 0 and r == root_hash


# -- consistency (RFC 9162 §2.1.4) ----------------------------------------------------------------
def consistency_path(first: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) (§2.1.4.1): that the tree of the first `first` leaves is a prefix of `leaves`."""
    n = len(leaves)
    if not 0 <= first <= n:
        raise ValueError(f"tree size {first} is outside 0..{n}")
    if first in (0, n):
        return []
    return _subproof(first, leaves, 0, n, True)


def _subproof(m: int, leaves: Sequence[bytes], lo: int, hi: int, whole: bool) -> list[bytes]:
    n = hi - lo
    if m == n:
        # SUBPROOF(m, D[m], true) = {}; SUBPROOF(m, D[m], false) = {MTH(D[m])}
        return [] if whole else [_mth(leaves, lo, hi)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves, lo, lo + k, whole), _mth(leaves, lo + k, hi)]
    return [*_subproof(m - k, leaves, lo + k, hi, False), _mth(leaves, lo, lo + k)]


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]
) -> bool:
    """§2.1.4.2: does `path` prove the tree (`first`, `first_root`) is a prefix of (`second`, `second_root`)?

    The RFC's algorithm covers 0 < first < second; the edges are settled the way its PROOF defines
    them: an empty tree is a prefix of every tree, and a tree is consistent with itself only, each
    with an empty path.
    """
    if not 0 <= first <= second:
        return False
    if first == 0:
        return not path
    if first == second:
        return not path and first_root == second_root
    # 1. An empty path proves nothing.
    if not path:
        return False
    # 2. When first is a power of two its root is a node of the second tree: the path starts there.
    nodes = list(path)
    if first & (first - 1) == 0:
        nodes.insert(0, first_root)
    # 3. fn = first - 1, sn = second - 1.
    fn, sn = first - 1, second - 1
    # 4. Skip the levels where the first tree's last leaf is a right child.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. Both roots start from the first node.
    fr = sr = nodes[0]
    # 6. For each subsequent value c:
    for c in nodes[1:]:
        # a. sn == 0: the path is too long.
        if sn == 0:
            return False
        # b. c is on the left of both trees...
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            fn, sn = _past_left_edges(fn, sn)
        # ...or only in the second tree, on the right.
        else:
            sr = node_hash(sr, c)
        # c. Up one level.
        fn, sn = fn >> 1, sn >> 1
    # 7. Both roots reached, with the whole path used.
    return fr == first_root and sr == second_root and sn == 0
