"""The anchoring store (services/anchoring/store.py) on the real FerretDB, which decodes a whole
chunk document (a few hundred KB) on every read of it and every document of a collection for
any filter but one ``_id``: it does not read back what it wrote itself. Finding what Kafka never
acknowledged reads chunk documents only at the store's sweeps and never the versions of chunks
being ordered; recording orders and seals reads no chunk document of its own, only one that a
previous process stored."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta

import mongoengine
import pytest
from pymongo import monitoring

from services.anchoring.domain import AnchorRequest, RecordAnchoring, RecordVersion
from services.anchoring.domain.tracking import SealTracker
from services.anchoring.store import ALIAS, ChunkDoc, VersionStore
from services.platform import mongo
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2
from tests.unit.anchoring.fakes import NOW, TAG_KEY, drafts, known_keys, request, sdk

pytestmark = pytest.mark.integration
LATER = NOW + timedelta(days=1)


class Commands(monitoring.CommandListener):
    """The commands a client sent, as (command name, collection, the fields of its filter)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, tuple[str, ...]]] = []
        self._lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        target = event.command.get(event.command_name)
        fields = tuple(sorted(event.command.get("filter") or {}))
        with self._lock:
            self.sent.append(
                (event.command_name, target if isinstance(target, str) else "", fields)
            )

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def reads_of(self, collection: str) -> int:
        """How many find commands went to ``collection``."""
        with self._lock:
            return sum(1 for name, target, _ in self.sent if (name, target) == ("find", collection))

    def scans_of(self, collection: str) -> int:
        """How many find commands went to ``collection`` with a filter other than one ``_id``
        (FerretDB v1 decodes every document of the collection for them)."""
        with self._lock:
            return sum(
                1
                for name, target, fields in self.sent
                if (name, target) == ("find", collection) and fields != ("_id",)
            )

    def clear(self) -> None:
        with self._lock:
            self.sent.clear()


@pytest.fixture
def commands(mongo_uri: str) -> Iterator[Commands]:
    """The anchoring alias on a fresh database, every command it sends recorded."""
    listener = Commands()
    mongoengine.disconnect(alias=ALIAS)
    mongoengine.connect(
        db=f"anchoring_test_{uuid.uuid4().hex[:8]}",
        host=mongo_uri,
        alias=ALIAS,
        uuidRepresentation="standard",
        tz_aware=True,
        event_listeners=[listener],
    )
    yield listener
    mongo.disconnect(ALIAS)


def anchor(
    store: VersionStore, count: int, record_id: str, signed: list[AnchorRequest] | None = None
) -> list[RecordVersion]:
    """``count`` new versions of ``record_id`` (or the ``signed`` ones), stored as one chunk
    and not ordered."""
    signed = signed or [request(r) for r in sdk().sign(drafts(count, record_id))]
    outcomes = RecordAnchoring(store, known_keys(), TAG_KEY).anchor("hospital-a", signed, NOW)
    assert all(o.error is None for o in outcomes), [str(o.error) for o in outcomes]
    return [o.anchored for o in outcomes if o.anchored]


def order(store: VersionStore, versions: list[RecordVersion], first_offset: int) -> None:
    """Record ``versions`` as Kafka ordered them (what the servicer does on the ack)."""
    for offset, version in enumerate(versions, start=first_offset):
        version.ordering_offset = offset
    RecordAnchoring(store, known_keys(), TAG_KEY).ordered(versions, NOW)


def entry_ids(versions: list[RecordVersion]) -> list[str]:
    return sorted(v.entry_id for v in versions)


def test_between_sweeps_no_chunk_document_is_read(commands: Commands) -> None:
    left_behind = anchor(VersionStore(), 2, "rec-previous")  # by a process that then stopped
    store = VersionStore(unordered_sweep_seconds=3600)
    mine = anchor(store, 3, "rec-mine")
    ordered = anchor(store, 2, "rec-ordered")
    order(store, ordered, 0)

    # The first look reads every chunk: what a previous process left is found.
    first = store.unordered(LATER)
    assert entry_ids(first) == entry_ids(left_behind + mine)
    assert commands.scans_of("chunks") == 1

    commands.clear()
    order(store, left_behind, 10)  # its version ids known from the sweep: not read again
    assert commands.reads_of("chunks") == 0
    newer = anchor(store, 1, "rec-newer")
    again = store.unordered(LATER)
    assert entry_ids(again) == entry_ids(mine + newer)
    assert store.unordered(NOW - timedelta(seconds=1)) == []  # stored before that: none
    # No scan between sweeps; the facts of the two chunks found are read by _id.
    assert commands.scans_of("chunks") == 0
    assert commands.reads_of("chunks") == 2


