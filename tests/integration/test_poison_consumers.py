"""Poison on real topics (issue 24): null values, empty values, junk and messages of another
kind sent to a real Kafka topic are set aside in the process's store (real FerretDB) with their
topic, partition, offset and reason, and the consumers move on — the identity event feed that
every process reads revocations from (before, three such records kept every process from
starting) and the at-least-once batch consumer the audit service reads its events with."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kafka import TopicPartition

from devstack.kafka import create_topics
from services.platform import mongo
from services.platform.events import decode, envelope
from services.platform.kafka import (
    ConsumedMessage,
    make_consumer,
    make_producer,
    run_batch_consumer,
)
from services.platform.poison import MongoPoisonStore
from services.platform.revocations import IdentityEventFeed, RevocationList
from services.platform.threads import start_supervised
from services.platform.topics import IDENTITY_EVENTS_TOPIC, topic_spec
from swiftchain.chain.v1 import ordering_pb2
from swiftchain.events.v1 import events_pb2

pytestmark = pytest.mark.integration

NOW = datetime(2026, 1, 1, tzinfo=UTC)
POISON: list[bytes | None] = [
    None,
    b"",
    b"\xff\xfe\x00 random bytes",
    ordering_pb2.Cosignature(node="hospital-a", tree_size=3).SerializeToString(),
]


@pytest.fixture
def store(mongo_uri: str) -> Iterator[MongoPoisonStore]:
    alias = f"poison-{uuid.uuid4().hex[:8]}"
    mongo.connect(mongo_uri, alias.replace("-", "_"), alias=alias)
    try:
        yield MongoPoisonStore(alias)
    finally:
        mongo.disconnect(alias)


def topic_with(bootstrap: str, values: list[bytes | None]) -> str:
    """A new one-partition topic holding ``values`` at offsets 0, 1, ..."""
    topic = f"test.poison.{uuid.uuid4().hex[:8]}"
    spec = dataclasses.replace(topic_spec(IDENTITY_EVENTS_TOPIC), name=topic, partitions=1)
    create_topics(bootstrap, specs=[spec])
    producer = make_producer(bootstrap, "test-poison")
    for value in values:
        producer.send(topic, value, key=b"k")
    producer.flush()
    producer.close()
    return topic


def revoked(serial: str) -> bytes:
    payload = events_pb2.CertificateRevoked(organization_id="hospital-a", serial_number=serial)
    return envelope(payload, producer="identity", subject="hospital-a", now=NOW).SerializeToString()


def test_the_identity_feed_sets_poison_aside_and_still_catches_up(
    kafka_bootstrap: str, store: MongoPoisonStore
) -> None:
    topic = topic_with(kafka_bootstrap, [revoked("0a"), *POISON, revoked("0b")])
    revocations = RevocationList()
    feed = IdentityEventFeed(
        kafka_bootstrap, "test-revocations", revocations.apply, topic=topic, poison=store
    )
    feed.start(timeout=60)  # caught up: every record applied or set aside
    try:
        assert revocations.certificate_revoked("0a")
        assert revocations.certificate_revoked("0b")
        kept = store.records()
        assert [(r.consumer, r.topic, r.partition, r.offset) for r in kept] == [
            ("test-revocations", topic, 0, offset) for offset in range(1, 5)
        ]
        assert [r.value for r in kept] == POISON
        assert kept[0].reason == "the record has no value"
        assert "EventEnvelope" in kept[1].reason
    finally:
        feed.stop()


def test_the_batch_consumer_sets_poison_aside_and_commits_past_it(
    kafka_bootstrap: str, store: MongoPoisonStore
) -> None:
    good = [revoked("01"), revoked("02")]
    topic = topic_with(kafka_bootstrap, [good[0], *POISON, good[1]])
    group = f"group-{uuid.uuid4().hex[:8]}"
    timeouts: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 2000}
    consumer = make_consumer(kafka_bootstrap, "test-audit", group, [topic], **timeouts)
    applied: set[str] = set()
    stop = threading.Event()

    def handle(messages: list[ConsumedMessage]) -> None:
        # As the audit service does: every record must be an event envelope.
        events = [decode(m.value) for m in messages]
        applied.update(e.event_id for e in events)
        if len(applied) == len(good):
            stop.set()

    def consume() -> None:
        run_batch_consumer(consumer, handle, stop, poison=store)

    runner = start_supervised("test-consumer", consume)
    runner.join(timeout=120)
    try:
        assert not runner.is_alive(), "the consumer never got past the poison"
        assert applied == {decode(v).event_id for v in good}
        kept = store.records()
        assert [(r.consumer, r.topic, r.offset) for r in kept] == [
            (group, topic, offset) for offset in range(1, 5)
        ]
        assert [r.value for r in kept] == POISON
        # Moved on: the group's position is past every record, poison included.
        assert consumer.committed(TopicPartition(topic, 0)) == len(good) + len(POISON)
    finally:
        stop.set()
        consumer.close()
