"""chain/node/store.py on the real FerretDB: full entry bundles are kept decoded in memory, so
inclusion proofs of recent entries do not wait for a 150 KB document read each."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from chain.node.store import ALIAS, BUNDLE_SIZE, ChainStore, EntryBundleDoc
from services.platform import mongo


@pytest.fixture
def database(mongo_uri: str) -> Iterator[None]:
    mongo.connect(mongo_uri, f"chain_store_test_{uuid.uuid4().hex[:8]}", alias=ALIAS)
    yield
    EntryBundleDoc._get_db().client.drop_database(EntryBundleDoc._get_db().name)
    mongo.disconnect(ALIAS)


def _entries(count: int) -> list[bytes]:
    return [f"entry {i:06d} ".encode() * 40 for i in range(count)]


def _drop_stored_bundles() -> None:
    db = EntryBundleDoc._get_db()
    for name in db.list_collection_names():
        if name.startswith("entry_bundles_"):
            db.drop_collection(name)


def test_bundles_written_are_read_from_memory(database: None) -> None:
    entries = _entries(2 * BUNDLE_SIZE + 10)
    store = ChainStore()
    store.write_entries(0, entries)
    assert store.cached_bundles() == 2
    _drop_stored_bundles()  # what is read now can only come from memory
    assert store.read_entries(0, 2 * BUNDLE_SIZE + 10) == entries
    assert store.read_entries(BUNDLE_SIZE - 1, BUNDLE_SIZE + 1) == entries[BUNDLE_SIZE - 1 :][:2]


def test_a_bundle_read_from_the_database_is_kept(database: None) -> None:
    entries = _entries(BUNDLE_SIZE)
    ChainStore(bundle_cache_bytes=0).write_entries(0, entries)
    reader = ChainStore()  # a node restarted: the bundle is only in the database
    reader.restore_tail(BUNDLE_SIZE, [])
    assert reader.cached_bundles() == 0
    assert reader.read_entries(5, 6) == [entries[5]]
    _drop_stored_bundles()
    assert reader.read_entries(0, BUNDLE_SIZE) == entries


def test_without_a_cache_every_read_goes_to_the_database(database: None) -> None:
    entries = _entries(BUNDLE_SIZE)
    store = ChainStore(bundle_cache_bytes=0)
    store.write_entries(0, entries)
    assert store.read_entries(7, 8) == [entries[7]]
    _drop_stored_bundles()
    assert store.cached_bundles() == 0
    assert store.read_entries(7, 8) == []


def test_the_least_recently_used_bundle_is_evicted(database: None) -> None:
    entries = _entries(3 * BUNDLE_SIZE)
    bundle_bytes = sum(len(e) for e in entries[:BUNDLE_SIZE])
    store = ChainStore(bundle_cache_bytes=2 * bundle_bytes)
    store.write_entries(0, entries[:BUNDLE_SIZE])
    store.write_entries(BUNDLE_SIZE, entries[BUNDLE_SIZE : 2 * BUNDLE_SIZE])
    store.read_entries(0, 1)  # bundle 0 is now the most recently used
    store.write_entries(2 * BUNDLE_SIZE, entries[2 * BUNDLE_SIZE :])
    assert store.cached_bundles() == 2
    _drop_stored_bundles()
    assert store.read_entries(0, 1) == [entries[0]]
    assert store.read_entries(2 * BUNDLE_SIZE, 2 * BUNDLE_SIZE + 1) == [entries[2 * BUNDLE_SIZE]]
    assert store.read_entries(BUNDLE_SIZE, BUNDLE_SIZE + 1) == []  # bundle 1 was evicted


def test_a_negative_cache_size_is_refused() -> None:
    with pytest.raises(ValueError, match="expected a bundle cache size >= 0 bytes, got -1"):
        ChainStore(bundle_cache_bytes=-1)
