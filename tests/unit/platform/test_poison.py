"""Records a consumer cannot use are set aside and the consumer moves on (issue 24): the
platform's batch consumer (the audit service's) and the identity event feed (revocations,
anchoring's keys, consent's directory), on fakes of the Kafka consumer and of the store."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from pymongo.errors import AutoReconnect

from services.platform.events import decode, envelope
from services.platform.kafka import ConsumedMessage, run_batch_consumer
from services.platform.poison import PoisonRecord
from services.platform.revocations import IdentityEventFeed, RevocationList
from services.platform.topics import IDENTITY_EVENTS_TOPIC
from swiftchain.chain.v1 import ordering_pb2
from swiftchain.events.v1 import events_pb2

TOPIC = IDENTITY_EVENTS_TOPIC
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Record:
    """What kafka-python's ConsumerRecord has."""

    offset: int
    value: bytes | None
    topic: str = TOPIC
    partition: int = 0
    key: bytes | None = None
    timestamp: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()


class Sink:
    def __init__(self) -> None:
        self.records: dict[str, PoisonRecord] = {}

    def set_aside(self, record: PoisonRecord) -> bool:
        return self.records.setdefault(record.record_id, record) is record

    def offsets(self) -> dict[int, str]:
        return {r.offset: r.reason for r in self.records.values()}


class FakeConsumer:
    """Hands out the given batches, one a poll, then sets ``stop``."""

    config: dict[str, Any] = {"group_id": "audit", "client_id": "audit"}  # noqa: RUF012

    def __init__(self, batches: list[list[Record]], stop: threading.Event) -> None:
        self._batches = batches
        self._stop = stop
        self.commits = 0

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, list[Record]]:
        if not self._batches:
            self._stop.set()
            return {}
        return {(TOPIC, 0): self._batches.pop(0)}

    def commit(self) -> None:
        self.commits += 1

    def assignment(self) -> set[Any]:
        return set()


def revoked(serial: str) -> bytes:
    payload = events_pb2.CertificateRevoked(organization_id="hospital-a", serial_number=serial)
    return envelope(payload, producer="identity", subject="hospital-a", now=NOW).SerializeToString()


#: Null, no bytes, junk, and a valid protobuf of another kind.
POISON: list[bytes | None] = [
    None,
    b"",
    b"\xff\xfe\x00junk",
    ordering_pb2.Cosignature(node="hospital-a", tree_size=3).SerializeToString(),
]


def test_the_batch_consumer_sets_aside_what_it_cannot_apply_and_applies_the_rest() -> None:
    first, last = revoked("01"), revoked("02")
    values = [first, *POISON, last]
    stop = threading.Event()
    consumer = FakeConsumer([[Record(o, v) for o, v in enumerate(values)]], stop)
    applied: list[str] = []

    def handle(messages: list[ConsumedMessage]) -> None:
        events = [decode(m.value) for m in messages]  # raises for what is not an envelope
        applied.extend(e.event_id for e in events)

    sink = Sink()
    run_batch_consumer(cast(Any, consumer), handle, stop, poison=sink)
    assert sorted(set(applied)) == sorted(decode(v).event_id for v in (first, last))
    assert sorted(sink.offsets()) == [1, 2, 3, 4]
    assert sink.offsets()[1] == "the record has no value"
    assert sink.offsets()[2].startswith("InvalidInputError: expected an EventEnvelope")
    assert {r.consumer for r in sink.records.values()} == {"audit"}
    assert [r.value for r in sorted(sink.records.values(), key=lambda r: r.offset)] == POISON
    assert consumer.commits == 1  # moved on: the batch is committed


def test_the_batch_consumer_waits_out_a_database_that_is_away() -> None:
    stop = threading.Event()
    consumer = FakeConsumer([[Record(0, revoked("01")), Record(1, revoked("02"))]], stop)
    attempts: list[int] = []
    applied: list[str] = []

    def handle(messages: list[ConsumedMessage]) -> None:
        attempts.append(len(messages))
        if len(attempts) <= 3:
            raise AutoReconnect("localhost:27017: connection closed")
        applied.extend(decode(m.value).event_id for m in messages)

    sink = Sink()
    run_batch_consumer(cast(Any, consumer), handle, stop, poison=sink)
    assert attempts == [2, 2, 2, 2]  # the whole batch again, never split
    assert len(applied) == 2
    assert sink.records == {}
    assert consumer.commits == 1


def test_the_identity_feed_sets_aside_what_it_cannot_apply() -> None:
    revocations = RevocationList()
    sink = Sink()

    def apply(event: events_pb2.EventEnvelope) -> None:
        if event.subject == "boom":
            raise ValueError("a view that cannot take it")
        revocations.apply(event)

    feed = IdentityEventFeed("127.0.0.1:1", "consent-directory", apply, poison=sink)
    unusable = envelope(
        events_pb2.CertificateRevoked(serial_number="03"), producer="x", subject="boom", now=NOW
    ).SerializeToString()
    values = [*POISON, unusable, revoked("0a")]
    for offset, value in enumerate(values):
        feed._take(Record(offset, value))
    assert revocations.certificate_revoked("0a")
    assert not revocations.certificate_revoked("03")
    reasons = sink.offsets()
    assert sorted(reasons) == [0, 1, 2, 3, 4]
    assert reasons[0] == "the record has no value"
    assert reasons[4].startswith("could not apply swiftchain.events.v1.CertificateRevoked")
    assert {r.consumer for r in sink.records.values()} == {"consent-directory"}
