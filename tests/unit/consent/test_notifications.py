"""Notifications (services/consent/notifications.py): resuming after an id or from a time, with
the history kept before a restart merged into what was published since."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

from services.consent.notifications import Notifications
from swiftchain.consent.v1 import consent_service_pb2 as pb

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def note(index: int, patient: str = "pt-1") -> pb.Notification:
    notification = pb.Notification(
        notification_id=f"n-{index}", patient_subject_id=patient, entry_id=f"e-{index}"
    )
    notification.time.FromDatetime(NOW + timedelta(seconds=index))
    return notification


def replay(
    notifications: Notifications, after_id: str = "", start_time: datetime | None = None
) -> list[str]:
    """What a watcher resuming after ``after_id`` or from ``start_time`` gets before any new
    notification."""
    loop = asyncio.new_event_loop()
    try:
        watcher = notifications.subscribe("pt-1", loop, after_id=after_id, start_time=start_time)
        notifications.unsubscribe(watcher)
    finally:
        loop.close()
    return [n.notification_id for n in watcher.replay]


def test_after_a_restart_the_stored_history_and_the_new_notifications_are_one_history() -> None:
    stored = [note(0), note(1), note(2)]
    asked: list[str] = []

    def kept(patient: str) -> list[pb.Notification]:
        asked.append(patient)
        return [n for n in stored if n.patient_subject_id == patient]

    notifications = Notifications(kept)
    notifications.publish(note(2))  # resent after the restart: also in the store
    notifications.publish(note(3))
    assert replay(notifications, after_id="n-0") == ["n-1", "n-2", "n-3"]
    assert replay(notifications, start_time=NOW + timedelta(seconds=2)) == ["n-2", "n-3"]
    assert asked == ["pt-1"]  # read from the store once per patient


def test_a_watcher_without_a_cursor_gets_only_new_notifications_and_the_store_is_not_read() -> None:
    def kept(patient: str) -> list[pb.Notification]:
        raise AssertionError("the store is read only to resume")

    notifications = Notifications(kept)
    notifications.publish(note(0))
    assert replay(notifications) == []


def test_a_watcher_on_the_event_loop_gets_what_another_thread_publishes() -> None:
    notifications = Notifications()

    async def watch_two() -> list[str]:
        received: list[str] = []
        async for notification in notifications.watch("pt-1", after_id="n-0"):
            received.append(notification.notification_id)
            if len(received) == 2:
                break
        return received

    async def main() -> list[str]:
        watching = asyncio.ensure_future(watch_two())
        while not notifications.watched("pt-1"):
            await asyncio.sleep(0.001)

        def publish_two() -> None:
            for index in (1, 2):
                notifications.publish(note(index))

        publisher = threading.Thread(target=publish_two)
        publisher.start()
        publisher.join()
        return await watching

    assert asyncio.run(main()) == ["n-1", "n-2"]
    assert not notifications.watched("pt-1")
