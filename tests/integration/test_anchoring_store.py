"""The anchoring store (services/anchoring/store.py) under the domain and the seal tracker, on
the real FerretDB: idempotent inserts under concurrency, chunk facts, outbox events, restart."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from services.anchoring.domain import RecordAnchoring, RecordVersion
from services.anchoring.domain.tracking import SealTracker
from services.anchoring.store import ALIAS, ChunkDoc, VersionStore
from services.platform import mongo
from services.platform.caller import Caller, Role
from services.platform.events import decode
from services.platform.kafka import make_producer
from services.platform.outbox import RELAY_BATCH, OutboxRelay
from services.platform.topics import RECORDS_EVENTS_TOPIC
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2
from tests.unit.anchoring.fakes import NOW, TAG_KEY, drafts, known_keys, request, sdk

pytestmark = pytest.mark.integration
HOSPITAL = Caller(Role.HOSPITAL, "hospital-a")


@pytest.fixture
def store(mongo_uri: str) -> Iterator[VersionStore]:
    mongo.connect(mongo_uri, f"anchoring_test_{uuid.uuid4().hex[:8]}", alias=ALIAS)
    yield VersionStore()
    mongo.disconnect(ALIAS)


def anchor(store: VersionStore, count: int, record_id: str) -> list[RecordVersion]:
    anchoring = RecordAnchoring(store, known_keys(), TAG_KEY)
    signed = [request(r) for r in sdk().sign(drafts(count, record_id))]
    outcomes = anchoring.anchor("hospital-a", signed, NOW)
    assert all(o.error is None for o in outcomes), [str(o.error) for o in outcomes]
    return [o.anchored for o in outcomes if o.anchored]


def outbox_types() -> list[str]:
    types: list[str] = []
    for chunk in ChunkDoc._get_collection().find({}, {"outbox": 1}):
        types.extend(decode(bytes(raw)).type.rsplit(".", 1)[1] for raw in chunk["outbox"])
    return sorted(types)


def test_a_record_goes_from_anchored_to_sealed_with_its_events(store: VersionStore) -> None:
    anchoring = RecordAnchoring(store, known_keys(), TAG_KEY)
    tracker = SealTracker(store)
    versions = anchor(store, 3, "rec-1")
    tracker.watch(versions)
    for offset, version in enumerate(versions):
        version.ordering_offset = 100 + offset
    anchoring.ordered(versions, NOW)
    sealed = tracker.on_sealed([(v.entry_id, 7 + i, 9) for i, v in enumerate(versions[:2])], NOW)
    assert len(sealed) == 2
    tracker.on_rejected(
        versions[2].entry_id, entry_pb2.REJECTION_REASON_KEY_NOT_VALID, "revoked", NOW
    )
    stored = anchoring.versions(HOSPITAL, "hospital-a", "rec-1")
    assert [v.ordering_offset for v in stored] == [100, 101, 102]
    assert [(v.leaf_index, v.sealed_tree_size) for v in stored[:2]] == [(7, 9), (8, 9)]
    assert [v.state for v in stored] == [
        common_pb2.ENTRY_STATE_SEALED,
        common_pb2.ENTRY_STATE_SEALED,
        common_pb2.ENTRY_STATE_REJECTED,
    ]
    assert stored[2].rejection_reason == "REJECTION_REASON_KEY_NOT_VALID"
    by_entry = store.by_entry(versions[1].entry_id)
    assert by_entry is not None and by_entry.sealed_tree_size == 9
    assert outbox_types() == ["RecordAnchored"] * 3 + ["RecordRejected"] + ["RecordSealed"] * 2
    # Every version settled: nothing is watched after a restart, and the chunk says so.
    assert store.unsettled() == []
    assert ChunkDoc._get_collection().find_one({"_id": versions[0].chunk_id})["settled"] is True


def test_a_restart_watches_the_unsettled_versions_again(
    store: VersionStore,
) -> None:
    tracker = SealTracker(store)
    versions = anchor(store, 2, "rec-2")
    tracker.watch(versions)
    for offset, version in enumerate(versions):
        version.ordering_offset = offset
    RecordAnchoring(store, known_keys(), TAG_KEY).ordered(versions, NOW)
    tracker.on_sealed([(versions[0].entry_id, 0, 1)], NOW)
    assert tracker.miss_deadlines(NOW + timedelta(seconds=6)) == [versions[1]]
    store.set_log_position(1)  # as the log writer does after that checkpoint
    restarted = SealTracker(store)
    assert [v.entry_id for v in restarted.resume()] == [versions[1].entry_id]
    assert store.log_position() == 1
    [unsettled] = store.unsettled()
    assert unsettled.entry_id == versions[1].entry_id and unsettled.deadline_missed
    assert restarted.miss_deadlines(NOW.replace(year=2027)) == []  # its miss was reported already
    [sealed] = restarted.on_sealed([(versions[1].entry_id, 1, 2)], NOW)
    assert sealed.sealed_tree_size == 2


def test_concurrent_anchors_of_the_same_versions_store_one_each(store: VersionStore) -> None:
    signed = [request(r) for r in sdk().sign(drafts(20, "rec-3"))]

    def anchor_all(_: int) -> list[str]:
        outcomes = RecordAnchoring(store, known_keys(), TAG_KEY).anchor("hospital-a", signed, NOW)
        assert all(o.error is None for o in outcomes), [str(o.error) for o in outcomes]
        return [o.anchored.entry_id for o in outcomes if o.anchored]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(anchor_all, range(4)))
    assert all(result == results[0] for result in results)
    assert len(store.of_record("hospital-a", "rec-3")) == 20


def test_a_resent_chunk_returns_the_stored_versions_and_leaves_no_chunk_to_order(
    store: VersionStore,
) -> None:
    signed = [request(r) for r in sdk().sign(drafts(3, "rec-4"))]
    anchoring = RecordAnchoring(store, known_keys(), TAG_KEY)
    first = [o.anchored for o in anchoring.anchor("hospital-a", signed, NOW) if o.anchored]
    for offset, version in enumerate(first):
        version.ordering_offset = offset
    anchoring.ordered(first, NOW)

    again = anchoring.anchor("hospital-a", signed, NOW)

    assert [o.error for o in again] == [None] * 3
    assert [o.created for o in again] == [False] * 3
    assert [o.anchored.entry_id for o in again if o.anchored] == [v.entry_id for v in first]
    assert ChunkDoc._get_collection().count_documents({}) == 1  # the resend's chunk is gone
    assert store.unordered(NOW + timedelta(days=1)) == []


def test_seals_recorded_while_the_relay_empties_the_outbox_are_all_kept_and_published(
    store: VersionStore, kafka_bootstrap: str
) -> None:
    """The checkpoint follower records seals in a chunk's document while the outbox relay
    removes the events it published from that same document. FerretDB v1 runs an update as a
    read and then a write of the whole document, so two overlapping updates of one document
    keep only the later one's view: here that lost seals and their RecordSealed events (43 of
    200 in one run before each update of a chunk held its document lock)."""
    anchoring = RecordAnchoring(store, known_keys(), TAG_KEY)
    tracker = SealTracker(store)
    versions = anchor(store, 200, "rec-5")
    tracker.watch(versions)
    for offset, version in enumerate(versions):
        version.ordering_offset = offset
    anchoring.ordered(versions, NOW)
    producer = make_producer(kafka_bootstrap, "anchoring-outbox-test")
    relay = OutboxRelay(producer, RECORDS_EVENTS_TOPIC, [ChunkDoc])
    published: list[int] = []
    sealing_done = threading.Event()

    def relay_until_done() -> None:
        while not sealing_done.is_set():
            published.append(relay.publish_pending())

    relaying = threading.Thread(target=relay_until_done)
    relaying.start()
    try:
        for index, version in enumerate(versions):  # one checkpoint per leaf: 200 updates
            assert tracker.on_sealed([(version.entry_id, index, index + 1)], NOW) == [version]
    finally:
        sealing_done.set()
        relaying.join()
    published.append(relay.publish_pending())
    producer.close()
    stored = store.of_record("hospital-a", "rec-5")
    unsealed = [v.entry_id for v in stored if v.state != common_pb2.ENTRY_STATE_SEALED]
    assert unsealed == [], f"{len(unsealed)} of 200 seals were lost"
    assert store.unsettled() == []
    assert outbox_types() == []
    assert sum(published) == 400  # a RecordAnchored and a RecordSealed per version


def test_the_relay_publishes_many_documents_per_kafka_flush(
    store: VersionStore, kafka_bootstrap: str
) -> None:
    """Single-version anchors make one chunk document each; the relay sends the events of up to
    RELAY_BATCH documents before it waits for Kafka once (a flush per document made 1,000
    one-version chunks take over a minute to announce)."""
    anchoring = RecordAnchoring(store, known_keys(), TAG_KEY)
    count = RELAY_BATCH + 20
    for offset in range(count):
        versions = anchor(store, 1, f"single-{offset}")
        versions[0].ordering_offset = offset
        anchoring.ordered(versions, NOW)
    producer = make_producer(kafka_bootstrap, "anchoring-outbox-batch-test")
    flushes: list[int] = []
    flush = producer.flush

    def counting_flush(timeout: float | None = None) -> None:
        flushes.append(1)
        flush(timeout=timeout)

    producer.flush = counting_flush
    relay = OutboxRelay(producer, RECORDS_EVENTS_TOPIC, [ChunkDoc])
    assert relay.publish_pending() == count  # one RecordAnchored per version
    assert len(flushes) == 2
    assert relay.publish_pending() == 0
    assert outbox_types() == []
    assert ChunkDoc.objects(outbox_pending=True).count() == 0
    producer.close()


def test_settled_versions_are_read_by_entry_id_from_memory(store: VersionStore) -> None:
    tracker = SealTracker(store)
    versions = anchor(store, 3, "rec-cached")
    tracker.watch(versions)
    for offset, version in enumerate(versions):
        version.ordering_offset = 200 + offset
    RecordAnchoring(store, known_keys(), TAG_KEY).ordered(versions, NOW)
    tracker.on_sealed([(versions[0].entry_id, 20, 21)], NOW)
    tracker.on_rejected(
        versions[1].entry_id, entry_pb2.REJECTION_REASON_KEY_NOT_VALID, "revoked", NOW
    )
    # Another replica's store reads what this one recorded, once, from the database.
    replica = VersionStore()
    loaded = replica.by_entry(versions[0].entry_id)
    assert loaded is not None and (loaded.leaf_index, loaded.sealed_tree_size) == (20, 21)
    ChunkDoc._get_collection().delete_many({})  # from here on only memory can answer
    for reader in (store, replica):
        sealed = reader.by_entry(versions[0].entry_id)
        assert sealed is not None and (sealed.leaf_index, sealed.sealed_tree_size) == (20, 21)
        assert sealed.ordering_offset == 200
    rejected = store.by_entry(versions[1].entry_id)
    assert rejected is not None and rejected.state == common_pb2.ENTRY_STATE_REJECTED
    # Not settled: read from the database every time, so it is never stale (its chunk's
    # facts are gone now, so it reads as not even ordered).
    pending = store.by_entry(versions[2].entry_id)
    assert pending is not None and pending.ordering_offset is None
    # A copy each time: what a caller changes is not what the next one reads.
    first = store.by_entry(versions[0].entry_id)
    assert first is not None
    first.sealed_tree_size = 99
    again = store.by_entry(versions[0].entry_id)
    assert again is not None and again.sealed_tree_size == 21


def test_without_a_settled_cache_every_read_goes_to_the_database(mongo_uri: str) -> None:
    with pytest.raises(ValueError, match="expected a settled-version cache size >= 0, got -1"):
        VersionStore(settled_cache_size=-1)
    mongo.connect(mongo_uri, f"anchoring_test_{uuid.uuid4().hex[:8]}", alias=ALIAS)
    try:
        store = VersionStore(settled_cache_size=0)
        tracker = SealTracker(store)
        [version] = anchor(store, 1, "rec-uncached")
        tracker.watch([version])
        version.ordering_offset = 5
        RecordAnchoring(store, known_keys(), TAG_KEY).ordered([version], NOW)
        tracker.on_sealed([(version.entry_id, 0, 1)], NOW)
        ChunkDoc._get_collection().delete_many({})
        loaded = store.by_entry(version.entry_id)
        assert loaded is not None and loaded.sealed_tree_size is None
    finally:
        mongo.disconnect(ALIAS)


def test_the_relay_reads_marked_chunks_each_tick_and_the_rest_at_its_sweep(
    store: VersionStore, kafka_bootstrap: str
) -> None:
    """FerretDB v1 answers ``{"outbox_pending": true}`` by decoding every chunk document, so
    the store marks the chunks it gives events and a tick of the relay reads only those; events
    that nobody marked (a previous process's) wait for the sweep."""
    anchoring = RecordAnchoring(store, known_keys(), TAG_KEY)
    versions = anchor(store, 3, "rec-marked")
    for offset, version in enumerate(versions):
        version.ordering_offset = offset
    anchoring.ordered(versions, NOW)  # three RecordAnchored events, in a marked chunk
    left = anchor(store, 2, "rec-unmarked")
    event = decode(ChunkDoc._get_collection().find_one({"_id": versions[0].chunk_id})["outbox"][0])
    ChunkDoc._get_collection().update_one(  # as a process that stopped before publishing would
        {"_id": left[0].chunk_id},
        {"$push": {"outbox": event.SerializeToString()}, "$set": {"outbox_pending": True}},
    )
    producer = make_producer(kafka_bootstrap, "anchoring-outbox-mark-test")
    relay = OutboxRelay(producer, RECORDS_EVENTS_TOPIC, [ChunkDoc], sweep_seconds=60)
    assert relay.publish_marked() == 3
    assert relay.publish_marked() == 0  # marks are used once
    assert ChunkDoc.objects(outbox_pending=True).count() == 1
    assert relay.publish_pending() == 1  # the sweep finds the unmarked one
    assert outbox_types() == []
    producer.close()
