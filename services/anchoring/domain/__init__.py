"""The anchoring service's domain: record versions, anchoring them, following them until the
log settles them, and their FHIR Provenance. No grpc, Mongo or Kafka; time is passed in."""

from services.anchoring.domain.anchoring import RecordAnchoring
from services.anchoring.domain.practitioners import Practitioners
from services.anchoring.domain.records import (
    DEFAULT_MAX_SEAL_DELAY,
    MAX_CHUNK_ITEMS,
    MAX_REASON_TEXT,
    MAX_RECORD_ID,
    MAX_STREAM_ITEMS,
    PRODUCER,
    AnchorRequest,
    AuthorCheck,
    KeyCheck,
    Outcome,
    RecordVersion,
    VersionStore,
    event_id,
)

__all__ = [
    "DEFAULT_MAX_SEAL_DELAY",
    "MAX_CHUNK_ITEMS",
    "MAX_REASON_TEXT",
    "MAX_RECORD_ID",
    "MAX_STREAM_ITEMS",
    "PRODUCER",
    "AnchorRequest",
    "AuthorCheck",
    "KeyCheck",
    "Outcome",
    "Practitioners",
    "RecordAnchoring",
    "RecordVersion",
    "VersionStore",
    "event_id",
]
