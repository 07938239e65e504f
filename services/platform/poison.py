"""Records a consumer cannot decode or apply: set aside, never in the way (DESIGN §6).

Anyone who can write to a topic can write anything: a null value, no bytes, random bytes, a
valid protobuf of another type. A consumer that meets a record it cannot use calls
:func:`set_aside`: the record is kept with its topic, partition, offset and the reason in the
process's store (``poison_records``, one document per consumer and record, with the first
:data:`KEPT_BYTES` of its value for whoever looks into it), counted in
``swiftchain_poison_records_total{consumer,topic}``, logged, and the consumer moves on. On
``chain.ordering.v1`` the node also stores the record as a rejection at its offset and raises a
``POISON_RECORD`` alarm (``chain/node/node.py``), so every node still cuts the same blocks.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from opentelemetry import metrics
from pymongo.errors import DuplicateKeyError

from services.platform import mongo
from services.platform.threads import retry_transient

__all__ = [
    "COLLECTION",
    "KEPT_BYTES",
    "MongoPoisonStore",
    "PoisonRecord",
    "PoisonSink",
    "process_store",
    "set_aside",
    "use_store",
]

_log = logging.getLogger(__name__)

#: The collection, in the process's own database, that holds the records set aside.
COLLECTION = "poison_records"
#: How much of a record's value is kept.
KEPT_BYTES = 4096

_poison_records = metrics.get_meter("swiftchain.kafka").create_counter(
    "swiftchain.poison_records",
    unit="{record}",
    description="Records a consumer could not decode or apply and set aside, by consumer, topic",
)


@dataclass(frozen=True)
class PoisonRecord:
    """A record set aside: who read it, where it was, why it could not be used, and what it
    held (``None`` for a null value)."""

    consumer: str
    topic: str
    partition: int
    offset: int
    reason: str
    value: bytes | None

    @property
    def record_id(self) -> str:
        """The id it is kept under: the same record read again is kept once."""
        return f"{self.consumer}:{self.topic}/{self.partition}/{self.offset}"


class PoisonSink(Protocol):
    """Where a process keeps the records it set aside."""

    def set_aside(self, record: PoisonRecord) -> bool:
        """Keep ``record`` once (by :attr:`PoisonRecord.record_id`); True if it is new."""
        ...


class MongoPoisonStore:
    """:class:`PoisonSink` on the ``poison_records`` collection of the database behind the
    mongoengine connection ``alias`` (the process's own)."""

    def __init__(self, alias: str) -> None:
        self._alias = alias

    def _collection(self) -> Any:
        return mongo.database(self._alias)[COLLECTION]

    def set_aside(self, record: PoisonRecord, now: datetime | None = None) -> bool:
        """Insert ``record`` unless it is there; True if it was not."""
        value = record.value
        try:
            self._collection().insert_one(
                {
                    "_id": record.record_id,
                    "consumer": record.consumer,
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "reason": record.reason[:1000],
                    "null_value": value is None,
                    "size": len(value or b""),
                    "value": bytes(value[:KEPT_BYTES]) if value else b"",
                    "set_aside_at": now or datetime.now(UTC),
                }
            )
        except DuplicateKeyError:
            return False
        return True

    def records(self) -> list[PoisonRecord]:
        """Every record set aside, by consumer, topic and offset."""
        found = [
            PoisonRecord(
                doc["consumer"],
                doc["topic"],
                doc["partition"],
                doc["offset"],
                doc["reason"],
                None if doc.get("null_value") else bytes(doc.get("value", b"")),
            )
            for doc in self._collection().find({})
        ]
        return sorted(found, key=lambda r: (r.consumer, r.topic, r.partition, r.offset))


class _LogOnly:
    """The sink of a process that named no store: the log and the metric are all it keeps."""

    def set_aside(self, record: PoisonRecord) -> bool:
        return True


_store: PoisonSink = _LogOnly()


def use_store(sink: PoisonSink) -> None:
    """Make ``sink`` the process's store for records set aside (each ``main`` calls this once
    its database is connected)."""
    global _store
    _store = sink


def process_store() -> PoisonSink:
    """The process's store for records set aside (see :func:`use_store`)."""
    return _store


def set_aside(
    record: PoisonRecord, stop: threading.Event, *, sink: PoisonSink | None = None
) -> bool:
    """Keep ``record`` in ``sink`` (the process's store by default), retrying while the store
    is away (:func:`~services.platform.threads.retry_transient`, until ``stop``); count and log
    it if it is new. Returns whether it was."""
    target = sink or _store
    new = retry_transient(
        lambda: target.set_aside(record),
        stop=stop,
        doing=f"setting aside {record.topic}/{record.partition}/{record.offset}",
    )
    if new:
        _poison_records.add(1, {"consumer": record.consumer, "topic": record.topic})
        _log.error(
            "%s set aside %s partition %d offset %d: %s",
            record.consumer,
            record.topic,
            record.partition,
            record.offset,
            record.reason,
        )
    return new
