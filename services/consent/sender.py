"""Hands the consent service's entries and events to Kafka, after the store has them.

Requests never wait for Kafka: a directive version or a decision is stored, answered, and queued
here. The sender sends a batch (entries to the ordering topic, events to their topics), waits for
Kafka's acknowledgement, then tells the store (the patients' notifications kept, versions marked
logged, decisions archived: the outbox batches they were committed in are deleted once all of
theirs are acknowledged).
A failed batch is retried; after a crash, what the store still calls unlogged or pending is
queued again at start (a duplicate entry id is skipped by the log, a duplicate event by
consumers). It also learns where CONSENT entries landed on the log, for the leaf index that
decisions cite.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

import grpc
from opentelemetry import context as otel_context

from chain.sequencer import ordering_records
from services.consent.domain import ConsentBook, Outgoing
from services.consent.store import ConsentMongoStore
from services.platform.events import encode
from services.platform.kafka import publish_span, trace_headers
from swiftchain.chain.v1 import chain_service_pb2, chain_service_pb2_grpc
from swiftchain.common.v1 import common_pb2

_log = logging.getLogger(__name__)
_ON_LOG = (common_pb2.ENTRY_STATE_SEQUENCED, common_pb2.ENTRY_STATE_SEALED)
MAX_BATCH = 1000
#: How long a batch gathers items after its first one.
LINGER_SECONDS = 0.02


class LogSender:
    """See the module docstring. :meth:`put` queues; :meth:`run` loops until stopped."""

    def __init__(
        self,
        producer: Any,
        ordering_topic: str,
        store: ConsentMongoStore,
        book: ConsentBook,
        chain: grpc.Channel,
        *,
        retry_seconds: float = 1.0,
        linger_seconds: float = LINGER_SECONDS,
    ) -> None:
        self._producer = producer
        self._ordering_topic = ordering_topic
        self._store = store
        self._book = book
        self._chain = chain_service_pb2_grpc.ChainServiceStub(chain)
        self._retry = retry_seconds
        self._linger = linger_seconds
        self._queue: queue.Queue[tuple[Outgoing, otel_context.Context]] = queue.Queue()
        #: CONSENT entries the log rejected: not asked about again (the log has the alarm).
        self._rejected: set[str] = set()

    def put(self, item: Outgoing) -> None:
        """Queue an accepted change for Kafka; its entry carries the caller's trace context."""
        self._queue.put((item, otel_context.get_current()))

    @property
    def backlog(self) -> int:
        """Items waiting for Kafka."""
        return self._queue.qsize()

    def send_batch(
        self, queued: Sequence[tuple[Outgoing, otel_context.Context]], timeout: float = 30.0
    ) -> None:
        """Send ``queued`` (items with the trace context they were queued in) and record that
        Kafka has them; raises if Kafka does not acknowledge."""
        futures = []
        entry_headers: list[list[tuple[str, bytes]]] = []
        for item, context in queued:
            token = otel_context.attach(context)
            try:
                with publish_span(self._ordering_topic, 1):
                    entry_headers.append(trace_headers())
                    for topic, event in item.events:
                        key, value, headers = encode(event)
                        futures.append(
                            self._producer.send(topic, key=key, value=value, headers=headers)
                        )
            finally:
                otel_context.detach(token)
        # The entries travel as few batch records as fit: one Kafka record for the nodes to
        # fetch and decode per batch instead of one per item. A record carries the trace
        # context of its first item, whose trace the nodes' spans for it join.
        first = 0
        for value, count in ordering_records([item.entry for item, _ in queued]):
            futures.append(
                self._producer.send(self._ordering_topic, value, headers=entry_headers[first])
            )
            first += count
        self._producer.flush(timeout=timeout)
        for future in futures:
            future.get(timeout=timeout)
        batch = [item for item, _ in queued]
        versions = [item.version for item in batch if item.version is not None]
        decisions = [item.decision for item in batch if item.decision is not None]
        # Kept before the store forgets the batch, so a crash in between keeps them at the
        # resend after the restart (the history reads each notification once).
        self._store.append_notifications([n for item in batch for n in item.notifications])
        self._store.mark_logged(versions)
        self._store.archive_decisions(decisions)
        for version in versions:
            version.logged = True

    def learn_leaf_indexes(self, timeout: float = 5.0) -> None:
        """Ask a chain node where logged CONSENT entries landed."""
        for version in self._book.awaiting_leaf_index():
            if not version.logged or version.entry_id in self._rejected:
                continue
            try:
                status = self._chain.GetEntryStatus(
                    chain_service_pb2.GetEntryStatusRequest(entry_id=version.entry_id),
                    timeout=timeout,
                )
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    continue  # not sequenced yet
                raise
            if status.state in _ON_LOG and status.HasField("leaf_index"):
                self._book.record_leaf_index(version.entry_id, status.leaf_index)
                self._store.set_leaf_index(version)
            elif status.state == common_pb2.ENTRY_STATE_REJECTED:
                _log.error(
                    "CONSENT entry %s was rejected by the log: %s",
                    version.entry_id,
                    status.rejection_detail,
                )
                self._rejected.add(version.entry_id)

    def run(self, stop: threading.Event) -> None:
        """Send until ``stop`` is set and the queue is empty."""
        batch: list[tuple[Outgoing, otel_context.Context]] = []
        while True:
            if not batch:
                try:
                    batch.append(self._queue.get(timeout=0.2))
                except queue.Empty:
                    self._learn_quietly()
                    if stop.is_set():
                        return
                    continue
            # Nobody waits for this batch (the requests were answered), so it waits a moment
            # for more: fewer, larger Kafka flushes and store writes, less of the GIL that the
            # requests need.
            gathering = time.monotonic() + self._linger
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get(timeout=max(gathering - time.monotonic(), 0)))
                except queue.Empty:
                    break
            try:
                self.send_batch(batch)
                batch = []
            except Exception:  # Kafka or the database away: keep the batch and retry
                _log.warning(
                    "sending %d consent entries failed; will retry", len(batch), exc_info=True
                )
                if stop.wait(self._retry) and stop.is_set():
                    _log.error(
                        "stopping with %d consent entries unsent; they are resent at start",
                        len(batch),
                    )
                    return

    def _learn_quietly(self) -> None:
        try:
            self.learn_leaf_indexes()
        except grpc.RpcError as error:
            _log.warning("consent: chain node: %s", error.details())
        except Exception:
            _log.warning("learning leaf indexes failed; will retry", exc_info=True)
