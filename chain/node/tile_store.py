"""The node's log as C2SP tlog-tiles files in its data directory (DESIGN §3.4).

The files sit at their tlog-tiles paths under the data directory, so any static file server
could serve the folder as it is:

* ``tile/<L>/<N>``: a full hash tile (256 hashes), written once and never changed;
* ``tile/<L>/<N>.p/<W>``: the partial tile at the edge of the tree, ``W`` hashes;
* ``tile/entries/<N>`` and ``tile/entries/<N>.p/<W>``: entry bundles, each entry as a big-endian
  uint16 length and its exact bytes (:func:`chain.tiles.bundle_bytes`);
* ``checkpoint``: the latest sealed checkpoint (a signed note), replaced last.

Every file is written to a temporary name in its folder, fsynced and renamed into place, and
the folders fsynced, so a file is either whole or absent after a crash. At the edge there is one
partial file per series (the entries, and each tile level); a wider one replaces it, and the old
one is deleted only after the new one is in place and readers have been told the new size. The
node's commit record of a block is in MongoDB (``chain/node/store.py``) and written after these
files; :meth:`TileStore.truncate` brings the folder back to exactly the committed size on start,
whatever a crash left past it.

One writer (the node's sequencing thread; the cosigning thread writes only ``checkpoint``), any
number of readers in other threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

from chain.checkpoint import parse_checkpoint
from chain.errors import InvalidInputError, NotFoundError, PreconditionError, SwiftchainError
from chain.hashing import HASH_SIZE
from chain.note import parse_note
from chain.tiles import (
    TILE_WIDTH,
    Tile,
    bundle_bytes,
    bundle_entries,
    entries_path,
    tile_path,
    tile_width,
)

__all__ = ["CHECKPOINT_FILE", "DEFAULT_BUNDLE_CACHE_BYTES", "ENTRIES", "TileStore"]

_log = logging.getLogger(__name__)

#: The series of entry bundles, beside the tile levels 0..63 (as a level number).
ENTRIES = -1
CHECKPOINT_FILE = "checkpoint"
#: Decoded full bundles a node keeps in memory by default (~100,000 entries of ~600 bytes).
DEFAULT_BUNDLE_CACHE_BYTES = 64 * 1024 * 1024
_MAX_LEVEL = 63
_READ_ATTEMPTS = 4


def series_path(level: int, index: int, width: int) -> str:
    """The tlog-tiles path of tile ``(level, index)`` (or bundle ``index`` for
    :data:`ENTRIES`) at ``width``."""
    if level == ENTRIES:
        return entries_path(index, width)
    return tile_path(Tile(level, index, width))


def _series_width(level: int, index: int, size: int) -> int:
    """Width of tile ``(level, index)`` (or bundle ``index``) in the log of ``size`` entries."""
    return tile_width(max(level, 0), index, size)


class _BundleCache:
    """Decoded full bundles, least recently used evicted first, up to ``max_bytes`` of entry
    bytes. A full bundle never changes, so a cached one is always right; proofs of recent
    entries then skip the file read and the decoding."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise InvalidInputError(f"expected a bundle cache size >= 0 bytes, got {max_bytes}")
        self._max_bytes = max_bytes
        self._bytes = 0
        self._bundles: OrderedDict[int, tuple[tuple[bytes, ...], int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, bundle: int) -> tuple[bytes, ...] | None:
        with self._lock:
            found = self._bundles.get(bundle)
            if found is None:
                return None
            self._bundles.move_to_end(bundle)
            return found[0]

    def put(self, bundle: int, entries: tuple[bytes, ...]) -> None:
        size = sum(len(e) for e in entries)
        if size > self._max_bytes:
            return
        with self._lock:
            old = self._bundles.pop(bundle, None)
            if old is not None:
                self._bytes -= old[1]
            self._bundles[bundle] = (entries, size)
            self._bytes += size
            while self._bytes > self._max_bytes:
                _, (_, evicted) = self._bundles.popitem(last=False)
                self._bytes -= evicted

    def clear(self) -> None:
        with self._lock:
            self._bundles.clear()
            self._bytes = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._bundles)


