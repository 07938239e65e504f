"""Membership by vote on real chain nodes, the real broker and FerretDB (issue #25, item 3): a
fourth hospital is admitted with ``swiftchain consortium propose`` / ``approve``, its node
(admitted by vote) starts and signs, the quorum goes up and a checkpoint sealed after that needs
its signature, evidence bundles from the nodes carry the votes and verify against the genesis
alone, an older bundle still verifies, and a second vote removes the hospital again."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from chain.evidence_verify import verify_against_consortium
from chain.note import parse_note
from cli.main import app
from devstack.chain_cluster import ChainCluster
from services.platform.chain_client import evidence_bundle, prove_leaf, prove_together
from swiftchain.chain.v1 import chain_service_pb2, entry_pb2

pytestmark = pytest.mark.integration
NEW = "hospital-d"


@pytest.fixture
def cluster(tmp_path: Path, kafka_bootstrap: str, mongo_uri: str) -> Iterator[ChainCluster]:
    made = ChainCluster(
        tmp_path, kafka_bootstrap, mongo_uri, batch_max=4, batch_timeout_ms=100, voted_in=(NEW,)
    )
    yield made
    made.stop_all()


def consortium(cluster: ChainCluster, *args: str) -> Result:
    node = f"127.0.0.1:{cluster.ports['hospital-a']}"
    return CliRunner().invoke(
        app, ["consortium", *args, "--node", node, "--tls-dir", str(cluster.tls_dir)]
    )


def vote(cluster: ChainCluster, voter: str, *args: str) -> str:
    """Run propose or approve as ``voter``; the proposal id."""
    result = consortium(cluster, *args, "--key", str(cluster.node_key_path(voter)))
    assert result.exit_code == 0, result.output
    assert "on the log at leaf" in result.output, result.output
    found = re.search(r"([0-9a-f]{8}-[0-9a-f-]{27})", result.output)
    assert found is not None, result.output
    return found.group(1)


def signers(note: str) -> list[str]:
    return [s.name for s in parse_note(note.encode()).signatures]


def records(cluster: ChainCluster, count: int) -> list[str]:
    """Submit ``count`` RECORD entries; their entry ids."""
    bodies = [cluster.record_body() for _ in range(count)]
    cluster.submit([cluster.hospital.sign_entry(body) for body in bodies])
    return [entry_pb2.EntryBody.FromString(body).entry_id for body in bodies]


def test_a_fourth_hospital_is_voted_in_is_needed_and_is_voted_out(cluster: ChainCluster) -> None:
    cluster.start_all()
    cluster.submit([cluster.hospital_key_entry()])
    early = records(cluster, 3)
    cluster.wait_sealed_size("hospital-a", 4)
    with cluster.client("hospital-a") as stub:
        genesis = stub.GetConsortium(chain_service_pb2.GetConsortiumRequest(), timeout=5)
        old_bundle = evidence_bundle(genesis.consortium, [prove_leaf(stub, early[0], 1, 4)])

    card = str(cluster.voted_in_keys[NEW].card_path)
    admit = vote(cluster, "hospital-a", "propose", "--admit", NEW, "--card", card)
    vote(cluster, "hospital-b", "approve", admit)
    raise_quorum = vote(cluster, "hospital-a", "propose", "--quorum", "3")
    vote(cluster, NEW, "approve", raise_quorum)
    status = consortium(cluster, "status")
    assert "quorum 3 of 4 node members" in status.output, status.output

    # hospital-d's node starts; with hospital-c away, a checkpoint needs its signature.
    cluster.start(NEW)
    cluster.stop("hospital-c")
    later = records(cluster, 4)
    with cluster.client("hospital-a") as stub:
        proved = prove_together(stub, later, wait=60)
        bundle = evidence_bundle(genesis.consortium, proved)
    assert signers(bundle.checkpoint) == ["hospital-a", "hospital-b", NEW]
    assert len(bundle.membership) == 4
    report = verify_against_consortium(bundle, cluster.config)
    assert report.ok, report.failures
    assert report.quorum == 3
    # The bundle made before the votes still verifies, against the genesis.
    assert not old_bundle.membership
    assert verify_against_consortium(old_bundle, cluster.config).ok

    # Voted out: from then on hospital-d's signature does not count.
    cluster.start("hospital-c")
    remove = vote(cluster, "hospital-a", "propose", "--remove", NEW)
    vote(cluster, "hospital-b", "approve", remove)
    vote(cluster, NEW, "approve", remove)
    last = records(cluster, 4)
    with cluster.client("hospital-a") as stub:
        proved = prove_together(stub, last, wait=60)
        after = evidence_bundle(genesis.consortium, proved)
    assert signers(after.checkpoint) == ["hospital-a", "hospital-b", "hospital-c"]
    report = verify_against_consortium(after, cluster.config)
    assert report.ok, report.failures
    assert "hospital-a, hospital-b, hospital-c, quorum 3" in report.check("membership").message
