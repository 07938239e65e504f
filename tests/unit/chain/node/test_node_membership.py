"""Membership by vote on running nodes (in-memory fakes): a fourth hospital admitted by vote
starts signing, a checkpoint after the quorum went up needs its signature, a restarted node
rebuilds the member sets from its store, and after a vote removes it its lines no longer count.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from chain.alarms import BAD_COSIGNATURE
from chain.checkpoint import GENESIS_PREVIOUS_HASH, Checkpoint, verify_sealed_checkpoint
from chain.consortium import ConsortiumConfig, Member
from chain.cosigning import SealedCheckpoint
from chain.errors import InvalidInputError, PreconditionError
from chain.evidence_bundle import EvidenceBundle, EvidenceEntry
from chain.evidence_verify import verify_against_consortium
from chain.membership import membership_entry
from chain.node.node import ChainNode
from chain.node.service import membership_message
from chain.node.tile_store import TileStore
from chain.note import Signer, generate_key, new_signer, signature_line
from chain.proof_build import inclusion_proof
from chain.sequencer import entry_record
from services.platform.topics import ORDERING_TOPIC
from swiftchain.chain.v1 import entry_pb2, ordering_pb2
from tests.unit.chain.node.fakes import FakeKafka, FakeProducer, FakeReaders, MemoryStore
from tests.unit.chain.test_sequencer import GENESIS, H1, record_body

ORIGIN = "swiftchain.test/log"
NAMES = ("hospital-a", "hospital-b", "hospital-c", "hospital-d")
SIGNERS: dict[str, Signer] = {n: new_signer(generate_key(n)[0]) for n in NAMES}
CONFIG = ConsortiumConfig(
    origin=ORIGIN,
    quorum=2,
    members=tuple(Member(n, SIGNERS[n].verifier().vkey) for n in NAMES[:3]),
    genesis_keys=GENESIS,
    batch_max=4,
    batch_timeout_ms=50,
)
WAIT = 10.0
TIME = Timestamp(seconds=1_767_225_600)


class Votes:
    def __init__(self) -> None:
        self.n = 0

    def _id(self) -> str:
        self.n += 1
        return f"{self.n:08x}-0000-4000-8000-00000000beef"

    def propose(self, by: str, change: entry_pb2.MembershipChange) -> tuple[str, bytes]:
        pid = self._id()
        detail = entry_pb2.MembershipDetail(
            proposal=entry_pb2.MembershipProposal(
                proposal_id=pid, change=change, lifetime_entries=1000
            )
        )
        return pid, membership_entry(SIGNERS[by], detail, entry_id=self._id(), time=TIME)

    def approve(self, by: str, pid: str) -> bytes:
        detail = entry_pb2.MembershipDetail(approval=entry_pb2.MembershipApproval(proposal_id=pid))
        return membership_entry(SIGNERS[by], detail, entry_id=self._id(), time=TIME)


class Cluster:
    def __init__(self, root: Path) -> None:
        self.kafka = FakeKafka()
        self.stores = {n: MemoryStore(TileStore(root / n)) for n in NAMES}
        self.nodes: dict[str, ChainNode] = {}

    def start(self, name: str) -> ChainNode:
        node = ChainNode(
            name=name,
            config=CONFIG,
            signer=SIGNERS[name],
            store=self.stores[name],
            producer=FakeProducer(self.kafka),
            readers=FakeReaders(self.kafka),
        )
        node.start()
        self.nodes[name] = node
        return node

    def stop(self, name: str) -> None:
        self.nodes.pop(name).stop(timeout=5)

    def order(self, *entries: bytes) -> None:
        for raw in entries:
            self.kafka.append(ORDERING_TOPIC, entry_record(raw))

    def records(self, count: int) -> None:
        self.order(*(H1.sign_entry(record_body()) for _ in range(count)))

    def sealed(self, name: str, size: int) -> SealedCheckpoint:
        found = self.nodes[name].wait_sealed(lambda s: s.tree_size >= size, WAIT)
        assert found is not None, f"{name} sealed no checkpoint of {size} leaves in time"
        assert self.nodes[name].failure is None
        return found


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path)
    try:
        yield made
    finally:
        for name in list(made.nodes):
            made.stop(name)


def test_a_fourth_hospital_is_voted_in_signs_is_needed_and_is_voted_out(cluster: Cluster) -> None:
    for name in NAMES[:3]:
        cluster.start(name)
    votes = Votes()
    admit_d = entry_pb2.MembershipChange(
        admit_member=entry_pb2.AdmitMember(
            name="hospital-d",
            verifier_key=SIGNERS["hospital-d"].verifier().vkey,
            role=entry_pb2.MEMBER_ROLE_NODE,
        )
    )
    pid, proposal = votes.propose("hospital-a", admit_d)
    node_a = cluster.nodes["hospital-a"]
    # Submitted through a node, which checks each vote against the members it has reached.
    assert node_a.submit_membership(proposal, "proposal").entry_id  # leaf 0
    with pytest.raises(PreconditionError, match="MEMBERSHIP_NOT_A_MEMBER"):
        node_a.submit_membership(votes.approve("hospital-d", pid), "approval")
    with pytest.raises(InvalidInputError, match="carrying a proposal"):
        node_a.submit_membership(votes.approve("hospital-b", pid), "proposal")
    cluster.order(votes.approve("hospital-b", pid))  # leaf 1
    raise_q, proposal = votes.propose(
        "hospital-a", entry_pb2.MembershipChange(change_quorum=entry_pb2.ChangeQuorum(quorum=3))
    )
    cluster.order(proposal, votes.approve("hospital-d", raise_q))  # leaves 2, 3: quorum 3 from 4
    first = cluster.sealed("hospital-a", 4)
    assert first.tree_size == 4 and len(first.signers) >= 2  # sealed under the genesis rules
    members = cluster.nodes["hospital-a"].membership.members_at(4)
    assert [m.name for m in members.members] == list(NAMES) and members.quorum == 3

    # hospital-d starts; with hospital-c away, a checkpoint of size 8 needs d's signature.
    cluster.stop("hospital-c")
    cluster.start("hospital-d")
    cluster.records(4)
    sealed = cluster.sealed("hospital-a", 8)
    assert sealed.signers == ("hospital-a", "hospital-b", "hospital-d")
    verifiers = [SIGNERS[n].verifier() for n in NAMES]
    verify_sealed_checkpoint(sealed.note.encode(), verifiers, 3, ORIGIN)
    assert cluster.sealed("hospital-d", 8).note == sealed.note

    # The votes below size 8, proved to its checkpoint, take a verifier holding only the
    # genesis to the members that sealed it.
    membership = node_a.membership_entries(8)
    assert [i for i, _ in membership] == [0, 1, 2, 3]
    tree = node_a.tree
    bundle = EvidenceBundle(
        origin=ORIGIN,
        verifiers=tuple(m.verifier_key for m in CONFIG.members),
        quorum=CONFIG.quorum,
        checkpoint=sealed.note,
        entries=(
            EvidenceEntry(
                7, cluster.stores["hospital-a"].entries[7], tuple(inclusion_proof(7, 8, tree))
            ),
        ),
        membership=tuple(
            EvidenceEntry(i, raw, tuple(inclusion_proof(i, 8, tree))) for i, raw in membership
        ),
    )
    report = verify_against_consortium(bundle, CONFIG)
    assert report.ok, report.failures
    assert report.quorum == 3
    status = membership_message(
        node_a.membership.current, node_a.membership.open_proposals(), node_a.membership.position
    )
    assert [m.name for m in status.members] == list(NAMES) and status.quorum == 3

    # A restarted node rebuilds the member sets from its store and seals alike.
    cluster.stop("hospital-b")
    cluster.start("hospital-b")
    assert cluster.nodes["hospital-b"].membership.members_at(8).quorum == 3

    # Voted out (leaf 10): from size 11 on, d's line no longer counts, so with hospital-c
    # away the checkpoint of size 12 waits for it although a, b and d signed.
    remove_d, proposal = votes.propose(
        "hospital-a",
        entry_pb2.MembershipChange(remove_member=entry_pb2.RemoveMember(name="hospital-d")),
    )
    cluster.order(
        proposal, votes.approve("hospital-b", remove_d), votes.approve("hospital-c", remove_d)
    )
    cluster.records(1)  # leaf 11
    assert cluster.nodes["hospital-a"].wait_sealed(lambda s: s.tree_size >= 12, 1.0) is None
    cluster.start("hospital-c")
    after = cluster.sealed("hospital-a", 12)
    assert after.tree_size == 12
    assert after.signers == ("hospital-a", "hospital-b", "hospital-c")
    assert cluster.nodes["hospital-a"].alarm_count == 0
    # hospital-c was away for every vote: reading the cosignatures topic from the start, it
    # meets hospital-d's lines before it has sequenced d's admission, holds them until it has,
    # and seals the same notes without blaming anyone.
    assert cluster.sealed("hospital-c", 12).note == after.note
    assert cluster.sealed("hospital-c", 8).tree_size >= 8
    assert cluster.nodes["hospital-c"].sealed_at(8) is not None
    assert cluster.nodes["hospital-c"].sealed_at(8).note == sealed.note  # type: ignore[union-attr]
    assert cluster.nodes["hospital-c"].alarm_count == 0


def cosignature_by_d(size: int) -> bytes:
    text = Checkpoint(
        origin=ORIGIN,
        size=size,
        root_hash=bytes(32),
        height=1,
        previous_hash=GENESIS_PREVIOUS_HASH,
        cut_time_ms=1_767_225_600_000,
    ).to_text()
    return ordering_pb2.Cosignature(
        node="hospital-d",
        height=1,
        tree_size=size,
        checkpoint=text,
        signature_line=signature_line(SIGNERS["hospital-d"], text),
    ).SerializeToString()


def test_a_line_by_an_unknown_key_waits_for_its_size_to_be_sequenced(cluster: Cluster) -> None:
    """Before the node has read the votes below a size, a line it cannot verify may be by a
    member those votes admit: it is held, not blamed. At a size it has sequenced, it is an
    alarm as before."""
    node = ChainNode(
        name="hospital-a",
        config=CONFIG,
        signer=SIGNERS["hospital-a"],
        store=cluster.stores["hospital-a"],
        producer=FakeProducer(cluster.kafka),
        readers=FakeReaders(cluster.kafka),
    )
    node._on_cosignature(cosignature_by_d(8), 0)
    assert node.alarm_count == 0
    node._on_cosignature(cosignature_by_d(0), 1)
    assert node.alarm_count == 1
    assert [a.kind for a in cluster.stores["hospital-a"].alarms()] == [BAD_COSIGNATURE]
