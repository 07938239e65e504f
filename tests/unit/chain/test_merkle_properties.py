"""Merkle tree core against the naive RFC 9162 reference: exhaustive for small trees, sampled above.

For every size up to ``N_INCLUSION`` and every leaf, and every pair of sizes up to
``N_CONSISTENCY``: roots and proofs built from stored hashes equal the RFC's MTH / PATH /
PROOF, verify with ``chain.proof_verify`` and with the RFC's step-by-step algorithms; and any
flipped bit, wrong index, wrong size, truncated or extended proof fails.
"""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.errors import InvalidInputError, NotFoundError, VerificationError
from chain.hashing import EMPTY_ROOT, HASH_SIZE, leaf_hash, node_hash
from chain.proof_build import consistency_proof, inclusion_proof, tree_root
from chain.proof_verify import root_from_inclusion_proof, verify_consistency, verify_inclusion
from chain.reference import ReferenceTree, rfc_verify_consistency, rfc_verify_inclusion
from chain.tiles import MemoryHashStore, stored_hash_index, stored_hashes_for_leaf

N_INCLUSION = 300  # every (index, size) with size <= this
N_CONSISTENCY = 130  # every (size1, size2) with size2 <= this
N_MUTATE = 64  # every wrong index / wrong size for trees up to this size
N_SAMPLED = 4096  # hypothesis samples sizes up to this


def _entries(n: int) -> list[bytes]:
    return [b"swiftchain test entry %d" % i for i in range(n)]


@pytest.fixture(scope="module")
def tree() -> tuple[MemoryHashStore, ReferenceTree]:
    entries = _entries(N_INCLUSION)
    store = MemoryHashStore()
    store.extend(leaf_hash(e) for e in entries)
    return store, ReferenceTree(entries)


# Module-level (not a fixture) so that hypothesis tests can share it across examples.
_BIG_ENTRIES = _entries(N_SAMPLED)
_BIG_STORE = MemoryHashStore()
_BIG_STORE.extend(leaf_hash(e) for e in _BIG_ENTRIES)
_BIG_REF = ReferenceTree(_BIG_ENTRIES)


def _flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8 % len(b)] ^= 1 << (bit % 8)
    return bytes(b)


def _rejects(verify: Callable[..., None], *args: object) -> bool:
    """True iff ``verify(*args)`` raises VerificationError (cheaper than pytest.raises in loops)."""
    try:
        verify(*args)
    except VerificationError:
        return True
    return False


def _inclusion_shape(index: int, size: int) -> int:
    return (index ^ (size - 1)).bit_length()


def _consistency_shape(size1: int, size2: int) -> tuple[bool, int, int, int] | None:
    """What the verifier does with a proof for (size1, size2); equal shapes compute equally."""
    if size1 == size2:
        return None
    shift = (size1 & -size1).bit_length() - 1
    mask = (size1 - 1) >> shift
    inner = ((size1 - 1) ^ (size2 - 1)).bit_length() - shift
    return (mask != 0, inner, (mask >> inner).bit_count(), mask & ((1 << inner) - 1))


# ------------------------------------------------------------------------------------ hashing


def test_hash_functions() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert HASH_SIZE == 32
    assert leaf_hash(b"") != EMPTY_ROOT
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert node_hash(a, b) != node_hash(b, a)
    assert node_hash(a, b) != leaf_hash(a + b)  # domain separation
    assert leaf_hash(bytearray(b"x")) == leaf_hash(b"x") == leaf_hash(memoryview(b"x"))


# ------------------------------------------------------------------------------- roots, store


def test_roots_match_reference(tree: tuple[MemoryHashStore, ReferenceTree]) -> None:
    store, ref = tree
    assert tree_root(0, store) == EMPTY_ROOT
    for n in range(N_INCLUSION + 1):
        assert tree_root(n, store) == ref.mth(0, n), n


