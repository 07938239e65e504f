"""Proofs from a node's public mirror follow the votes: after hospital-d is voted in and
hospital-b voted out, a checkpoint sealed by hospital-c and hospital-d alone fails the genesis
rules but verifies against the members the votes lead to, which the mirror lists at
/membership and the bundle carries; a mirror that lists no votes cannot prove it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chain.errors import VerificationError
from chain.evidence_verify import verify_against_consortium
from chain.node.mirror import MirrorServer
from chain.note import parse_note
from sdk.mirror import MirrorClient, VerifiedMirror, prove_from_mirror
from swiftchain.chain.v1 import entry_pb2
from tests.unit.chain.node.test_node_membership import CONFIG, NAMES, SIGNERS, Cluster, Votes
from tests.unit.chain.node.test_node_membership import cluster as cluster


@pytest.fixture
def voted(cluster: Cluster) -> Iterator[Cluster]:
    """Votes admit hospital-d (leaves 0-1) and remove hospital-b (leaves 2-3); then only
    hospital-c and hospital-d sign, and a checkpoint of 8 leaves is sealed by them."""
    for name in NAMES[:3]:
        cluster.start(name)
    votes = Votes()
    admit = entry_pb2.MembershipChange(
        admit_member=entry_pb2.AdmitMember(
            name="hospital-d",
            verifier_key=SIGNERS["hospital-d"].verifier().vkey,
            role=entry_pb2.MEMBER_ROLE_NODE,
        )
    )
    remove = entry_pb2.MembershipChange(remove_member=entry_pb2.RemoveMember(name="hospital-b"))
    pid, proposal = votes.propose("hospital-a", admit)
    cluster.order(proposal, votes.approve("hospital-b", pid))
    pid, proposal = votes.propose("hospital-a", remove)
    cluster.order(proposal, votes.approve("hospital-c", pid))
    cluster.sealed("hospital-c", 4)
    cluster.stop("hospital-a")
    cluster.stop("hospital-b")
    cluster.start("hospital-d")
    cluster.records(4)
    sealed = cluster.sealed("hospital-c", 8)
    assert [s.name for s in parse_note(sealed.note.encode()).signatures] == [
        "hospital-c",
        "hospital-d",
    ]
    yield cluster


def serve(cluster: Cluster, *, with_votes: bool) -> MirrorServer:
    node = cluster.nodes["hospital-c"]

    def latest() -> tuple[int, str] | None:
        sealed = node.latest_sealed()
        return None if sealed is None else (sealed.tree_size, sealed.note)

    votes = (lambda: node.membership.entry_indexes) if with_votes else tuple
    return MirrorServer("127.0.0.1", 0, cluster.stores["hospital-c"].tiles, latest, votes).start()


def test_a_mirror_proof_follows_the_votes_to_the_signers(voted: Cluster) -> None:
    server = serve(voted, with_votes=True)
    try:
        client = MirrorClient(f"http://127.0.0.1:{server.port}")
        assert client.membership() == [0, 1, 2, 3]
        bundle = prove_from_mirror(client, CONFIG, [7])
        assert VerifiedMirror(client, CONFIG).refresh().size == 8
    finally:
        server.stop()
    assert [e.leaf_index for e in bundle.membership] == [0, 1, 2, 3]
    report = verify_against_consortium(bundle, CONFIG)
    assert report.ok, report.failures
    assert "hospital-a, hospital-c, hospital-d, quorum 2" in report.check("membership").message


def test_without_the_votes_the_checkpoint_fails_the_genesis_rules(voted: Cluster) -> None:
    server = serve(voted, with_votes=False)
    try:
        client = MirrorClient(f"http://127.0.0.1:{server.port}")
        assert client.membership() == []
        with pytest.raises(VerificationError):
            prove_from_mirror(client, CONFIG, [7])
    finally:
        server.stop()
