"""The Merkle tree (chipclear.store.merkle) against RFC 9162's own definitions, for every small tree.

The reference functions below are the RFC's recursive definitions written out literally (§2.1.1 MTH,
§2.1.3.1 PATH, §2.1.4.1 PROOF/SUBPROOF) over the leaves themselves. The module under test computes
the same from leaf hashes, iteratively, and verifies proofs with the §2.1.3.2 / §2.1.4.2 algorithms:
for every size 1..64, every leaf and every earlier size, the proofs must match the definitions, verify,
and stop verifying when anything about them is changed.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence

import pytest

from chipclear.store import merkle

MAX = 64


# -- RFC 9162, literally -----------------------------------------------------------------------------
def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def k_of(n: int) -> int:
    """The largest power of two smaller than n."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: Sequence[bytes]) -> bytes:
    if not d:
        return sha(b"")
    if len(d) == 1:
        return sha(b"\x00" + d[0])
    k = k_of(len(d))
    return sha(b"\x01" + mth(d[:k]) + mth(d[k:]))


def path(m: int, d: Sequence[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = k_of(len(d))
    if m < k:
        return [*path(m, d[:k]), mth(d[k:])]
    return [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = k_of(n)
    if m <= k:
        return [*subproof(m, d[:k], b), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


def proof(m: int, d: Sequence[bytes]) -> list[bytes]:
    return subproof(m, d, True)


# -- data --------------------------------------------------------------------------------------------
DATA = [f"event {i}".encode() for i in range(MAX)]
LEAVES = [merkle.leaf_hash(each) for each in DATA]
ROOTS = {n: mth(DATA[:n]) for n in range(MAX + 1)}

# The test vectors of the Certificate Transparency reference code (RFC 6962's hashing, which RFC 9162
# keeps): eight leaves and the root of each prefix.
CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    bytes(range(0x60, 0x70)),
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def flip(node: bytes) -> bytes:
    return bytes([node[0] ^ 1]) + node[1:]


# -- roots -------------------------------------------------------------------------------------------
def test_the_empty_tree_and_the_certificate_transparency_vectors() -> None:
    assert merkle.root([]) == merkle.EMPTY_ROOT == sha(b"")
    leaves = [merkle.leaf_hash(each) for each in CT_LEAVES]
    assert [merkle.root(leaves[:n]).hex() for n in range(1, 9)] == CT_ROOTS


def test_roots_match_the_definition_for_every_size_and_the_frontier_grows_into_each() -> None:
    frontier = merkle.Frontier()
    assert frontier.root() == ROOTS[0]
    for n in range(1, MAX + 1):
        frontier.append(LEAVES[n - 1])
        assert frontier.size == n
        assert frontier.root() == ROOTS[n] == merkle.root(LEAVES[:n]), n


def test_a_leaf_is_an_events_chain_hash() -> None:
    chain_hash = hashlib.sha256(b"an event").hexdigest()
    assert merkle.event_leaf(chain_hash) == sha(b"\x00" + bytes.fromhex(chain_hash))
    # Domain separation: a leaf can never pass for an interior node of the same bytes.
    assert merkle.leaf_hash(LEAVES[0] + LEAVES[1]) != merkle.node_hash(LEAVES[0], LEAVES[1])


# -- inclusion ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", range(1, MAX + 1))
def test_every_inclusion_proof_matches_the_definition_and_verifies(n: int) -> None:
    root = ROOTS[n]
    for index in range(n):
        audit = merkle.inclusion_path(index, LEAVES[:n])
        assert audit == path(index, DATA[:n]), (n, index)
        assert merkle.verify_inclusion(index, n, LEAVES[index], audit, root)


@pytest.mark.parametrize("n", range(1, MAX + 1))
def test_a_changed_inclusion_proof_never_verifies(n: int) -> None:
    root = ROOTS[n]
    for index in range(n):
        audit = merkle.inclusion_path(index, LEAVES[:n])
        leaf = LEAVES[index]
        assert not merkle.verify_inclusion(index, n, flip(leaf), audit, root)  # another event
        assert not merkle.verify_inclusion(index, n, leaf, audit, flip(root))  # another tree
        for at in range(len(audit)):  # any node of the path
            changed = [*audit[:at], flip(audit[at]), *audit[at + 1 :]]
            assert not merkle.verify_inclusion(index, n, leaf, changed, root)
        if audit:
            assert not merkle.verify_inclusion(index, n, leaf, audit[:-1], root)  # too short
        assert not merkle.verify_inclusion(index, n, leaf, [*audit, LEAVES[0]], root)  # too long
        for other in range(n):  # claimed at another index: only a leaf equal to it would pass
            if other != index and LEAVES[other] != leaf:
                assert not merkle.verify_inclusion(other, n, leaf, audit, root)
        assert not merkle.verify_inclusion(index, index, leaf, audit, root)  # outside the tree
        if n < MAX:  # the same path against a bigger tree's root
            assert not merkle.verify_inclusion(index, n + 1, leaf, audit, ROOTS[n + 1])


def test_inclusion_of_an_index_outside_the_tree_is_refused() -> None:
    with pytest.raises(ValueError, match="outside a tree of 3 leaves"):
        merkle.inclusion_path(3, LEAVES[:3])
    assert not merkle.verify_inclusion(-1, 3, LEAVES[0], [], ROOTS[3])
    assert not merkle.verify_inclusion(0, 0, LEAVES[0], [], ROOTS[0])


# -- consistency -------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", range(1, MAX + 1))
def test_every_consistency_proof_matches_the_definition_and_verifies(n: int) -> None:
    for m in range(1, n + 1):
        consistency = merkle.consistency_path(m, LEAVES[:n])
        assert consistency == proof(m, DATA[:n]), (m, n)
        assert merkle.verify_consistency(m, n, ROOTS[m], ROOTS[n], consistency), (m, n)


@pytest.mark.parametrize("n", range(2, MAX + 1))
def test_a_changed_consistency_proof_never_verifies(n: int) -> None:
    for m in range(1, n):
        consistency = merkle.consistency_path(m, LEAVES[:n])
        old, new = ROOTS[m], ROOTS[n]
        assert not merkle.verify_consistency(m, n, flip(old), new, consistency)  # a rewritten past
        assert not merkle.verify_consistency(m, n, old, flip(new), consistency)  # another present
        for at in range(len(consistency)):
            changed = [*consistency[:at], flip(consistency[at]), *consistency[at + 1 :]]
            assert not merkle.verify_consistency(m, n, old, new, changed), (m, n, at)
        assert not merkle.verify_consistency(m, n, old, new, consistency[:-1])  # too short
        assert not merkle.verify_consistency(m, n, old, new, [*consistency, LEAVES[0]])  # too long
        assert not merkle.verify_consistency(m, n, old, new, [])
        assert not merkle.verify_consistency(n, m, new, old, consistency)  # the sizes swapped
        if m + 1 < n:  # claimed for another old size
            assert not merkle.verify_consistency(m + 1, n, old, new, consistency)


def test_a_log_rewritten_before_the_old_size_has_no_consistency_proof() -> None:
    """Whatever proof the log offers, an old root over other leaves is not consistent with the new tree."""
    for m, n in itertools.product(range(1, 17), range(1, 33)):
        if m >= n:
            continue
        rewritten = [*LEAVES[: m - 1], merkle.leaf_hash(b"forged"), *LEAVES[m:n]]
        offered = merkle.consistency_path(m, rewritten)
        assert not merkle.verify_consistency(m, n, ROOTS[m], merkle.root(rewritten), offered)
        # A log with an event removed before m (the rest moved up) proves nothing about the old tree.
        cut = [*LEAVES[: m - 1], *LEAVES[m : n + 1]]
        assert not merkle.verify_consistency(
            m, n, ROOTS[m], merkle.root(cut), merkle.consistency_path(m, cut)
        )


def test_the_edges_of_consistency() -> None:
    assert merkle.consistency_path(0, LEAVES[:5]) == [] and merkle.consistency_path(5, LEAVES[:5]) == []
    assert merkle.verify_consistency(0, 5, merkle.EMPTY_ROOT, ROOTS[5], [])  # the empty tree: a prefix of all
    assert merkle.verify_consistency(5, 5, ROOTS[5], ROOTS[5], [])
    assert not merkle.verify_consistency(5, 5, ROOTS[5], ROOTS[4], [])
    assert not merkle.verify_consistency(5, 5, ROOTS[5], ROOTS[5], [LEAVES[0]])
    assert not merkle.verify_consistency(6, 5, ROOTS[6], ROOTS[5], [])
    with pytest.raises(ValueError, match=r"outside 0\.\.5"):
        merkle.consistency_path(6, LEAVES[:5])


def test_a_big_log_roots_and_proves_in_linear_time() -> None:
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(20_000)]
    root = merkle.root(leaves)
    first = merkle.root(leaves[:12_345])
    consistency = merkle.consistency_path(12_345, leaves)
    assert merkle.verify_consistency(12_345, 20_000, first, root, consistency)
    audit = merkle.inclusion_path(17_000, leaves)
    assert len(audit) <= 15 and merkle.verify_inclusion(17_000, 20_000, leaves[17_000], audit, root)
