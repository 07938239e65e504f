"""The transactional outbox on FerretDB/MongoDB, which has no multi-document transactions.

A service changes a document and records the events that change causes *in the same document*
(one write): :class:`OutboxDocument` adds an ``outbox`` list of serialized ``EventEnvelope``
messages. An :class:`OutboxRelay` thread publishes pending events to Kafka and removes them only
once Kafka has acknowledged them. A crash between the write and the publish loses nothing (the
relay publishes after restart); a crash between the publish and the removal publishes an event
twice, which consumers absorb because they are idempotent by event id (DESIGN §5).

One write is atomic against a crash, but on FerretDB v1 not against another update of the same
document: FerretDB runs an update as a query, then a write of the whole document as the query
saw it (``internal/handler/common/update.go``, ``UpdateDocument``: ``UpdateAll`` by ``_id``),
with nothing between the two that stops another update. Of two overlapping updates of one
document only the later one's view survives; the relay's removal of what it published, landing
over a concurrent ``$push``, dropped that push's events and every other change it made. So every
update of an outbox document that may overlap another in this process, the relay's included,
holds :func:`document_lock` for that document. (MongoDB applies each update atomically; there the
lock costs a little waiting and nothing else. The lock is per process: FerretDB serves the local
stack, where each service runs once.)

Finding what is pending: ``{"outbox_pending": true}`` is a filter FerretDB v1 answers by reading
and decoding every document of the collection, which for the anchoring service's chunk documents
(a few hundred KB each, kept for ever) cost more than the anchoring itself, ten times a second.
So a writer that queued events calls :func:`mark_pending` after its write, and a relay built
with ``sweep_seconds`` reads only the marked documents, by ``_id``, on each tick, and the whole
collection once at start (what a previous process left) and every ``sweep_seconds`` (what a
writer did not mark). A mark is a hint: a document marked but not pending is skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Final

import mongoengine
from pymongo import ReturnDocument

from services.platform.events import decode, encode
from services.platform.mongo import find_by_ids
from swiftchain.events.v1 import events_pb2

_log = logging.getLogger(__name__)
#: Locks behind :func:`document_lock`: documents share a few, by hash, rather than one each.
LOCK_STRIPES: Final = 64
_stripes = [threading.Lock() for _ in range(LOCK_STRIPES)]
#: Documents whose events :class:`OutboxRelay` sends before one flush.
RELAY_BATCH: Final = 500


@contextmanager
def document_lock(collection: str, document_id: object) -> Iterator[None]:
    """Hold the lock of one document of ``collection`` in this process: around every update of
    an outbox document (a query then a write, as FerretDB v1 runs it) that another thread may
    update too, so that neither overwrites the other (see the module docstring). Hold it for one
    document at a time (two held at once could deadlock)."""
    with _stripes[hash((collection, str(document_id))) % LOCK_STRIPES]:
        yield


_marked_lock = threading.Lock()
_marked: dict[str, set[str]] = {}  # collection name -> ids of documents marked pending


def mark_pending(document: type[OutboxDocument], document_id: object) -> None:
    """After a write that queued events in the document ``document_id`` of ``document``'s
    collection: have this process's relay publish them at its next tick (see the module
    docstring)."""
    with _marked_lock:
        _marked.setdefault(document._get_collection_name(), set()).add(str(document_id))


def _take_marked(document: type[OutboxDocument]) -> set[str]:
    with _marked_lock:
        return _marked.pop(document._get_collection_name(), set())


def _mark_again(document: type[OutboxDocument], ids: set[str]) -> None:
    with _marked_lock:
        _marked.setdefault(document._get_collection_name(), set()).update(ids)


class OutboxDocument(mongoengine.Document):
    """Base of documents that carry the events of their own last changes."""

    meta: ClassVar[dict[str, Any]] = {"abstract": True}

    #: Serialized EventEnvelopes not yet acknowledged by Kafka, oldest first.
    outbox = mongoengine.ListField(mongoengine.BinaryField(), default=list)
    #: True while ``outbox`` is not empty (a plain field is cheaper to query than an array size).
    outbox_pending = mongoengine.BooleanField(default=False)

    def add_events(self, events: Sequence[events_pb2.EventEnvelope]) -> None:
        """Queue ``events`` for publishing; they are stored by the document's next save."""
        if events:
            self.outbox = [*self.outbox, *(e.SerializeToString() for e in events)]
            self.outbox_pending = True


def outbox_update(events: Sequence[events_pb2.EventEnvelope]) -> dict[str, Any]:
    """Keyword arguments for a mongoengine ``update_one`` that queues ``events`` atomically with
    the update's other changes."""
    if not events:
        return {}
    return {
        "push_all__outbox": [e.SerializeToString() for e in events],
        "set__outbox_pending": True,
    }


