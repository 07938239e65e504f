"""Offline verification follows the votes: a bundle carrying the MEMBERSHIP entries below its
checkpoint (each with its inclusion proof) is checked against the members and quorum at the
checkpoint's size, starting from the pinned genesis; a bundle without them (every older one)
still verifies against the genesis."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from chain.checkpoint import GENESIS_PREVIOUS_HASH, Checkpoint
from chain.consortium import ConsortiumConfig, Member
from chain.evidence_bundle import EvidenceBundle, EvidenceEntry, parse_bundle
from chain.evidence_verify import VerificationReport, verify_against_consortium
from chain.hashing import leaf_hash
from chain.membership import membership_entry
from chain.note import Signer, generate_key, new_signer, sign
from chain.proof_build import inclusion_proof, tree_root
from chain.tiles import MemoryHashStore
from swiftchain.chain.v1 import entry_pb2
from tests.unit.chain.test_sequencer import H1, record_body

ORIGIN = "swiftchain.test/log"
NAMES = ("hospital-a", "hospital-b", "hospital-c", "hospital-d")
SIGNERS: dict[str, Signer] = {n: new_signer(generate_key(n)[0]) for n in NAMES}
GENESIS = ConsortiumConfig(
    origin=ORIGIN,
    quorum=2,
    members=tuple(Member(n, SIGNERS[n].verifier().vkey) for n in NAMES[:3]),
    genesis_keys=(),
)
TIME = Timestamp(seconds=1_767_225_600)
ADMIT, RAISE = "00000001-0000-4000-8000-00000000cafe", "00000002-0000-4000-8000-00000000cafe"


def vote(by: str, n: int, detail: entry_pb2.MembershipDetail) -> bytes:
    entry_id = f"{n:08x}-0000-4000-8000-00000000f00d"
    return membership_entry(SIGNERS[by], detail, entry_id=entry_id, time=TIME)


def propose(by: str, n: int, pid: str, change: entry_pb2.MembershipChange) -> bytes:
    proposal = entry_pb2.MembershipProposal(proposal_id=pid, change=change, lifetime_entries=10)
    return vote(by, n, entry_pb2.MembershipDetail(proposal=proposal))


def approve(by: str, n: int, pid: str) -> bytes:
    approval = entry_pb2.MembershipApproval(proposal_id=pid)
    return vote(by, n, entry_pb2.MembershipDetail(approval=approval))


ADMIT_D = entry_pb2.MembershipChange(
    admit_member=entry_pb2.AdmitMember(
        name="hospital-d",
        verifier_key=SIGNERS["hospital-d"].verifier().vkey,
        role=entry_pb2.MEMBER_ROLE_NODE,
    )
)
QUORUM_3 = entry_pb2.MembershipChange(change_quorum=entry_pb2.ChangeQuorum(quorum=3))
# Leaf 2 admits hospital-d, leaf 4 raises the quorum to 3: from size 5, 3 of a, b, c, d.
LEAVES = [
    H1.sign_entry(record_body()),
    propose("hospital-a", 1, ADMIT, ADMIT_D),
    approve("hospital-b", 2, ADMIT),
    propose("hospital-d", 3, RAISE, QUORUM_3),
    approve("hospital-a", 4, RAISE),
    H1.sign_entry(record_body()),
]
VOTES = (1, 2, 3, 4)
TREE = MemoryHashStore()
TREE.extend(leaf_hash(raw) for raw in LEAVES)


def note(size: int, *signers: str) -> str:
    text = Checkpoint(
        origin=ORIGIN,
        size=size,
        root_hash=tree_root(size, TREE),
        height=1,
        previous_hash=GENESIS_PREVIOUS_HASH,
        cut_time_ms=1_767_225_600_000,
    ).to_text()
    return sign(text, [SIGNERS[n] for n in signers]).decode()


def proved(index: int, size: int) -> EvidenceEntry:
    return EvidenceEntry(index, LEAVES[index], tuple(inclusion_proof(index, size, TREE)))


def bundle(size: int, signers: tuple[str, ...], votes: tuple[int, ...] = VOTES) -> EvidenceBundle:
    """A bundle for the last record of a tree of ``size`` leaves, carrying the votes below it."""
    return EvidenceBundle(
        origin=ORIGIN,
        verifiers=tuple(m.verifier_key for m in GENESIS.members),
        quorum=GENESIS.quorum,
        checkpoint=note(size, *signers),
        entries=(proved(size - 1, size),),
        membership=tuple(proved(i, size) for i in votes if i < size),
    )


def verify(made: EvidenceBundle) -> VerificationReport:
    # Through JSON, as swiftchain verify reads it.
    return verify_against_consortium(parse_bundle(made.to_json()), GENESIS)


def failing(report: VerificationReport) -> set[str]:
    return {c.name for c in report.failures}


def test_a_checkpoint_after_the_votes_needs_the_new_quorum_and_counts_the_new_member() -> None:
    report = verify(bundle(6, ("hospital-a", "hospital-b", "hospital-d")))
    assert report.ok, report.failures
    assert report.quorum == 3
    assert report.signers == ("hospital-a", "hospital-b", "hospital-d")
    assert "node members hospital-a, hospital-b, hospital-c, hospital-d, quorum 3" in (
        report.check("membership").message
    )
    # Two signatures were the genesis quorum; at size 6 they are not enough.
    short = verify(bundle(6, ("hospital-a", "hospital-b")))
    assert failing(short) == {"checkpoint.signatures"}
    assert "quorum is 3" in short.check("checkpoint.signatures").message


def test_a_checkpoint_before_the_votes_took_effect_keeps_the_old_rules() -> None:
    # Size 3: d admitted (leaf 2), quorum still 2.
    assert verify(bundle(3, ("hospital-a", "hospital-d"))).ok
    # Size 2: d's admission is not in the tree, so its signature does not count.
    report = verify(bundle(2, ("hospital-a", "hospital-d")))
    assert failing(report) == {"checkpoint.signatures"}


def test_a_bundle_without_membership_entries_still_verifies_against_the_genesis() -> None:
    old = EvidenceBundle(
        origin=ORIGIN,
        verifiers=tuple(m.verifier_key for m in GENESIS.members),
        quorum=GENESIS.quorum,
        checkpoint=note(1, "hospital-a", "hospital-c"),
        entries=(proved(0, 1),),
    )
    assert "membership" not in old.to_dict()
    report = verify(old)
    assert report.ok, report.failures
    assert not [c for c in report.checks if c.name.startswith("membership")]


def test_an_altered_or_forged_vote_fails_and_leads_nowhere() -> None:
    made = bundle(6, ("hospital-a", "hospital-b", "hospital-d"))
    altered = bytearray(made.membership[1].entry)
    altered[-1] ^= 1
    tampered = EvidenceEntry(2, bytes(altered), made.membership[1].inclusion_proof)
    forged = EvidenceBundle(
        origin=made.origin,
        verifiers=made.verifiers,
        quorum=made.quorum,
        checkpoint=made.checkpoint,
        entries=made.entries,
        membership=(made.membership[0], tampered, *made.membership[2:]),
    )
    report = verify(forged)
    assert "membership[1].inclusion" in failing(report)
    assert "membership" in failing(report)
    assert not report.ok
