"""The seal tracker (services/anchoring/domain/tracking.py): seals and rejections as the log writer
reports them, deadlines, restarts; each event once, with an id derived from the entry."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest

from services.anchoring.domain import RecordAnchoring, RecordVersion, event_id
from services.anchoring.domain.tracking import SealTracker
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


def at(versions: list[RecordVersion], first_leaf: int, size: int) -> list[tuple[str, int, int]]:
    """The writer's report that ``versions`` are leaves ``first_leaf``.. of a tree of ``size``."""
    return [(v.entry_id, first_leaf + i, size) for i, v in enumerate(versions)]


def kinds(store: FakeStore) -> list[str]:
    return [e.type.rsplit(".", 1)[1] for e in store.events]


def test_a_checkpoint_seals_the_watched_versions_in_it_once(store: FakeStore) -> None:
    tracker = SealTracker(store)
    versions = anchored(store, 2)
    tracker.watch(versions)
    ordered(store, tracker, versions)
    report = [("someone-else", 10, 12), *at(versions[:1], 11, 12)]
    sealed = tracker.on_sealed(report, NOW)
    assert [v.entry_id for v in sealed] == [versions[0].entry_id]
    assert (sealed[0].leaf_index, sealed[0].sealed_tree_size) == (11, 12)
    assert tracker.watched == 1
    # The same report again, or a proof of the same seal, records nothing more.
    assert tracker.on_sealed(report, NOW) == []
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
    assert tracker.miss_deadlines(LATER) == []
    # The writer's report of that checkpoint records the seal, once, with its event.
    assert tracker.on_sealed(at([version], 4, 6), LATER) == [version]
    assert kinds(store) == ["RecordSealed"] and tracker.watched == 0
    assert store.versions[version.key].sealed_tree_size == 6


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
    tracker.on_sealed(at([version], 0, 1), LATER)
    assert kinds(store) == ["SealDeadlineMissed", "RecordSealed"]


def test_a_checkpoint_that_seals_many_versions_stores_them_in_one_write(
    store: FakeStore,
) -> None:
    tracker = SealTracker(store)
    versions = anchored(store, 30)
    tracker.watch(versions)
    ordered(store, tracker, versions)
    writes = store.log_state_writes
    assert len(tracker.on_sealed(at(versions, 0, 30), NOW)) == 30
    assert store.log_state_writes == writes + 1
    assert kinds(store) == ["RecordSealed"] * 30 and tracker.watched == 0


def test_a_seal_the_store_failed_to_record_is_recorded_when_reported_again(
    store: FakeStore,
) -> None:
    tracker = SealTracker(store)
    [version] = anchored(store)
    tracker.watch([version])
    ordered(store, tracker, [version])
    store.fail_next_log_state = True
    with pytest.raises(RuntimeError):
        tracker.on_sealed(at([version], 0, 1), NOW)
    assert tracker.watched == 1, "still watched: the writer reports it again"
    assert tracker.on_sealed(at([version], 0, 1), NOW) == [version]
    assert kinds(store) == ["RecordSealed"] and tracker.watched == 0


def test_a_rejected_version_is_reported_and_settled(store: FakeStore) -> None:
    tracker = SealTracker(store)
    [version] = anchored(store)
    tracker.watch([version])
    ordered(store, tracker, [version])
    tracker.on_rejected(
        version.entry_id,
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


def test_after_a_restart_the_unsettled_versions_are_watched_again(
    store: FakeStore,
) -> None:
    first = SealTracker(store)
    versions = anchored(store, 2)
    first.watch(versions)
    ordered(store, first, versions)
    first.on_sealed(at(versions[:1], 0, 1), NOW)
    restarted = SealTracker(store)
    assert [v.entry_id for v in restarted.resume()] == [versions[1].entry_id]
    assert restarted.watched == 1
    [sealed] = restarted.on_sealed(at(versions[1:], 1, 2), NOW)
    assert sealed.entry_id == versions[1].entry_id


def test_a_late_batch_is_reported_in_one_write(
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
    assert tracker.miss_deadlines(LATER) == [], "reported once"
    assert tracker.watched == 50, "late versions stay watched: a seal may follow"