def test_incremental_store_matches_reference_and_tlog_stored_hashes() -> None:
    entries = _entries(N_INCLUSION)
    ref = ReferenceTree(entries)
    store = MemoryHashStore()
    assert store.root() == EMPTY_ROOT
    assert store.size == 0
    for i, e in enumerate(entries):
        lh = leaf_hash(e)
        # What tlog's StoredHashes would append, read from the store as it is before the append.
        expected = stored_hashes_for_leaf(i, lh, store)
        before = store.stored_hash_count
        assert before == stored_hash_index(0, i)
        store.append_leaf(lh)
        appended = store.read_hashes(list(range(before, store.stored_hash_count)))
        assert appended == expected, i
        assert store.size == i + 1
        assert store.root() == ref.mth(0, i + 1), i
        assert store.leaf_hash(i) == lh
    bulk = MemoryHashStore()
    bulk.extend(leaf_hash(e) for e in entries)
    assert bulk.read_hashes(range(bulk.stored_hash_count)) == store.read_hashes(
        range(store.stored_hash_count)
    )
    assert bulk.nbytes == store.stored_hash_count * HASH_SIZE


def test_store_rejects_bad_input(tree: tuple[MemoryHashStore, ReferenceTree]) -> None:
    store, _ = tree
    fresh = MemoryHashStore()
    with pytest.raises(InvalidInputError, match="expected a 32-byte leaf hash, got 31 bytes"):
        fresh.append_leaf(b"\x00" * 31)
    fresh.extend([leaf_hash(b"a")])
    with pytest.raises(InvalidInputError):
        fresh.extend([leaf_hash(b"b"), b"short", leaf_hash(b"c")])
    assert fresh.size == 2  # leaves before the bad one stay, exactly as with append_leaf
    assert fresh.root() == node_hash(leaf_hash(b"a"), leaf_hash(b"b"))
    with pytest.raises(NotFoundError, match=r"expected stored hash indexes in 0\.\.2, got 3"):
        fresh.read_hashes([0, 3])
    with pytest.raises(NotFoundError):
        fresh.read_hashes([-1])
    with pytest.raises(NotFoundError):
        fresh.leaf_hash(2)
    assert fresh.read_hashes([]) == []
    # Proofs for sizes the store does not have yet.
    with pytest.raises(NotFoundError):
        inclusion_proof(0, store.size + 1, store)
    with pytest.raises(NotFoundError):
        tree_root(store.size + 1, store)


def test_readers_run_while_the_writer_appends() -> None:
    """Proofs for committed sizes stay valid while another thread appends (no BufferError)."""
    store = MemoryHashStore()
    store.extend(leaf_hash(b"%d" % i) for i in range(64))
    errors: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        try:
            for i in range(64, 20_000):
                store.append_leaf(leaf_hash(b"%d" % i))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            done.set()

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        writer = threading.Thread(target=write)
        writer.start()
        checked = 0
        while not done.is_set() or checked == 0:
            size = store.size
            m = (checked * 7919) % size
            proof = inclusion_proof(m, size, store)
            verify_inclusion(leaf_hash(b"%d" % m), m, size, proof, tree_root(size, store))
            checked += 1
        writer.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors
    assert store.size == 20_000
    empty = MemoryHashStore()
    empty.extend([])
    assert empty.root() == EMPTY_ROOT


# ------------------------------------------------------------------------------ inclusion


def test_inclusion_proofs_exhaustive(tree: tuple[MemoryHashStore, ReferenceTree]) -> None:
    store, ref = tree
    for n in range(1, N_INCLUSION + 1):
        root = ref.mth(0, n)
        for m in range(n):
            proof = inclusion_proof(m, n, store)
            assert proof == ref.path(m, 0, n), (m, n)
            lh = ref.leaf_hash(m)
            verify_inclusion(lh, m, n, proof, root)
            assert root_from_inclusion_proof(lh, m, n, proof) == root
            assert rfc_verify_inclusion(lh, m, n, proof, root), (m, n)


