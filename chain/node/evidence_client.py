"""Fetching evidence from a chain node: inclusion proofs of entries, all to one sealed
checkpoint, assembled into a ``swiftchain-evidence/v1`` bundle.

Used by ``swiftchain chain prove`` and by the services that hand out receipts (anchoring).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from chain.evidence import ConsistencyEvidence, EvidenceBundle, EvidenceEntry
from swiftchain.chain.v1 import chain_service_pb2 as pb
from swiftchain.chain.v1 import chain_service_pb2_grpc, consortium_pb2

#: Seconds added to a wait for the node to answer after waiting.
WAIT_MARGIN = 1.0
CALL_TIMEOUT = 10.0


@dataclass(frozen=True)
class Proved:
    """One entry's exact bytes and inclusion proof to a sealed checkpoint."""

    entry_id: str
    leaf_index: int
    entry: bytes
    proof: tuple[bytes, ...]
    tree_size: int
    note: str


def _proved(entry_id: str, response: pb.GetInclusionProofResponse) -> Proved:
    return Proved(
        entry_id,
        response.leaf_index,
        response.entry,
        tuple(response.proof),
        response.checkpoint.tree_size,
        response.checkpoint.note,
    )


def prove_entry(
    stub: chain_service_pb2_grpc.ChainServiceStub, entry_id: str, wait: float
) -> Proved:
    """The entry's proof to the latest sealed checkpoint, waiting up to ``wait`` seconds for
    it to be sealed (grpc errors propagate: NOT_FOUND, FAILED_PRECONDITION, DEADLINE_EXCEEDED)."""
    request = pb.GetInclusionProofRequest(entry_id=entry_id, wait_until_sealed=wait > 0)
    # The node waits for as long as the call's deadline allows, then says why the entry is not
    # sealed (rejected, pending, unknown): give it the wait plus a moment to answer.
    timeout = wait + WAIT_MARGIN if wait > 0 else CALL_TIMEOUT
    return _proved(entry_id, stub.GetInclusionProof(request, timeout=timeout))


def prove_at(
    stub: chain_service_pb2_grpc.ChainServiceStub, proved: Proved, tree_size: int
) -> Proved:
    """The same entry's proof to the sealed checkpoint of ``tree_size``."""
    request = pb.GetInclusionProofRequest(leaf_index=proved.leaf_index, tree_size=tree_size)
    return _proved(proved.entry_id, stub.GetInclusionProof(request, timeout=CALL_TIMEOUT))


def prove_together(
    stub: chain_service_pb2_grpc.ChainServiceStub, entry_ids: Sequence[str], wait: float
) -> list[Proved]:
    """Proofs of every entry to one checkpoint (the newest any of them was proved against):
    a bundle has one checkpoint."""
    proved = [prove_entry(stub, entry_id, wait) for entry_id in entry_ids]
    size = max(p.tree_size for p in proved)
    return [p if p.tree_size == size else prove_at(stub, p, size) for p in proved]


def evidence_bundle(
    consortium: consortium_pb2.Consortium,
    proved: Sequence[Proved],
    consistency: Iterable[ConsistencyEvidence] = (),
) -> EvidenceBundle:
    """The bundle for ``proved`` (all to one checkpoint); InvalidInputError if the node's
    answers are not evidence. Nothing is verified: run ``verify_bundle`` on it."""
    return EvidenceBundle(
        origin=consortium.origin,
        verifiers=tuple(m.verifier_key for m in consortium.members),
        quorum=consortium.quorum,
        checkpoint=proved[0].note,
        entries=tuple(EvidenceEntry(p.leaf_index, p.entry, p.proof) for p in proved),
        consistency=tuple(consistency),
    )
