"""Stored hash indexes and C2SP tlog-tiles layout, against golang.org/x/mod/sumdb/tlog.

Known values and formulas are ported from tlog's ``tlog.go`` / ``tile.go`` and the vectors of
its ``tlog_test.go`` / ``tile_test.go``; tile contents are checked against the C2SP
definition (tile ``n`` at level ``l`` holds ``MTH(D[(n*256+i)*256**l : (n*256+i+1)*256**l])``).
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from chain.errors import InvalidInputError, NotFoundError, SwiftchainError
from chain.hashing import HASH_SIZE, leaf_hash
from chain.limits import MAX_ENTRY_BYTES
from chain.proof_build import consistency_proof, inclusion_proof, tree_root
from chain.reference import ReferenceTree
from chain.tiles import (
    MAX_BUNDLED_ENTRY,
    TILE_HEIGHT,
    TILE_WIDTH,
    MemoryHashStore,
    Tile,
    TiledHashReader,
    bundle_bytes,
    bundle_entries,
    entries_path,
    hash_from_tile,
    parse_entries_path,
    parse_tile_path,
    split_stored_hash_index,
    stored_hash_count,
    stored_hash_index,
    tile_bytes,
    tile_for_index,
    tile_path,
    tile_width,
    tiles_touched,
)


def _tlog_stored_hash_index(level: int, n: int) -> int:
    """tlog.StoredHashIndex, line for line."""
    for _ in range(level, 0, -1):
        n = 2 * n + 1
    i = 0
    while n > 0:
        i += n
        n >>= 1
    return i + level


def _tlog_stored_hash_count(n: int) -> int:
    """tlog.StoredHashCount, line for line."""
    if n == 0:
        return 0
    num = _tlog_stored_hash_index(0, n - 1) + 1
    i = n - 1
    while i & 1:
        num += 1
        i >>= 1
    return num


def _store(n: int) -> MemoryHashStore:
    store = MemoryHashStore()
    store.extend(leaf_hash(b"leaf %d" % i) for i in range(n))
    return store


# ------------------------------------------------------------------------ stored hash index


def test_stored_hash_index_known_values() -> None:
    # Appending leaves 0..4 writes: L0 | L1 N(1,0) | L2 | L3 N(1,1) N(2,0) | L4
    known = {
        (0, 0): 0,
        (0, 1): 1,
        (1, 0): 2,
        (0, 2): 3,
        (0, 3): 4,
        (1, 1): 5,
        (2, 0): 6,
        (0, 4): 7,
        (0, 7): 11,
        (3, 0): 14,
        (0, 8): 15,
        (8, 0): 2 * 255 - 8 + 8,
    }
    for (level, n), index in known.items():
        assert stored_hash_index(level, n) == index, (level, n)
        assert split_stored_hash_index(index) == (level, n)


def test_stored_hash_index_matches_tlog() -> None:
    # tlog TestSplitStoredHashIndex: levels 0..9, n 0..99; plus a larger range here.
    for level in range(12):
        for n in range(300):
            x = stored_hash_index(level, n)
            assert x == _tlog_stored_hash_index(level, n)
            assert split_stored_hash_index(x) == (level, n)
    for x in range(5000):
        level, n = split_stored_hash_index(x)
        assert stored_hash_index(level, n) == x
    big = (1 << 40) + 12345
    assert stored_hash_index(0, big) == _tlog_stored_hash_index(0, big)
    assert split_stored_hash_index(stored_hash_index(17, big >> 17)) == (17, big >> 17)


def test_stored_hash_count_matches_tlog() -> None:
    for n in range(2000):
        assert stored_hash_count(n) == _tlog_stored_hash_count(n)
    assert _store(1000).stored_hash_count == stored_hash_count(1000)


def test_index_arguments_are_checked() -> None:
    with pytest.raises(InvalidInputError, match="expected level >= 0, got -1"):
        stored_hash_index(-1, 0)
    with pytest.raises(InvalidInputError, match="expected n >= 0"):
        stored_hash_index(0, -1)
    with pytest.raises(InvalidInputError, match="expected index >= 0"):
        split_stored_hash_index(-5)
    with pytest.raises(InvalidInputError):
        stored_hash_count(-1)


# ------------------------------------------------------------------------------- tile paths


# tlog TestTilePath vectors, (tlog path, height, tile); our C2SP paths drop the height element.
TLOG_TILE_PATHS = [
    ("tile/4/0/001", 4, Tile(0, 1, 16)),
    ("tile/4/0/001.p/5", 4, Tile(0, 1, 5)),
    ("tile/3/5/x123/x456/078", 3, Tile(5, 123456078, 8)),
    ("tile/3/5/x123/x456/078.p/2", 3, Tile(5, 123456078, 2)),
    ("tile/1/0/x003/x057/500", 1, Tile(0, 3057500, 2)),
]


@pytest.mark.parametrize(("tlog_path", "height", "tile"), TLOG_TILE_PATHS)
def test_tile_paths_match_tlog(tlog_path: str, height: int, tile: Tile) -> None:
    ours = "tile/" + tlog_path.split("/", 2)[2]
    assert tile_path(tile, height=height) == ours
    assert parse_tile_path(ours, height=height) == tile


def test_c2sp_tile_paths() -> None:
    assert tile_path(Tile(0, 1234067, 256)) == "tile/0/x001/x234/067"
    assert tile_path(Tile(2, 0, 1)) == "tile/2/000.p/1"
    assert tile_path(Tile(1, 999, 17)) == "tile/1/999.p/17"
    assert tile_path(Tile(1, 1000, 256)) == "tile/1/x001/000"
    for tile in [Tile(0, 0, 256), Tile(3, 5, 9), Tile(0, 10**9 + 7, 255), Tile(63, 1, 1)]:
        assert parse_tile_path(tile_path(tile)) == tile


@pytest.mark.parametrize(
    "path",
    [
        "tile/3/5/123/456/078",  # tlog: missing x prefixes
        "tile/-1/000",
        "tile/data/000",
        "tile/0/000.p/256",  # a full tile has no .p
        "tile/0/000.p/0",
        "tile/0/001.p/05",
        "tile/0/1",
        "tile/0/x000/001",  # non-canonical leading group
        "tile/64/000",
        "tile/00/000",
        "tiles/0/000",
        "tile/0",
        "tile/0/000/",
        "tile/entries/000",
    ],
)
def test_bad_tile_paths(path: str) -> None:
    with pytest.raises(InvalidInputError, match="expected a tile path"):
        parse_tile_path(path)


# ---------------------------------------------------------------------------- tile geometry


@pytest.mark.parametrize(
    ("old", "new", "want"),
    # tlog TestNewTilesForSize (height 10)
    [
        (1, 1, 0),
        (100, 101, 1),
        (1023, 1025, 3),
        (1024, 1030, 1),
        (1030, 2000, 1),
        (1030, 10000, 10),
        (49516517, 49516586, 3),
    ],
)
def test_tiles_touched_matches_tlog_new_tiles(old: int, new: int, want: int) -> None:
    assert len(tiles_touched(old, new, height=10)) == want


def test_tiles_touched_c2sp_examples() -> None:
    # "a tree of size 70,000 will be represented by 273 full level 0 tiles, one partial level 0
    # tile of width 112, one full level 1 tile, one partial level 1 tile of width 17, and one
    # partial level 2 tile of width 1."
    tiles = tiles_touched(0, 70_000)
    assert tiles == [
        *(Tile(0, n, 256) for n in range(273)),
        Tile(0, 273, 112),
        Tile(1, 0, 256),
        Tile(1, 1, 17),
        Tile(2, 0, 1),
    ]
    # "a tree of size 256 will be represented by a full level 0 tile and a partial level 1
    # tile of width 1."
    assert tiles_touched(0, 256) == [Tile(0, 0, 256), Tile(1, 0, 1)]
    assert tiles_touched(0, 0) == []
    assert tiles_touched(10, 10) == []
    # A block rewrites the level-0 blobs it fills, and a higher-level blob only when a tile
    # below it is completed.
    assert tiles_touched(70_000, 70_100) == [Tile(0, 273, 212)]
    assert tiles_touched(70_000, 70_200) == [Tile(0, 273, 256), Tile(0, 274, 56), Tile(1, 1, 18)]
    with pytest.raises(InvalidInputError, match="expected 0 <= old_size <= new_size"):
        tiles_touched(5, 4)
    for size in [0, 1, 255, 256, 257, 65536, 70_000]:
        for tile in tiles_touched(0, size):
            assert tile_width(tile.level, tile.index, size) == tile.width
    assert tile_width(0, 5, 100) == 0
    assert tile_width(1, 0, 70_000) == 256


def test_tile_for_index_round_trip() -> None:
    """Every stored hash is found in its tile, at the position tlog's tileForIndex gives."""
    for height in (1, 2, 3, 8):
        for x in range(3000):
            level, n = split_stored_hash_index(x)
            tile, start, end = tile_for_index(x, height=height)
            assert tile.level == level // height
            k = level - tile.level * height  # levels above the tile's own level
            assert end - start == 1 << k
            # The hash covers tile hashes [start, end) at level height*tile.level.
            first = (tile.index << height) + start
            assert first == (n << k)
            assert tile.width == end
            assert 1 <= tile.width <= 1 << height


