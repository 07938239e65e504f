"""chain/node/tile_store.py on a real folder: the log as C2SP tlog-tiles files, full ones written
once, partial ones replaced, what a crash leaves past the committed size cut away on start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chain.checkpoint import Checkpoint
from chain.errors import InvalidInputError, NotFoundError, PreconditionError
from chain.hashing import leaf_hash
from chain.node.tile_store import CHECKPOINT_FILE, TileStore
from chain.note import generate_key, new_signer, sign
from chain.tiles import (
    MemoryHashStore,
    Tile,
    bundle_entries,
    entries_path,
    tile_bytes,
    tile_path,
    tiles_touched,
)


def _entry(i: int) -> bytes:
    return f"entry {i:06d} ".encode() * (1 + i % 7)


class Log:
    """Entries appended in blocks to a tree and a TileStore, as the node's persist_block does."""

    def __init__(self, store: TileStore) -> None:
        self.store = store
        self.tree = MemoryHashStore()
        self.entries: list[bytes] = []

    def append(self, count: int) -> None:
        first = self.tree.size
        new = [_entry(first + i) for i in range(count)]
        self.tree.extend(leaf_hash(e) for e in new)
        self.entries.extend(new)
        tiles = [
            (t.level, t.index, t.width, tile_bytes(self.tree, t))
            for t in tiles_touched(first, self.tree.size)
        ]
        self.store.write_log(first, new, tiles)


def _files(root: Path) -> set[str]:
    out = set()
    for folder, _, names in os.walk(root):
        for name in names:
            out.add(str((Path(folder) / name).relative_to(root)))
    return out


SIGNER = new_signer(generate_key("hospital-a")[0])


def _checkpoint_note(size: int) -> str:
    text = Checkpoint("test/log", size, bytes(32), 1, bytes(32), 0).to_text()
    return sign(text, SIGNER).decode()


def test_the_folder_holds_the_log_in_tlog_tiles_paths(tmp_path: Path) -> None:
    log = Log(TileStore(tmp_path))
    for count in (100, 100, 100):  # 300 entries: one full bundle and tile, partials past them
        log.append(count)
    assert _files(tmp_path) == {
        "tile/entries/000",
        "tile/entries/001.p/44",
        "tile/0/000",
        "tile/0/001.p/44",
        "tile/1/000.p/1",
    }
    assert bundle_entries((tmp_path / "tile/entries/000").read_bytes()) == log.entries[:256]
    assert bundle_entries((tmp_path / "tile/entries/001.p/44").read_bytes()) == log.entries[256:]
    for tile in tiles_touched(0, 300):
        assert (tmp_path / tile_path(tile)).read_bytes() == tile_bytes(log.tree, tile)
    assert log.store.read_entries(250, 260) == log.entries[250:260]
    assert log.store.read_entries(290, 400) == log.entries[290:]
    # a narrower width of a tile is its prefix: what a client with an older checkpoint asks
    assert log.store.read_tile(0, 1, 10) == tile_bytes(log.tree, Tile(0, 1, 10))
    assert log.store.read_tile(0, 1, 45) is None
    assert log.store.read_bundle_bytes(1, 3) is not None
    assert bundle_entries(log.store.read_bundle_bytes(1, 3) or b"") == log.entries[256:259]


def test_a_full_tile_is_written_once(tmp_path: Path) -> None:
    log = Log(TileStore(tmp_path))
    log.append(256)
    full = tmp_path / "tile/0/000"
    before = full.stat().st_mtime_ns, full.stat().st_ino
    log.append(10)
    assert (full.stat().st_mtime_ns, full.stat().st_ino) == before


def test_the_same_block_written_again_is_a_no_op_and_a_gap_is_refused(tmp_path: Path) -> None:
    log = Log(TileStore(tmp_path))
    log.append(20)
    tiles = [(0, 0, 20, tile_bytes(log.tree, Tile(0, 0, 20)))]
    log.store.write_log(0, log.entries, tiles)  # a retry after the commit record failed
    assert log.store.size == 20
    with pytest.raises(PreconditionError, match="expected the next entry at leaf 20, got 21"):
        log.store.write_log(21, [b"x"], [])


