"""RFC 6962 Merkle hashing and proofs agree with the RFC's recursive definitions."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from controller.legal import merkle


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1 MTH, literally (the reference)."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


LEAVES = [f"record {i}".encode() for i in range(33)]
HASHES = [merkle.leaf_hash(x) for x in LEAVES]


def test_root_matches_the_rfc_definition() -> None:
    """The bottom-up root equals RFC 6962's recursive MTH for every size up to 33."""
    for n in range(34):
        assert merkle.root(HASHES[:n]) == mth(LEAVES[:n])


def test_known_vector() -> None:
    """The empty tree and one-leaf tree hash as RFC 6962 says (SHA-256 of '' / 0x00||'')."""
    assert merkle.EMPTY_ROOT.hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert merkle.root([merkle.leaf_hash(b"")]).hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )


def test_every_inclusion_proof_verifies_and_binds_its_leaf() -> None:
    """Each leaf's proof verifies against the root, and not for another leaf or index."""
    for n in range(1, 34):
        r = merkle.root(HASHES[:n])
        for i in range(n):
            proof = merkle.inclusion_proof(i, HASHES[:n])
            assert merkle.verify_inclusion(i, n, HASHES[i], proof, r)
            assert not merkle.verify_inclusion(i, n, merkle.leaf_hash(b"x"), proof, r)
            if n > 1:
                assert not merkle.verify_inclusion((i + 1) % n, n, HASHES[i], proof, r)


def test_every_consistency_proof_verifies_and_detects_rewrites() -> None:
    """Consistency proofs verify for every prefix; a rewritten old tree fails them."""
    for n in range(1, 34):
        new_root = merkle.root(HASHES[:n])
        for m in range(1, n + 1):
            proof = merkle.consistency_proof(m, HASHES[:n])
            old_root = merkle.root(HASHES[:m])
            assert merkle.verify_consistency(m, n, old_root, new_root, proof)
            forged = merkle.root([merkle.leaf_hash(b"forged"), *HASHES[1:m]])
            assert not merkle.verify_consistency(m, n, forged, new_root, proof)


@given(st.integers(0, 40), st.integers(1, 40), st.lists(st.binary(min_size=32, max_size=32)))
def test_garbage_proofs_never_verify(m: int, n: int, proof: list[bytes]) -> None:
    """Random proofs do not prove consistency nor inclusion (and never crash)."""
    r = merkle.root(HASHES[: min(n, 33)])
    assert not merkle.verify_consistency(m, n, b"\x00" * 32, r, proof)
    assert not merkle.verify_inclusion(m, n, b"\x01" * 32, proof, r)


def test_prefix_roots_equal_the_roots_of_each_prefix() -> None:
    """The one-pass prefix roots equal the root of every prefix, including 0 and n."""
    got = merkle.prefix_roots(HASHES, range(len(HASHES) + 1))
    assert got == {n: mth(LEAVES[:n]) for n in range(len(HASHES) + 1)}
    assert merkle.prefix_roots(HASHES, [99]) == {}