def test_inclusion_mutations_fail(tree: tuple[MemoryHashStore, ReferenceTree]) -> None:
    store, ref = tree
    junk = leaf_hash(b"junk")
    for n in range(1, N_CONSISTENCY + 1):
        root = ref.mth(0, n)
        for m in range(n):
            proof = inclusion_proof(m, n, store)
            lh = ref.leaf_hash(m)
            for i in range(len(proof)):
                for bit in (0, (m * 7 + n + i * 13) % 256):
                    bad = [*proof]
                    bad[i] = _flip(bad[i], bit)
                    assert _rejects(verify_inclusion, lh, m, n, bad, root), (m, n, i, bit)
                assert not rfc_verify_inclusion(lh, m, n, bad, root)
            bit = (m + n) % 256
            assert _rejects(verify_inclusion, lh, m, n, proof, _flip(root, bit))
            assert _rejects(verify_inclusion, _flip(lh, bit), m, n, proof, root)
            bad_shapes: list[list[bytes]] = [[*proof, junk], [junk, *proof], [*proof, root]]
            if proof:
                bad_shapes += [proof[:-1], proof[1:], [proof[0], junk, *proof[1:]]]
            for bad in bad_shapes:
                assert _rejects(verify_inclusion, lh, m, n, bad, root), (m, n, bad)
                assert not rfc_verify_inclusion(lh, m, n, bad, root)


def test_inclusion_wrong_index_or_size(tree: tuple[MemoryHashStore, ReferenceTree]) -> None:
    store, ref = tree
    for n in range(1, N_MUTATE + 1):
        root = ref.mth(0, n)
        for m in range(n):
            proof = inclusion_proof(m, n, store)
            lh = ref.leaf_hash(m)
            for m2 in range(n):
                if m2 != m:
                    assert _rejects(verify_inclusion, lh, m2, n, proof, root), (m, m2, n)
            for n2 in range(1, N_CONSISTENCY + 1):
                if n2 == n:
                    continue
                if m >= n2:
                    with pytest.raises(InvalidInputError, match="expected 0 <= index < size"):
                        verify_inclusion(lh, m, n2, proof, root)
                elif _inclusion_shape(m, n2) == _inclusion_shape(m, n):
                    # Inherent to RFC 9162: the proof for (m, n) is also the proof for (m, n2)
                    # when both paths have the same shape; the root binds the size.
                    verify_inclusion(lh, m, n2, proof, root)
                    assert rfc_verify_inclusion(lh, m, n2, proof, root)
                else:
                    assert _rejects(verify_inclusion, lh, m, n2, proof, root), (m, n, n2)
                    assert not rfc_verify_inclusion(lh, m, n2, proof, root)


def test_inclusion_preconditions(tree: tuple[MemoryHashStore, ReferenceTree]) -> None:
    store, ref = tree
    for index, size in [(0, 0), (5, 5), (6, 5), (-1, 5)]:
        with pytest.raises(InvalidInputError, match=f"got index={index}, size={size}"):
            inclusion_proof(index, size, store)
        with pytest.raises(InvalidInputError, match="expected 0 <= index < size"):
            verify_inclusion(EMPTY_ROOT, index, size, [], EMPTY_ROOT)
    proof = inclusion_proof(3, 10, store)
    root, lh = ref.mth(0, 10), ref.leaf_hash(3)
    with pytest.raises(InvalidInputError, match="expected a 32-byte leaf hash, got 33 bytes"):
        verify_inclusion(lh + b"\x00", 3, 10, proof, root)
    with pytest.raises(InvalidInputError, match="expected a 32-byte root hash, got 0 bytes"):
        verify_inclusion(lh, 3, 10, proof, b"")
    bad = [*proof]
    bad[2] = bad[2][:31]
    with pytest.raises(InvalidInputError, match=r"got 31 bytes at proof\[2\]"):
        verify_inclusion(lh, 3, 10, bad, root)
    with pytest.raises(InvalidInputError):
        root_from_inclusion_proof(lh, 3, 10, bad)
    with pytest.raises(InvalidInputError):
        tree_root(-1, store)


# ---------------------------------------------------------------------------- consistency


