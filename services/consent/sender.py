"""Hands the consent service's entries and events to Kafka, after the store has them.

Requests never wait for Kafka: a directive version or a decision is stored, answered, and queued
here. The sender sends a batch (events to their topics, entries through the platform's
:class:`LogWriter`, in one flush), and once Kafka acknowledged it tells the store (the
patients' notifications kept, versions marked logged, decisions archived: the outbox batches
they were committed in are deleted once all of theirs are acknowledged).
A failed batch is retried; after a crash, what the store still calls unlogged or pending is
queued again at start (a duplicate entry id is skipped by the log, a duplicate event by
consumers). The writer reports where each CONSENT entry landed on the log, for the leaf index
that decisions cite.
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

from services.consent.domain import ConsentBook, Outgoing
from services.consent.store import ConsentMongoStore
from services.platform.events import encode
from services.platform.log_writer import LogWriter, Ordered, Rejected, Sealed

_log = logging.getLogger(__name__)
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
        self._store = store
        self._book = book
        self._writer = LogWriter(
            producer, chain, self, topic=ordering_topic, doing="following CONSENT entries"
        )
        self._retry = retry_seconds
        self._linger = linger_seconds
        self._queue: queue.Queue[tuple[Outgoing, otel_context.Context]] = queue.Queue()

    def put(self, item: Outgoing) -> None:
        """Queue an accepted change for Kafka; its entry carries the caller's trace context."""
        self._queue.put((item, otel_context.get_current()))

    def send_batch(
        self, queued: Sequence[tuple[Outgoing, otel_context.Context]], timeout: float = 30.0
    ) -> None:
        """Send ``queued`` (items with the trace context they were queued in) and record that
        Kafka has them; raises if Kafka does not acknowledge."""
        events = []
        for item, _ in queued:
            for topic, event in item.events:
                key, value, headers = encode(event)
                events.append(self._producer.send(topic, key=key, value=value, headers=headers))
        batch = [item for item, _ in queued]

        def acknowledged(_: Sequence[Ordered]) -> None:
            # The writer's flush sent the events too: they are acknowledged before the store
            # forgets the batch.
            for future in events:
                future.get(timeout=timeout)
            versions = [item.version for item in batch if item.version is not None]
            decisions = [item.decision for item in batch if item.decision is not None]
            # Kept before the store forgets the batch, so a crash in between keeps them at the
            # resend after the restart (the history reads each notification once).
            self._store.append_notifications([n for item in batch for n in item.notifications])
            self._store.mark_logged(versions)
            self._store.archive_decisions(decisions)
            for version in versions:
                version.logged = True

        # Only CONSENT entries are followed to the log: decisions cite their leaf index.
        self._writer.write(
            [item.entry for item in batch],
            on_ordered=acknowledged,
            follow=[item.version is not None for item in batch],
            contexts=[context for _, context in queued],
            timeout=timeout,
        )

    def entries_sealed(self, sealed: Sequence[Sealed]) -> None:
        """The writer's report: CONSENT entries on the log, at their leaves."""
        for item in sealed:
            version = self._book.record_leaf_index(item.entry_id, item.leaf_index)
            if version is not None:
                self._store.set_leaf_index(version)

    def entries_rejected(self, rejected: Sequence[Rejected]) -> None:
        """The writer's report: the service signed what it validated, so a rejection means
        the log and the service disagree: an operator must look (the log has the alarm)."""
        for item in rejected:
            _log.error("CONSENT entry %s was rejected by the log: %s", item.entry_id, item.detail)

    def run(self, stop: threading.Event) -> None:
        """Send until ``stop`` is set and the queue is empty."""
        self._writer.resume([(v.entry_id, None) for v in self._book.awaiting_leaf_index()])
        self._writer.start()
        try:
            self._send_until(stop)
        finally:
            self._writer.stop()

    def _send_until(self, stop: threading.Event) -> None:
        batch: list[tuple[Outgoing, otel_context.Context]] = []
        while True:
            if not batch:
                try:
                    batch.append(self._queue.get(timeout=0.2))
                except queue.Empty:
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