# ------------------------------------------------------------------------------ tile contents


def _grow_tiles(size: int, height: int) -> tuple[MemoryHashStore, dict[tuple[int, int], bytes]]:
    """tlog TestTree: append leaves one by one, rewriting the touched tile blobs each time."""
    store = MemoryHashStore()
    blobs: dict[tuple[int, int], bytes] = {}
    for i in range(size):
        before = store.stored_hash_count
        store.append_leaf(leaf_hash(b"leaf %d" % i))
        for tile in tiles_touched(i, i + 1, height=height):
            data = tile_bytes(store, tile, height=height)
            assert len(data) == tile.width * HASH_SIZE
            old = blobs.get((tile.level, tile.index), b"")
            assert data[: len(old)] == old, "a tile blob only ever grows"
            blobs[tile.level, tile.index] = data
        # Every new stored hash can be read back from the blobs.
        for x in range(before, store.stored_hash_count):
            tile, _, _ = tile_for_index(x, height=height)
            blob = blobs[tile.level, tile.index]
            assert hash_from_tile(tile, blob, x, height=height) == store.read_hashes([x])[0]
    return store, blobs


@pytest.mark.parametrize(("size", "height"), [(100, 2), (140, 3), (700, 8)])
def test_tile_blobs_grow_and_hold_every_hash(size: int, height: int) -> None:
    store, blobs = _grow_tiles(size, height)
    want = {
        (t.level, t.index): tile_bytes(store, t, height=height)
        for t in tiles_touched(0, size, height=height)
    }
    assert blobs == want


