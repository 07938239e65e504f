"""The node's spans for traced entries: sequencing and sealing, inside the submitter's trace.

An ordering record whose headers carry a W3C trace context (chain/node/submitter.py puts the
caller's there) gets two spans on every node, children of that context:
``chain.node.sequence`` from the poll that read it until the block holding it is persisted and
signed, and ``chain.node.seal`` from then until a checkpoint covering it is sealed by a quorum.
The records of one trace read in one poll form one group with one pair of spans, so a batch of
10,000 entries from one ``AnchorRecords`` call costs a node two spans, not 20,000.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context

from services.platform.kafka import context_from_headers

_tracer = trace.get_tracer("swiftchain.chain.node")
#: Groups kept waiting at most (oldest dropped first): a node that cannot seal must not grow.
MAX_GROUPS = 10_000


@dataclass
class _Group:
    parent: Context
    last_offset: int
    count: int
    since_ns: int
    tree_size: int = 0


def _split(
    groups: deque[_Group], finished: Callable[[_Group], bool]
) -> tuple[list[_Group], deque[_Group]]:
    """The finished groups, and the others still waiting (in order)."""
    done: list[_Group] = []
    waiting: deque[_Group] = deque(maxlen=MAX_GROUPS)
    for group in groups:
        (done if finished(group) else waiting).append(group)
    return done, waiting


class EntrySpans:
    """See the module docstring. Thread-safe: the sequencing and cosigning threads share it."""

    def __init__(self, node_name: str) -> None:
        self._node = node_name
        self._lock = threading.Lock()
        self._reading: deque[_Group] = deque(maxlen=MAX_GROUPS)
        self._sealing: deque[_Group] = deque(maxlen=MAX_GROUPS)
        #: The largest tree size sealed so far: the cosigning thread may seal a block (on the
        #: others' cosignatures) before the sequencing thread has reported it persisted.
        self._sealed_size = 0

    def read(self, records: Iterable[Any]) -> None:
        """Kafka records of the ordering topic just polled (anything with ``offset`` and
        ``headers``); those without a trace context are ignored."""
        now = time.time_ns()
        groups: dict[bytes, _Group] = {}
        for record in records:
            traceparent = next((v for k, v in record.headers or () if k == "traceparent"), None)
            if traceparent is None:
                continue
            group = groups.get(traceparent)
            if group is None:
                group = _Group(context_from_headers(record.headers), record.offset, 0, now)
                groups[traceparent] = group
            group.last_offset = max(group.last_offset, record.offset)
            group.count += 1
        if groups:
            with self._lock:
                self._reading.extend(groups.values())

    def persisted(self, cut_offset: int, tree_size: int) -> None:
        """The block ending at ordering offset ``cut_offset`` (a tree of ``tree_size``) is stored
        and signed: end the sequencing span of every group it completes (and their sealing span
        too, if a quorum has sealed that size already)."""
        now = time.time_ns()
        with self._lock:
            done, self._reading = _split(self._reading, lambda g: g.last_offset <= cut_offset)
            already_sealed = tree_size <= self._sealed_size
            for group in done:
                self._span("chain.node.sequence", trace.SpanKind.CONSUMER, group, now, tree_size)
                group.since_ns, group.tree_size = now, tree_size
                if already_sealed:
                    self._span("chain.node.seal", trace.SpanKind.INTERNAL, group, now, tree_size)
                else:
                    self._sealing.append(group)

    def sealed(self, tree_size: int) -> None:
        """A quorum sealed the checkpoint of ``tree_size``: end the sealing span of every group
        in it."""
        now = time.time_ns()
        with self._lock:
            self._sealed_size = max(self._sealed_size, tree_size)
            done, self._sealing = _split(self._sealing, lambda g: g.tree_size <= tree_size)
        for group in done:
            self._span("chain.node.seal", trace.SpanKind.INTERNAL, group, now, tree_size)

    def _span(
        self, name: str, kind: trace.SpanKind, group: _Group, end_ns: int, tree_size: int
    ) -> None:
        span = _tracer.start_span(
            name,
            context=group.parent,
            kind=kind,
            start_time=group.since_ns,
            attributes={
                "swiftchain.node": self._node,
                "swiftchain.entry_count": group.count,
                "swiftchain.tree_size": tree_size,
                "messaging.system": "kafka",
            },
        )
        span.end(end_time=end_ns)
