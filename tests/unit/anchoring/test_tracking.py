"""The seal tracker (services/anchoring/tracking.py): seals from checkpoints, deadlines,
rejections, restarts; each event once, with an id derived from the entry."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest

from services.anchoring.domain import RecordAnchoring, RecordVersion, event_id
from services.anchoring.tracking import PROBE_INTERVAL, SealTracker
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2
from swiftchain.events.v1 import events_pb2
from tests.unit.anchoring.fakes import NOW, TAG_KEY, FakeStore, drafts, known_keys, request, sdk

LATER = NOW + timedelta(seconds=6)  # past the default 5 s deadline


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


def anchored(store: FakeStore, count: int = 1, record_id: str = "rec-1") -> list[RecordVersion]:
    anchoring = RecordAnchoring(store, known_keys(), TAG_KEY)
    signed = [request(r) for r in sdk().sign(drafts(count, record_id))]
    versions = [o.anchored for o in anchoring.anchor("hospital-a", signed, NOW) if o.anchored]
    assert len(versions) == count
    return versions


def ordered(store: FakeStore, tracker: SealTracker, versions: list[RecordVersion]) -> None:
    for offset, version in enumerate(versions):
        version.ordering_offset = offset
    store.set_ordered(versions, [])
    tracker.ordered(versions, NOW)


def kinds(store: FakeStore) -> list[str]:
    return [e.type.rsplit(".", 1)[1] for e in store.events]


def test_a_checkpoint_seals_the_watched_versions_in_it_once(store: FakeStore) -> None:
    tracker = SealTracker(store)
    versions = anchored(store, 2)
    tracker.watch(versions)
    ordered(store, tracker, versions)
    other = b"\x01" * 32  # someone else's leaf at index 10
    sealed = tracker.on_checkpoint(10, [other, versions[0].leaf_hash], 12, NOW)
    assert [v.entry_id for v in sealed] == [versions[0].entry_id]
    assert (sealed[0].leaf_index, sealed[0].sealed_tree_size) == (11, 12)
    assert tracker.watched == 1
    # The same leaves again, or a proof of the same seal, record nothing more.
    assert tracker.on_checkpoint(10, [other, versions[0].leaf_hash], 12, NOW) == []
    tracker.seal(versions[0], 11, 12, NOW)
    assert kinds(store) == ["RecordSealed"]
    event = store.events[0]
    assert event.event_id == event_id(versions[0].entry_id, "sealed")
    payload = events_pb2.RecordSealed()
    event.payload.Unpack(payload)
    assert (payload.leaf_index, payload.tree_size, payload.version) == (11, 12, 1)
    assert store.versions[versions[0].key].sealed_tree_size == 12


def test_a_proof_a_client_asked_for_writes_nothing_and_stops_the_deadline(
    store: FakeStore,
) -> None:
    tracker = SealTracker(store)
    [version] = anchored(store)
    tracker.watch([version])
    ordered(store, tracker, [version])
    writes = store.log_state_writes
    answered = tracker.seal(copy.copy(store.versions[version.key]), 4, 5, NOW)  # as loaded
    assert (answered.leaf_index, answered.sealed_tree_size) == (4, 5)
    assert store.log_state_writes == writes and store.events == []
    assert tracker.miss_deadlines(LATER) == [] and tracker.to_probe(LATER, 10) == []
    # The watcher reading that range records the seal, once, with its event.
    assert tracker.on_checkpoint(4, [version.leaf_hash], 6, LATER) == [version]
    assert kinds(store) == ["RecordSealed"] and tracker.watched == 0
    assert store.versions[version.key].sealed_tree_size == 6


def test_a_leaf_sealed_before_its_ordering_is_recorded_is_sealed_after_it(
    store: FakeStore,
) -> None:
    tracker = SealTracker(store)
    [version] = anchored(store)
    tracker.watch([version])
    assert tracker.on_checkpoint(0, [version.leaf_hash], 1, NOW) == []
    assert store.events == []
    ordered(store, tracker, [version])
    assert version.sealed_tree_size == 1 and version.leaf_index == 0
    assert kinds(store) == ["RecordSealed"] and tracker.watched == 0


def test_a_missed_deadline_is_reported_once_and_the_seal_still_follows(store: FakeStore) -> None:
    missed: list[RecordVersion] = []
    tracker = SealTracker(store, on_missed=missed.append)
    [version] = anchored(store)
    tracker.watch([version])
    ordered(store, tracker, [version])
    assert tracker.miss_deadlines(NOW) == []
    assert tracker.miss_deadlines(LATER) == [version]
    assert tracker.miss_deadlines(LATER) == [] and missed == [version]
    payload = events_pb2.SealDeadlineMissed()
    store.events[0].payload.Unpack(payload)
    assert payload.state == common_pb2.ENTRY_STATE_PENDING
    assert payload.seal_due_time.ToDatetime().replace(tzinfo=NOW.tzinfo) == version.seal_due_time
    assert store.versions[version.key].deadline_missed
    tracker.on_checkpoint(0, [version.leaf_hash], 1, LATER)
    assert kinds(store) == ["SealDeadlineMissed", "RecordSealed"]


def test_leaves_sealed_before_their_ordering_was_recorded_are_stored_in_one_write(
    store: FakeStore,
) -> None:
    tracker = SealTracker(store)
    versions = anchored(store, 30)
    tracker.watch(versions)
    assert tracker.on_checkpoint(0, [v.leaf_hash for v in versions], 30, NOW) == []
    writes = store.log_state_writes
    ordered(store, tracker, versions)
    assert store.log_state_writes == writes + 1
    assert kinds(store) == ["RecordSealed"] * 30 and tracker.watched == 0


def test_a_rejected_version_is_reported_and_settled(store: FakeStore) -> None:
    tracker = SealTracker(store)
    [version] = anchored(store)
    tracker.watch([version])
    ordered(store, tracker, [version])
    tracker.on_rejected(
        version,
        entry_pb2.REJECTION_REASON_KEY_NOT_VALID,
        "key hospital-a#1 was revoked at leaf 3",
        LATER,
    )
    assert tracker.watched == 0 and tracker.miss_deadlines(LATER) == []
    assert kinds(store) == ["RecordRejected"]
    stored = store.versions[version.key]
    assert stored.rejection_reason == "REJECTION_REASON_KEY_NOT_VALID"
    assert stored.state == common_pb2.ENTRY_STATE_REJECTED
    assert store.unsettled() == []


def test_after_a_restart_unsettled_versions_are_watched_from_the_stored_position(
    store: FakeStore,
) -> None:
    first = SealTracker(store)
    versions = anchored(store, 2)
    first.watch(versions)
    ordered(store, first, versions)
    first.on_checkpoint(0, [versions[0].leaf_hash], 1, NOW)
    first.store_position(1)
    restarted = SealTracker(store)
    assert restarted.resume() == 1
    assert restarted.watched == 1
    [sealed] = restarted.on_checkpoint(1, [versions[1].leaf_hash], 2, NOW)
    assert sealed.entry_id == versions[1].entry_id


def test_a_late_batch_is_reported_in_one_write_and_probed_a_few_at_a_time(
    store: FakeStore,
) -> None:
    tracker = SealTracker(store)
    versions = anchored(store, 50)
    for offset, version in enumerate(versions):
        version.seal_due_time = NOW + timedelta(milliseconds=len(versions) - offset)
    tracker.watch(versions)
    ordered(store, tracker, versions)
    writes = store.log_state_writes
    late = tracker.miss_deadlines(LATER)
    assert store.log_state_writes == writes + 1
    assert late[0] is versions[-1] and len(late) == 50
    assert kinds(store) == ["SealDeadlineMissed"] * 50
    first = tracker.to_probe(LATER, 20)
    assert len(first) == 20 and len(tracker.to_probe(LATER, 100)) == 30
    assert tracker.to_probe(LATER, 100) == []
    tracker.on_checkpoint(0, [first[0].leaf_hash], 1, LATER)
    again = tracker.to_probe(LATER + PROBE_INTERVAL, 100)
    assert len(again) == 49 and first[0] not in again
