"""Events on the service topics (DESIGN §5): every message is an ``EventEnvelope`` keyed by its
subject, with the W3C trace context in the Kafka headers. Consumers are idempotent by event id.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from google.protobuf.message import DecodeError, Message

from chain.errors import InvalidInputError
from services.platform.kafka import Headers, trace_headers
from swiftchain.events.v1 import events_pb2


def envelope(
    payload: Message, *, producer: str, subject: str, now: datetime, event_id: str | None = None
) -> events_pb2.EventEnvelope:
    """Wrap ``payload``; ``type`` is the payload's full protobuf name."""
    message = events_pb2.EventEnvelope(
        event_id=event_id or str(uuid.uuid4()),
        type=payload.DESCRIPTOR.full_name,
        producer=producer,
        subject=subject,
    )
    message.time.FromDatetime(now)
    message.payload.Pack(payload)
    return message


def encode(event: events_pb2.EventEnvelope) -> tuple[bytes, bytes, Headers]:
    """(key, value, headers) for a Kafka send: keyed by subject, trace context in headers."""
    return event.subject.encode(), event.SerializeToString(), trace_headers()


def decode(value: bytes) -> events_pb2.EventEnvelope:
    """Parse an envelope; :class:`InvalidInputError` for bytes that are not one."""
    event = events_pb2.EventEnvelope()
    try:
        event.ParseFromString(value)
    except DecodeError as error:
        raise InvalidInputError(
            f"expected an EventEnvelope, got undecodable bytes: {error}"
        ) from None
    if not event.event_id or not event.type:
        raise InvalidInputError("expected an EventEnvelope with an event id and a type, got none")
    return event
