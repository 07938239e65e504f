"""A naive reference Merkle tree, straight from the definitions of RFC 9162 §2.1.

For tests and cross-checks only: it recomputes subtree hashes (memoised per instance) instead
of reading stored hashes, and its verifiers are the RFC's step-by-step algorithms, kept as
literal as Python allows. Nothing in the running system should import it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = [
    "ReferenceTree",
    "mth",
    "path",
    "proof",
    "rfc_verify_consistency",
    "rfc_verify_inclusion",
]


def _hash(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _largest_power_of_two_below(n: int) -> int:
    """k: the largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


class ReferenceTree:
    """The RFC 9162 tree over the entries ``D[0:n]``; methods take a range of it.

    ``mth(lo, hi)`` is ``MTH(D[lo:hi])``; ``path(m, lo, hi)`` is ``PATH(m - lo, D[lo:hi])``;
    ``proof(m, hi)`` is ``PROOF(m, D[0:hi])``. One instance serves every prefix of ``D``.
    """

    def __init__(self, entries: Sequence[bytes]) -> None:
        self.entries = list(entries)
        self._memo: dict[tuple[int, int], bytes] = {}

    def mth(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) (§2.1.1)."""
        key = (lo, hi)
        cached = self._memo.get(key)
        if cached is not None:
            return cached
        n = hi - lo
        if n == 0:
            # MTH({}) = SHA-256()
            result = _hash(b"")
        elif n == 1:
            # MTH({d(0)}) = SHA-256(0x00 || d(0))
            result = _hash(b"\x00" + self.entries[lo])
        else:
            # MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))
            k = _largest_power_of_two_below(n)
            result = _hash(b"\x01" + self.mth(lo, lo + k) + self.mth(lo + k, hi))
        self._memo[key] = result
        return result

    def path(self, m: int, lo: int, hi: int) -> list[bytes]:
        """PATH(m - lo, D[lo:hi]) (§2.1.3.1): the audit path of leaf m, leaf sibling first."""
        n = hi - lo
        if n == 1:
            # PATH(0, {d(0)}) = {}
            return []
        k = _largest_power_of_two_below(n)
        if m - lo < k:
            # PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])
            return [*self.path(m, lo, lo + k), self.mth(lo + k, hi)]
        # PATH(m, D[n]) = PATH(m - k, D[k:n]) : MTH(D[0:k])
        return [*self.path(m, lo + k, hi), self.mth(lo, lo + k)]

    def subproof(self, m: int, lo: int, hi: int, b: bool) -> list[bytes]:
        """SUBPROOF(m - lo, D[lo:hi], b) (§2.1.4.1)."""
        n = hi - lo
        if m - lo == n:
            # SUBPROOF(m, D[m], true) = {};  SUBPROOF(m, D[m], false) = {MTH(D[m])}
            return [] if b else [self.mth(lo, hi)]
        k = _largest_power_of_two_below(n)
        if m - lo <= k:
            # SUBPROOF(m, D[n], b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            return [*self.subproof(m, lo, lo + k, b), self.mth(lo + k, hi)]
        # SUBPROOF(m, D[n], b) = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
        return [*self.subproof(m, lo + k, hi, False), self.mth(lo, lo + k)]

    def proof(self, m: int, n: int) -> list[bytes]:
        """PROOF(m, D[n]) = SUBPROOF(m, D[n], true), for 0 < m <= n."""
        return self.subproof(m, 0, n, True)

    def leaf_hash(self, m: int) -> bytes:
        return self.mth(m, m + 1)


def mth(entries: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of the entries."""
    return ReferenceTree(entries).mth(0, len(entries))


def path(m: int, entries: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of the entries."""
    return ReferenceTree(entries).path(m, 0, len(entries))


def proof(m: int, entries: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) of the entries."""
    return ReferenceTree(entries).proof(m, len(entries))


def _lsb(x: int) -> bool:
    return bool(x & 1)


def rfc_verify_inclusion(
    leaf_hash: bytes,
    leaf_index: int,
    tree_size: int,
    inclusion_path: Sequence[bytes],
    root_hash: bytes,
) -> bool:
    """RFC 9162 §2.1.3.2, step by step. True iff the proof verifies."""
    # 1. If leaf_index >= tree_size, fail.
    if leaf_index >= tree_size:
        return False
    # 2. Set fn to leaf_index and sn to tree_size - 1.
    fn, sn = leaf_index, tree_size - 1
    # 3. Set r to hash.
    r = leaf_hash
    # 4. For each value p in the inclusion_path array:
    for p in inclusion_path:
        # a. If sn is 0, stop and fail.
        if sn == 0:
            return False
        # b. If LSB(fn) is set, or if fn is equal to sn:
        if _lsb(fn) or fn == sn:
            # i. Set r to HASH(0x01 || p || r).
            r = _hash(b"\x01" + p + r)
            # ii. If LSB(fn) is not set, right-shift fn and sn until LSB(fn) is set or fn is 0.
            if not _lsb(fn):
                while not _lsb(fn) and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            # i. Set r to HASH(0x01 || r || p).
            r = _hash(b"\x01" + r + p)
        # c. Right-shift both fn and sn one time.
        fn >>= 1
        sn >>= 1
    # 5. Succeed iff sn is 0 and r equals root_hash.
    return sn == 0 and r == root_hash


def rfc_verify_consistency(
    first: int,
    second: int,
    consistency_path: Sequence[bytes],
    first_hash: bytes,
    second_hash: bytes,
) -> bool:
    """RFC 9162 §2.1.4.2, step by step, for 0 < first < second. True iff the proof verifies."""
    if not 0 < first < second:
        return False
    path = list(consistency_path)
    # 1. If consistency_path is an empty array, stop and fail.
    if not path:
        return False
    # 2. If first is an exact power of 2, prepend first_hash to the consistency_path array.
    if first & (first - 1) == 0:
        path.insert(0, first_hash)
    # 3. Set fn to first - 1 and sn to second - 1.
    fn, sn = first - 1, second - 1
    # 4. If LSB(fn) is set, right-shift both fn and sn equally until LSB(fn) is not set.
    while _lsb(fn):
        fn >>= 1
        sn >>= 1
    # 5. Set both fr and sr to the first value in the consistency_path array.
    fr = sr = path[0]
    # 6. For each subsequent value c in the consistency_path array:
    for c in path[1:]:
        # a. If sn is 0, stop and fail.
        if sn == 0:
            return False
        # b. If LSB(fn) is set, or if fn is equal to sn:
        if _lsb(fn) or fn == sn:
            # i. fr = HASH(0x01 || c || fr); ii. sr = HASH(0x01 || c || sr)
            fr = _hash(b"\x01" + c + fr)
            sr = _hash(b"\x01" + c + sr)
            # iii. If LSB(fn) is not set, right-shift fn and sn until LSB(fn) is set or fn is 0.
            if not _lsb(fn):
                while not _lsb(fn) and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            # i. sr = HASH(0x01 || sr || c)
            sr = _hash(b"\x01" + sr + c)
        # c. Right-shift both fn and sn one time.
        fn >>= 1
        sn >>= 1
    # 7. fr == first_hash, sr == second_hash and sn == 0.
    return fr == first_hash and sr == second_hash and sn == 0
