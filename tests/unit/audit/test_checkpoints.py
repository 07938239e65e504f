"""The audit domain's check of a sealed checkpoint (services/audit/domain/checkpoints.py), on
notes signed with real keys over a real Merkle tree: what passes, what each failure says, and
the flag a failure becomes."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from chain.checkpoint import Checkpoint
from chain.evidence import EvidenceEntry
from services.audit.domain import AuditBook, CheckpointGate, CheckpointRejection
from services.audit.domain.checkpoints import CONSISTENT, SIGNED, no_votes
from swiftchain.audit.v1 import audit_service_pb2 as apb
from swiftchain.chain.v1 import chain_service_pb2 as pb
from tests.unit.audit.fakes import (
    CONSORTIUM,
    MEMBER_SIGNERS,
    NEWCOMER,
    NOW,
    TAG_KEY,
    FakeAuditStore,
    FakeChainNode,
    admit,
    approve,
    propose,
    remove,
)

ENTRIES = [f"entry {n}".encode() for n in range(10)]


class Prover:
    """The node's consistency proofs, counting the asks."""

    def __init__(self, node: FakeChainNode) -> None:
        self.node = node
        self.asked: list[tuple[int, int]] = []

    def __call__(self, first: int, second: int) -> list[bytes]:
        self.asked.append((first, second))
        request = pb.GetConsistencyProofRequest(first_size=first, second_size=second)
        return list(self.node.GetConsistencyProof(request, timeout=1).proof)


def node_votes(node: FakeChainNode) -> Callable[[int], list[EvidenceEntry]]:
    """The MEMBERSHIP entries below a size, proved to it, as the log follower reads them."""

    def votes(size: int) -> list[EvidenceEntry]:
        request = pb.GetInclusionProofRequest(leaf_index=0, tree_size=size)
        return [
            EvidenceEntry(v.leaf_index, v.entry, tuple(v.proof))
            for v in node.GetInclusionProof(request, timeout=1).membership
        ]

    return votes


def accepted_at(node: FakeChainNode, size: int) -> CheckpointGate:
    """A gate that accepted the node's checkpoint of ``size``."""
    gate = CheckpointGate(CONSORTIUM)
    note = node.seal(size).note
    checked = gate.check(note, size, Prover(node))
    assert isinstance(checked, Checkpoint)
    assert gate.accept(note, checked)
    return gate


def rejection(checked: Checkpoint | CheckpointRejection) -> CheckpointRejection:
    assert isinstance(checked, CheckpointRejection), checked
    return checked


def test_the_first_checkpoint_is_believed_on_its_signatures_alone() -> None:
    node = FakeChainNode(ENTRIES)
    prover = Prover(node)
    checked = CheckpointGate(CONSORTIUM).check(node.seal(6).note, 6, prover)
    assert isinstance(checked, Checkpoint) and checked.size == 6
    assert prover.asked == []


def test_a_tampered_member_signature_fails() -> None:
    node = FakeChainNode(ENTRIES)
    note = node.seal(4, MEMBER_SIGNERS).note
    text, _, lines = note.partition("\n\n")
    first, *others = lines.splitlines()
    name, signature = first.rsplit(" ", 1)
    raw = bytearray(base64.b64decode(signature))
    raw[-1] ^= 1
    tampered = f"{text}\n\n{name} {base64.b64encode(raw).decode()}\n" + "".join(
        line + "\n" for line in others
    )
    # Two good signatures remain, a quorum: the bad line by a member's key fails it anyway.
    found = rejection(CheckpointGate(CONSORTIUM).check(tampered, 4, Prover(node)))
    assert found.check == SIGNED and found.tree_size == 4
    assert found.reason.startswith("a signature by a member's pinned key does not verify")
    assert "hospital-a" in found.reason


def test_another_origin_fails() -> None:
    node = FakeChainNode(ENTRIES)
    note = node.seal(4, origin="another.log/x").note
    found = rejection(CheckpointGate(CONSORTIUM).check(note, 4, Prover(node)))
    assert found.reason == (
        f"expected the consortium's origin {CONSORTIUM.origin!r}, got 'another.log/x'"
    )


def test_what_is_no_signed_checkpoint_fails_with_the_size_the_node_said() -> None:
    node = FakeChainNode(ENTRIES)
    found = rejection(CheckpointGate(CONSORTIUM).check("not a note", 7, Prover(node)))
    assert (found.check, found.tree_size) == (SIGNED, 7)
    assert found.reason.startswith("it is not a signed checkpoint (")


def test_the_same_size_with_another_root_fails_without_asking_for_a_proof() -> None:
    node = FakeChainNode(ENTRIES)
    gate = accepted_at(node, 5)
    node.fork(0, b"rewritten")
    prover = Prover(node)
    found = rejection(gate.check(node.seal(5).note, 5, prover))
    assert (found.check, found.tree_size, found.accepted_size) == (CONSISTENT, 5, 5)
    assert "not consistent with tree size 5" in found.reason
    assert prover.asked == []


