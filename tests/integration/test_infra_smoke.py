"""Smoke tests of the local infrastructure: the real Kafka broker and FerretDB that the test run
starts (tests/integration/conftest.py) do what the services will rely on."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import mongoengine
import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from mongoengine.errors import NotUniqueError

from devstack.kafka import create_topics
from services.platform.kafka import kafka_client_options
from services.platform.topics import ORDERING_TOPIC, TOPICS, TopicSpec, topic_spec

pytestmark = pytest.mark.integration


@pytest.fixture
def admin(kafka_bootstrap: str) -> Iterator[Any]:
    client = KafkaAdminClient(
        **kafka_client_options(), bootstrap_servers=kafka_bootstrap, client_id="smoke-admin"
    )
    try:
        yield client
    finally:
        client.close()


def _scratch_topic(kafka_bootstrap: str, like: TopicSpec | None = None) -> str:
    """A fresh topic for one test (the real topics stay clean for the other tests)."""
    name = f"smoke.{uuid.uuid4().hex[:12]}"
    spec = TopicSpec(name, partitions=1, config=like.config if like else {})
    assert create_topics(kafka_bootstrap, specs=[spec]) == [name]
    return name


def _consume(kafka_bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[Any]:
    consumer = KafkaConsumer(
        topic,
        **kafka_client_options(),
        bootstrap_servers=kafka_bootstrap,
        group_id=f"smoke-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < count and time.monotonic() < deadline:
            records.extend(consumer)  # iterates until consumer_timeout_ms without records
    finally:
        consumer.close()
    return records


def _producer(kafka_bootstrap: str) -> Any:
    return KafkaProducer(
        **kafka_client_options(),
        bootstrap_servers=kafka_bootstrap,
        enable_idempotence=True,
        acks="all",
        client_id="smoke-producer",
    )


def test_message_roundtrip_with_headers(kafka_bootstrap: str) -> None:
    topic = _scratch_topic(kafka_bootstrap)
    traceparent = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    producer = _producer(kafka_bootstrap)
    try:
        sent = producer.send(
            topic,
            key=b"patient-42",
            value=b"\x00envelope-bytes\xff",
            headers=[("traceparent", traceparent), ("content-type", b"application/x-protobuf")],
        ).get(timeout=30)
    finally:
        producer.close()
    assert sent.offset == 0

    [record] = _consume(kafka_bootstrap, topic, 1)
    assert record.key == b"patient-42"
    assert record.value == b"\x00envelope-bytes\xff"
    assert dict(record.headers) == {
        "traceparent": traceparent,
        "content-type": b"application/x-protobuf",
    }
    assert (record.partition, record.offset) == (0, 0)


def test_every_topic_exists_as_specified(kafka_bootstrap: str, admin: Any) -> None:
    described = {t["name"]: t for t in admin.describe_topics([spec.name for spec in TOPICS])}
    for spec in TOPICS:
        assert described[spec.name]["error_code"] == 0, spec.name
        assert len(described[spec.name]["partitions"]) == spec.partitions, spec.name
    # create_topics is idempotent
    assert create_topics(kafka_bootstrap) == []


def test_ordering_topic_is_one_partition_with_log_append_time(
    kafka_bootstrap: str, admin: Any
) -> None:
    [ordering] = admin.describe_topics([ORDERING_TOPIC])
    assert len(ordering["partitions"]) == 1

    configs = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, ORDERING_TOPIC)], config_filter="all"
    )["topic"][ORDERING_TOPIC]
    assert configs["message.timestamp.type"]["value"] == "LogAppendTime"
    assert configs["retention.ms"]["value"] == "-1"
    assert configs["retention.bytes"]["value"] == "-1"
    assert configs["min.insync.replicas"]["value"] == "1"

    # The broker really stamps records: a client timestamp from 1970 is replaced by its clock.
    # (On a scratch copy of the topic, so chain tests never see this record.)
    topic = _scratch_topic(kafka_bootstrap, like=topic_spec(ORDERING_TOPIC))
    before_ms = int(time.time() * 1000) - 1000
    producer = _producer(kafka_bootstrap)
    try:
        producer.send(topic, value=b"entry", timestamp_ms=1000).get(timeout=30)
    finally:
        producer.close()
    [record] = _consume(kafka_bootstrap, topic, 1)
    assert record.timestamp_type == 1  # LogAppendTime
    assert record.timestamp >= before_ms


class SmokeItem(mongoengine.Document):  # type: ignore[misc]
    key = mongoengine.StringField(required=True, unique=True)
    size = mongoengine.IntField(default=0)
    meta = {"db_alias": "smoke", "collection": "smoke_items"}  # noqa: RUF012


@pytest.fixture
def smoke_db(mongo_uri: str) -> Iterator[str]:
    name = f"smoke_{uuid.uuid4().hex[:8]}"
    mongoengine.connect(
        db=name, host=f"{mongo_uri}{name}", alias="smoke", uuidRepresentation="standard"
    )
    try:
        yield name
    finally:
        mongoengine.disconnect(alias="smoke")


def test_mongoengine_unique_index_and_count_on_ferretdb(smoke_db: str) -> None:
    SmokeItem(key="a", size=1).save()
    SmokeItem(key="b", size=2).save()
    with pytest.raises(NotUniqueError):
        SmokeItem(key="a", size=3).save()

    assert SmokeItem.objects.count() == 2
    assert SmokeItem.objects(size__gte=2).count() == 1
    assert SmokeItem.objects.get(key="b").size == 2
    indexes = SmokeItem._get_collection().index_information()
    assert any(info.get("unique") for info in indexes.values())