def test_the_versions_of_chunks_being_ordered_are_not_read(commands: Commands) -> None:
    store = VersionStore()
    in_kafka = anchor(store, 3, "rec-in-kafka")
    waiting = anchor(store, 2, "rec-waiting")
    store.unordered(LATER)  # the sweep

    commands.clear()
    found = store.unordered(LATER, leave_out={in_kafka[0].chunk_id})

    assert entry_ids(found) == entry_ids(waiting)
    assert commands.reads_of("record_versions") == 2  # one point read per version left
    commands.clear()
    assert store.unordered(LATER, leave_out={v.chunk_id for v in in_kafka + waiting}) == []
    assert commands.sent == []


def test_a_chunk_ordered_in_full_is_not_looked_at_again(commands: Commands) -> None:
    store = VersionStore()
    versions = anchor(store, 3, "rec-full")
    order(store, versions[:1], 0)  # one version first (a receipt ordered it): not complete
    assert entry_ids(store.unordered(LATER)) == entry_ids(versions[1:])
    order(store, versions, 0)  # all of them again, as a resend would: complete
    stored = ChunkDoc._get_collection().find_one({"_id": versions[0].chunk_id})
    assert stored["ordered"] is True

    commands.clear()
    assert store.unordered(LATER) == []
    assert commands.sent == []
    # A new store (a restarted process) finds nothing either, by its sweep.
    assert VersionStore().unordered(LATER) == []


def test_a_chunk_whose_versions_were_all_anchored_before_is_forgotten(commands: Commands) -> None:
    store = VersionStore()
    signed = [request(r) for r in sdk().sign(drafts(2, "rec-twice"))]
    first = anchor(store, 2, "rec-twice", signed)
    order(store, first, 0)
    again = anchor(store, 2, "rec-twice", signed)  # sent again: its chunk is deleted

    assert entry_ids(again) == entry_ids(first)
    assert ChunkDoc._get_collection().count_documents({}) == 1
    commands.clear()
    assert store.unordered(LATER) == []
    assert commands.reads_of("chunks") == 1  # the first look's sweep
    assert commands.reads_of("record_versions") == 0  # no chunk left to read versions of


def seal(tracker: SealTracker, versions: list[RecordVersion], first_leaf: int) -> None:
    """Report ``versions`` sealed at consecutive leaves (what the log writer does)."""
    size = first_leaf + len(versions)
    sealed = [(v.entry_id, first_leaf + i, size) for i, v in enumerate(versions)]
    assert len(tracker.on_sealed(sealed, NOW)) == len(versions)


def settled(chunk_id: str) -> bool:
    stored = ChunkDoc._get_collection().find_one({"_id": chunk_id}, {"settled": 1})
    return bool(stored["settled"])


def test_seals_are_recorded_without_reading_the_chunk(commands: Commands) -> None:
    store = VersionStore()
    versions = anchor(store, 4, "rec-sealed")
    order(store, versions, 0)
    tracker = SealTracker(store)
    tracker.watch(versions)
    commands.clear()

    seal(tracker, versions[:2], 0)
    tracker.on_rejected(versions[2].entry_id, entry_pb2.REJECTION_REASON_KEY_NOT_VALID, "no", NOW)
    assert tracker.miss_deadlines(NOW + timedelta(days=1)) == [versions[3]]
    assert commands.reads_of("chunks") == 0
    assert not settled(versions[0].chunk_id)  # one version is neither sealed nor rejected
    seal(tracker, versions[3:], 2)
    assert commands.reads_of("chunks") == 1  # the check above; the store read none
    assert settled(versions[0].chunk_id)
    assert [v.state for v in store.of_record("hospital-a", "rec-sealed")] == [
        common_pb2.ENTRY_STATE_SEALED,
        common_pb2.ENTRY_STATE_SEALED,
        common_pb2.ENTRY_STATE_REJECTED,
        common_pb2.ENTRY_STATE_SEALED,
    ]


def test_a_previous_processs_chunk_is_read_once_to_record_its_seals(commands: Commands) -> None:
    versions = anchor(VersionStore(), 3, "rec-earlier")
    earlier = VersionStore()
    order(earlier, versions, 0)
    first = SealTracker(earlier)
    first.watch(versions[:1])
    seal(first, versions[:1], 0)  # by the process before this one
    tracker = SealTracker(VersionStore())
    tracker.watch(versions[1:])
    commands.clear()

    seal(tracker, versions[1:2], 1)
    assert commands.reads_of("chunks") == 1  # what the previous process recorded
    assert not settled(versions[0].chunk_id)
    seal(tracker, versions[2:], 2)
    assert commands.reads_of("chunks") == 2  # the check above; the store did not read again
    assert settled(versions[0].chunk_id)