def test_a_consistent_larger_checkpoint_passes_and_only_a_larger_one_is_held() -> None:
    node = FakeChainNode(ENTRIES)
    gate = accepted_at(node, 3)
    prover = Prover(node)
    note = node.seal(10).note
    checked = gate.check(note, 10, prover)
    assert isinstance(checked, Checkpoint)
    assert prover.asked == [(3, 10)]
    assert gate.accept(note, checked)
    assert not gate.accept(note, checked)
    accepted = gate.accepted
    assert accepted is not None and accepted.checkpoint.size == 10


def test_a_gate_restored_from_the_stored_note_checks_against_it() -> None:
    node = FakeChainNode(ENTRIES)
    stored = node.seal(4).note
    node.fork(3, b"rewritten")
    found = rejection(CheckpointGate(CONSORTIUM, stored).check(node.seal(8).note, 8, Prover(node)))
    assert (found.check, found.accepted_size) == (CONSISTENT, 4)


@pytest.mark.parametrize("check", [SIGNED, CONSISTENT])
def test_a_rejection_is_one_flag_per_node_check_and_accepted_checkpoint(check: str) -> None:
    store = FakeAuditStore()
    book = AuditBook(store, TAG_KEY)
    first = CheckpointRejection(7, 4, check, "what failed")
    assert book.checkpoint_rejected("hospital-c", first, NOW)
    assert not book.checkpoint_rejected("hospital-c", CheckpointRejection(9, 4, check, "x"), NOW)
    [flag] = store.flag_records.values()
    assert flag.kind == apb.FLAG_KIND_BAD_CHECKPOINT and flag.organization_id == "hospital-c"
    assert flag.summary == (
        "chain node hospital-c served a sealed checkpoint of tree size 7 that the audit service "
        "refused: what failed. The log index holds nothing past the last accepted checkpoint "
        "(tree size 4) from it."
    )
    # Another node, or the same node after a later checkpoint was accepted, is another flag.
    assert book.checkpoint_rejected("hospital-a", first, NOW)
    assert book.checkpoint_rejected("hospital-c", CheckpointRejection(12, 9, check, "y"), NOW)
    assert len(store.flag_records) == 3
    # After a restart (a new book over the same store) the same rejection is the same flag.
    AuditBook(store, TAG_KEY).checkpoint_rejected("hospital-c", first, NOW)
    assert len(store.flag_records) == 3


# --- members and quorum at the checkpoint's size, from the votes ------------------------------

A, B, C = MEMBER_SIGNERS
ADMIT_D, REMOVE_C = "00000001-0000-4000-8000-00000000cafe", "00000002-0000-4000-8000-00000000cafe"
#: hospital-d is admitted at leaf 2 (from size 3), hospital-c removed at leaf 4 (from size 5).
VOTED = [
    b"entry 0",
    propose(A, 1, ADMIT_D, admit(NEWCOMER)),
    approve(B, 2, ADMIT_D),
    propose(A, 3, REMOVE_C, remove(C.name)),
    approve(NEWCOMER, 4, REMOVE_C),
    b"entry 5",
]


def test_a_checkpoint_sealed_by_a_member_admitted_by_vote_passes() -> None:
    node = FakeChainNode(VOTED)
    note = node.seal(3, [A, NEWCOMER]).note
    checked = CheckpointGate(CONSORTIUM).check(note, 3, Prover(node), node_votes(node))
    assert isinstance(checked, Checkpoint) and checked.size == 3
    # Against the genesis alone hospital-d's line counts for nothing.
    found = rejection(CheckpointGate(CONSORTIUM).check(note, 3, Prover(node), no_votes))
    assert found.reason.startswith("expected a quorum of 2 member signatures, got 1")


def test_a_checkpoint_counting_a_member_voted_out_fails() -> None:
    node = FakeChainNode(VOTED)
    gate = CheckpointGate(CONSORTIUM)
    # Below the removal hospital-c still counts ...
    assert isinstance(
        gate.check(node.seal(4, [C, NEWCOMER]).note, 4, Prover(node), node_votes(node)), Checkpoint
    )
    # ... from the removal's leaf on it does not.
    found = rejection(gate.check(node.seal(6, [A, C]).note, 6, Prover(node), node_votes(node)))
    assert (found.check, found.tree_size) == (SIGNED, 6)
    assert found.reason.startswith(
        "expected a quorum of 2 member signatures, got 1 (by hospital-a)"
    )
    assert "hospital-c+" in found.reason
    assert isinstance(
        gate.check(node.seal(6, [A, NEWCOMER]).note, 6, Prover(node), node_votes(node)), Checkpoint
    )


def test_votes_not_proved_in_the_checkpoint_fail_it() -> None:
    node = FakeChainNode(VOTED)
    note = node.seal(3, [A, NEWCOMER]).note
    proved = node_votes(node)(3)
    # hospital-d's admission claimed by a vote the checkpoint's tree does not hold.
    forged = [EvidenceEntry(2, approve(C, 9, ADMIT_D), proved[1].inclusion_proof)]
    found = rejection(
        CheckpointGate(CONSORTIUM).check(note, 3, Prover(node), lambda _size: proved[:1] + forged)
    )
    assert found.check == SIGNED
    assert found.reason.startswith("the membership votes the node served with it do not hold (")
