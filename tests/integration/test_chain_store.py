"""chain/node/store.py on the real FerretDB: the small state in Mongo, the log in files, and the
way from a store of an earlier version that kept the log in Mongo."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from chain.checkpoint import Checkpoint
from chain.node.store import ALIAS, BlockDoc, ChainStore
from chain.node.tile_store import CHECKPOINT_FILE, TileStore
from chain.note import generate_key, new_signer, sign
from services.platform import mongo

pytestmark = pytest.mark.integration


@pytest.fixture
def database(mongo_uri: str) -> Iterator[None]:
    mongo.connect(mongo_uri, f"chain_store_test_{uuid.uuid4().hex[:8]}", alias=ALIAS)
    yield
    BlockDoc._get_db().client.drop_database(BlockDoc._get_db().name)
    mongo.disconnect(ALIAS)


def _note(size: int) -> str:
    text = Checkpoint("test/log", size, bytes(32), 1, bytes(32), 0).to_text()
    return sign(text, new_signer(generate_key("hospital-a")[0])).decode()


def test_a_block_is_files_then_a_small_commit_record(database: None, tmp_path: Path) -> None:
    store = ChainStore(TileStore(tmp_path))
    entries = [f"entry {i}".encode() for i in range(3)]
    store.write_log(0, entries, [])
    store.write_block(1, 3, "checkpoint text", 7)
    store.write_block(1, 3, "checkpoint text", 7)  # again after a crash: kept once
    assert store.load_state().tree_size == 3
    assert store.read_entries(0, 3) == entries
    (document,) = BlockDoc._get_collection().find()
    assert set(document) == {"_id", "height", "tree_size", "checkpoint", "cut_offset"}
    note = _note(3)
    store.seal_block(1, note, ["hospital-a"])
    assert store.sealed_notes() == {1: (note, ("hospital-a",))}
    assert (tmp_path / CHECKPOINT_FILE).read_text() == note


def test_the_log_an_earlier_store_kept_in_mongo_is_dropped(database: None, tmp_path: Path) -> None:
    db = BlockDoc._get_db()
    db["tiles"].insert_one({"_id": "0/0", "level": 0, "index": 0, "width": 1, "data": b"x"})
    db["entry_bundles_000000"].insert_one({"_id": "000000000000", "data": b"x"})
    BlockDoc._get_collection().insert_one(
        {
            "_id": "000000000001",
            "height": 1,
            "tree_size": 1,
            "checkpoint": "text",
            "cut_offset": 0,
            "tail_first": 0,
            "tail": b"\x00\x00\x00\x01x",
            "partial_tiles": [{"level": 0, "index": 0, "width": 1, "data": b"h" * 32}],
        }
    )
    store = ChainStore(TileStore(tmp_path))
    assert [b.tree_size for b in store.blocks()] == [1]  # old block documents still load
    assert store.legacy_log_collections() == ["entry_bundles_000000", "tiles"]
    assert store.drop_legacy_log() == ["entry_bundles_000000", "tiles"]
    assert store.legacy_log_collections() == []
    (document,) = BlockDoc._get_collection().find()
    assert set(document) == {"_id", "height", "tree_size", "checkpoint", "cut_offset"}
