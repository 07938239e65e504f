"""ChainService: the node's gRPC face. Translates protobuf <-> node reads; no logic of its own
beyond bounds checks. Only sealed checkpoints are served (DESIGN §3.2)."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio

from chain.checkpoint import parse_checkpoint
from chain.consortium import consortium_message
from chain.errors import InvalidInputError, NotFoundError, PreconditionError
from chain.membership import MemberSet, Proposal
from chain.node.node import ChainNode, SealedCheckpoint
from chain.proof_build import consistency_proof, inclusion_proof
from services.platform.aio import Pulse, run_blocking, wait_budget
from services.platform.fields import checked
from swiftchain.chain.v1 import (
    chain_service_pb2 as pb,
)
from swiftchain.chain.v1 import (
    chain_service_pb2_grpc as pb_grpc,
)
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2

MAX_ENTRIES_PER_PAGE = 1000
#: Seconds between two looks at the node's condition by the thread that wakes waiting calls.
_FOLLOW_SECONDS = 5.0
_T = TypeVar("_T")


def sealed_message(sealed: SealedCheckpoint) -> pb.SealedCheckpoint:
    """The protobuf form of a sealed checkpoint."""
    checkpoint = parse_checkpoint(sealed.text)
    message = pb.SealedCheckpoint(
        note=sealed.note,
        origin=checkpoint.origin,
        tree_size=checkpoint.size,
        root_hash=checkpoint.root_hash,
        height=checkpoint.height,
        previous_checkpoint_hash=checkpoint.previous_hash,
        signers=list(sealed.signers),
        cut_offset=sealed.cut_offset,
    )
    message.cut_time.FromMilliseconds(checkpoint.cut_time_ms)
    return message


def membership_message(
    members: MemberSet, proposals: list[Proposal], position: int
) -> pb.GetMembershipResponse:
    """The protobuf form of a member set and its open proposals at ``position``."""
    return pb.GetMembershipResponse(
        members=[
            pb.MemberState(
                name=m.name,
                verifier_key=m.verifier_key,
                role=entry_pb2.MemberRole.ValueType(m.role),
            )
            for m in members.members
        ],
        quorum=members.quorum,
        position=position,
        proposals=[
            pb.OpenProposal(
                proposal_id=p.proposal_id,
                proposer=p.proposer,
                change=p.change,
                leaf_index=p.leaf_index,
                last_leaf_index=p.last_index,
                approvals=p.approvals,
            )
            for p in proposals
        ],
    )


def _waited(seconds: float) -> str:
    """What a refusal after a wait adds: the wait ran out, the caller may ask again."""
    if not seconds:
        return ""
    return f" (after waiting {seconds:.1f} s, as long as this call may wait; ask again)"


class _Progress:
    """Wakes the waiting calls (on the server's event loop) whenever the node cuts a block,
    seals a checkpoint or rejects an entry: one thread follows the node's own condition, so a
    waiting call or an idle watch holds no thread."""

    def __init__(self, node: ChainNode) -> None:
        self._node = node
        self.pulse = Pulse()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start following the node (once)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._follow, name="chain-progress", daemon=True
                )
                self._thread.start()

    def _follow(self) -> None:
        def fired() -> bool:
            self.pulse.fire()
            return False  # keep waiting: every notification of the node fires the pulse

        while True:
            self._node.wait_until(fired, _FOLLOW_SECONDS)
            if not self._node.running:
                time.sleep(_FOLLOW_SECONDS / 10)  # a stopped node returns at once

    async def until(self, found: Callable[[], _T | None], timeout: float) -> _T | None:
        """Wait up to ``timeout`` s until ``found()`` (a short blocking look, run on the pool)
        is not None; it is looked at now and after every change of the node."""
        self.start()
        deadline = time.monotonic() + timeout
        while True:
            changed = self.pulse.current()
            result = await run_blocking(found)
            remaining = deadline - time.monotonic()
            if result is not None or remaining <= 0:
                return result
            await Pulse.wait(changed, remaining)


@checked
class ChainServicer(pb_grpc.ChainServiceServicer):
    """Serves one node's sealed log."""

    def __init__(self, node: ChainNode) -> None:
        self._node = node
        self._progress = _Progress(node)

    def _latest(self) -> SealedCheckpoint:
        latest = self._node.latest_sealed()
        if latest is None:
            raise PreconditionError("no checkpoint has been sealed yet; try again shortly")
        return latest

    def GetCheckpoint(
        self, request: pb.GetCheckpointRequest, context: grpc.ServicerContext
    ) -> pb.GetCheckpointResponse:
        return pb.GetCheckpointResponse(checkpoint=sealed_message(self._latest()))

    async def GetInclusionProof(
        self, request: pb.GetInclusionProofRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetInclusionProofResponse:
        """The inclusion proof of a leaf (by index or entry id) in a sealed checkpoint; with
        ``wait_until_sealed``, first waits (holding no thread) for the entry and its seal, up
        to the server's maximum wait or the caller's deadline."""
        which = request.WhichOneof("entry")
        wait = wait_budget(context) if request.wait_until_sealed else 0.0
        deadline = time.monotonic() + wait
        if which == "entry_id":
            found = await run_blocking(self._node.find_leaf, request.entry_id)
            if found is None and wait > 0:
                found = await self._wait_for_entry(request.entry_id, wait)
            if found is None:
                raise NotFoundError(await run_blocking(self._why_not_found, request.entry_id, wait))
            index = found
        elif which == "leaf_index":
            index = request.leaf_index
        else:
            raise InvalidInputError("expected leaf_index or entry_id, got neither")
        sealed = await self._sealed_covering(index, max(0.0, deadline - time.monotonic()))
        if sealed is None:
            latest = self._node.latest_sealed()
            size = 0 if latest is None else latest.tree_size
            raise PreconditionError(
                f"leaf {index} is not covered by a sealed checkpoint yet (sealed size {size})"
                + _waited(wait)
            )
        return await run_blocking(self._inclusion, request, index, sealed)

    def _inclusion(
        self, request: pb.GetInclusionProofRequest, index: int, sealed: SealedCheckpoint
    ) -> pb.GetInclusionProofResponse:
        if request.HasField("tree_size"):
            at = self._node.sealed_at(request.tree_size)
            if at is None:
                raise NotFoundError(
                    f"expected the size of a sealed checkpoint, got {request.tree_size}"
                )
            if index >= at.tree_size:
                raise InvalidInputError(
                    f"expected a leaf index below tree size {at.tree_size}, got {index}"
                )
            sealed = at
        entry = self._node.store.read_entries(index, index + 1)
        size, tree = sealed.tree_size, self._node.tree
        return pb.GetInclusionProofResponse(
            leaf_index=index,
            entry=entry[0] if entry else b"",
            tree_size=size,
            proof=inclusion_proof(index, size, tree),
            checkpoint=sealed_message(sealed),
            membership=[
                pb.ProvedEntry(leaf_index=i, entry=raw, proof=inclusion_proof(i, size, tree))
                for i, raw in self._node.membership_entries(size)
            ],
        )

    async def _wait_for_entry(self, entry_id: str, wait: float) -> int | None:
        found: int | None = None

        def sequenced_or_rejected() -> bool | None:
            nonlocal found
            found = self._node.find_leaf(entry_id)
            if found is not None or self._node.store.find_rejection(entry_id) is not None:
                return True
            return None

        await self._progress.until(sequenced_or_rejected, wait)
        return found

    def _why_not_found(self, entry_id: str, waited: float) -> str:
        rejection = self._node.store.find_rejection(entry_id)
        if rejection is not None:
            return f"entry {entry_id} was rejected: {rejection.reason}"
        if self._node.is_pending(entry_id):
            return f"entry {entry_id} is valid and waiting for the next block" + _waited(waited)
        return f"entry {entry_id} has not been seen by node {self._node.name}" + _waited(waited)

    async def _sealed_covering(self, index: int, wait: float) -> SealedCheckpoint | None:
        def covering() -> SealedCheckpoint | None:
            latest = self._node.latest_sealed()
            return latest if latest is not None and index < latest.tree_size else None

        found = covering()
        if found is not None or wait <= 0:
            return found
        return await self._progress.until(covering, wait)

    def GetConsistencyProof(
        self, request: pb.GetConsistencyProofRequest, context: grpc.ServicerContext
    ) -> pb.GetConsistencyProofResponse:
        latest = self._latest()
        second = request.second_size if request.HasField("second_size") else latest.tree_size
        sealed = self._node.sealed_at(second)
        if sealed is None:
            raise NotFoundError(f"expected the size of a sealed checkpoint, got {second}")
        if not 0 < request.first_size <= second:
            raise InvalidInputError(
                f"expected 0 < first_size <= {second}, got first_size {request.first_size}"
            )
        return pb.GetConsistencyProofResponse(
            first_size=request.first_size,
            second_size=second,
            proof=consistency_proof(request.first_size, second, self._node.tree),
            checkpoint=sealed_message(sealed),
        )

    def GetEntries(
        self, request: pb.GetEntriesRequest, context: grpc.ServicerContext
    ) -> pb.GetEntriesResponse:
        latest = self._latest()
        if request.start >= request.end:
            raise InvalidInputError(
                f"expected start < end, got start {request.start}, end {request.end}"
            )
        if request.start >= latest.tree_size:
            raise InvalidInputError(
                f"expected start below the sealed tree size {latest.tree_size}, got {request.start}"
            )
        end = min(request.end, latest.tree_size, request.start + MAX_ENTRIES_PER_PAGE)
        return pb.GetEntriesResponse(
            start=request.start,
            entries=self._node.store.read_entries(request.start, end),
            sealed_tree_size=latest.tree_size,
        )

    def GetEntryStatus(
        self, request: pb.GetEntryStatusRequest, context: grpc.ServicerContext
    ) -> pb.GetEntryStatusResponse:
        entry_id = request.entry_id
        if not entry_id:
            raise InvalidInputError("expected an entry id, got an empty one")
        found = self._node.find_leaf(entry_id)
        if found is not None:
            latest = self._node.latest_sealed()
            sealed = latest is not None and found < latest.tree_size
            response = pb.GetEntryStatusResponse(
                entry_id=entry_id,
                state=common_pb2.ENTRY_STATE_SEALED if sealed else common_pb2.ENTRY_STATE_SEQUENCED,
                leaf_index=found,
            )
            if sealed and latest is not None:
                response.sealed_tree_size = latest.tree_size
            return response
        rejection = self._node.store.find_rejection(entry_id)
        if rejection is not None:
            return pb.GetEntryStatusResponse(
                entry_id=entry_id,
                state=common_pb2.ENTRY_STATE_REJECTED,
                rejection_reason=entry_pb2.RejectionReason.Value(
                    f"REJECTION_REASON_{rejection.code or 'MALFORMED'}"
                ),
                rejection_detail=rejection.reason,
                ordering_offset=rejection.offset,
            )
        if self._node.is_pending(entry_id):
            return pb.GetEntryStatusResponse(
                entry_id=entry_id, state=common_pb2.ENTRY_STATE_PENDING
            )
        raise NotFoundError(f"entry {entry_id} has not been seen by node {self._node.name}")

    async def WatchCheckpoints(
        self, request: pb.WatchCheckpointsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchCheckpointsResponse]:
        """Sealed checkpoints from ``from_tree_size`` on, then each new one as it is sealed;
        an idle watch holds no thread."""
        self._progress.start()
        next_size = request.from_tree_size
        while True:
            changed = self._progress.pulse.current()
            for sealed in self._node.sealed_checkpoints(next_size):
                yield pb.WatchCheckpointsResponse(checkpoint=sealed_message(sealed))
                next_size = sealed.tree_size + 1
            await Pulse.wait(changed, _FOLLOW_SECONDS)

    def GetConsortium(
        self, request: pb.GetConsortiumRequest, context: grpc.ServicerContext
    ) -> pb.GetConsortiumResponse:
        return pb.GetConsortiumResponse(consortium=consortium_message(self._node.config))

    def GetNodeStatus(
        self, request: pb.GetNodeStatusRequest, context: grpc.ServicerContext
    ) -> pb.GetNodeStatusResponse:
        node = self._node
        latest = node.latest_sealed()
        response = pb.GetNodeStatusResponse(
            node=node.name,
            origin=node.config.origin,
            applied_offset=max(node.applied_offset, 0),
            end_offset=node.end_offset,
            tree_size=node.tree.size,
            height=0 if latest is None else latest.height,
            pending_entries=node.pending_count,
            alarm_count=node.alarm_count,
            rejected_entries=node.store.count_rejections(),
        )
        if latest is not None:
            response.last_sealed.CopyFrom(sealed_message(latest))
        return response

    def ProposeMembership(
        self, request: pb.ProposeMembershipRequest, context: grpc.ServicerContext
    ) -> pb.ProposeMembershipResponse:
        parsed = self._node.submit_membership(request.entry, "proposal")
        return pb.ProposeMembershipResponse(
            entry_id=parsed.entry_id, proposal_id=parsed.body.membership.proposal.proposal_id
        )

    def ApproveMembership(
        self, request: pb.ApproveMembershipRequest, context: grpc.ServicerContext
    ) -> pb.ApproveMembershipResponse:
        parsed = self._node.submit_membership(request.entry, "approval")
        return pb.ApproveMembershipResponse(
            entry_id=parsed.entry_id, proposal_id=parsed.body.membership.approval.proposal_id
        )

    def GetMembership(
        self, request: pb.GetMembershipRequest, context: grpc.ServicerContext
    ) -> pb.GetMembershipResponse:
        membership = self._node.membership
        position = membership.position
        return membership_message(membership.current, membership.open_proposals(), position)

    def ListAlarms(
        self, request: pb.ListAlarmsRequest, context: grpc.ServicerContext
    ) -> pb.ListAlarmsResponse:
        alarms = []
        for doc in self._node.store.alarms():
            alarm = pb.Alarm(
                alarm_id=doc.id,
                kind=pb.AlarmKind.Value(f"ALARM_KIND_{doc.kind}"),
                node=doc.member or "",
                tree_size=doc.tree_size or 0,
                checkpoints=list(doc.checkpoints),
                signature_lines=list(doc.signature_lines),
                detail=doc.detail or "",
            )
            alarm.raise_time.FromDatetime(doc.raised_at)
            alarms.append(alarm)
        return pb.ListAlarmsResponse(alarms=alarms)
