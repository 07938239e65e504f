"""The one way a service writes entries to the log and learns what became of each.

A service stores what it accepted first (its own store, its own transaction), then hands the
entries to :meth:`LogWriter.write`: they go to the ordering topic in batch records
(:func:`chain.sequencer.ordering_records`), idempotently with ``acks=all``, and the call returns
once Kafka has acknowledged them, after ``on_ordered`` has recorded where they were ordered.
From then on the writer *follows sealed checkpoints* on one chain node and reports each entry's
fate to the service's :class:`EntryFates`:

* **sealed**: the entry is a leaf of a sealed checkpoint (found by reading the leaves each new
  checkpoint adds, only while some entry is followed);
* **rejected**: the checkpoint's block was cut at or after the entry's ordering offset
  (``cut_offset``) and the entry is not in it, so the log decided against it; one status
  lookup then names the reason. A resent entry whose first copy was sealed earlier is reported
  sealed at that first copy's leaf.

Nothing polls per entry. A seal seen before Kafka's acknowledgement reached the writer is held
back until ``on_ordered`` has run, so a service always learns "ordered" before "sealed".

After a restart the service hands back what it stored and has not settled
(:meth:`LogWriter.resume`). With a :class:`LogPosition` the writer reads on from the tree size it
last handled; without one it starts at the node's latest checkpoint and looks up once the
entries that may have settled while it was away.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import grpc
from google.protobuf.message import DecodeError
from opentelemetry import context as otel_context

from chain.entry import read_body
from chain.errors import InvalidInputError, UnavailableError
from chain.sequencer import ordering_records
from services.platform.follow import follow_until_stopped
from services.platform.kafka import publish_span, trace_headers
from services.platform.threads import start_supervised
from services.platform.topics import ORDERING_TOPIC
from swiftchain.chain.v1 import chain_service_pb2 as chain_pb
from swiftchain.chain.v1 import chain_service_pb2_grpc
from swiftchain.common.v1 import common_pb2

__all__ = [
    "EntryFates",
    "LogPosition",
    "LogWriter",
    "Ordered",
    "Rejected",
    "Sealed",
]

_log = logging.getLogger(__name__)
#: Leaves read per GetEntries call while following.
_PAGE = 1000
_CALL_TIMEOUT = 10.0


@dataclass(frozen=True)
class Ordered:
    """Kafka acknowledged an entry: its record's offset and append time on the ordering topic
    (entries of one batch record share both)."""

    entry_id: str
    offset: int
    time: datetime


@dataclass(frozen=True)
class Sealed:
    """An entry is the leaf ``leaf_index`` of the sealed checkpoint of ``tree_size``."""

    entry_id: str
    leaf_index: int
    tree_size: int


@dataclass(frozen=True)
class Rejected:
    """The log left an entry out; ``reason`` is a ``swiftchain.chain.v1.RejectionReason``."""

    entry_id: str
    reason: int
    detail: str


class EntryFates(Protocol):
    """What a service does when the log settles its entries (called from the writer's thread,
    and from :meth:`LogWriter.write` for seals seen before the acknowledgement). Both must be
    idempotent: after a failure the same entries may be reported again."""

    def entries_sealed(self, sealed: Sequence[Sealed]) -> None:
        """Record that ``sealed`` are on the log."""

    def entries_rejected(self, rejected: Sequence[Rejected]) -> None:
        """Record that the log rejected ``rejected``."""


class LogPosition(Protocol):
    """Where a service keeps the tree size up to which the writer has handled sealed leaves."""

    def log_position(self) -> int:
        """The stored tree size (0 at first)."""

    def set_log_position(self, tree_size: int) -> None:
        """Store ``tree_size``."""


@dataclass
class _Followed:
    offset: int | None = None
    #: (leaf index, tree size) of a seal seen before the acknowledgement was recorded.
    early: tuple[int, int] | None = None


def entry_id_of(entry: bytes) -> str:
    """The entry id inside ``entry`` (exact ChainEntry bytes); InvalidInputError if it has
    none."""
    try:
        entry_id = read_body(entry).entry_id
    except DecodeError:
        entry_id = ""
    if not entry_id:
        raise InvalidInputError("expected ChainEntry bytes with an entry id, got none")
    return entry_id


class LogWriter:
    """See the module docstring. Thread-safe; :meth:`start` the follower before writing."""

    def __init__(
        self,
        producer: Any,
        chain: grpc.Channel,
        fates: EntryFates,
        *,
        topic: str = ORDERING_TOPIC,
        position: LogPosition | None = None,
        doing: str = "following sealed checkpoints",
    ) -> None:
        self._producer = producer
        self._chain = chain_service_pb2_grpc.ChainServiceStub(chain)
        self._fates = fates
        self._topic = topic
        self._position_store = position
        self._doing = doing
        self._lock = threading.Lock()
        self._followed: dict[str, _Followed] = {}
        #: Tree size up to which sealed leaves were handled; None until the follower knows it.
        self._position: int | None = None
        #: Entries to look up once the follower is positioned (resumed without a position).
        self._look_up: set[str] = set()
        self._stop = threading.Event()
        self._call: Any = None
        self._thread: threading.Thread | None = None

    # --- writing ------------------------------------------------------------------------

    def write(
        self,
        entries: Sequence[bytes],
        *,
        on_ordered: Callable[[Sequence[Ordered]], None] = lambda _: None,
        follow: Sequence[bool] | None = None,
        contexts: Sequence[otel_context.Context] | None = None,
        timeout: float = 30.0,
    ) -> list[Ordered]:
        """Send ``entries`` (exact ChainEntry bytes) and follow them until the log settles
        them (only those whose ``follow`` flag is true, when given). Returns where each was
        ordered once Kafka acknowledged all and ``on_ordered`` recorded it; raises
        UnavailableError if Kafka did not.

        Each batch record carries the trace context of its first entry (``contexts``, one per
        entry; the current one by default), so the nodes' spans join that trace."""
        if follow is not None and len(follow) != len(entries):
            raise ValueError(f"expected {len(entries)} follow flags, got {len(follow)}")
        if contexts is not None and len(contexts) != len(entries):
            raise ValueError(f"expected {len(entries)} trace contexts, got {len(contexts)}")
        ids = [entry_id_of(entry) for entry in entries]
        followed = [i for i, keep in zip(ids, follow or [True] * len(ids), strict=True) if keep]
        with self._lock:
            for entry_id in followed:
                self._followed.setdefault(entry_id, _Followed())
        placed = self._send(entries, contexts, timeout)
        ordered = [
            Ordered(entry_id, offset, datetime.fromtimestamp(millis / 1000, UTC))
            for entry_id, (offset, millis) in zip(ids, placed, strict=True)
        ]
        on_ordered(ordered)
        early: list[Sealed] = []
        with self._lock:
            for item in ordered:
                state = self._followed.get(item.entry_id)
                if state is None:
                    continue
                if state.early is not None:
                    del self._followed[item.entry_id]
                    early.append(Sealed(item.entry_id, *state.early))
                elif state.offset is None:
                    state.offset = item.offset
        if early:
            self._fates.entries_sealed(early)
        return ordered

    def _send(
        self,
        entries: Sequence[bytes],
        contexts: Sequence[otel_context.Context] | None,
        timeout: float,
    ) -> list[tuple[int, int]]:
        futures = []
        first = 0
        for value, count in ordering_records(entries):
            token = otel_context.attach(contexts[first]) if contexts is not None else None
            try:
                with publish_span(self._topic, count):
                    headers = trace_headers()
                    futures.append(
                        (self._producer.send(self._topic, value, headers=headers), count)
                    )
            finally:
                if token is not None:
                    otel_context.detach(token)
            first += count
        placed: list[tuple[int, int]] = []
        try:
            self._producer.flush(timeout=timeout)
            for future, count in futures:
                metadata = future.get(timeout=timeout)
                placed.extend([(int(metadata.offset), int(metadata.timestamp))] * count)
        except Exception as error:  # kafka-python raises its own KafkaError family
            raise UnavailableError(f"could not hand entries to Kafka: {error}") from error
        return placed

    # --- following ----------------------------------------------------------------------

    def resume(self, entries: Sequence[tuple[str, int | None]]) -> None:
        """Follow again entries a service stored and has not settled: (entry id, ordering
        offset, or None if the acknowledgement was never recorded)."""
        with self._lock:
            for entry_id, offset in entries:
                state = self._followed.setdefault(entry_id, _Followed())
                if offset is not None:
                    state.offset = offset
                if self._position_store is None:
                    self._look_up.add(entry_id)

    @property
    def followed(self) -> int:
        """How many entries are written or resumed and not settled yet."""
        with self._lock:
            return len(self._followed)

    def start(self) -> None:
        """Start following sealed checkpoints in a thread of its own."""
        self._thread = start_supervised("log-writer", self._run)

    def stop(self) -> None:
        """Stop following and wait for the thread."""
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        follow_until_stopped(self._stop, self._follow_once, doing=self._doing)

    def _follow_once(self) -> None:
        if self._position is None and self._position_store is not None:
            self._position = self._position_store.log_position()
        if self._position is None:
            latest = self._latest()
            if latest is None:
                self._position = 0
            else:
                self._settle(latest, read_leaves=False)
        assert self._position is not None
        call = self._chain.WatchCheckpoints(
            chain_pb.WatchCheckpointsRequest(from_tree_size=self._position + 1)
        )
        self._call = call
        for message in call:
            checkpoint = message.checkpoint
            if checkpoint.tree_size <= self._position:
                continue
            # Behind by several checkpoints (a slow store): settle everything sealed now in
            # one go, so the service writes once for all of them. With nothing followed there
            # is nothing to settle, and no reason to ask.
            latest = self._latest() if self.followed else None
            if latest is not None and latest.tree_size > checkpoint.tree_size:
                checkpoint = latest
            self._settle(checkpoint, read_leaves=True)

    def _latest(self) -> chain_pb.SealedCheckpoint | None:
        try:
            response = self._chain.GetCheckpoint(
                chain_pb.GetCheckpointRequest(), timeout=_CALL_TIMEOUT
            )
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return response.checkpoint

    def _settle(self, checkpoint: chain_pb.SealedCheckpoint, *, read_leaves: bool) -> None:
        """Report what the checkpoint settles, then move the position to its tree size."""
        start = self._position or 0
        size = int(checkpoint.tree_size)
        with self._lock:
            anything = bool(self._followed)
        sealed: list[Sealed] = []
        if anything and read_leaves and size > start:
            sealed = self._sealed_among(start, size)
        if sealed:
            self._fates.entries_sealed(sealed)
        with self._lock:
            for item in sealed:
                self._followed.pop(item.entry_id, None)
            # Ordered at or before the cut and not among the leaves: the log decided against
            # it, or (a resend) sealed its first copy earlier. Resumed entries whose fate may
            # have been decided while nobody followed are looked up too.
            settled_unseen = {
                entry_id
                for entry_id, state in self._followed.items()
                if state.early is None
                and state.offset is not None
                and state.offset <= checkpoint.cut_offset
            }
            if not read_leaves:
                settled_unseen |= {i for i in self._look_up if i in self._followed}
                self._look_up.clear()
        if settled_unseen:
            self._look_up_fates(sorted(settled_unseen), size)
        self._position = size
        if self._position_store is not None:
            self._position_store.set_log_position(size)

    def _sealed_among(self, start: int, size: int) -> list[Sealed]:
        sealed: list[Sealed] = []
        index = start
        while index < size:
            page = self._chain.GetEntries(
                chain_pb.GetEntriesRequest(start=index, end=min(size, index + _PAGE)),
                timeout=30,
            )
            if not page.entries:
                raise UnavailableError(f"the chain node served no entries from {index} of {size}")
            with self._lock:
                for entry in page.entries:
                    try:
                        entry_id = read_body(entry).entry_id
                    except DecodeError:  # a sealed leaf is valid; a node serving junk is not
                        entry_id = ""
                    state = self._followed.get(entry_id) if entry_id else None
                    if state is not None:
                        if state.offset is None:
                            state.early = (index, size)
                        else:
                            sealed.append(Sealed(entry_id, index, size))
                    index += 1
        return sealed

    def _look_up_fates(self, entry_ids: Sequence[str], size: int) -> None:
        sealed: list[Sealed] = []
        rejected: list[Rejected] = []
        unknown: list[str] = []
        for entry_id in entry_ids:
            try:
                status = self._chain.GetEntryStatus(
                    chain_pb.GetEntryStatusRequest(entry_id=entry_id), timeout=_CALL_TIMEOUT
                )
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                unknown.append(entry_id)
                continue
            if status.state == common_pb2.ENTRY_STATE_REJECTED:
                rejected.append(
                    Rejected(entry_id, status.rejection_reason, status.rejection_detail)
                )
            elif status.HasField("leaf_index") and status.leaf_index < size:
                sealed.append(Sealed(entry_id, status.leaf_index, size))
            else:
                unknown.append(entry_id)
        if sealed:
            self._fates.entries_sealed(sealed)
        if rejected:
            for item in rejected:
                _log.warning("entry %s was rejected by the log: %s", item.entry_id, item.detail)
            self._fates.entries_rejected(rejected)
        with self._lock:
            for entry_id in [item.entry_id for item in sealed] + [r.entry_id for r in rejected]:
                self._followed.pop(entry_id, None)
            # The node does not know them (never ordered, or ordered in a record it could not
            # read): followed on, but not looked up again until the service sends them again.
            for entry_id in unknown:
                state = self._followed.get(entry_id)
                if state is not None:
                    state.offset = None
