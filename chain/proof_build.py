"""Roots and RFC 9162 proofs of the log tree, read from stored hashes.

Each function makes a single ``reader.read_hashes`` call for O(log n) stored hashes and never
recomputes the tree: the only hashing is of the *ephemeral* node, the one right-edge subtree of
a proof that is not yet complete and so is not stored (at most log2(n) - 1 node hashes).

The proofs are exactly RFC 9162 §2.1.3.1 ``PATH(m, D[n])`` and §2.1.4.1 ``PROOF(m, D[n])``
(same as RFC 6962 §2.1.1 / §2.1.2, tlog ``ProveRecord`` / ``ProveTree`` and transparency-dev
``proof.Inclusion`` / ``proof.Consistency``): sibling hashes from the leaf up to the root.

How a path decomposes (same as transparency-dev's verifier): for leaf ``m`` of a tree of ``n``
leaves, let ``inner = bit_length(m XOR (n-1))``. Below level ``inner - 1`` every sibling is a
complete, stored node; at level ``inner - 1`` the right sibling covers ``[a, n)`` and is stored
only if complete, else it is the ephemeral node hashed from the perfect subtrees of ``[a, n)``;
above, the path runs along the right edge of the tree and the proof holds one left sibling per
set bit of ``m >> inner``.
"""

from __future__ import annotations

import hashlib

from chain.errors import InvalidInputError, SwiftchainError
from chain.hashing import EMPTY_ROOT
from chain.tiles import HashReader

__all__ = ["consistency_proof", "inclusion_proof", "tree_root"]

_sha256 = hashlib.sha256
_NODE = b"\x01"


def tree_root(size: int, reader: HashReader) -> bytes:
    """Root hash of the tree of the first ``size`` leaves (``EMPTY_ROOT`` for 0).

    Reads the roots of its popcount(size) perfect subtrees and folds them right to left.
    """
    if size < 0:
        raise InvalidInputError(f"expected size >= 0, got {size}")
    if size == 0:
        return EMPTY_ROOT
    indexes = []
    first = 0  # first leaf of the next perfect subtree, largest first
    rest = size
    while rest:
        level = rest.bit_length() - 1
        first += 1 << level
        m = first - 1  # its last leaf
        indexes.append(2 * m - m.bit_count() + level)
        rest ^= 1 << level
    hashes = _read(reader, indexes)
    root = hashes[-1]
    sha, node = _sha256, _NODE
    for i in range(len(hashes) - 2, -1, -1):
        root = sha(node + hashes[i] + root).digest()
    return root


def inclusion_proof(index: int, size: int, reader: HashReader) -> list[bytes]:
    """RFC 9162 §2.1.3.1 inclusion proof (audit path) of leaf ``index`` in the tree of ``size``.

    Leaf sibling first. Empty for a tree of one leaf.
    """
    if not 0 <= index < size:
        raise InvalidInputError(f"expected 0 <= index < size, got index={index}, size={size}")
    indexes: list[int] = []
    start, end = _path_indexes(0, index, size, indexes)
    return _assemble(_read(reader, indexes), start, end)


def consistency_proof(size1: int, size2: int, reader: HashReader) -> list[bytes]:
    """RFC 9162 §2.1.4.1 consistency proof between the trees of ``size1`` and ``size2`` leaves.

    Empty when the sizes are equal. Otherwise: the root of the largest perfect subtree that
    ends at leaf ``size1 - 1`` (omitted when ``size1`` is a power of two, since it is then the
    old root itself), followed by that node's audit path in the tree of ``size2``.
    """
    if not 0 < size1 <= size2:
        raise InvalidInputError(f"expected 0 < size1 <= size2, got size1={size1}, size2={size2}")
    if size1 == size2:
        return []
    level = (size1 & -size1).bit_length() - 1  # trailing zeros of size1
    node = (size1 - 1) >> level
    indexes: list[int] = []
    if node:  # size1 is not a power of two: the seed node is part of the proof
        m = size1 - 1
        indexes.append(2 * m - m.bit_count() + level)
    start, end = _path_indexes(level, node, size2, indexes)
    return _assemble(_read(reader, indexes), start, end)


def _path_indexes(level: int, node: int, size: int, out: list[int]) -> tuple[int, int]:
    """Append to ``out`` the stored hash indexes for the audit path of ``(level, node)``.

    Returns ``(start, end)``: ``out[start:end]`` are the components of the ephemeral node, to be
    folded into one proof hash (``start == end`` when there is nothing to fold).
    """
    append = out.append
    inner = (node ^ ((size - 1) >> level)).bit_length()
    # Complete siblings below the ephemeral level, left or right.
    for i in range(inner - 1):
        lv = level + i
        m = ((((node >> i) ^ 1) + 1) << lv) - 1  # last leaf under the sibling
        append(2 * m - m.bit_count() + lv)
    start = end = len(out)
    if inner:
        # The right sibling at level lv covers leaves [first, size).
        lv = level + inner - 1
        first = ((node >> (inner - 1)) + 1) << lv
        rest = size - first
        if rest == 1 << lv:  # complete: stored
            m = size - 1
            append(2 * m - m.bit_count() + lv)
        else:  # ephemeral: the perfect subtrees of [first, size), largest first
            while rest:
                j = rest.bit_length() - 1
                first += 1 << j
                m = first - 1
                append(2 * m - m.bit_count() + j)
                rest ^= 1 << j
            end = len(out)
            if end - start == 1:  # a single perfect subtree: stored as is
                start = end
    # Left siblings along the right edge of the tree.
    upper = node >> inner
    i = inner
    while upper:
        if upper & 1:
            lv = level + i
            m = ((node >> i) << lv) - 1  # last leaf under the left sibling
            append(2 * m - m.bit_count() + lv)
        upper >>= 1
        i += 1
    return start, end


def _assemble(hashes: list[bytes], start: int, end: int) -> list[bytes]:
    """Fold ``hashes[start:end]`` (the ephemeral node's components) into one hash."""
    if start == end:
        return hashes
    sha, node = _sha256, _NODE
    h = hashes[end - 1]
    for i in range(end - 2, start - 1, -1):
        h = sha(node + hashes[i] + h).digest()
    hashes[start:end] = (h,)
    return hashes


def _read(reader: HashReader, indexes: list[int]) -> list[bytes]:
    if not indexes:
        return []
    hashes = reader.read_hashes(indexes)
    if len(hashes) != len(indexes):
        raise SwiftchainError(f"expected {len(indexes)} hashes from the reader, got {len(hashes)}")
    return hashes