class OutboxRelay:
    """Publishes the pending events of ``documents`` to ``topic`` until stopped.

    Without ``sweep_seconds`` every tick reads the collections for pending documents; with it,
    ticks read the documents marked by :func:`mark_pending` and the collections are read at the
    first tick and then every ``sweep_seconds`` (the writers of ``documents`` must mark)."""

    def __init__(
        self,
        producer: Any,
        topic: str,
        documents: Sequence[type[OutboxDocument]],
        *,
        interval_seconds: float = 0.1,
        sweep_seconds: float | None = None,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._documents = documents
        self._interval = interval_seconds
        self._sweep = sweep_seconds
        self._wake = threading.Event()

    def wake(self) -> None:
        """Publish soon (call after a write that queued events) rather than at the next tick."""
        self._wake.set()

    def publish_pending(self, timeout: float = 30.0) -> int:
        """Publish every pending event once and return how many were published.

        Documents go :data:`RELAY_BATCH` at a time: their events are sent together and flushed
        once, and only then removed from each document. Every update filters on ``_id`` alone,
        the one filter FerretDB v1 answers from an index (any other field makes it read the
        whole collection, which cost ~65 ms a document at a thousand of them)."""
        return sum(
            self._publish_documents(
                document_class,
                document_class._get_collection().find({"outbox_pending": True}, {"outbox": 1}),
                timeout,
            )
            for document_class in self._documents
        )

    def publish_marked(self, timeout: float = 30.0) -> int:
        """Publish the pending events of the documents marked since the last call (read by
        ``_id``); return how many were published. Marks are kept again if publishing fails."""
        published = 0
        for document_class in self._documents:
            ids = _take_marked(document_class)
            if not ids:
                continue
            try:
                found = find_by_ids(document_class._get_collection(), ids).values()
                pending = (document for document in found if document.get("outbox_pending"))
                published += self._publish_documents(document_class, pending, timeout)
            except BaseException:
                _mark_again(document_class, ids)
                raise
        return published

    def _publish_documents(
        self,
        document_class: type[OutboxDocument],
        documents: Iterable[dict[str, Any]],
        timeout: float,
    ) -> int:
        """Publish the events of ``documents``, :data:`RELAY_BATCH` documents at a time."""
        published = 0
        batch: list[tuple[Any, list[bytes]]] = []
        for document in documents:
            batch.append((document["_id"], [bytes(raw) for raw in document.get("outbox") or ()]))
            if len(batch) >= RELAY_BATCH:
                published += self._publish(document_class, batch, timeout)
                batch = []
        if batch:
            published += self._publish(document_class, batch, timeout)
        return published

    def _publish(
        self,
        document_class: type[OutboxDocument],
        batch: Sequence[tuple[Any, list[bytes]]],
        timeout: float,
    ) -> int:
        """Send the events of ``batch`` (document id, its pending events), wait for Kafka's
        acknowledgement of all, then remove them from their documents."""
        futures = []
        for _, raw_events in batch:
            for raw in raw_events:
                key, value, headers = encode(decode(raw))
                futures.append(
                    self._producer.send(self._topic, key=key, value=value, headers=headers)
                )
        if futures:
            self._producer.flush(timeout=timeout)
            for future in futures:
                future.get(timeout=timeout)
        collection = document_class._get_collection()
        name = document_class._get_collection_name()
        for document_id, raw_events in batch:
            with document_lock(name, document_id):
                # What is left after the removal: events queued since the read stay, and keep
                # the flag set. Under the lock no update of this process lands between this and
                # the write below; another process's could: each service runs as one replica
                # (k8s/base).
                left = (
                    collection.find_one_and_update(
                        {"_id": document_id},
                        {"$pullAll": {"outbox": raw_events}},
                        return_document=ReturnDocument.AFTER,  # FerretDB v1: no projection here
                    )
                    if raw_events
                    else collection.find_one({"_id": document_id}, {"outbox": 1})
                )
                if left is not None and not left.get("outbox"):
                    collection.update_one({"_id": document_id}, {"$set": {"outbox_pending": False}})
        return len(futures)

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set; errors are logged and retried at the next tick."""
        next_sweep = 0.0  # the first tick reads everything: what a previous process left
        while not stop.is_set():
            try:
                if self._sweep is None or time.monotonic() >= next_sweep:
                    self.publish_pending()
                    next_sweep = time.monotonic() + (self._sweep or 0.0)
                else:
                    self.publish_marked()
            except Exception:  # Kafka or the database is down: the events wait in the outbox
                _log.warning("outbox relay: publishing failed; will retry", exc_info=True)
            self._wake.wait(self._interval)
            self._wake.clear()