def test_a_restart_reads_what_was_written(tmp_path: Path) -> None:
    log = Log(TileStore(tmp_path))
    log.append(300)
    reopened = TileStore(tmp_path)
    assert reopened.stored_entries() == 300
    reopened.truncate(300)
    assert list(reopened.iter_entries(300)) == list(enumerate(log.entries))
    assert reopened.read_entries(0, 300) == log.entries
    log.store = reopened
    log.append(5)  # appends after the partial bundle read back from disk
    assert bundle_entries((tmp_path / "tile/entries/001.p/49").read_bytes()) == log.entries[256:]


def test_truncate_removes_what_a_crash_left_past_the_committed_size(tmp_path: Path) -> None:
    log = Log(TileStore(tmp_path))
    log.append(250)
    committed = _files(tmp_path)
    log.append(20)  # written, but its block's commit record never was
    reopened = TileStore(tmp_path)
    assert reopened.stored_entries() == 270
    reopened.truncate(250)
    assert _files(tmp_path) == committed
    assert reopened.read_entries(0, 300) == log.entries[:250]
    for tile in tiles_touched(0, 250):
        assert reopened.read_tile(tile.level, tile.index, tile.width) == tile_bytes(log.tree, tile)


def test_truncate_cuts_a_partial_file_back_from_a_wider_one(tmp_path: Path) -> None:
    log = Log(TileStore(tmp_path))
    log.append(240)
    log.append(30)  # the old partials were deleted after the new ones were written
    (tmp_path / CHECKPOINT_FILE).write_text("not a checkpoint")
    reopened = TileStore(tmp_path)
    reopened.truncate(240)  # the committed size, which no file on disk has exactly
    assert "tile/entries/000.p/240" in _files(tmp_path)
    assert "tile/entries/000" not in _files(tmp_path)
    assert "tile/0/000" not in _files(tmp_path)
    assert CHECKPOINT_FILE not in _files(tmp_path)  # damaged: gone, written again later
    assert reopened.read_entries(0, 240) == log.entries[:240]
    assert reopened.read_tile(0, 0, 240) == tile_bytes(log.tree, Tile(0, 0, 240))


def test_the_checkpoint_is_replaced_by_newer_ones_only(tmp_path: Path) -> None:
    log = Log(TileStore(tmp_path))
    log.append(10)
    assert log.store.write_checkpoint(_checkpoint_note(5))
    assert not log.store.write_checkpoint(_checkpoint_note(4))
    assert not log.store.write_checkpoint(_checkpoint_note(11))  # more than is stored
    assert (tmp_path / CHECKPOINT_FILE).read_text() == _checkpoint_note(5)
    assert log.store.write_checkpoint(_checkpoint_note(10))
    assert (tmp_path / CHECKPOINT_FILE).read_text() == _checkpoint_note(10)


def test_a_damaged_or_missing_bundle_is_an_error_not_wrong_entries(tmp_path: Path) -> None:
    log = Log(TileStore(tmp_path))
    log.append(300)
    bundle = tmp_path / entries_path(0)
    bundle.write_bytes(bundle.read_bytes()[:-1])
    reopened = TileStore(tmp_path, bundle_cache_bytes=0)
    reopened.truncate(300)
    with pytest.raises(InvalidInputError, match="expected"):
        list(reopened.iter_entries(300))
    bundle.unlink()
    with pytest.raises(NotFoundError, match="tile/entries/000 is missing"):
        reopened.read_entries(0, 1)


def test_a_negative_cache_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="expected a bundle cache size >= 0 bytes, got -1"):
        TileStore(tmp_path, bundle_cache_bytes=-1)
