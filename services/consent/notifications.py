"""Notifications to patient apps: fan-out to live watchers, and a history for resuming.

Every decision and consent change passes through this process, so it delivers them directly,
the moment they are decided. Each patient's latest :data:`HISTORY_PER_PATIENT` notifications are
kept in memory, which lets a watcher resume after a notification id or replay from a start time.
A watcher is a coroutine on the server's event loop fed by whichever thread publishes, so an idle
watcher holds no thread.
They are also kept in the store once Kafka has what they announce (see sender.py), so after a
restart a patient's history is read back (``stored``) the first time someone watches it and
merged with what was published since; anything older is on ``access.events.v1`` and
``consent.events.v1``, which the audit service keeps.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from datetime import datetime

from swiftchain.consent.v1 import consent_service_pb2 as pb

HISTORY_PER_PATIENT = 1000
#: A watcher that falls this far behind is dropped (its app reconnects and resumes).
WATCHER_BACKLOG = 10_000


class Subscription:
    """One watcher: the kept notifications it replays, then new ones as they are published."""

    def __init__(self, patient: str, loop: asyncio.AbstractEventLoop) -> None:
        self.patient = patient
        self.loop = loop
        #: Kept notifications to send first (after the cursor the watcher gave).
        self.replay: list[pb.Notification] = []
        self._queue: asyncio.Queue[pb.Notification | None] = asyncio.Queue(WATCHER_BACKLOG)

    def offer(self, notification: pb.Notification) -> bool:
        """Queue a new notification (on the loop); False, and the watcher ends after what it
        has, when it has fallen :data:`WATCHER_BACKLOG` behind."""
        try:
            self._queue.put_nowait(notification)
            return True
        except asyncio.QueueFull:
            while not self._queue.empty():  # make room for the end marker
                self._queue.get_nowait()
            self._queue.put_nowait(None)
            return False

    async def next(self) -> pb.Notification | None:
        """The next new notification; None when the watcher was dropped."""
        return await self._queue.get()


class Notifications:
    """Per-patient history and live watchers (thread-safe)."""

    def __init__(self, stored: Callable[[str], list[pb.Notification]] = lambda patient: []) -> None:
        """``stored(patient)``: the patient's notifications kept before this process started
        (and maybe since), oldest first."""
        self._lock = threading.Lock()
        self._history: dict[str, deque[pb.Notification]] = {}
        self._watchers: dict[str, set[Subscription]] = {}
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
        """Keep ``notification`` and deliver it to its patient's watchers (from any thread)."""
        patient = notification.patient_subject_id
        with self._lock:
            self._history.setdefault(patient, deque(maxlen=HISTORY_PER_PATIENT)).append(
                notification
            )
            watchers = list(self._watchers.get(patient, ()))
        for watcher in watchers:
            try:
                watcher.loop.call_soon_threadsafe(self._offer, watcher, notification)
            except RuntimeError:  # its loop is closed: the server stopped
                self.unsubscribe(watcher)

    def _offer(self, watcher: Subscription, notification: pb.Notification) -> None:
        if not watcher.offer(notification):
            self.unsubscribe(watcher)

    def subscribe(
        self,
        patient: str,
        loop: asyncio.AbstractEventLoop,
        *,
        after_id: str = "",
        start_time: datetime | None = None,
    ) -> Subscription:
        """A watcher of ``patient`` whose new notifications are delivered on ``loop``, with the
        kept ones after ``after_id`` (or from ``start_time``) to replay first; none without a
        cursor. May read the store (blocking): call it off the event loop."""
        watcher = Subscription(patient, loop)
        if after_id or start_time is not None:
            self._load(patient)
        with self._lock:
            kept = list(self._history.get(patient, ()))
            self._watchers.setdefault(patient, set()).add(watcher)
        if after_id:
            ids = [n.notification_id for n in kept]
            watcher.replay = kept[ids.index(after_id) + 1 :] if after_id in ids else kept
        elif start_time is not None:
            watcher.replay = [
                n for n in kept if n.time.ToDatetime(tzinfo=start_time.tzinfo) >= start_time
            ]
        return watcher

    def watched(self, patient: str) -> int:
        """How many watchers ``patient`` has."""
        with self._lock:
            return len(self._watchers.get(patient, ()))

    def unsubscribe(self, watcher: Subscription) -> None:
        """Stop delivering to ``watcher``."""
        with self._lock:
            watchers = self._watchers.get(watcher.patient)
            if watchers is not None:
                watchers.discard(watcher)
                if not watchers:
                    del self._watchers[watcher.patient]

    async def watch(
        self, patient: str, *, after_id: str = "", start_time: datetime | None = None
    ) -> AsyncIterator[pb.Notification]:
        """Notifications for ``patient``: first the kept ones after ``after_id`` (or from
        ``start_time``), then new ones as they happen, until the watcher is closed or falls
        too far behind. Holds no thread while it waits."""
        watcher = await asyncio.to_thread(
            self.subscribe,
            patient,
            asyncio.get_running_loop(),
            after_id=after_id,
            start_time=start_time,
        )
        try:
            sent = {n.notification_id for n in watcher.replay}
            for notification in watcher.replay:
                yield notification
            while True:
                item = await watcher.next()
                if item is None:
                    return
                if item.notification_id in sent:
                    continue  # published between the history copy and the registration
                yield item
        finally:
            self.unsubscribe(watcher)
