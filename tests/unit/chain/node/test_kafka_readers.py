"""The node's Kafka readers reopen a consumer that stalls, and never skip an offset."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError, LogTruncationError, OffsetOutOfRangeError

from chain.errors import UnavailableError
from chain.node.kafka_readers import _KafkaReader
from services.platform.kafka import STALL_SECONDS, StallWatch

TOPIC = "chain.ordering.v1"
PARTITION = TopicPartition(TOPIC, 0)


@dataclass
class Record:
    offset: int
    timestamp: int = 0
    value: bytes = b"x"


@dataclass
class FakeConsumer:
    """A consumer at ``position`` over a log of ``end`` records; ``stalled`` reads nothing."""

    position: int | None
    end: int
    stalled: bool = False
    end_fails: bool = False
    raises: list[Exception] = field(default_factory=list)
    closed: bool = False

    def poll(self, timeout_ms: int, max_records: int | None) -> dict[Any, list[Record]]:
        if self.raises:
            raise self.raises.pop(0)
        start = self.position or 0
        if self.stalled or start >= self.end:
            return {}
        self.position = self.end
        return {PARTITION: [Record(offset) for offset in range(start, self.end)]}

    def end_offsets(self, partitions: list[TopicPartition], timeout_ms: int) -> dict[Any, int]:
        if self.end_fails:
            raise KafkaTimeoutError("no answer")
        return {PARTITION: self.end}

    def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def reader_over(first: FakeConsumer, end: int) -> tuple[_KafkaReader, list[FakeConsumer], Clock]:
    opened: list[FakeConsumer] = []

    def open_at(position: int | None) -> FakeConsumer:
        consumer = first if not opened else FakeConsumer(position, end)
        opened.append(consumer)
        return consumer

    clock = Clock()
    return (
        _KafkaReader(TOPIC, open_at, first.position, None, None, StallWatch(clock)),
        opened,
        clock,
    )


def test_a_stalled_consumer_is_reopened_where_the_reader_stands() -> None:
    first = FakeConsumer(position=0, end=3)
    reader, opened, clock = reader_over(first, end=5)
    assert [r.offset for r in reader.poll(500)] == [0, 1, 2]
    first.end = 5  # records arrive, but the consumer reads nothing (a fetch stuck on a restart)
    first.stalled = True
    clock.now += STALL_SECONDS - 1
    assert reader.poll(500) == []
    assert len(opened) == 1, "reopened before STALL_SECONDS"
    clock.now += 1
    assert reader.poll(500) == []
    assert len(opened) == 2 and first.closed
    assert opened[1].position == 3, "expected the new consumer at the next offset to apply"
    assert [r.offset for r in reader.poll(500)] == [3, 4]
    assert reader.reopened == 1


def test_a_quiet_topic_is_not_a_stall() -> None:
    first = FakeConsumer(position=7, end=7)
    reader, opened, clock = reader_over(first, end=7)
    for _ in range(5):
        clock.now += STALL_SECONDS
        assert reader.poll(500) == []
    assert len(opened) == 1 and reader.reopened == 0


def test_a_consumer_that_cannot_reach_the_broker_is_reopened() -> None:
    first = FakeConsumer(position=None, end=2, stalled=True, end_fails=True)
    reader, opened, clock = reader_over(first, end=2)
    clock.now += STALL_SECONDS
    reader.poll(500)
    assert len(opened) == 2 and opened[1].position is None, "expected a reopen at the beginning"
    assert [r.offset for r in reader.poll(500)] == [0, 1]


def test_an_offset_out_of_range_is_retried_never_skipped() -> None:
    first = FakeConsumer(position=4, end=6, raises=[OffsetOutOfRangeError({PARTITION: 4})])
    reader, _, _ = reader_over(first, end=6)
    with pytest.raises(UnavailableError, match="expected the broker to hold offset 4"):
        reader.poll(500)
    assert [r.offset for r in reader.poll(500)] == [4, 5]


def test_a_truncation_report_keeps_the_position() -> None:
    first = FakeConsumer(position=2, end=4, raises=[LogTruncationError({PARTITION: None})])
    reader, _, _ = reader_over(first, end=4)
    assert reader.poll(500) == []
    assert [r.offset for r in reader.poll(500)] == [2, 3]
