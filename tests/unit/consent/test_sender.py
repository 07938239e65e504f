"""The consent sender's Kafka side: a batch's entries go to the ordering topic in batch records,
its events to their topics, and the store hears of it only after Kafka acknowledged."""

from __future__ import annotations

from typing import Any, cast

import grpc
from opentelemetry import context as otel_context

from services.consent.domain import Outgoing
from services.consent.sender import LogSender
from swiftchain.chain.v1 import entry_pb2, ordering_pb2
from swiftchain.events.v1 import events_pb2


class _Metadata:
    offset = 7
    timestamp = 1_765_000_000_000


class _Acknowledged:
    def get(self, timeout: float | None = None) -> _Metadata:
        return _Metadata()


class RecordingProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, list[tuple[str, bytes]]]] = []
        self.flushes = 0

    def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None
    ) -> _Acknowledged:
        self.sent.append((topic, value, list(headers or [])))
        return _Acknowledged()

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1


class RecordingStore:
    def __init__(self, producer: RecordingProducer) -> None:
        self.producer = producer
        self.calls: list[tuple[str, int]] = []

    def _record(self, name: str) -> None:
        self.calls.append((name, self.producer.flushes))

    def append_notifications(self, notifications: Any) -> None:
        self._record("append_notifications")

    def mark_logged(self, versions: Any) -> None:
        self._record("mark_logged")

    def archive_decisions(self, decisions: Any) -> None:
        self._record("archive_decisions")


def test_a_batch_sends_its_entries_in_one_ordering_record_and_its_events_apart() -> None:
    producer = RecordingProducer()
    store = RecordingStore(producer)
    never_called = grpc.insecure_channel("127.0.0.1:9")  # the chain is asked nothing here
    sender = LogSender(producer, "ordering", cast(Any, store), cast(Any, None), never_called)
    entries = [
        entry_pb2.ChainEntry(
            body=entry_pb2.EntryBody(
                entry_id=f"00000000-0000-4000-8000-00000000000{i}"
            ).SerializeToString()
        ).SerializeToString()
        for i in range(5)
    ]
    items = [
        Outgoing(entry, (("access.events", events_pb2.EventEnvelope(event_id=f"e{i}")),))
        for i, entry in enumerate(entries)
    ]
    sender.send_batch([(item, otel_context.get_current()) for item in items])

    ordering = [value for topic, value, _ in producer.sent if topic == "ordering"]
    assert len(ordering) == 1, "five entries, one batch record"
    record = ordering_pb2.OrderingRecord()
    record.ParseFromString(ordering[0])
    assert list(record.batch.entries) == entries
    events = [value for topic, value, _ in producer.sent if topic == "access.events"]
    assert len(events) == 5
    # The store hears of the batch only after the flush that Kafka acknowledged.
    assert store.calls and all(flushes == 1 for _, flushes in store.calls)
