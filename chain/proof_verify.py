"""Verification of RFC 9162 inclusion and consistency proofs.

``verify_inclusion`` / ``verify_consistency`` return nothing when the proof holds; they raise
:class:`VerificationError` when it does not and :class:`InvalidInputError` for malformed
arguments (a hash that is not 32 bytes, an index outside the tree, ``size1 > size2``...).

They compute the same results as the RFC 9162 §2.1.3.2 / §2.1.4.2 algorithms (the literal
versions are in ``chain.reference`` and the tests check that both agree), in the closed form
of transparency-dev/merkle's ``proof.VerifyInclusion`` / ``proof.VerifyConsistency``: the proof
length is fixed by ``(index, size)``, so a proof of any other length is rejected before hashing,
and then the hashing order of each proof hash is one bit of a precomputed mask.

A proof binds the tree size only through the root: two sizes with the same proof shape (e.g.
leaf 0 in trees of 5..8 leaves) compute the same root from the same proof. Take the size from
the same signed checkpoint as the root.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from chain.errors import InvalidInputError, VerificationError
from chain.hashing import HASH_SIZE

__all__ = ["root_from_inclusion_proof", "verify_consistency", "verify_inclusion"]

_sha256 = hashlib.sha256
_NODE = b"\x01"


def _check_hash(name: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise InvalidInputError(f"expected a {HASH_SIZE}-byte {name}, got {len(value)} bytes")


def _check_proof_hashes(proof: Sequence[bytes]) -> None:
    for i, h in enumerate(proof):
        if len(h) != HASH_SIZE:
            raise InvalidInputError(
                f"expected {HASH_SIZE}-byte proof hashes, got {len(h)} bytes at proof[{i}]"
            )


def _short(h: bytes) -> str:
    return h.hex()[:16] + "…"


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """The root that ``proof`` leads to from leaf ``index`` (``leaf_hash``) in a tree of ``size``.

    Raises :class:`VerificationError` if the proof does not have the length that ``(index,
    size)`` requires, :class:`InvalidInputError` for malformed arguments.
    """
    if not 0 <= index < size:
        raise InvalidInputError(f"expected 0 <= index < size, got index={index}, size={size}")
    _check_hash("leaf hash", leaf_hash)
    inner = (index ^ (size - 1)).bit_length()
    want = inner + (index >> inner).bit_count()
    if len(proof) != want:
        raise VerificationError(
            f"expected an inclusion proof of {want} hashes for leaf {index} in a tree of {size}, "
            f"got {len(proof)}"
        )
    # Bit i of `left` set: proof[i] is a left sibling. Below `inner` that is bit i of the index;
    # from `inner` up every sibling is on the left (the path runs along the right edge).
    left = index | (-1 << inner)
    sha, node = _sha256, _NODE
    r = bytes(leaf_hash)
    for h in proof:
        if len(h) != HASH_SIZE:
            _check_proof_hashes(proof)
        r = sha(node + h + r).digest() if left & 1 else sha(node + r + h).digest()
        left >>= 1
    return r


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``proof`` proves leaf ``index`` (``leaf_hash``) in the tree (``size``, ``root``).

    RFC 9162 §2.1.3.2. Returns nothing; raises :class:`VerificationError` if the proof fails.
    """
    _check_hash("root hash", root)
    computed = root_from_inclusion_proof(leaf_hash, index, size, proof)
    if computed != root:
        raise VerificationError(
            f"inclusion proof for leaf {index} in a tree of {size} leads to root "
            f"{_short(computed)}, expected {_short(root)}"
        )


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree (``size2``, ``root2``) extends the tree (``size1``, ``root1``).

    RFC 9162 §2.1.4.2 for ``0 < size1 < size2``; for ``size1 == size2`` the proof must be empty
    and the roots equal (as tlog and transparency-dev). ``size1 == 0`` is malformed: every tree
    extends the empty tree, so there is nothing to prove. Returns nothing; raises
    :class:`VerificationError` if the proof fails.
    """
    if not 0 < size1 <= size2:
        raise InvalidInputError(f"expected 0 < size1 <= size2, got size1={size1}, size2={size2}")
    _check_hash("root1", root1)
    _check_hash("root2", root2)
    _check_proof_hashes(proof)
    if size1 == size2:
        if proof:
            raise VerificationError(
                f"expected an empty consistency proof for equal sizes, got {len(proof)} hashes"
            )
        if root1 != root2:
            raise VerificationError(
                f"trees of equal size {size1} have different roots "
                f"{_short(root1)} and {_short(root2)}"
            )
        return
    # The proof is the audit path of node (shift, (size1-1) >> shift), the largest perfect
    # subtree ending at leaf size1-1, in the tree of size2, preceded by that node's hash
    # unless size1 is a power of two (then the node is the old root itself).
    shift = (size1 & -size1).bit_length() - 1
    mask = (size1 - 1) >> shift
    inner = ((size1 - 1) ^ (size2 - 1)).bit_length() - shift
    border = (mask >> inner).bit_count()
    if mask:
        seed, start = (proof[0] if proof else b""), 1
    else:
        seed, start = bytes(root1), 0
    want = start + inner + border
    if len(proof) != want:
        raise VerificationError(
            f"expected a consistency proof of {want} hashes from size {size1} to size {size2}, "
            f"got {len(proof)}"
        )
    sha, node = _sha256, _NODE
    h1 = h2 = bytes(seed)
    # Inner part: h1 takes only the left siblings (the old tree ends where the node ends),
    # h2 takes every sibling.
    for i in range(start, start + inner):
        c = proof[i]
        if mask & 1:
            h1 = sha(node + c + h1).digest()
            h2 = sha(node + c + h2).digest()
        else:
            h2 = sha(node + h2 + c).digest()
        mask >>= 1
    # Border part: left siblings along the right edge, common to both trees.
    for i in range(start + inner, want):
        c = proof[i]
        h1 = sha(node + c + h1).digest()
        h2 = sha(node + c + h2).digest()
    if h1 != root1:
        raise VerificationError(
            f"consistency proof from size {size1} to size {size2} leads to old root "
            f"{_short(h1)}, expected {_short(root1)}"
        )
    if h2 != root2:
        raise VerificationError(
            f"consistency proof from size {size1} to size {size2} leads to new root "
            f"{_short(h2)}, expected {_short(root2)}"
        )
