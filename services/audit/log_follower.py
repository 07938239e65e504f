"""The audit service's view of the log (the gRPC side of the domain's ``LogReader``).

It follows a chain node's sealed checkpoints and indexes every newly sealed leaf (entry id,
kind, submitter, subject tag), so that the completeness check compares the read model with what
the log holds, not with what the services said; it turns the node's cosignature alarms into
flags; and it assembles evidence bundles from the node's proofs.

The node is one member, so each checkpoint it serves passes the domain's
:class:`~services.audit.domain.CheckpointGate` first (a quorum of the pinned member keys,
consistency with the last accepted checkpoint, proved by the node): one that fails is flagged
once and nothing is indexed past the last accepted checkpoint from it, while the follower keeps
following for a checkpoint that passes.

How far the index has got is the gauge ``swiftchain.audit.log_indexed_tree_size``, so that
operators (and ``make demo``, waiting for the audit to catch up) can compare it with the log's
sealed tree size without reading the service's database.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf.message import DecodeError
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from chain.checkpoint import Checkpoint
from chain.entry import read_body
from chain.evidence import EvidenceEntry
from services.audit.domain import (
    AuditBook,
    CheckpointGate,
    CheckpointRejection,
    LogLeaf,
    SealedView,
)
from services.platform.chain_client import (
    CALL_TIMEOUT,
    consistency_since,
    evidence_bundle,
    prove_leaf,
)
from services.platform.follow import follow_until_stopped
from services.platform.threads import start_supervised
from swiftchain.chain.v1 import chain_service_pb2 as pb
from swiftchain.chain.v1 import chain_service_pb2_grpc, consortium_pb2

_log = logging.getLogger(__name__)
#: Seconds between two reads of the node's alarms.
ALARM_POLL = 5.0
_CONFLICT_KINDS = (pb.ALARM_KIND_COSIGNATURE_CONFLICT, pb.ALARM_KIND_CHECKPOINT_MISMATCH)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: The tree size the log index of this process is complete up to (one follower per process).
_indexed: dict[str, int] = {}


def _observe_indexed(_options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(size) for size in _indexed.values()]


metrics.get_meter("swiftchain.audit").create_observable_gauge(
    "swiftchain.audit.log_indexed_tree_size",
    callbacks=[_observe_indexed],
    unit="{leaf}",
    description="The tree size up to which the audit service's log index holds every sealed leaf",
)


def _cut_time(checkpoint: Checkpoint) -> datetime:
    return _EPOCH + timedelta(milliseconds=checkpoint.cut_time_ms)


def _leaf(raw: bytes, leaf_index: int, sealed_tree_size: int) -> LogLeaf | None:
    try:
        body = read_body(raw)
    except DecodeError:  # a sealed entry was validated by the nodes: this cannot happen
        _log.error("sealed leaf %d is not an entry; not indexed", leaf_index)
        return None
    return LogLeaf(
        entry_id=body.entry_id,
        leaf_index=leaf_index,
        kind=body.kind,
        submitter_id=body.submitter_id,
        subject_tag=bytes(body.subject_tag),
        time=body.time.ToDatetime(tzinfo=UTC),
        sealed_tree_size=sealed_tree_size,
    )


class LogFollower:
    """Follows one chain node for the book (see the module docstring)."""

    def __init__(
        self,
        chain: grpc.Channel,
        book: AuditBook,
        position: int,
        gate: CheckpointGate,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """Follow from ``position`` (the tree size the index is complete up to); ``gate`` holds
        the last checkpoint accepted before (see ``AuditStore.log_checkpoint``)."""
        self._chain = chain_service_pb2_grpc.ChainServiceStub(chain)
        self._book = book
        self._position = position
        _indexed["tree_size"] = position
        self._gate = gate
        self._note = ""
        self._cut_time = datetime.min.replace(tzinfo=UTC)
        accepted = gate.accepted
        if accepted is not None and accepted.checkpoint.size == position:
            self._note = accepted.note
            self._cut_time = _cut_time(accepted.checkpoint)
        self._node = ""
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._call: grpc.Call | None = None
        self._threads: list[threading.Thread] = []
        self._consortium: consortium_pb2.Consortium | None = None
        self._alarms_seen: set[str] = set()

    def start(self) -> None:
        """Start following checkpoints and alarms."""
        self._threads = [
            start_supervised("log-follower", self._follow),
            start_supervised("alarms", self._alarm_loop),
        ]

    def stop(self) -> None:
        """Stop both loops."""
        self._stop.set()
        if self._call is not None:
            self._call.cancel()
        for thread in self._threads:
            thread.join(timeout=10)

    # --- following ------------------------------------------------------------------------

    def _follow(self) -> None:
        follow_until_stopped(self._stop, self._follow_once, doing="indexing the log")

    def _follow_once(self) -> None:
        call = self._chain.WatchCheckpoints(
            pb.WatchCheckpointsRequest(from_tree_size=self._position + 1)
        )
        self._call = call
        for message in call:
            self._index_to(message.checkpoint)

    def _index_to(self, sealed: pb.SealedCheckpoint) -> None:
        """Index up to ``sealed`` if it passes the gate; flag it (once) if it does not."""
        with self._lock:
            if sealed.tree_size < self._position:
                return  # the node is behind the index: nothing to index
            checked = self._gate.check(sealed.note, sealed.tree_size, self._prove, self._votes)
            if isinstance(checked, CheckpointRejection):
                self._refuse(checked)
                return
            if checked.size < self._position:
                return
            self._index_leaves(checked.size)
            if self._gate.accept(sealed.note, checked):
                # After its leaves: a restart mid-way checks the next one against the last.
                self._book.checkpoint_accepted(sealed.note)
            self._position = checked.size
            self._note = sealed.note
            self._cut_time = _cut_time(checked)

    def _index_leaves(self, size: int) -> None:
        """Index the leaves from the position up to ``size``, page by page."""
        start = self._position
        while start < size:
            page = self._chain.GetEntries(pb.GetEntriesRequest(start=start, end=size), timeout=30)
            if not page.entries:
                raise RuntimeError(f"the chain node served no entries from {start} of {size}")
            leaves = [
                leaf
                for offset, raw in enumerate(page.entries)
                if (leaf := _leaf(raw, start + offset, size)) is not None
            ]
            start += len(page.entries)
            indexed = min(start, size)
            self._book.index_leaves(leaves, indexed)
            _indexed["tree_size"] = indexed

    def _prove(self, first: int, second: int) -> Sequence[bytes]:
        """The node's consistency proof from tree size ``first`` to ``second``."""
        response = self._chain.GetConsistencyProof(
            pb.GetConsistencyProofRequest(first_size=first, second_size=second),
            timeout=CALL_TIMEOUT,
        )
        return tuple(response.proof)

    def _votes(self, tree_size: int) -> Sequence[EvidenceEntry]:
        """Every MEMBERSHIP entry below ``tree_size`` with its proof to the node's checkpoint of
        that size: the node carries them with any inclusion proof, so it proves its first leaf."""
        response = self._chain.GetInclusionProof(
            pb.GetInclusionProofRequest(leaf_index=0, tree_size=tree_size),
            timeout=CALL_TIMEOUT,
        )
        return tuple(
            EvidenceEntry(vote.leaf_index, vote.entry, tuple(vote.proof))
            for vote in response.membership
        )

    def _refuse(self, rejection: CheckpointRejection) -> None:
        if not self._node:
            self._node = self._chain.GetNodeStatus(
                pb.GetNodeStatusRequest(), timeout=CALL_TIMEOUT
            ).node
        if self._book.checkpoint_rejected(self._node, rejection, self._clock()):
            _log.warning(
                "refused the checkpoint of tree size %d from chain node %s: %s",
                rejection.tree_size,
                self._node,
                rejection.reason,
            )

    def sync(self) -> SealedView:
        """Index up to the node's latest sealed checkpoint and return it."""
        latest = self._chain.GetCheckpoint(pb.GetCheckpointRequest(), timeout=CALL_TIMEOUT)
        if latest.checkpoint.tree_size > self._position or not self._note:
            self._index_to(latest.checkpoint)
        with self._lock:
            return SealedView(self._position, self._note, self._cut_time)

    # --- evidence -------------------------------------------------------------------------

    def evidence(self, leaves: Sequence[tuple[str, int]], since_checkpoint: str) -> str:
        """A bundle proving ``leaves`` to the latest checkpoint this follower indexed."""
        view = self.sync()
        proved = [
            prove_leaf(self._chain, entry_id, leaf_index, view.tree_size)
            for entry_id, leaf_index in leaves
        ]
        consistency = (
            [consistency_since(self._chain, since_checkpoint, view.tree_size)]
            if since_checkpoint
            else []
        )
        return evidence_bundle(self._consortium_config(), proved, consistency).to_json()

    def _consortium_config(self) -> consortium_pb2.Consortium:
        if self._consortium is None:
            self._consortium = self._chain.GetConsortium(
                pb.GetConsortiumRequest(), timeout=CALL_TIMEOUT
            ).consortium
        return self._consortium

    # --- alarms ---------------------------------------------------------------------------

    def _alarm_loop(self) -> None:
        while not self._stop.wait(ALARM_POLL):
            try:
                self.poll_alarms()
            except grpc.RpcError as error:
                _log.warning("reading the chain node's alarms failed (%s)", error.code())
            except Exception:  # the database away: the alarms not seen yet are read again
                _log.warning("turning the node's alarms into flags failed", exc_info=True)

    def poll_alarms(self) -> None:
        """Turn the node's cosignature alarms not seen yet into flags."""
        node = ""
        token = ""
        while True:
            page = self._chain.ListAlarms(
                pb.ListAlarmsRequest(page_size=1000, page_token=token), timeout=CALL_TIMEOUT
            )
            for alarm in page.alarms:
                if alarm.alarm_id in self._alarms_seen or alarm.kind not in _CONFLICT_KINDS:
                    continue
                if not node:
                    node = self._chain.GetNodeStatus(
                        pb.GetNodeStatusRequest(), timeout=CALL_TIMEOUT
                    ).node
                self._book.on_alarm(
                    node,
                    alarm.alarm_id,
                    alarm.node,
                    alarm.tree_size,
                    alarm.detail or pb.AlarmKind.Name(alarm.kind),
                    alarm.raise_time.ToDatetime(tzinfo=UTC),
                )
                self._alarms_seen.add(alarm.alarm_id)
            token = page.next_page_token
            if not token:
                return
