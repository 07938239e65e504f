"""The anchoring service's view of the log: which watched versions each sealed checkpoint seals,
and where overdue versions stand (the gRPC side of :mod:`services.anchoring.tracking`).

Two loops on one chain node. The first follows ``WatchCheckpoints``; for each new checkpoint it
reads the newly sealed leaves with ``GetEntries`` (only while some version is watched: with
none, nothing can be in them) and hands their leaf hashes to the tracker, then stores the
position. When it has fallen behind, it takes everything sealed up to the node's latest
checkpoint in one go (``GetCheckpoint``): one store write per chunk however many checkpoints
it missed, so a slow store catches up instead of falling further behind. The second, every
:data:`DEADLINE_POLL` seconds, reports the versions past their deadline and asks
``GetEntryStatus`` about a few late ones (:data:`PROBES_PER_ROUND`), which is how a rejected
entry, never in any checkpoint, is found.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import grpc

from chain.hashing import leaf_hash
from services.anchoring.domain import RecordVersion
from services.anchoring.observability import SealObserver
from services.anchoring.tracking import SealTracker
from services.platform.follow import follow_until_stopped
from swiftchain.chain.v1 import chain_service_pb2, chain_service_pb2_grpc
from swiftchain.common.v1 import common_pb2

_log = logging.getLogger(__name__)
#: Seconds between two looks for versions past their deadline.
DEADLINE_POLL = 0.25
#: Late versions the log is asked about per look (bounded: a late batch of 10,000 must not turn
#: into 10,000 calls at once on a busy node).
PROBES_PER_ROUND = 20
_STATUS_TIMEOUT = 2.0


class ChainWatch:
    """Runs the two loops until stopped; see the module docstring."""

    def __init__(
        self,
        chain: grpc.Channel,
        tracker: SealTracker,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        observer: SealObserver | None = None,
    ) -> None:
        self._chain = chain_service_pb2_grpc.ChainServiceStub(chain)
        self._tracker = tracker
        self._observer = observer or SealObserver()
        self._clock = clock
        self._stop = threading.Event()
        self._call: grpc.Call | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Resume the tracker from the store and start both loops."""
        position = self._tracker.resume()
        self._threads = [
            threading.Thread(target=self._follow, args=(position,), name="seals", daemon=True),
            threading.Thread(target=self._deadline_loop, name="deadlines", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop both loops and wait for them."""
        self._stop.set()
        if self._call is not None:
            self._call.cancel()
        for thread in self._threads:
            thread.join(timeout=10)

    # --- sealed checkpoints ---------------------------------------------------------------

    def _follow(self, position: int) -> None:
        at = [position]

        def once() -> None:
            at[0] = self._follow_once(at[0])

        follow_until_stopped(self._stop, once, doing="recording seals")

    def _follow_once(self, position: int) -> int:
        call = self._chain.WatchCheckpoints(
            chain_service_pb2.WatchCheckpointsRequest(from_tree_size=position + 1)
        )
        self._call = call
        for message in call:
            tree_size = message.checkpoint.tree_size
            if tree_size <= position:
                continue
            # Behind by several checkpoints (the store was slow): take all that is sealed now
            # at once, so that each chunk is written once for all of them, not once each.
            tree_size = max(tree_size, self._latest_sealed_size())
            if self._tracker.watched:
                self._read_sealed(position, tree_size)
            self._tracker.store_position(tree_size)
            position = tree_size
        return position

    def _latest_sealed_size(self) -> int:
        try:
            latest = self._chain.GetCheckpoint(chain_service_pb2.GetCheckpointRequest(), timeout=5)
        except grpc.RpcError:
            return 0  # the stream's checkpoint will do
        return int(latest.checkpoint.tree_size)

    def _read_sealed(self, start: int, tree_size: int) -> None:
        """Hand the leaves [start, tree_size) to the tracker in one call (one write per
        chunk), reading them a page at a time."""
        hashes: list[bytes] = []
        while start + len(hashes) < tree_size:
            page = self._chain.GetEntries(
                chain_service_pb2.GetEntriesRequest(start=start + len(hashes), end=tree_size),
                timeout=30,
            )
            if not page.entries:
                raise RuntimeError(
                    f"the chain node served no entries from {start + len(hashes)} of {tree_size}"
                )
            hashes.extend(leaf_hash(entry) for entry in page.entries)
        now = self._clock()
        self._observer.sealed(self._tracker.on_checkpoint(start, hashes, tree_size, now), now)

    # --- deadlines ------------------------------------------------------------------------

    def _deadline_loop(self) -> None:
        while not self._stop.wait(DEADLINE_POLL):
            try:
                self._tracker.miss_deadlines(self._clock())
                for version in self._tracker.to_probe(self._clock(), PROBES_PER_ROUND):
                    self._probe(version)
            except Exception:
                _log.warning("checking seal deadlines failed; will retry", exc_info=True)

    def _probe(self, version: RecordVersion) -> None:
        try:
            status = self._chain.GetEntryStatus(
                chain_service_pb2.GetEntryStatusRequest(entry_id=version.entry_id),
                timeout=_STATUS_TIMEOUT,
            )
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                _log.warning(
                    "asking the chain node about entry %s failed: %s",
                    version.entry_id,
                    error.code(),
                )
            return
        if status.state == common_pb2.ENTRY_STATE_REJECTED:
            self._tracker.on_rejected(
                version, status.rejection_reason, status.rejection_detail, self._clock()
            )
