"""The node's sequencing thread: the ordering topic in, persisted blocks out (DESIGN §3.2, §3.4).

:class:`OrderingLoop` reads ``chain.ordering.v1`` in order from the offset after the last
persisted block, feeds a :class:`~chain.sequencer.Sequencer`, persists each block it cuts
(entries and hash tiles as files, then the block document, the commit record) and its
rejections, and hands each persisted block on to be signed. It also sends a time-to-cut message
when its oldest pending entry is older than the consortium's ``batch_timeout_ms``.

Nothing on the topic stops it: a record that is not an ordering record is a rejection at its
offset on every node (:mod:`chain.sequencer`), handed to ``on_undecodable`` to be set aside. The
broker or the database away is waited out: every read and write is retried with backoff
(:func:`~services.platform.threads.retry_transient`), and the writes are idempotent by position.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from chain.errors import InvalidInputError
from chain.node.entry_index import EntryIndex
from chain.node.entry_spans import EntrySpans
from chain.node.ports import IDLE_WAIT_MS, NodeStore, Producer, Reader
from chain.sequencer import Block, OrderedRecord, Rejection, Sequencer, ttc_record
from chain.tiles import MemoryHashStore, tile_bytes, tiles_touched
from services.platform.threads import retry_transient

__all__ = ["OrderingLoop", "persist_block"]

T = TypeVar("T")


def persist_block(store: NodeStore, tree: MemoryHashStore, block: Block) -> None:
    """Write ``block``: its entries and the hash tiles they changed (files), then the block
    document (the commit record)."""
    checkpoint = block.checkpoint
    first = block.entries[0].leaf_index
    store.write_log(
        first,
        [e.parsed.raw for e in block.entries],
        [
            (tile.level, tile.index, tile.width, tile_bytes(tree, tile))
            for tile in tiles_touched(first, checkpoint.size)
        ],
    )
    store.write_block(checkpoint.height, checkpoint.size, block.text, block.cut_offset)


class OrderingLoop:
    """See the module docstring. ``on_persisted(block)`` runs after each block is stored and
    indexed, ``on_rejected()`` after a poll that rejected entries, ``on_undecodable(record,
    rejection)`` for each record that was not an ordering record; ``clock`` is monotonic."""

    def __init__(
        self,
        *,
        node_name: str,
        sequencer: Sequencer,
        store: NodeStore,
        tree: MemoryHashStore,
        index: EntryIndex,
        producer: Producer,
        topic: str,
        batch_timeout_ms: int,
        spans: EntrySpans,
        on_persisted: Callable[[Block], None],
        on_rejected: Callable[[], None],
        applied_offset: int,
        on_undecodable: Callable[[OrderedRecord, Rejection], None] = lambda _r, _j: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if batch_timeout_ms < 1:
            raise InvalidInputError(f"expected batch_timeout_ms >= 1, got {batch_timeout_ms}")
        self._name = node_name
        self.sequencer = sequencer
        self._store = store
        self._tree = tree
        self._index = index
        self._producer = producer
        self._topic = topic
        self._timeout = batch_timeout_ms / 1000
        self._spans = spans
        self._on_persisted = on_persisted
        self._on_rejected = on_rejected
        self._on_undecodable = on_undecodable
        self._clock = clock
        self._stop = threading.Event()
        #: The cut offset of the last persisted block (-1 before the first).
        self.applied_offset = applied_offset
        #: The offset after the last record read.
        self.end_offset = 0

    def run(self, reader: Reader, stop: threading.Event) -> None:
        """Read from ``reader`` until ``stop`` is set (raises
        :class:`~services.platform.threads.Stopped` if it is set while a retry waits)."""
        self._stop = stop
        sequencer = self.sequencer
        clock = self._clock
        pending_since: float | None = None
        ttc_sent_for = 0
        while not stop.is_set():
            wait_ms = IDLE_WAIT_MS
            if pending_since is not None and ttc_sent_for != sequencer.next_height:
                due = pending_since + self._timeout - clock()
                wait_ms = max(1, min(IDLE_WAIT_MS, int(due * 1000) + 1))
            polled = self._retry(partial(reader.poll, wait_ms), "reading the ordering topic")
            self._spans.read(polled)
            if polled:
                self._apply(
                    sorted(
                        (OrderedRecord(r.offset, r.timestamp, r.value) for r in polled),
                        key=lambda r: r.offset,
                    )
                )
            if sequencer.pending_count == 0:
                pending_since = None
            elif pending_since is None:
                pending_since = clock()
            elif clock() - pending_since >= self._timeout and ttc_sent_for != sequencer.next_height:
                height = sequencer.next_height
                ttc = ttc_record(height, self._name)
                self._retry(partial(self._producer.send, self._topic, ttc), "sending a time-to-cut")
                ttc_sent_for = height

    def _apply(self, records: list[OrderedRecord]) -> None:
        # apply() reads the store (stored_ids) before it changes any state: a retry is safe.
        output = self._retry(
            lambda: self.sequencer.apply(records, self._index.stored_ids), "sequencing records"
        )
        for block in output.blocks:
            self._persist(block)
        rows = [(r.offset, r.entry_id, r.reason, r.code) for r in output.rejections]
        if rows:
            self._retry(lambda: self._store.write_rejections(rows), "storing rejections")
        by_offset = {record.offset: record for record in records}
        for rejection in output.rejections:
            if rejection.undecodable:
                self._on_undecodable(by_offset[rejection.offset], rejection)
        if output.rejections:
            self._on_rejected()
        self.end_offset = records[-1].offset + 1

    def _retry(self, operation: Callable[[], T], doing: str) -> T:
        return retry_transient(operation, stop=self._stop, doing=f"node {self._name}: {doing}")

    def _persist(self, block: Block) -> None:
        self._retry(
            lambda: persist_block(self._store, self._tree, block),
            f"persisting block {block.checkpoint.height}",
        )
        for sequenced in block.entries:
            self._index.add(sequenced.parsed.entry_id, sequenced.leaf_index)
        self.applied_offset = block.cut_offset
        self._on_persisted(block)