def test_tile_contents_follow_c2sp_definition() -> None:
    size = 70_000
    entries = [b"leaf %d" % i for i in range(size)]
    store = MemoryHashStore()
    store.extend(leaf_hash(e) for e in entries)
    ref = ReferenceTree(entries)
    for tile in [
        Tile(0, 0, 256),
        Tile(0, 273, 112),
        Tile(1, 0, 256),
        Tile(1, 1, 17),
        Tile(2, 0, 1),
    ]:
        data = tile_bytes(store, tile)
        span = TILE_WIDTH**tile.level
        for i in range(tile.width):
            lo = (tile.index * TILE_WIDTH + i) * span
            assert data[i * HASH_SIZE : (i + 1) * HASH_SIZE] == ref.mth(lo, lo + span)
    assert TILE_HEIGHT == 8


def test_hash_from_tile_checks_its_arguments() -> None:
    store = _store(300)
    x = stored_hash_index(3, 5)
    tile, _, _ = tile_for_index(x)
    blob = tile_bytes(store, Tile(0, 0, 256))
    assert hash_from_tile(Tile(0, 0, 256), blob, x) == store.read_hashes([x])[0]
    assert hash_from_tile(tile, blob[: tile.width * HASH_SIZE], x) == store.read_hashes([x])[0]
    with pytest.raises(InvalidInputError, match="expected stored hash"):
        hash_from_tile(Tile(0, 1, 44), tile_bytes(store, Tile(0, 1, 44)), x)
    with pytest.raises(InvalidInputError, match="expected stored hash"):
        hash_from_tile(Tile(0, 0, tile.width - 1), blob, x)  # too narrow
    with pytest.raises(InvalidInputError, match="bytes of tile data"):
        hash_from_tile(Tile(0, 0, 256), blob[:-1], x)
    with pytest.raises(InvalidInputError, match=r"expected a tile width in 1\.\.256, got 0"):
        tile_bytes(store, Tile(0, 0, 0))
    with pytest.raises(InvalidInputError, match="expected a tile height"):
        tile_for_index(0, height=0)
    with pytest.raises(NotFoundError):
        tile_bytes(store, Tile(0, 1, 256))  # not that many leaves yet


# ------------------------------------------------------------------------ tiled hash reader


class _BlobStore:
    """Tile blobs keyed by (level, index), as the node keeps them; counts round trips."""

    def __init__(self, blobs: dict[tuple[int, int], bytes]) -> None:
        self.blobs = blobs
        self.calls = 0

    def read_tiles(self, tiles: Sequence[Tile]) -> list[bytes]:
        self.calls += 1
        assert len({(t.level, t.index) for t in tiles}) == len(tiles), "tiles asked twice"
        return [self.blobs[t.level, t.index] for t in tiles]


