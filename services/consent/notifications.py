"""Notifications to patient apps: fan-out to live watchers, and a history for resuming.

Every decision and consent change passes through this process, so it delivers them directly,
the moment they are decided. Each patient's latest :data:`HISTORY_PER_PATIENT` notifications are
kept in memory, which lets a watcher resume after a notification id or replay from a start time.
They are also kept in the store once Kafka has what they announce (see sender.py), so after a
restart a patient's history is read back (``stored``) the first time someone watches it and
merged with what was published since; anything older is on ``access.events.v1`` and
``consent.events.v1``, which the audit service keeps.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime

from swiftchain.consent.v1 import consent_service_pb2 as pb

HISTORY_PER_PATIENT = 1000
#: A watcher that falls this far behind is dropped (its app reconnects and resumes).
WATCHER_BACKLOG = 10_000


class Notifications:
    """Per-patient history and live watchers (thread-safe)."""

    def __init__(self, stored: Callable[[str], list[pb.Notification]] = lambda patient: []) -> None:
        """``stored(patient)``: the patient's notifications kept before this process started
        (and maybe since), oldest first."""
        self._lock = threading.Lock()
        self._history: dict[str, deque[pb.Notification]] = {}
        self._watchers: dict[str, set[queue.Queue[pb.Notification | None]]] = {}
        self._stored = stored
        #: Patients whose stored history has been merged into memory.
        self._loaded: set[str] = set()

    def _load(self, patient: str) -> None:
        """Merge the stored history of ``patient`` into memory, once per process."""
        with self._lock:
            if patient in self._loaded:
                return
        stored = self._stored(patient)  # outside the lock: publishing never waits for it
        with self._lock:
            if patient in self._loaded:
                return
            recent = list(self._history.get(patient, ()))
            ids = {n.notification_id for n in recent}
            merged = [n for n in stored if n.notification_id not in ids] + recent
            merged.sort(key=lambda n: (n.time.seconds, n.time.nanos))
            self._history[patient] = deque(merged, maxlen=HISTORY_PER_PATIENT)
            self._loaded.add(patient)

    def publish(self, notification: pb.Notification) -> None:
        """Keep ``notification`` and deliver it to its patient's watchers."""
        patient = notification.patient_subject_id
        with self._lock:
            self._history.setdefault(patient, deque(maxlen=HISTORY_PER_PATIENT)).append(
                notification
            )
            watchers = list(self._watchers.get(patient, ()))
        for watcher in watchers:
            try:
                watcher.put_nowait(notification)
            except queue.Full:
                self._drop(patient, watcher)

    def _drop(self, patient: str, watcher: queue.Queue[pb.Notification | None]) -> None:
        with self._lock:
            self._watchers.get(patient, set()).discard(watcher)
        while True:  # make room for the end marker
            try:
                watcher.get_nowait()
            except queue.Empty:
                break
        watcher.put_nowait(None)

    def watch(
        self,
        patient: str,
        *,
        after_id: str = "",
        start_time: datetime | None = None,
        is_active: threading.Event | None = None,
        poll_seconds: float = 0.5,
    ) -> Iterator[pb.Notification]:
        """Notifications for ``patient``: first the kept ones after ``after_id`` (or from
        ``start_time``), then new ones as they happen, until ``is_active`` is cleared or the
        watcher falls too far behind."""
        watcher: queue.Queue[pb.Notification | None] = queue.Queue(WATCHER_BACKLOG)
        if after_id or start_time is not None:
            self._load(patient)
        with self._lock:
            kept = list(self._history.get(patient, ()))
            self._watchers.setdefault(patient, set()).add(watcher)
        try:
            if after_id:
                ids = [n.notification_id for n in kept]
                kept = kept[ids.index(after_id) + 1 :] if after_id in ids else kept
            elif start_time is not None:
                kept = [
                    n for n in kept if n.time.ToDatetime(tzinfo=start_time.tzinfo) >= start_time
                ]
            else:
                kept = []
            sent = {n.notification_id for n in kept}
            yield from kept
            while is_active is None or is_active.is_set():
                try:
                    item = watcher.get(timeout=poll_seconds)
                except queue.Empty:
                    continue
                if item is None:
                    return
                if item.notification_id in sent:
                    continue  # published between the history copy and the registration
                yield item
        finally:
            with self._lock:
                self._watchers.get(patient, set()).discard(watcher)