def test_consistency_proofs_exhaustive(tree: tuple[MemoryHashStore, ReferenceTree]) -> None:
    store, ref = tree
    for n2 in range(1, N_CONSISTENCY + 1):
        root2 = ref.mth(0, n2)
        for n1 in range(1, n2 + 1):
            root1 = ref.mth(0, n1)
            proof = consistency_proof(n1, n2, store)
            if n1 == n2:
                assert proof == []
            else:
                assert proof == ref.proof(n1, n2), (n1, n2)
                assert rfc_verify_consistency(n1, n2, proof, root1, root2), (n1, n2)
            verify_consistency(n1, n2, proof, root1, root2)


def test_consistency_mutations_fail(tree: tuple[MemoryHashStore, ReferenceTree]) -> None:
    store, ref = tree
    junk = leaf_hash(b"junk")
    for n2 in range(2, N_CONSISTENCY + 1):
        root2 = ref.mth(0, n2)
        for n1 in range(1, n2):
            root1 = ref.mth(0, n1)
            proof = consistency_proof(n1, n2, store)
            for i in range(len(proof)):
                bad = [*proof]
                bad[i] = _flip(bad[i], (n1 * 5 + n2 + i * 11) % 256)
                assert _rejects(verify_consistency, n1, n2, bad, root1, root2), (n1, n2, i)
                assert not rfc_verify_consistency(n1, n2, bad, root1, root2)
            bit = (n1 + n2) % 256
            for r1, r2 in [(_flip(root1, bit), root2), (root1, _flip(root2, bit)), (root2, root1)]:
                assert _rejects(verify_consistency, n1, n2, proof, r1, r2), (n1, n2)
                assert not rfc_verify_consistency(n1, n2, proof, r1, r2)
            for bad in ([], proof[:-1], proof[1:], [*proof, junk], [junk, *proof], [*proof, root1]):
                assert _rejects(verify_consistency, n1, n2, bad, root1, root2), (n1, n2, bad)
                assert not rfc_verify_consistency(n1, n2, bad, root1, root2)


def test_consistency_wrong_sizes(tree: tuple[MemoryHashStore, ReferenceTree]) -> None:
    store, ref = tree
    for n2, n1 in itertools.combinations(range(1, N_MUTATE + 1), 2):
        n1, n2 = n2, n1  # combinations gives (a, b) with a < b
        root1, root2 = ref.mth(0, n1), ref.mth(0, n2)
        proof = consistency_proof(n1, n2, store)
        shape = _consistency_shape(n1, n2)
        claims = [(x, n2) for x in range(1, n2 + 1) if x != n1]
        claims += [(n1, y) for y in range(n1, 2 * n2 + 2) if y != n2]
        for s1, s2 in claims:
            if _consistency_shape(s1, s2) == shape:
                # Same shape, same computation: the roots bind the sizes.
                verify_consistency(s1, s2, proof, root1, root2)
            else:
                with pytest.raises(VerificationError):
                    verify_consistency(s1, s2, proof, root1, root2)
                assert not rfc_verify_consistency(s1, s2, proof, root1, root2)


def test_consistency_preconditions_and_equal_sizes(
    tree: tuple[MemoryHashStore, ReferenceTree],
) -> None:
    store, ref = tree
    for size1, size2 in [(0, 0), (0, 5), (6, 5), (-1, 3)]:
        with pytest.raises(
            InvalidInputError, match=f"expected 0 < size1 <= size2, got size1={size1}"
        ):
            consistency_proof(size1, size2, store)
        with pytest.raises(InvalidInputError, match="expected 0 < size1 <= size2"):
            verify_consistency(size1, size2, [], EMPTY_ROOT, EMPTY_ROOT)
    root5, root7 = ref.mth(0, 5), ref.mth(0, 7)
    verify_consistency(5, 5, [], root5, root5)
    with pytest.raises(VerificationError, match="different roots"):
        verify_consistency(5, 5, [], root5, root7)
    with pytest.raises(VerificationError, match="expected an empty consistency proof"):
        verify_consistency(5, 5, [root5], root5, root5)
    proof = consistency_proof(5, 7, store)
    with pytest.raises(InvalidInputError, match="expected a 32-byte root1, got 9 bytes"):
        verify_consistency(5, 7, proof, b"WrongRoot", root7)
    with pytest.raises(InvalidInputError, match="expected a 32-byte root2"):
        verify_consistency(5, 7, proof, root5, b"")
    with pytest.raises(InvalidInputError, match=rf"got 0 bytes at proof\[{len(proof)}\]"):
        verify_consistency(5, 7, [*proof, b""], root5, root7)
    with pytest.raises(VerificationError, match="leads to old root"):
        verify_consistency(5, 7, proof, root7, root7)
    with pytest.raises(VerificationError, match="leads to new root"):
        verify_consistency(5, 7, proof, root5, root5)


