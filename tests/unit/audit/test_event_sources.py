"""Events are believed only from where they may come: services/audit/domain/events.py's
accept_event, with the ACL table that makes a topic's producer the only one that can write it."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from chain.errors import InvalidInputError
from services.audit.domain import AuditBook
from services.audit.domain.events import EVENT_SOURCES, accept_event
from services.platform.events import envelope
from services.platform.kafka_acls import SERVICE_ACCESS
from services.platform.topics import (
    ACCESS_EVENTS_TOPIC,
    CONSENT_EVENTS_TOPIC,
    EVENT_TOPICS,
    RECORDS_EVENTS_TOPIC,
)
from swiftchain.common.v1 import common_pb2
from swiftchain.events.v1 import events_pb2
from tests.unit.audit.fakes import (
    NOW,
    TAG_KEY,
    FakeAuditStore,
    access_decided,
    key_registered,
    record_anchored,
)

Received = tuple[str, events_pb2.EventEnvelope]


def receive(book: AuditBook, records: Sequence[Received]) -> None:
    """What the audit's consumer does with a batch: believe each event only from its source."""
    book.apply_events([accept_event(topic, event) for topic, event in records])


def forged(event: events_pb2.EventEnvelope, producer: str) -> events_pb2.EventEnvelope:
    copy = events_pb2.EventEnvelope()
    copy.CopyFrom(event)
    copy.producer = producer
    return copy


def test_an_event_from_its_own_topic_and_producer_is_believed() -> None:
    for topic, event in [
        (ACCESS_EVENTS_TOPIC, access_decided("e-1")),
        (RECORDS_EVENTS_TOPIC, forged(record_anchored("e-2"), "anchoring")),
        ("identity.events.v1", forged(key_registered("e-3"), "identity")),
    ]:
        assert accept_event(topic, event) is event


def test_a_forged_access_decision_does_not_overwrite_the_real_one() -> None:
    store = FakeAuditStore()
    book = AuditBook(store, TAG_KEY)
    receive(book, [(ACCESS_EVENTS_TOPIC, access_decided("e-acc"))])
    before = store.snapshot()
    assert before["items"]["e-acc"]["detail"]["decision"] == common_pb2.ACCESS_DECISION_PERMIT
    deny = access_decided("e-acc", decision=common_pb2.ACCESS_DECISION_DENY)
    attempts = [
        # on another service's topic, naming consent as its producer
        (CONSENT_EVENTS_TOPIC, deny, "only from consent on access.events.v1, got it from "),
        (RECORDS_EVENTS_TOPIC, deny, "got it from 'consent' on records.events.v1"),
        # on the right topic, naming another producer
        (ACCESS_EVENTS_TOPIC, forged(deny, "anchoring"), "got it from 'anchoring' on access"),
    ]
    for topic, event, reason in attempts:
        with pytest.raises(InvalidInputError, match=reason):
            receive(book, [(topic, event)])
    assert store.snapshot() == before


def test_an_event_type_no_service_publishes_is_not_believed() -> None:
    stray = envelope(
        events_pb2.CheckpointSealed(), producer="consent", subject="", now=NOW, event_id="x"
    )
    with pytest.raises(InvalidInputError, match="expected an event type a service publishes"):
        accept_event(ACCESS_EVENTS_TOPIC, stray)


def test_every_event_type_comes_from_a_topic_only_its_producer_may_write() -> None:
    assert {source.topic for source in EVENT_SOURCES.values()} == set(EVENT_TOPICS)
    for name, source in EVENT_SOURCES.items():
        writers = {p for p, access in SERVICE_ACCESS.items() if access.may_write(source.topic)}
        assert writers == {source.producer}, name
        short = name.removeprefix("swiftchain.events.v1.")
        assert short in events_pb2.DESCRIPTOR.message_types_by_name, name
