"""bench/immudb_bench.py's reads from a mirror, on a real MirrorServer over a real socket: each
read proves the version the hospital wrote (a leaf carrying another commitment fails the read),
and the tile cache is what makes a thread's requests fewer than three a read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.immudb_bench import Leaf, MirrorReads, record_key
from chain.checkpoint import GENESIS_PREVIOUS_HASH, Checkpoint
from chain.consortium import ConsortiumConfig, Member
from chain.hashing import leaf_hash
from chain.node.mirror import MirrorServer
from chain.node.tile_store import TileStore
from chain.note import Signer, sign
from chain.proof_build import tree_root
from chain.tiles import MemoryHashStore, tile_bytes, tiles_touched
from swiftchain.chain.v1 import entry_pb2

ORIGIN = "test.swiftchain/bench"
SIGNERS = [Signer(f"hospital-{c}", Ed25519PrivateKey.generate()) for c in "abc"]
CONFIG = ConsortiumConfig(
    origin=ORIGIN,
    quorum=2,
    members=tuple(Member(s.name, s.verifier().vkey) for s in SIGNERS),
    genesis_keys=(),
)
SIZE = 600


def written(i: int) -> Leaf:
    """What the hospital wrote as version ``i``, at leaf ``i``."""
    return Leaf(i, f"entry-{i}", bytes([i % 256]) * 32)


def entry_bytes(leaf: Leaf) -> bytes:
    body = entry_pb2.EntryBody(entry_id=leaf.entry_id, commitment=leaf.commitment)
    return entry_pb2.ChainEntry(body=body.SerializeToString()).SerializeToString()


@pytest.fixture
def mirror_url(tmp_path: Path) -> Iterator[str]:
    tiles = TileStore(tmp_path / "node")
    tree = MemoryHashStore()
    entries = [entry_bytes(written(i)) for i in range(SIZE)]
    tree.extend(leaf_hash(e) for e in entries)
    blobs = [(t.level, t.index, t.width, tile_bytes(tree, t)) for t in tiles_touched(0, SIZE)]
    tiles.write_log(0, entries, blobs)
    checkpoint = Checkpoint(ORIGIN, SIZE, tree_root(SIZE, tree), 1, GENESIS_PREVIOUS_HASH, 0)
    note = sign(checkpoint.to_text(), SIGNERS[:2]).decode()
    server = MirrorServer("127.0.0.1", 0, tiles, lambda: (SIZE, note)).start()
    yield f"http://127.0.0.1:{server.port}"
    server.stop()


def test_mirror_reads_prove_the_versions_and_the_tile_cache_saves_requests(
    mirror_url: str,
) -> None:
    sample = [3, 4, 5, 300, 301, 599, 2, 302]
    leaves = {i: written(i) for i in sample}
    requests = {}
    for keep in (True, False):
        reads = MirrorReads(mirror_url, CONFIG, 2, leaves, keep_tiles=keep)
        reads.warm_up()
        assert reads.requests == 0  # the warm-up is not counted
        latencies: list[float] = []
        for _ in range(2):  # two rounds: each thread verifies the checkpoint again
            reads.read(sample, 2, latencies)
        assert len(latencies) == 2 * len(sample)
        requests[keep] = reads.requests
        reads.close()
    # each thread, each round: 1 checkpoint and the list of membership votes it is checked
    # with (none here); a read: its bundle, its level-0 tile, the level-1 tile and the tree's
    # partial level-0 tile (its own, for a leaf in it: 600 = 2 * 256 + 88)
    in_partial = len([i for i in sample if i >= 512])
    assert requests[False] == 2 * 2 * 2 + 2 * (4 * len(sample) - in_partial)
    assert requests[True] < 2 * 2 * 2 + len(sample) * 3


def test_a_leaf_that_is_not_the_version_written_fails_the_read(mirror_url: str) -> None:
    right = written(7)
    wrong = {7: Leaf(7, right.entry_id, bytes(32))}  # the hospital wrote another commitment
    reads = MirrorReads(mirror_url, CONFIG, 1, wrong, keep_tiles=True)
    with pytest.raises(RuntimeError, match=f"leaf 7 from the mirror is not {record_key(7)}"):
        reads.read([7], 1, [])
    reads.close()
