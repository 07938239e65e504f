"""Where the hashes of the log tree live: stored hash indexes and C2SP tlog-tiles.

Two layouts of the same hashes, both byte-compatible with ``golang.org/x/mod/sumdb/tlog``:

**Stored hash index** (tlog ``StoredHashIndex``; Crosby & Wallach §3.3). Every complete node
``(level, n)`` of the tree (``n``-th node of its level, leaves at level 0) has one position in a
dense append-only sequence: appending leaf ``n`` appends its leaf hash and then the hash of every
subtree that this leaf completes. A tree of ``size`` leaves has ``2*size - popcount(size)``
stored hashes (:func:`stored_hash_count`). :class:`MemoryHashStore` keeps exactly that sequence
in one ``bytearray``.

**Tiles** (C2SP ``tlog-tiles``; tlog ``Tile`` with height 8). Tile ``(L, N)`` holds the hashes
``(8*L, 256*N + i)`` for ``i < W``: at level 0 the leaf hashes, at level ``L`` the roots of the
full tiles of level ``L-1``. Only every 8th level is stored; a hash at level ``8*L + k``
(``0 < k < 8``) is recomputed from ``2**k`` consecutive hashes of its tile
(:func:`hash_from_tile`). A tile is *partial* (``W < 256``) until it fills up; the persistent
store keeps one blob per ``(L, N)`` and overwrites it as it grows (:func:`tiles_touched` says
which blobs a block of appends rewrites, :func:`tile_bytes` gives their new contents).

Hot paths inline the index arithmetic: ``stored_hash_index(level, n)`` is
``2*m - popcount(m) + level`` with ``m = ((n + 1) << level) - 1``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from chain.errors import InvalidInputError, NotFoundError, SwiftchainError
from chain.hashing import EMPTY_ROOT, HASH_SIZE

__all__ = [
    "MAX_BUNDLED_ENTRY",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "HashReader",
    "MemoryHashStore",
    "Tile",
    "TileReader",
    "TiledHashReader",
    "bundle_bytes",
    "bundle_entries",
    "entries_path",
    "hash_from_tile",
    "parse_entries_path",
    "parse_tile_path",
    "split_stored_hash_index",
    "stored_hash_count",
    "stored_hash_index",
    "stored_hashes_for_leaf",
    "tile_bytes",
    "tile_for_index",
    "tile_path",
    "tile_width",
    "tiles_touched",
]

TILE_HEIGHT: Final = 8
"""Levels of the tree per tile (C2SP tlog-tiles fixes it at 8)."""

TILE_WIDTH: Final = 1 << TILE_HEIGHT
"""Hashes in a full tile (256, i.e. 8,192 bytes); also entries in a full entry bundle."""

MAX_BUNDLED_ENTRY: Final = 0xFFFF
"""The longest entry an entry bundle can hold (its length is a big-endian uint16)."""

_sha256 = hashlib.sha256
_NODE = b"\x01"
_MAX_HEIGHT = 30  # as tlog: 1 <= height <= 30


class HashReader(Protocol):
    """Reads stored hashes by stored hash index (tlog ``HashReader``).

    ``read_hashes`` returns exactly one 32-byte hash per index, in the order asked, or raises
    (:class:`NotFoundError` for an index that is not stored). Callers in this package ask for
    each proof's hashes in a single call.
    """

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]: ...


TileReader = Callable[[Sequence["Tile"]], Sequence[bytes]]
"""Fetches tile blobs: one ``bytes`` per requested tile, at least ``tile.width * 32`` long."""


# --------------------------------------------------------------------------- stored hash index


def _check_nonnegative(name: str, value: int) -> None:
    if value < 0:
        raise InvalidInputError(f"expected {name} >= 0, got {value}")


def stored_hash_index(level: int, n: int) -> int:
    """Position of node ``(level, n)`` in the stored hash sequence (tlog ``StoredHashIndex``)."""
    _check_nonnegative("level", level)
    _check_nonnegative("n", n)
    # Level L's n-th hash is stored right after level 0's ((n+1) << L) - 1 -th leaf hash and
    # the L hashes that leaf completes below it; leaf m sits at m + m/2 + m/4 + ... = 2m - popcount.
    m = ((n + 1) << level) - 1
    return 2 * m - m.bit_count() + level


def split_stored_hash_index(index: int) -> tuple[int, int]:
    """Inverse of :func:`stored_hash_index`: ``(level, n)`` (tlog ``SplitStoredHashIndex``)."""
    _check_nonnegative("index", index)
    # stored_hash_index(0, n) < 2n, so the leaf whose append wrote `index` is >= index // 2.
    n = index // 2
    index_n = 2 * n - n.bit_count()
    if index_n > index:  # pragma: no cover - arithmetic guarantee
        raise AssertionError("bad math in split_stored_hash_index")
    while True:
        # Appending leaf n writes 1 + trailing_zeros(n + 1) hashes.
        x = index_n + 1 + (((n + 1) & -(n + 1)).bit_length() - 1)
        if x > index:
            break
        n += 1
        index_n = x
    level = index - index_n
    return level, n >> level


def stored_hash_count(size: int) -> int:
    """Number of stored hashes of a tree of ``size`` leaves (tlog ``StoredHashCount``)."""
    _check_nonnegative("size", size)
    return 2 * size - size.bit_count()


def stored_hashes_for_leaf(index: int, leaf_hash: bytes, reader: HashReader) -> list[bytes]:
    """The hashes to append when leaf ``index`` is added (tlog ``StoredHashesForRecordHash``).

    They go at stored hash indexes ``stored_hash_index(0, index)`` onwards: the leaf hash, then
    the root of every subtree this leaf completes, lowest first. Reads the left siblings
    (at most log2(index) hashes) from ``reader`` in one call, in increasing index order.
    """
    _check_nonnegative("index", index)
    if len(leaf_hash) != HASH_SIZE:
        raise InvalidInputError(
            f"expected a {HASH_SIZE}-byte leaf hash, got {len(leaf_hash)} bytes"
        )
    # Each trailing 1 bit of `index` completes a subtree with the left sibling at that level.
    completed = (((index + 1) & -(index + 1)).bit_length()) - 1
    indexes = []
    for level in range(completed - 1, -1, -1):
        m = (index >> level) << level  # == (((index >> level) - 1) + 1) << level
        m -= 1
        indexes.append(2 * m - m.bit_count() + level)
    old = reader.read_hashes(indexes) if indexes else []
    if len(old) != len(indexes):
        raise SwiftchainError(f"expected {len(indexes)} hashes from the reader, got {len(old)}")
    h = bytes(leaf_hash)
    out = [h]
    for i in range(completed):
        h = _sha256(_NODE + old[completed - 1 - i] + h).digest()
        out.append(h)
    return out


# --------------------------------------------------------------------------------------- tiles


@dataclass(frozen=True, slots=True)
class Tile:
    """Tile ``(level, index)`` of ``width`` hashes: hashes ``(height*level, index*2**height + i)``.

    ``width`` is ``2**height`` for a full tile and ``1..2**height - 1`` for a partial one. The
    persistent key of a tile blob is ``(level, index)``; its width grows until it is full.
    """

    level: int
    index: int
    width: int


def _check_height(height: int) -> None:
    if not 1 <= height <= _MAX_HEIGHT:
        raise InvalidInputError(f"expected a tile height in 1..{_MAX_HEIGHT}, got {height}")


def _check_tile(tile: Tile, height: int) -> None:
    _check_height(height)
    if not 0 <= tile.level < 64:
        raise InvalidInputError(f"expected a tile level in 0..63, got {tile.level}")
    if tile.index < 0:
        raise InvalidInputError(f"expected a tile index >= 0, got {tile.index}")
    if not 1 <= tile.width <= 1 << height:
        raise InvalidInputError(f"expected a tile width in 1..{1 << height}, got {tile.width}")


def tile_for_index(index: int, *, height: int = TILE_HEIGHT) -> tuple[Tile, int, int]:
    """The tile holding stored hash ``index``, and where in it (tlog ``tileForIndex``).

    Returns ``(tile, start, end)``: ``tile`` is the narrowest tile that determines the hash,
    and the hash is the Merkle root of the tile's hashes ``start <= i < end`` (positions in
    hashes, not bytes; ``end - start`` is 1 for a hash at a tile level, ``2**k`` for a hash
    ``k`` levels above it). Any wider tile with the same ``(level, index)`` works too.
    """
    _check_height(height)
    level, n = split_stored_hash_index(index)
    tile_level = level // height
    level -= tile_level * height  # level within the tile
    tile_index = (n << level) >> height
    n -= (tile_index << height) >> level  # n within the tile, at that level
    start, end = n << level, (n + 1) << level
    return Tile(tile_level, tile_index, end), start, end


def tile_width(level: int, index: int, size: int, *, height: int = TILE_HEIGHT) -> int:
    """Width of tile ``(level, index)`` in the tree of ``size`` leaves; 0 if it has no hashes."""
    _check_height(height)
    _check_nonnegative("level", level)
    _check_nonnegative("index", index)
    _check_nonnegative("size", size)
    hashes_at_level = size >> (height * level)
    return max(0, min(1 << height, hashes_at_level - (index << height)))


def _subtree_hash(data: bytes | bytearray | memoryview, start: int, end: int) -> bytes:
    """Merkle root of the 2**k hashes data[start:end] (in hashes) of a tile (tlog ``tileHash``)."""
    hashes = [bytes(data[i * HASH_SIZE : (i + 1) * HASH_SIZE]) for i in range(start, end)]
    sha, node = _sha256, _NODE
    while len(hashes) > 1:
        hashes = [sha(node + hashes[i] + hashes[i + 1]).digest() for i in range(0, len(hashes), 2)]
    return hashes[0]


def hash_from_tile(
    tile: Tile, data: bytes | bytearray | memoryview, index: int, *, height: int = TILE_HEIGHT
) -> bytes:
    """Stored hash ``index``, computed from the blob ``data`` of ``tile`` (tlog ``HashFromTile``).

    ``tile`` must be the tile of :func:`tile_for_index` or a wider one with the same
    ``(level, index)``; ``data`` must hold at least ``tile.width`` hashes.
    """
    _check_tile(tile, height)
    if len(data) < tile.width * HASH_SIZE:
        raise InvalidInputError(
            f"expected at least {tile.width * HASH_SIZE} bytes of tile data, got {len(data)}"
        )
    want, start, end = tile_for_index(index, height=height)
    if (want.level, want.index) != (tile.level, tile.index) or tile.width < want.width:
        raise InvalidInputError(
            f"expected stored hash {index} to be in tile {tile_path(tile, height=height)}, "
            f"got tile {tile_path(want, height=height)}"
        )
    return _subtree_hash(data, start, end)


def tiles_touched(old_size: int, new_size: int, *, height: int = TILE_HEIGHT) -> list[Tile]:
    """The tiles whose contents change when the tree grows from ``old_size`` to ``new_size``.

    One entry per tile blob to (re)write, at its new width: every tile completed or extended
    by the new leaves, at every tile level, lowest level first (tlog ``NewTiles`` minus the
    intermediate partial widths that a static server also publishes). Empty if the sizes are
    equal. A block of ``b`` appends touches about ``(b / 256) * (1 + 1/256 + ...) + levels``
    tiles: one or two per tile level for small blocks.
    """
    _check_height(height)
    if not 0 <= old_size <= new_size:
        raise InvalidInputError(
            f"expected 0 <= old_size <= new_size, got old_size={old_size}, new_size={new_size}"
        )
    tiles: list[Tile] = []
    full = 1 << height
    level = 0
    while new_size >> (height * level):
        old_n = old_size >> (height * level)
        new_n = new_size >> (height * level)
        if old_n != new_n:
            tiles.extend(Tile(level, n, full) for n in range(old_n >> height, new_n >> height))
            n = new_n >> height
            width = new_n - (n << height)
            if width:
                tiles.append(Tile(level, n, width))
        level += 1
    return tiles


def tile_bytes(reader: HashReader, tile: Tile, *, height: int = TILE_HEIGHT) -> bytes:
    """The blob of ``tile``: its ``width`` hashes concatenated (tlog ``ReadTileData``).

    Reads them from ``reader`` (e.g. a :class:`MemoryHashStore`) in one call.
    """
    _check_tile(tile, height)
    level = height * tile.level
    first = tile.index << height
    indexes = []
    for n in range(first, first + tile.width):
        m = ((n + 1) << level) - 1
        indexes.append(2 * m - m.bit_count() + level)
    hashes = reader.read_hashes(indexes)
    if len(hashes) != len(indexes):
        raise SwiftchainError(f"expected {len(indexes)} hashes from the reader, got {len(hashes)}")
    return b"".join(hashes)


def _index_path(n: int) -> str:
    """C2SP tlog-tiles encoding of a tile index: 1234067 -> ``x001/x234/067``."""
    parts = [f"{n % 1000:03d}"]
    while n >= 1000:
        n //= 1000
        parts.append(f"x{n % 1000:03d}")
    return "/".join(reversed(parts))


def _parse_index_path(rest: list[str], full: int, bad: InvalidInputError) -> tuple[int, int]:
    """``(index, width)`` of the path fields after ``tile/<L>/`` or ``tile/entries/``."""
    width = full
    if len(rest) >= 2 and rest[-2].endswith(".p"):
        if not rest[-1].isdigit():
            raise bad
        width = int(rest[-1])
        if not 0 < width < full:
            raise bad
        rest = [*rest[:-2], rest[-2][: -len(".p")]]
    if not rest:
        raise bad
    index = 0
    for part in rest:
        digits = part.removeprefix("x")
        if len(digits) != 3 or not digits.isdigit() or not digits.isascii():
            raise bad
        index = index * 1000 + int(digits)
    return index, width


def tile_path(tile: Tile, *, height: int = TILE_HEIGHT) -> str:
    """C2SP tlog-tiles path of ``tile``: ``tile/<L>/<N>[.p/<W>]``, N as x001/x234/067."""
    _check_tile(tile, height)
    path = f"tile/{tile.level}/{_index_path(tile.index)}"
    if tile.width != 1 << height:
        path += f".p/{tile.width}"
    return path


def parse_tile_path(path: str, *, height: int = TILE_HEIGHT) -> Tile:
    """Inverse of :func:`tile_path`; rejects every non-canonical spelling."""
    _check_height(height)
    bad = InvalidInputError(f"expected a tile path tile/<L>/<N>[.p/<W>], got {path!r}")
    fields = path.split("/")
    if len(fields) < 3 or fields[0] != "tile" or not fields[1].isdigit():
        raise bad
    if not fields[1].isascii() or int(fields[1]) > 63:
        raise bad
    index, width = _parse_index_path(fields[2:], 1 << height, bad)
    tile = Tile(int(fields[1]), index, width)
    if tile_path(tile, height=height) != path:
        raise bad
    return tile


def entries_path(index: int, width: int = TILE_WIDTH) -> str:
    """C2SP tlog-tiles path of entry bundle ``index`` holding ``width`` entries:
    ``tile/entries/<N>[.p/<W>]``."""
    _check_nonnegative("index", index)
    if not 1 <= width <= TILE_WIDTH:
        raise InvalidInputError(f"expected a bundle width in 1..{TILE_WIDTH}, got {width}")
    path = f"tile/entries/{_index_path(index)}"
    if width != TILE_WIDTH:
        path += f".p/{width}"
    return path


def parse_entries_path(path: str) -> tuple[int, int]:
    """Inverse of :func:`entries_path`: ``(index, width)``; rejects non-canonical spellings."""
    bad = InvalidInputError(f"expected an entry bundle path tile/entries/<N>[.p/<W>], got {path!r}")
    fields = path.split("/")
    if len(fields) < 3 or fields[:2] != ["tile", "entries"]:
        raise bad
    index, width = _parse_index_path(fields[2:], TILE_WIDTH, bad)
    if entries_path(index, width) != path:
        raise bad
    return index, width


def bundle_bytes(entries: Iterable[bytes]) -> bytes:
    """An entry bundle: each entry as a big-endian uint16 length and its bytes (C2SP
    tlog-tiles). :class:`InvalidInputError` for an entry longer than 65,535 bytes."""
    out = bytearray()
    for entry in entries:
        size = len(entry)
        if size > MAX_BUNDLED_ENTRY:
            raise InvalidInputError(
                f"expected entries of at most {MAX_BUNDLED_ENTRY} bytes, got {size} bytes"
            )
        out += size.to_bytes(2, "big")
        out += entry
    return bytes(out)


def bundle_entries(data: bytes | bytearray | memoryview, limit: int | None = None) -> list[bytes]:
    """The entries of an entry bundle, the first ``limit`` of them if given.

    :class:`InvalidInputError` if the data ends inside an entry or holds fewer than ``limit``.
    """
    view = memoryview(data)
    out: list[bytes] = []
    position, end = 0, len(view)
    while position < end and (limit is None or len(out) < limit):
        if position + 2 > end:
            raise InvalidInputError(f"expected an entry length at byte {position}, got the end")
        size = (view[position] << 8) | view[position + 1]
        position += 2
        if position + size > end:
            raise InvalidInputError(
                f"expected {size} entry bytes at byte {position}, got {end - position}"
            )
        out.append(bytes(view[position : position + size]))
        position += size
    if limit is not None and len(out) < limit:
        raise InvalidInputError(f"expected {limit} entries in the bundle, got {len(out)}")
    return out


# ------------------------------------------------------------------------------- hash stores


class MemoryHashStore:
    """An append-only, in-memory stored hash sequence (32 bytes per hash, one ``bytearray``).

    Implements :class:`HashReader`. ``append_leaf`` writes the same hashes as
    :func:`stored_hashes_for_leaf` but keeps the right edge of the tree (the roots of its
    perfect subtrees, at most log2(size) hashes) in memory, so it never reads back.
    Memory: ``stored_hash_count(size) * 32`` bytes, about 64 bytes per leaf.

    One writer at a time; readers (proofs for any size up to ``size``) may run in other threads
    while it appends, since hashes once written never change.
    """

    __slots__ = ("_buf", "_peaks", "_root", "_size")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._peaks: list[bytes] = []  # roots of the perfect subtrees, left to right
        self._size = 0
        self._root: bytes | None = EMPTY_ROOT

    @property
    def size(self) -> int:
        """Number of leaves."""
        return self._size

    @property
    def stored_hash_count(self) -> int:
        """Number of stored hashes (``stored_hash_count(size)``)."""
        return len(self._buf) // HASH_SIZE

    @property
    def nbytes(self) -> int:
        """Bytes used by the stored hashes."""
        return len(self._buf)

    def append_leaf(self, leaf_hash: bytes) -> None:
        """Append one leaf hash and the roots of the subtrees it completes."""
        if len(leaf_hash) != HASH_SIZE:
            raise InvalidInputError(
                f"expected a {HASH_SIZE}-byte leaf hash, got {len(leaf_hash)} bytes"
            )
        h = bytes(leaf_hash)
        buf, peaks = self._buf, self._peaks
        buf += h
        n = self._size
        while n & 1:
            h = _sha256(_NODE + peaks.pop() + h).digest()
            buf += h
            n >>= 1
        peaks.append(h)
        self._size += 1
        self._root = None

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append many leaf hashes (same as ``append_leaf`` in a loop, faster)."""
        buf, n = self._buf, self._size
        sha, node, pop, push = _sha256, _NODE, self._peaks.pop, self._peaks.append
        try:
            for leaf in leaf_hashes:
                if len(leaf) != HASH_SIZE:
                    raise InvalidInputError(
                        f"expected a {HASH_SIZE}-byte leaf hash, got {len(leaf)} bytes"
                    )
                h = bytes(leaf)
                buf += h
                m = n
                while m & 1:
                    h = sha(node + pop() + h).digest()
                    buf += h
                    m >>= 1
                push(h)
                n += 1
        finally:
            # Leaves before a bad one stay appended, exactly as with append_leaf.
            self._size = n
            self._root = None

    def root(self) -> bytes:
        """Root hash of the whole tree (cached until the next append): popcount(size)-1 hashes.

        Use ``chain.proof_build.tree_root(size, store)`` for an earlier size.
        """
        root = self._root
        if root is None:
            peaks = self._peaks
            if not peaks:
                return EMPTY_ROOT
            root = peaks[-1]
            for i in range(len(peaks) - 2, -1, -1):
                root = _sha256(_NODE + peaks[i] + root).digest()
            self._root = root
        return root

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        """The stored hashes at ``indexes``; :class:`NotFoundError` if one is not stored yet."""
        buf = self._buf
        if indexes:
            count = len(buf) >> 5
            lo, hi = min(indexes), max(indexes)
            if lo < 0 or hi >= count:
                bad = lo if lo < 0 else hi
                raise NotFoundError(f"expected stored hash indexes in 0..{count - 1}, got {bad}")
        # No memoryview here: an exported buffer would make a concurrent append fail.
        return [bytes(buf[o : o + 32]) for o in [i << 5 for i in indexes]]

    def leaf_hash(self, index: int) -> bytes:
        """The leaf hash of leaf ``index``."""
        if not 0 <= index < self._size:
            raise NotFoundError(f"expected a leaf index in 0..{self._size - 1}, got {index}")
        o = (2 * index - index.bit_count()) << 5
        return bytes(self._buf[o : o + HASH_SIZE])


