"""Fetching evidence from a chain node: inclusion proofs of entries, all to one sealed
checkpoint, assembled into a ``swiftchain-evidence/v1`` bundle.

Used by ``swiftchain chain prove`` and by the services that hand out receipts (anchoring).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from chain.checkpoint import parse_checkpoint
from chain.errors import InvalidInputError
from chain.evidence import ConsistencyEvidence, EvidenceBundle, EvidenceEntry
from chain.note import parse_note
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
    #: The MEMBERSHIP entries below ``tree_size``, proved to the same checkpoint.
    membership: tuple[EvidenceEntry, ...] = ()


def _proved(entry_id: str, response: pb.GetInclusionProofResponse) -> Proved:
    return Proved(
        entry_id,
        response.leaf_index,
        response.entry,
        tuple(response.proof),
        response.checkpoint.tree_size,
        response.checkpoint.note,
        tuple(EvidenceEntry(m.leaf_index, m.entry, tuple(m.proof)) for m in response.membership),
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


def prove_leaf(
    stub: chain_service_pb2_grpc.ChainServiceStub, entry_id: str, leaf_index: int, tree_size: int
) -> Proved:
    """The proof of the leaf at ``leaf_index`` (entry ``entry_id``) to the sealed checkpoint of
    ``tree_size``."""
    request = pb.GetInclusionProofRequest(leaf_index=leaf_index, tree_size=tree_size)
    return _proved(entry_id, stub.GetInclusionProof(request, timeout=CALL_TIMEOUT))


def prove_at(
    stub: chain_service_pb2_grpc.ChainServiceStub, proved: Proved, tree_size: int
) -> Proved:
    """The same entry's proof to the sealed checkpoint of ``tree_size``."""
    return prove_leaf(stub, proved.entry_id, proved.leaf_index, tree_size)


def checkpoint_size(note: str) -> int:
    """The tree size of a signed checkpoint note; InvalidInputError if it is not one."""
    return parse_checkpoint(parse_note(note.encode("utf-8")).text).size


def consistency_since(
    stub: chain_service_pb2_grpc.ChainServiceStub, old_note: str, tree_size: int
) -> ConsistencyEvidence:
    """The consistency proof from the checkpoint ``old_note`` (a whole signed note, byte-exact)
    to the sealed checkpoint of ``tree_size``; InvalidInputError if ``old_note`` is not a
    checkpoint or is newer."""
    old_size = checkpoint_size(old_note)
    if old_size > tree_size:
        raise InvalidInputError(
            f"expected an older checkpoint than the one proved against (tree size {tree_size}), "
            f"got one of tree size {old_size}"
        )
    response = stub.GetConsistencyProof(
        pb.GetConsistencyProofRequest(first_size=old_size, second_size=tree_size),
        timeout=CALL_TIMEOUT,
    )
    return ConsistencyEvidence(old_note, tuple(response.proof))


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
        membership=proved[0].membership,
    )
