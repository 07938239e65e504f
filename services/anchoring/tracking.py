"""Following anchored versions until the log seals or rejects them, and keeping the deadline.

Every version this service stores is *watched* from its insert until it settles. The chain
watcher (:mod:`services.anchoring.chain_watch`) hands each newly sealed range of leaves to
:meth:`SealTracker.on_checkpoint`; a watched version whose leaf hash is in it is sealed there.
Versions still unsealed at their promised deadline are reported by
:meth:`SealTracker.miss_deadlines` (SealDeadlineMissed, once, all in one write: a batch of
10,000 that is late costs one update per chunk, not one per version) and stay watched: a
RecordSealed follows if they are sealed later. A rejected entry never appears in a checkpoint,
so the watcher asks the log about late versions, a few at a time and each at most every
:data:`PROBE_INTERVAL` (:meth:`SealTracker.to_probe`), and reports a rejection with
:meth:`SealTracker.on_rejected` (RecordRejected, settled). Seals are only ever recorded from
checkpoints, each checkpoint's in one write (an inclusion proof a client asked for,
:meth:`SealTracker.seal`, only stops the deadline clock until then).

Event ids derive from the entry id and what happened, so an event published twice (two
replicas, a restart) is absorbed by idempotent consumers. Nothing here does I/O except through
the store; time is passed in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from google.protobuf.message import Message

from services.anchoring.domain import PRODUCER, RecordVersion, event_id
from services.platform.events import envelope
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2
from swiftchain.events.v1 import events_pb2

#: How long after asking the log about a late version it is asked again.
PROBE_INTERVAL = timedelta(seconds=5)


class TrackingStore(Protocol):
    """What the tracker needs from storage (services/anchoring/store.py)."""

    def set_log_state(
        self, versions: Sequence[RecordVersion], events: Sequence[events_pb2.EventEnvelope]
    ) -> None:
        """Store each version's seal, rejection or missed deadline as the version now holds
        them, with ``events`` (one write per chunk)."""

    def unsettled(self) -> list[RecordVersion]:
        """Versions neither sealed nor rejected."""

    def log_position(self) -> int:
        """The tree size up to which sealed leaves were looked at (0 at first)."""

    def set_log_position(self, tree_size: int) -> None:
        """Remember that the leaves below ``tree_size`` were looked at."""


def _event(
    version: RecordVersion, payload: Message, what: str, now: datetime
) -> events_pb2.EventEnvelope:
    return envelope(
        payload,
        producer=PRODUCER,
        subject=version.organization_id,
        now=now,
        event_id=event_id(version.entry_id, what),
    )


class SealTracker:
    """See the module docstring. Thread-safe: gRPC handlers and the watcher share it."""

    def __init__(
        self, store: TrackingStore, on_missed: Callable[[RecordVersion], None] = lambda _: None
    ) -> None:
        self._store = store
        self._on_missed = on_missed
        self._lock = threading.Lock()
        self._watched: dict[bytes, RecordVersion] = {}
        #: Leaves sealed before Kafka's acknowledgement was recorded: leaf hash -> (index, size).
        self._early: dict[bytes, tuple[int, int]] = {}
        #: Late versions: leaf hash -> when the log may next be asked about it.
        self._next_probe: dict[bytes, datetime] = {}

    def resume(self) -> int:
        """Watch the stored unsettled versions again; the tree size to continue from."""
        with self._lock:
            for version in self._store.unsettled():
                self._watched[version.leaf_hash] = version
                if version.deadline_missed:
                    self._next_probe[version.leaf_hash] = version.seal_due_time
        return self._store.log_position()

    def watch(self, versions: Sequence[RecordVersion]) -> None:
        """Follow newly stored versions (before they are sent for ordering)."""
        with self._lock:
            for version in versions:
                self._watched.setdefault(version.leaf_hash, version)

    @property
    def watched(self) -> int:
        """How many versions are neither sealed nor rejected."""
        with self._lock:
            return len(self._watched)

    def store_position(self, tree_size: int) -> None:
        """Remember that the sealed leaves below ``tree_size`` were handed over."""
        self._store.set_log_position(tree_size)

    def ordered(self, versions: Sequence[RecordVersion], now: datetime) -> None:
        """Kafka's acknowledgement of ``versions`` is stored: seal those already seen sealed
        (all in one write)."""
        sealed: list[RecordVersion] = []
        with self._lock:
            for version in versions:
                place = self._early.pop(version.leaf_hash, None)
                if place is None or self._watched.pop(version.leaf_hash, None) is None:
                    continue
                self._next_probe.pop(version.leaf_hash, None)
                self._mark_sealed(version, *place, now)
                sealed.append(version)
        if sealed:
            self._store.set_log_state(sealed, [self._sealed_event(v, now) for v in sealed])

    def on_checkpoint(
        self, start: int, leaf_hashes: Sequence[bytes], tree_size: int, now: datetime
    ) -> list[RecordVersion]:
        """Leaves ``start``.. (their hashes) are sealed by the checkpoint of ``tree_size``;
        return the watched versions this seals."""
        sealed: list[RecordVersion] = []
        with self._lock:
            for offset, leaf_hash in enumerate(leaf_hashes):
                version = self._watched.get(leaf_hash)
                if version is None:
                    continue
                if version.ordering_offset is None:
                    self._early[leaf_hash] = (start + offset, tree_size)
                    continue
                del self._watched[leaf_hash]
                self._next_probe.pop(leaf_hash, None)
                self._mark_sealed(version, start + offset, tree_size, now)
                sealed.append(version)
        self._store.set_log_state(sealed, [self._sealed_event(v, now) for v in sealed])
        return sealed

    def seal(
        self, version: RecordVersion, leaf_index: int, tree_size: int, now: datetime
    ) -> RecordVersion:
        """An inclusion proof a client asked for says that the checkpoint of ``tree_size``
        seals ``version`` at ``leaf_index``: return it marked so. Nothing is written here: a
        watched version is recorded, with its RecordSealed event, by :meth:`on_checkpoint`
        when the watcher reads that range (one write per checkpoint, where a write per
        receipt queued every reader behind the chunk's lock); until then its deadline no
        longer counts and the log is not asked about it."""
        with self._lock:
            watched = self._watched.get(version.leaf_hash)
            self._next_probe.pop(version.leaf_hash, None)
            if watched is not None and watched.sealed_tree_size is None:
                self._mark_sealed(watched, leaf_index, tree_size, now)
        if version.sealed_tree_size is None:
            self._mark_sealed(version, leaf_index, tree_size, now)
        return version

    def miss_deadlines(self, now: datetime) -> list[RecordVersion]:
        """Report every watched version past its deadline and not reported yet: one
        SealDeadlineMissed each, stored in one write; returns them, oldest deadline first."""
        with self._lock:
            late = [
                v
                for v in self._watched.values()
                if v.seal_due_time <= now and not v.deadline_missed and v.sealed_tree_size is None
            ]
            for version in late:
                version.deadline_missed = True
                self._next_probe[version.leaf_hash] = now
        if not late:
            return []
        late.sort(key=lambda v: v.seal_due_time)
        self._store.set_log_state(late, [self._missed_event(v, now) for v in late])
        for version in late:
            self._on_missed(version)
        return late

    def to_probe(self, now: datetime, limit: int) -> list[RecordVersion]:
        """Up to ``limit`` late versions to ask the log about, the longest unasked first; each
        is not offered again for :data:`PROBE_INTERVAL`."""
        with self._lock:
            due = sorted((when, leaf) for leaf, when in self._next_probe.items() if when <= now)[
                :limit
            ]
            chosen = []
            for _, leaf in due:
                version = self._watched.get(leaf)
                if version is None:
                    del self._next_probe[leaf]
                    continue
                self._next_probe[leaf] = now + PROBE_INTERVAL
                chosen.append(version)
        return chosen

    def on_rejected(
        self, version: RecordVersion, rejection_reason: int, rejection_detail: str, now: datetime
    ) -> None:
        """The log rejected a late version (``rejection_reason`` a ``RejectionReason``): settle
        it with a RecordRejected event. (A late version the log sealed needs nothing here: the
        checkpoint follower records it when it reads that range.)"""
        with self._lock:
            self._next_probe.pop(version.leaf_hash, None)
            if self._watched.pop(version.leaf_hash, None) is None:
                return
        version.rejection_reason = entry_pb2.RejectionReason.Name(rejection_reason)  # type: ignore[arg-type]
        version.rejection_detail = rejection_detail
        rejected = events_pb2.RecordRejected(
            organization_id=version.organization_id,
            record_id=version.record_id,
            version=version.version,
            entry_id=version.entry_id,
            rejection_reason=rejection_reason,  # type: ignore[arg-type]
            rejection_detail=rejection_detail,
        )
        self._store.set_log_state([version], [_event(version, rejected, "rejected", now)])

    @staticmethod
    def _missed_event(version: RecordVersion, now: datetime) -> events_pb2.EventEnvelope:
        missed = events_pb2.SealDeadlineMissed(
            organization_id=version.organization_id,
            record_id=version.record_id,
            version=version.version,
            entry_id=version.entry_id,
            state=common_pb2.ENTRY_STATE_PENDING,
        )
        missed.seal_due_time.FromDatetime(version.seal_due_time)
        return _event(version, missed, "deadline-missed", now)

    @staticmethod
    def _mark_sealed(
        version: RecordVersion, leaf_index: int, tree_size: int, now: datetime
    ) -> None:
        version.leaf_index, version.sealed_tree_size, version.sealed_time = (
            leaf_index,
            tree_size,
            now,
        )

    @staticmethod
    def _sealed_event(version: RecordVersion, now: datetime) -> events_pb2.EventEnvelope:
        assert version.leaf_index is not None and version.sealed_tree_size is not None
        sealed = events_pb2.RecordSealed(
            organization_id=version.organization_id,
            record_id=version.record_id,
            version=version.version,
            entry_id=version.entry_id,
            leaf_index=version.leaf_index,
            tree_size=version.sealed_tree_size,
        )
        sealed.sealed_time.FromDatetime(now)
        return _event(version, sealed, "sealed", now)