class TiledHashReader:
    """A :class:`HashReader` over tile blobs, for the tree of ``size`` leaves.

    ``read_tiles`` fetches blobs by tile (the store keys them by ``(tile.level, tile.index)``;
    a blob may be wider than asked, since the log only grows). Each ``read_hashes`` call makes
    one ``read_tiles`` call for the distinct tiles it needs. A hash ``k`` levels above its tile
    level costs ``2**k - 1`` node hashes to recompute, as in tlog; the tiles are trusted (this
    is the node reading its own store, not a client checking a mirror).
    """

    __slots__ = ("_height", "_read_tiles", "_size")

    def __init__(self, size: int, read_tiles: TileReader, *, height: int = TILE_HEIGHT) -> None:
        _check_nonnegative("size", size)
        _check_height(height)
        self._size = size
        self._read_tiles = read_tiles
        self._height = height

    @property
    def size(self) -> int:
        return self._size

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        height, size = self._height, self._size
        count = 2 * size - size.bit_count()
        order: dict[tuple[int, int], int] = {}
        tiles: list[Tile] = []
        plan: list[tuple[int, int, int]] = []
        for x in indexes:
            if not 0 <= x < count:
                raise NotFoundError(
                    f"expected stored hash indexes in 0..{count - 1} for a tree of {size}, got {x}"
                )
            tile, start, end = tile_for_index(x, height=height)
            key = (tile.level, tile.index)
            slot = order.get(key)
            if slot is None:
                width = tile_width(tile.level, tile.index, size, height=height)
                slot = order[key] = len(tiles)
                tiles.append(Tile(tile.level, tile.index, width))
            plan.append((slot, start, end))
        if not tiles:
            return []
        blobs = self._read_tiles(tiles)
        if len(blobs) != len(tiles):
            raise SwiftchainError(f"expected {len(tiles)} tiles from the store, got {len(blobs)}")
        for tile, blob in zip(tiles, blobs, strict=True):
            if len(blob) < tile.width * HASH_SIZE:
                raise SwiftchainError(
                    f"expected at least {tile.width * HASH_SIZE} bytes for tile "
                    f"{tile_path(tile, height=height)}, got {len(blob)}"
                )
        return [_subtree_hash(blobs[slot], start, end) for slot, start, end in plan]
