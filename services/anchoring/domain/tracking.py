"""Following anchored versions until the log seals or rejects them, and keeping the deadline.

Every version this service stores is *watched* from its insert until it settles. The platform's
log writer follows sealed checkpoints and reports each entry's fate: :meth:`SealTracker.on_sealed`
records the versions a checkpoint seals (one write per chunk, whatever their number) and
:meth:`SealTracker.on_rejected` those the log left out (RecordRejected, settled). Versions
still unsealed at their promised deadline are reported by :meth:`SealTracker.miss_deadlines`
(SealDeadlineMissed, once, all in one write: a batch of 10,000 that is late costs one update per
chunk, not one per version) and stay watched: a RecordSealed follows if they are sealed later.
An inclusion proof a client asked for (:meth:`SealTracker.seal`) only stops the deadline clock
until the writer reports that seal.

Event ids derive from the entry id and what happened, so an event published twice (two
replicas, a restart) is absorbed by idempotent consumers. Nothing here does I/O except through
the store; time is passed in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from google.protobuf.message import Message

from services.anchoring.domain import PRODUCER, RecordVersion, event_id
from services.platform.events import envelope
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2
from swiftchain.events.v1 import events_pb2


class TrackingStore(Protocol):
    """What the tracker needs from storage (services/anchoring/store.py)."""

    def set_log_state(
        self, versions: Sequence[RecordVersion], events: Sequence[events_pb2.EventEnvelope]
    ) -> None:
        """Store each version's seal, rejection or missed deadline as the version now holds
        them, with ``events`` (one write per chunk)."""

    def unsettled(self) -> list[RecordVersion]:
        """Versions neither sealed nor rejected."""


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
        self._watched: dict[str, RecordVersion] = {}

    def resume(self) -> list[RecordVersion]:
        """Watch the stored unsettled versions again, and return them (for the log writer to
        follow)."""
        with self._lock:
            unsettled = self._store.unsettled()
            for version in unsettled:
                self._watched[version.entry_id] = version
        return unsettled

    def watch(self, versions: Sequence[RecordVersion]) -> None:
        """Follow newly stored versions (before they are sent for ordering)."""
        with self._lock:
            for version in versions:
                self._watched.setdefault(version.entry_id, version)

    @property
    def watched(self) -> int:
        """How many versions are neither sealed nor rejected."""
        with self._lock:
            return len(self._watched)

    def on_sealed(
        self, sealed: Sequence[tuple[str, int, int]], now: datetime
    ) -> list[RecordVersion]:
        """The log writer's report: entries (entry id, leaf index, tree size) are sealed;
        record the watched versions among them, in one write, and return them."""
        done: list[RecordVersion] = []
        with self._lock:
            for entry_id, leaf_index, tree_size in sealed:
                version = self._watched.get(entry_id)
                if version is not None:
                    self._mark_sealed(version, leaf_index, tree_size, now)
                    done.append(version)
        if not done:
            return []
        # Settled only once stored: if the store fails, the writer reports them again.
        self._store.set_log_state(done, [self._sealed_event(v, now) for v in done])
        with self._lock:
            for version in done:
                self._watched.pop(version.entry_id, None)
        return done

    def seal(
        self, version: RecordVersion, leaf_index: int, tree_size: int, now: datetime
    ) -> RecordVersion:
        """An inclusion proof a client asked for says that the checkpoint of ``tree_size``
        seals ``version`` at ``leaf_index``: return it marked so. Nothing is written here: a
        watched version is recorded, with its RecordSealed event, by :meth:`on_sealed` when
        the log writer reports that checkpoint (one write per checkpoint, where a write per
        receipt queued every reader behind the chunk's lock); until then its deadline no
        longer counts."""
        with self._lock:
            watched = self._watched.get(version.entry_id)
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
        if not late:
            return []
        late.sort(key=lambda v: v.seal_due_time)
        self._store.set_log_state(late, [self._missed_event(v, now) for v in late])
        for version in late:
            self._on_missed(version)
        return late

    def on_rejected(
        self, entry_id: str, rejection_reason: int, rejection_detail: str, now: datetime
    ) -> RecordVersion | None:
        """The log writer's report: the log rejected entry ``entry_id`` (``rejection_reason``
        a ``RejectionReason``). Settle its version, if watched, with a RecordRejected event and
        return it."""
        with self._lock:
            version = self._watched.get(entry_id)
        if version is None:
            return None
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
        with self._lock:
            self._watched.pop(entry_id, None)
        return version

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
