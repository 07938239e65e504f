"""The node's sequencing thread: the ordering topic in, persisted blocks out (DESIGN §3.2, §3.4).

:class:`OrderingLoop` reads ``chain.ordering.v1`` in order from the offset after the last
persisted block, feeds a :class:`~chain.sequencer.Sequencer`, persists each block it cuts
(entries and hash tiles as files, then the block document, the commit record) and its
rejections, and hands each persisted block on to be signed. It also sends a time-to-cut message
when its oldest pending entry is older than the consortium's ``batch_timeout_ms``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from chain.errors import InvalidInputError
from chain.node.entry_index import EntryIndex
from chain.node.entry_spans import EntrySpans
from chain.node.ports import IDLE_WAIT_MS, NodeStore, Producer, Reader
from chain.sequencer import Block, OrderedRecord, Sequencer, ttc_record
from chain.tiles import MemoryHashStore, tile_bytes, tiles_touched

__all__ = ["OrderingLoop", "persist_block"]


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
    indexed, ``on_rejected()`` after a poll that rejected entries; ``clock`` is monotonic."""

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
        self._clock = clock
        #: The cut offset of the last persisted block (-1 before the first).
        self.applied_offset = applied_offset
        #: The offset after the last record read.
        self.end_offset = 0

    def run(self, reader: Reader, stop: threading.Event) -> None:
        """Read from ``reader`` until ``stop`` is set."""
        sequencer = self.sequencer
        clock = self._clock
        pending_since: float | None = None
        ttc_sent_for = 0
        while not stop.is_set():
            wait_ms = IDLE_WAIT_MS
            if pending_since is not None and ttc_sent_for != sequencer.next_height:
                due = pending_since + self._timeout - clock()
                wait_ms = max(1, min(IDLE_WAIT_MS, int(due * 1000) + 1))
            polled = reader.poll(wait_ms)
            self._spans.read(polled)
            if polled:
                records = sorted(
                    (OrderedRecord(r.offset, r.timestamp, r.value) for r in polled),
                    key=lambda r: r.offset,
                )
                output = sequencer.apply(records, self._index.stored_ids)
                for block in output.blocks:
                    self._persist(block)
                self._store.write_rejections(
                    (r.offset, r.entry_id, r.reason, r.code) for r in output.rejections
                )
                if output.rejections:
                    self._on_rejected()
                self.end_offset = records[-1].offset + 1
            if sequencer.pending_count == 0:
                pending_since = None
            elif pending_since is None:
                pending_since = clock()
            elif clock() - pending_since >= self._timeout and ttc_sent_for != sequencer.next_height:
                ttc_sent_for = sequencer.next_height
                self._producer.send(self._topic, ttc_record(ttc_sent_for, self._name))

    def _persist(self, block: Block) -> None:
        persist_block(self._store, self._tree, block)
        for sequenced in block.entries:
            self._index.add(sequenced.parsed.entry_id, sequenced.leaf_index)
        self.applied_offset = block.cut_offset
        self._on_persisted(block)
