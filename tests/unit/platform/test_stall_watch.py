"""A consumer that reads nothing while records wait is reopened; a quiet topic is left alone."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from kafka import TopicPartition

from services.platform import kafka as platform_kafka
from services.platform.kafka import STALL_SECONDS, ConsumedMessage, StallWatch, run_batch_consumer

PARTITION = TopicPartition("swiftchain.consent.v1", 0)


@dataclass
class Record:
    offset: int
    topic: str = PARTITION.topic
    partition: int = 0
    key: bytes | None = None
    value: bytes | None = b"event"
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: int = 0


@dataclass
class FakeConsumer:
    """A group consumer at ``position`` of a partition that ends at ``end``."""

    position_at: int
    end: int
    stalled: bool = False
    closed: bool = False
    config: dict[str, Any] = field(default_factory=lambda: {"group_id": "audit"})

    def poll(self, timeout_ms: int, max_records: int | None = None) -> dict[Any, list[Record]]:
        if self.stalled or self.position_at >= self.end:
            return {}
        records = [Record(offset) for offset in range(self.position_at, self.end)]
        self.position_at = self.end
        return {PARTITION: records}

    def assignment(self) -> set[TopicPartition]:
        return {PARTITION}

    def position(self, partition: TopicPartition, timeout_ms: int | None = None) -> int:
        return self.position_at

    def highwater(self, partition: TopicPartition) -> int | None:
        return None

    def end_offsets(self, partitions: list[TopicPartition], timeout_ms: int) -> dict[Any, int]:
        return {PARTITION: self.end}

    def commit(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_watch_names_a_consumer_that_lags_after_reading_nothing() -> None:
    clock = Clock()
    watch = StallWatch(clock)
    consumer = FakeConsumer(position_at=3, end=5, stalled=True)
    clock.now = STALL_SECONDS - 0.1
    assert watch.stalled(consumer, read_any=False) is None
    clock.now = STALL_SECONDS
    why = watch.stalled(consumer, read_any=False)
    assert why is not None and "at offset 3" in why and "ends at 5" in why
    assert watch.stalled(consumer, read_any=False) is None, "expected the next check later"


def test_the_watch_leaves_a_consumer_at_the_end_alone() -> None:
    clock = Clock()
    watch = StallWatch(clock)
    consumer = FakeConsumer(position_at=5, end=5)
    for _ in range(4):
        clock.now += STALL_SECONDS
        assert watch.stalled(consumer, read_any=False) is None


def test_a_batch_consumer_that_stalls_is_replaced_and_reads_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(platform_kafka, "STALL_SECONDS", 0.0)
    stuck = FakeConsumer(position_at=3, end=5, stalled=True)
    fresh = FakeConsumer(position_at=3, end=5)
    stop = threading.Event()
    handled: list[int] = []

    def handle(messages: list[ConsumedMessage]) -> None:
        handled.extend(message.offset for message in messages)
        stop.set()

    run_batch_consumer(stuck, handle, stop, reopen=lambda: fresh)
    assert stuck.closed
    assert handled == [3, 4]