# ------------------------------------------------------------------- sampled larger trees


class _CountingReader:
    """Wraps a store and counts read_hashes calls (one per proof)."""

    def __init__(self, store: MemoryHashStore) -> None:
        self.store = store
        self.calls = 0
        self.hashes = 0

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        self.calls += 1
        self.hashes += len(indexes)
        return self.store.read_hashes(indexes)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_sampled_inclusion(data: st.DataObject) -> None:
    size = data.draw(st.integers(1, N_SAMPLED), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    reader = _CountingReader(_BIG_STORE)
    proof = inclusion_proof(index, size, reader)
    assert reader.calls == (1 if size > 1 else 0)
    assert reader.hashes <= 2 * size.bit_length()  # O(log n) reads
    assert proof == _BIG_REF.path(index, 0, size)
    root = tree_root(size, _BIG_STORE)
    assert root == _BIG_REF.mth(0, size)
    lh = _BIG_REF.leaf_hash(index)
    verify_inclusion(lh, index, size, proof, root)
    assert rfc_verify_inclusion(lh, index, size, proof, root)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1), label="i")
        bit = data.draw(st.integers(0, 255), label="bit")
        bad = [*proof]
        bad[i] = _flip(bad[i], bit)
        with pytest.raises(VerificationError):
            verify_inclusion(lh, index, size, bad, root)
    other = data.draw(st.integers(0, size - 1), label="other index")
    if other != index:
        with pytest.raises(VerificationError):
            verify_inclusion(lh, other, size, proof, root)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_sampled_consistency(data: st.DataObject) -> None:
    size2 = data.draw(st.integers(1, N_SAMPLED), label="size2")
    size1 = data.draw(st.integers(1, size2), label="size1")
    reader = _CountingReader(_BIG_STORE)
    proof = consistency_proof(size1, size2, reader)
    assert reader.calls == (1 if proof else 0)
    assert reader.hashes <= 2 * size2.bit_length() + 1
    root1, root2 = _BIG_REF.mth(0, size1), _BIG_REF.mth(0, size2)
    if size1 < size2:
        assert proof == _BIG_REF.proof(size1, size2)
        assert rfc_verify_consistency(size1, size2, proof, root1, root2)
    else:
        assert proof == []
    verify_consistency(size1, size2, proof, root1, root2)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1), label="i")
        bit = data.draw(st.integers(0, 255), label="bit")
        bad = [*proof]
        bad[i] = _flip(bad[i], bit)
        with pytest.raises(VerificationError):
            verify_consistency(size1, size2, bad, root1, root2)


@settings(max_examples=100, deadline=None)
@given(
    entries=st.lists(st.binary(max_size=40), min_size=1, max_size=70),
    data=st.data(),
)
def test_arbitrary_entries_including_duplicates(entries: list[bytes], data: st.DataObject) -> None:
    """Entries may repeat (equal leaf hashes); proofs still equal the reference and verify."""
    ref = ReferenceTree(entries)
    store = MemoryHashStore()
    for e in entries:
        store.append_leaf(leaf_hash(e))
    n = len(entries)
    assert store.root() == ref.mth(0, n)
    m = data.draw(st.integers(0, n - 1), label="index")
    proof = inclusion_proof(m, n, store)
    assert proof == ref.path(m, 0, n)
    verify_inclusion(leaf_hash(entries[m]), m, n, proof, store.root())
    n1 = data.draw(st.integers(1, n), label="size1")
    cproof = consistency_proof(n1, n, store)
    verify_consistency(n1, n, cproof, ref.mth(0, n1), ref.mth(0, n))
