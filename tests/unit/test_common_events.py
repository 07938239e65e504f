"""Event envelopes and trace context through Kafka headers (no broker needed)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from chain.errors import InvalidInputError
from services.platform.events import decode, encode, envelope
from services.platform.kafka import context_from_headers
from swiftchain.events.v1 import events_pb2


def test_envelope_round_trip_and_trace_context_in_headers() -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("test")
    payload = events_pb2.OrganizationRegistered(organization_id="org-1", display_name="A")
    with tracer.start_as_current_span("produce") as span:
        event = envelope(payload, producer="identity", subject="org-1", now=datetime.now(UTC))
        key, value, headers = encode(event)
    assert key == b"org-1"
    assert any(name == "traceparent" for name, _ in headers)
    restored = trace.get_current_span(context_from_headers(headers)).get_span_context()
    assert restored.trace_id == span.get_span_context().trace_id
    decoded = decode(value)
    assert decoded.type == "swiftchain.events.v1.OrganizationRegistered"
    unpacked = events_pb2.OrganizationRegistered()
    assert decoded.payload.Unpack(unpacked)
    assert unpacked == payload


@pytest.mark.parametrize(
    ("value", "message"),
    [(b"\xff\xff", "undecodable"), (b"", "with an event id and a type")],
)
def test_decode_rejects_what_is_not_an_envelope(value: bytes, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        decode(value)