class TileStore:
    """Hash tiles, entry bundles and the latest checkpoint as files under ``root``.

    Open it, then :meth:`truncate` to the committed size before writing (recovery does);
    ``fsync=False`` skips the fsyncs (tests and benchmarks of what they cost).
    """

    def __init__(
        self,
        root: Path,
        *,
        bundle_cache_bytes: int = DEFAULT_BUNDLE_CACHE_BYTES,
        fsync: bool = True,
    ) -> None:
        self.root = root
        self._fsync = fsync
        self._cache = _BundleCache(bundle_cache_bytes)
        self._lock = threading.Lock()
        #: Entries whose bundles (and hash tiles) are in place and readable.
        self._size = 0
        #: The entries of the partial bundle at the edge, [size - size % 256, size).
        self._tail: list[bytes] = []
        self._checkpoint_size = -1
        root.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ files

    def _path(self, level: int, index: int, width: int) -> Path:
        return self.root / series_path(level, index, width)

    def _write_file(self, path: Path, data: bytes, dirs: set[Path]) -> None:
        """Write ``data`` at ``path`` atomically (temporary file, fsync, rename); the folder
        goes into ``dirs`` to be fsynced once the batch is written."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.parent / f".{path.name}.tmp"
        with temporary.open("wb") as out:
            out.write(data)
            if self._fsync:
                out.flush()
                os.fsync(out.fileno())
        temporary.replace(path)
        dirs.add(path.parent)

    def _sync_dirs(self, dirs: set[Path]) -> None:
        if not self._fsync:
            return
        for folder in sorted(dirs):
            descriptor = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)

    @staticmethod
    def _remove(path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        if path.parent.name.endswith(".p"):
            with contextlib.suppress(OSError):  # not empty, or gone: either is fine
                path.parent.rmdir()

    def _read_prefix(self, level: int, index: int, width: int) -> bytes | None:
        """The file of ``(level, index)`` that holds at least ``width`` items as the store is
        now, or None. A partial file replaced while we look is looked for again."""
        for _ in range(_READ_ATTEMPTS):
            with self._lock:
                size = self._size
            have = _series_width(level, index, size)
            if have < width:
                return None
            try:
                return self._path(level, index, have).read_bytes()
            except FileNotFoundError:
                continue  # replaced by a wider one in between
        return None

    # ------------------------------------------------------------------ state

    @property
    def size(self) -> int:
        """Entries stored (bundles and hash tiles in place)."""
        with self._lock:
            return self._size

    def stored_entries(self) -> int:
        """How many entries the folder holds from leaf 0 on, as found on disk (for recovery:
        it can be more than the committed size after a crash, 0 for an empty folder)."""
        full = 0
        while self._path(ENTRIES, full, TILE_WIDTH).is_file():
            full += 1
        partial = self._path(ENTRIES, full, 1).parent
        widths = _widths_in(partial)
        return full * TILE_WIDTH + (max(widths) if widths else 0)

    def truncate(self, size: int) -> None:
        """Make the folder hold exactly the log of ``size`` entries: remove what a crash left
        past it and cut partial files back to their width at ``size`` (from the prefix of a
        wider file). Files that are missing stay missing (recovery then finds a mismatch)."""
        if size < 0:
            raise InvalidInputError(f"expected a size >= 0, got {size}")
        dirs: set[Path] = set()
        for level in [ENTRIES, *range(_MAX_LEVEL + 1)]:
            if level > 0 and not (self.root / "tile" / str(level)).exists():
                break
            self._truncate_series(level, size, dirs)
        self._sync_dirs(dirs)
        checkpoint = self.root / CHECKPOINT_FILE
        checkpoint_size = _checkpoint_size(checkpoint)
        if checkpoint_size > size:
            checkpoint.unlink()
            checkpoint_size = -1
        self._cache.clear()
        with self._lock:
            self._size = size
            self._checkpoint_size = checkpoint_size
        first = size - size % TILE_WIDTH
        tail: list[bytes] = []
        if size > first:
            with contextlib.suppress(SwiftchainError):  # recovery reports the missing entries
                tail = self._bundle_from_disk(size // TILE_WIDTH, size - first)
        with self._lock:
            self._tail = tail

    def _truncate_series(self, level: int, size: int, dirs: set[Path]) -> None:
        count = size >> (8 * max(level, 0))  # hashes (or entries) of this series
        full, width = divmod(count, TILE_WIDTH)
        edge = self._path(level, full, TILE_WIDTH)
        partial_dir = self._path(level, full, 1).parent
        if width:
            wanted = self._path(level, full, width)
            if not wanted.is_file():
                source = next(
                    (
                        self._path(level, full, w)
                        for w in sorted(_widths_in(partial_dir), reverse=True)
                        if w > width
                    ),
                    edge if edge.is_file() else None,
                )
                if source is not None:
                    data = source.read_bytes()
                    self._write_file(wanted, _prefix(level, data, width), dirs)
            for other in _widths_in(partial_dir):
                if other != width:
                    self._remove(self._path(level, full, other))
            self._remove(edge)
        else:
            for other in _widths_in(partial_dir):
                self._remove(self._path(level, full, other))
            self._remove(edge)
        # Past the edge: anything a crash wrote beyond the committed size.
        index = full + 1
        while True:
            beyond = self._path(level, index, TILE_WIDTH)
            partials = _widths_in(self._path(level, index, 1).parent)
            if not beyond.is_file() and not partials:
                break
            self._remove(beyond)
            for other in partials:
                self._remove(self._path(level, index, other))
            index += 1

    # ------------------------------------------------------------------ writes

    def write_log(
        self,
        first_index: int,
        entries: Sequence[bytes],
        tiles: Sequence[tuple[int, int, int, bytes]],
    ) -> None:
        """Store a block: ``entries`` at leaves ``first_index``.. and the hash tiles they
        changed, given as ``(level, index, width, data)`` (``chain.tiles.tiles_touched``).

        Full bundles and tiles are written once (one already there, from before a crash, holds
        the same bytes and is kept); partial ones are written at their new width, and the
        narrower files they replace are deleted once readers see the new size. The block just
        written may come again (its commit record failed and is retried): that is a no-op."""
        if not entries:
            return
        with self._lock:
            old_size = self._size
        if first_index + len(entries) == old_size and first_index < old_size:
            return  # stored already: the block is written again after its commit record failed
        if first_index != old_size:
            raise PreconditionError(
                f"expected the next entry at leaf {old_size}, got {first_index}"
            )
        new_size = old_size + len(entries)
        dirs: set[Path] = set()
        pending = self._tail + list(entries)
        start = old_size - len(self._tail)
        superseded: list[Path] = []
        for offset in range(0, len(pending), TILE_WIDTH):
            chunk = pending[offset : offset + TILE_WIDTH]
            bundle = (start + offset) // TILE_WIDTH
            path = self._path(ENTRIES, bundle, len(chunk))
            if len(chunk) < TILE_WIDTH or not path.is_file():
                self._write_file(path, bundle_bytes(chunk), dirs)
            if len(chunk) == TILE_WIDTH:
                self._cache.put(bundle, tuple(chunk))
        old_edge = old_size % TILE_WIDTH
        if old_edge:
            superseded.append(self._path(ENTRIES, old_size // TILE_WIDTH, old_edge))
        for level, index, width, data in tiles:
            if len(data) != width * HASH_SIZE:
                raise InvalidInputError(
                    f"expected {width * HASH_SIZE} bytes for tile {level}/{index}, got {len(data)}"
                )
            if _series_width(level, index, new_size) != width:
                raise InvalidInputError(
                    f"expected tile {level}/{index} of width "
                    f"{_series_width(level, index, new_size)} at size {new_size}, got {width}"
                )
            path = self._path(level, index, width)
            if width < TILE_WIDTH or not path.is_file():
                self._write_file(path, data, dirs)
            old_width = _series_width(level, index, old_size)
            if 0 < old_width < TILE_WIDTH and old_width != width:
                superseded.append(self._path(level, index, old_width))
        self._sync_dirs(dirs)
        tail_start = new_size - new_size % TILE_WIDTH
        with self._lock:
            self._size = new_size
            self._tail = pending[tail_start - start :]
        for path in superseded:
            self._remove(path)

    def write_checkpoint(self, note: str) -> bool:
        """Replace ``checkpoint`` with ``note`` if it is for a larger tree than the one there;
        True if written. A note for more entries than are stored is not published."""
        size = parse_checkpoint(parse_note(note.encode("utf-8")).text).size
        with self._lock:
            if size <= self._checkpoint_size:
                return False
            if size > self._size:
                _log.warning(
                    "not publishing the checkpoint of %d entries: %d are stored", size, self._size
                )
                return False
            self._checkpoint_size = size
        dirs: set[Path] = set()
        self._write_file(self.root / CHECKPOINT_FILE, note.encode("utf-8"), dirs)
        self._sync_dirs(dirs)
        return True

    # ------------------------------------------------------------------ reads

    def read_tile(self, level: int, index: int, width: int) -> bytes | None:
        """The first ``width`` hashes of tile ``(level, index)``, or None if the store does not
        hold that many (yet)."""
        data = self._read_prefix(level, index, width)
        return None if data is None else data[: width * HASH_SIZE]

    def read_bundle_bytes(self, index: int, width: int) -> bytes | None:
        """Entry bundle ``index`` with its first ``width`` entries, encoded as served, or None
        if the store does not hold that many (yet)."""
        data = self._read_prefix(ENTRIES, index, width)
        if data is None:
            return None
        return _prefix(ENTRIES, data, width)

    def _bundle_from_disk(self, bundle: int, width: int) -> list[bytes]:
        path = self._path(ENTRIES, bundle, width)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(
                f"entry bundle {series_path(ENTRIES, bundle, width)} is missing"
            ) from None
        return bundle_entries(data, width)

    def read_entries(self, start: int, end: int) -> list[bytes]:
        """Entries at leaves [start, end) (fewer if the store holds fewer)."""
        with self._lock:
            size, tail = self._size, self._tail
        end = min(end, size)
        tail_start = size - len(tail)
        out: list[bytes] = []
        if start < min(end, tail_start):
            last = min(end, tail_start)
            for bundle in range(start // TILE_WIDTH, (last - 1) // TILE_WIDTH + 1):
                entries = self._full_bundle(bundle)
                base = bundle * TILE_WIDTH
                out.extend(entries[max(start, base) - base : min(last, base + TILE_WIDTH) - base])
        if end > tail_start:
            out.extend(tail[max(start, tail_start) - tail_start : end - tail_start])
        return out

    def _full_bundle(self, bundle: int) -> tuple[bytes, ...]:
        cached = self._cache.get(bundle)
        if cached is not None:
            return cached
        entries = tuple(self._bundle_from_disk(bundle, TILE_WIDTH))
        self._cache.put(bundle, entries)
        return entries

    def iter_entries(self, size: int) -> Iterator[tuple[int, bytes]]:
        """The first ``size`` entries with their leaf indexes, in order (for recovery), a
        bundle read at a time without filling the cache. Raises
        :class:`~chain.errors.NotFoundError` or :class:`~chain.errors.InvalidInputError` at a
        missing or damaged bundle."""
        with self._lock:
            stored, tail = self._size, self._tail
        size = min(size, stored)
        full = size // TILE_WIDTH
        for bundle in range(full):
            for offset, entry in enumerate(self._bundle_from_disk(bundle, TILE_WIDTH)):
                yield bundle * TILE_WIDTH + offset, entry
        for offset, entry in enumerate(tail[: size - full * TILE_WIDTH]):
            yield full * TILE_WIDTH + offset, entry

    def cached_bundles(self) -> int:
        """How many decoded full bundles are held in memory."""
        return len(self._cache)

    def is_empty(self) -> bool:
        """True if the folder holds no entry bundle and no tile."""
        return not (self.root / "tile").exists() or not any((self.root / "tile").iterdir())


def _widths_in(partial_dir: Path) -> list[int]:
    """The widths of the partial files in a ``<N>.p`` folder (none if it does not exist)."""
    try:
        names = os.listdir(partial_dir)  # noqa: PTH208 (names only, no Path per entry)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [int(name) for name in names if name.isdigit() and 0 < int(name) < TILE_WIDTH]


def _prefix(level: int, data: bytes, width: int) -> bytes:
    """The first ``width`` items of a tile's or a bundle's bytes."""
    if level != ENTRIES:
        if len(data) < width * HASH_SIZE:
            raise InvalidInputError(f"expected {width} hashes, got {len(data) // HASH_SIZE}")
        return data[: width * HASH_SIZE]
    position = 0
    for _ in range(width):
        if position + 2 > len(data):
            raise InvalidInputError(f"expected {width} entries in the bundle, it ends before")
        position += 2 + int.from_bytes(data[position : position + 2], "big")
    if position > len(data):
        raise InvalidInputError(f"expected {width} entries in the bundle, it ends before")
    return data[:position]


def _checkpoint_size(path: Path) -> int:
    """The tree size of the checkpoint note at ``path``; -1 if there is none or it is damaged."""
    try:
        return parse_checkpoint(parse_note(path.read_bytes()).text).size
    except FileNotFoundError:
        return -1
    except (SwiftchainError, ValueError):
        _log.warning("the checkpoint file %s is damaged; it will be written again", path)
        path.unlink()
        return -1