@pytest.mark.parametrize(("size", "height"), [(100, 2), (700, 8)])
def test_tiled_hash_reader_serves_the_same_proofs(size: int, height: int) -> None:
    store, blobs = _grow_tiles(size, height)
    backend = _BlobStore(blobs)
    for n in range(1, size + 1, 1 if size <= 100 else 37):
        reader = TiledHashReader(n, backend.read_tiles, height=height)
        assert reader.size == n
        assert reader.read_hashes(range(stored_hash_count(n))) == store.read_hashes(
            range(stored_hash_count(n))
        )
        assert tree_root(n, reader) == tree_root(n, store)
        for m in range(0, n, max(1, n // 17)):
            backend.calls = 0
            assert inclusion_proof(m, n, reader) == inclusion_proof(m, n, store)
            assert backend.calls <= 1  # one round trip per proof
            assert consistency_proof(m + 1, n, reader) == consistency_proof(m + 1, n, store)


def test_tiled_hash_reader_errors() -> None:
    _, blobs = _grow_tiles(20, 2)
    reader = TiledHashReader(20, _BlobStore(blobs).read_tiles, height=2)
    assert reader.read_hashes([]) == []
    with pytest.raises(NotFoundError, match="for a tree of 20"):
        reader.read_hashes([stored_hash_count(20)])
    short = TiledHashReader(20, lambda tiles: [b"\x00" * 31 for _ in tiles], height=2)
    with pytest.raises(SwiftchainError, match="expected at least"):
        short.read_hashes([0])
    missing = TiledHashReader(20, lambda tiles: [], height=2)
    with pytest.raises(SwiftchainError, match="tiles from the store"):
        missing.read_hashes([0])
    with pytest.raises(InvalidInputError):
        TiledHashReader(-1, _BlobStore(blobs).read_tiles)


@pytest.mark.parametrize(
    ("index", "width", "path"),
    [
        (0, 256, "tile/entries/000"),
        (5, 17, "tile/entries/005.p/17"),
        (1234067, 256, "tile/entries/x001/x234/067"),
        (1234067, 1, "tile/entries/x001/x234/067.p/1"),
    ],
)
def test_entry_bundle_paths(index: int, width: int, path: str) -> None:
    assert entries_path(index, width) == path
    assert parse_entries_path(path) == (index, width)


@pytest.mark.parametrize(
    "path",
    [
        "tile/entries/5",
        "tile/entries/005.p/256",
        "tile/entries/005.p/0",
        "tile/entries/005.p/017",
        "tile/entries/x000/005",
        "tile/entries/../005",
        "tile/entries/",
        "tile/0/005",
        "tile/entries/005/",
        "tile/entries/\u0660\u0660\u0665",
    ],
)
def test_non_canonical_entry_bundle_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidInputError, match="expected an entry bundle path"):
        parse_entries_path(path)


def test_tile_paths_refuse_the_entries_series_and_non_ascii_digits() -> None:
    for path in ("tile/entries/000", "tile/\u0660/000", "tile/64/000", "tile/0/0\u06600"):
        with pytest.raises(InvalidInputError, match="expected a tile path"):
            parse_tile_path(path)


def test_entry_bundles_are_uint16_length_prefixed() -> None:
    entries = [b"", b"a", b"x" * MAX_BUNDLED_ENTRY]
    data = bundle_bytes(entries)
    assert data[:5] == b"\x00\x00\x00\x01a"
    assert data[5:7] == b"\xff\xff"
    assert bundle_entries(data) == entries
    assert bundle_entries(data, 2) == entries[:2]
    with pytest.raises(InvalidInputError, match="expected entries of at most 65535 bytes"):
        bundle_bytes([b"x" * (MAX_BUNDLED_ENTRY + 1)])
    with pytest.raises(InvalidInputError, match="expected 65535 entry bytes"):
        bundle_entries(data[:-1])
    with pytest.raises(InvalidInputError, match="expected an entry length"):
        bundle_entries(b"\x00")
    with pytest.raises(InvalidInputError, match="expected 4 entries in the bundle, got 3"):
        bundle_entries(data, 4)


def test_every_entry_the_nodes_accept_fits_an_entry_bundle() -> None:
    assert MAX_ENTRY_BYTES == MAX_BUNDLED_ENTRY
    bundle_entries(bundle_bytes([b"x" * MAX_ENTRY_BYTES]))
