"""RFC 9162 §2.1 Merkle tree hashing (SHA-256), the only hash functions of the log tree.

* leaf hash: ``SHA-256(0x00 || entry)`` over the entry's exact bytes;
* interior node hash: ``SHA-256(0x01 || left || right)``;
* the root of the empty tree: ``SHA-256("")``.

These are the same functions as ``golang.org/x/mod/sumdb/tlog`` (``RecordHash``, ``NodeHash``)
and transparency-dev/merkle's ``rfc6962.DefaultHasher``.
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["EMPTY_ROOT", "HASH_SIZE", "LEAF_PREFIX", "NODE_PREFIX", "leaf_hash", "node_hash"]

HASH_SIZE: Final = 32
"""Size in bytes of every hash of the tree."""

LEAF_PREFIX: Final = b"\x00"
NODE_PREFIX: Final = b"\x01"

_sha256 = hashlib.sha256

EMPTY_ROOT: Final = _sha256(b"").digest()
"""MTH({}) = SHA-256() (RFC 9162 §2.1.1): the root hash of the tree of size 0."""


def leaf_hash(entry: bytes | bytearray | memoryview) -> bytes:
    """Return ``SHA-256(0x00 || entry)``, the leaf hash of one log entry."""
    h = _sha256(LEAF_PREFIX)
    h.update(entry)
    return h.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return ``SHA-256(0x01 || left || right)``, the hash of an interior node.

    Hot paths (``proof_build``, ``proof_verify``, ``tiles``) inline this expression instead of
    calling it; keep them in step if it ever changes.
    """
    return _sha256(NODE_PREFIX + left + right).digest()
