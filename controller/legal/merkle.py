"""RFC 6962 / RFC 9162 Merkle tree hashing, inclusion and consistency proofs (pure).

Leaves are hashed ``SHA-256(0x00 || leaf)`` and nodes ``SHA-256(0x01 || left || right)``
(RFC 6962 §2.1: the prefixes separate leaves from nodes, so that no leaf can pass for
a subtree). Proof verification follows RFC 9162 §2.1.3.2 and §2.1.4.2. This module
does no IO and knows nothing of the legal log's records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "prefix_roots",
    "root",
    "verify_consistency",
    "verify_inclusion",
]

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    """The hash of one leaf (RFC 6962 §2.1)."""
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node (RFC 6962 §2.1)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def root(hashes: Sequence[bytes]) -> bytes:
    """The Merkle Tree Hash of a list of leaf hashes, computed bottom-up.

    Pairing left to right and promoting a lone last node gives the same tree as the
    recursive definition of RFC 6962 §2.1 (the split at the largest power of two).
    """
    if not hashes:
        return EMPTY_ROOT
    level = list(hashes)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def prefix_roots(hashes: Sequence[bytes], sizes: Iterable[int]) -> dict[int, bytes]:
    """The roots of the trees of the first ``size`` hashes, for each size, in one pass.

    The tree of n leaves is its perfect subtrees, largest first (RFC 6962 §2.1 splits
    at the largest power of two), so folding that stack from the right gives its root:
    O(n + len(sizes) · log n) instead of O(n) per size.
    """
    wanted = sorted(set(s for s in sizes if 0 <= s <= len(hashes)))
    out: dict[int, bytes] = {}
    stack: list[tuple[int, bytes]] = []  # (height, root) of perfect subtrees
    i = 0
    for size in wanted:
        while i < size:
            node = (0, hashes[i])
            while stack and stack[-1][0] == node[0]:
                h, left = stack.pop()
                node = (h + 1, node_hash(left, node[1]))
            stack.append(node)
            i += 1
        if not stack:
            out[size] = EMPTY_ROOT
            continue
        acc = stack[-1][1]
        for _, left in reversed(stack[:-1]):
            acc = node_hash(left, acc)
        out[size] = acc
    return out


def inclusion_proof(index: int, hashes: Sequence[bytes]) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``hashes`` (RFC 6962 §2.1.1)."""
    if not 0 <= index < len(hashes):
        raise ValueError("leaf index out of range")
    path: list[bytes] = []
    lo, hi = 0, len(hashes)
    # Walk down from the root, collecting the sibling subtree on the way; the path is
    # ordered from the leaf upwards, hence the reversal.
    while hi - lo > 1:
        k = _split(hi - lo)
        if index - lo < k:
            path.append(root(hashes[lo + k : hi]))
            hi = lo + k
        else:
            path.append(root(hashes[lo : lo + k]))
            lo = lo + k
    path.reverse()
    return path


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes
) -> bool:
    """True if ``leaf`` (a leaf hash) is leaf ``index`` of the tree of ``size`` with
    ``expected_root`` (RFC 9162 §2.1.3.2)."""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


def _subproof(m: int, hashes: Sequence[bytes], complete: bool) -> list[bytes]:
    n = len(hashes)
    if m == n:
        return [] if complete else [root(hashes)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, hashes[:k], complete), root(hashes[k:])]
    return [*_subproof(m - k, hashes[k:], False), root(hashes[:k])]


def consistency_proof(old_size: int, hashes: Sequence[bytes]) -> list[bytes]:
    """Proof that the tree of the first ``old_size`` hashes is a prefix of the tree of
    all ``hashes`` (RFC 6962 §2.1.2)."""
    if not 0 <= old_size <= len(hashes):
        raise ValueError("old size out of range")
    if old_size in (0, len(hashes)):
        return []
    return _subproof(old_size, hashes, True)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """True if ``proof`` shows the tree (old_size, old_root) is a prefix of the tree
    (new_size, new_root) (RFC 9162 §2.1.4.2)."""
    if old_size > new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
