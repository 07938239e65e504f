"""Three real chain nodes on the real broker and FerretDB (DESIGN §3.2-§3.4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chain.checkpoint import parse_checkpoint, verify_sealed_checkpoint
from chain.note import parse_note
from chain.proof_verify import verify_inclusion
from chain.hashing import leaf_hash
from swiftchain.chain.v1 import chain_service_pb2
from swiftchain.common.v1 import common_pb2
from tests.support.chain_cluster import MEMBERS, ChainCluster

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path, kafka_bootstrap: str, mongo_uri: str) -> ChainCluster:
    cluster = ChainCluster(tmp_path, kafka_bootstrap, mongo_uri)
    yield cluster
    cluster.stop_all()


def test_three_nodes_seal_identical_checkpoints_and_serve_proofs(cluster: ChainCluster) -> None:
    cluster.start_all()
    key_entry = cluster.hospital_key_entry()
    cluster.submit([key_entry])
    bodies = [cluster.record_body() for _ in range(120)]
    cluster.submit(cluster.hospital.sign_batch(bodies))
    notes = {name: cluster.wait_sealed_size(name, 121) for name in MEMBERS}
    texts = {parse_note(n.encode()).text for n in notes.values()}
    assert len(texts) == 1, "every node must compute the same checkpoint text"
    # the same sealed note bytes everywhere (signature lines in member order)
    for name in MEMBERS:
        checkpoint = verify_sealed_checkpoint(
            notes[name].encode(), cluster.config.verifiers, 2, cluster.config.origin
        )
        assert checkpoint.size >= 121
    with cluster.client("hospital-b") as stub:
        response = stub.GetInclusionProof(
            chain_service_pb2.GetInclusionProofRequest(entry_id=_entry_id(bodies[7])), timeout=10
        )
    checkpoint = parse_checkpoint(parse_note(response.checkpoint.note.encode()).text)
    verify_inclusion(
        leaf_hash(response.entry), response.leaf_index, checkpoint.size, list(response.proof),
        checkpoint.root_hash,
    )


def test_duplicate_submission_is_in_the_log_once(cluster: ChainCluster) -> None:
    cluster.start_all()
    cluster.submit([cluster.hospital_key_entry()])
    body = cluster.record_body()
    entry = cluster.hospital.sign_entry(body)
    cluster.submit([entry, entry])
    cluster.wait_sealed_size("hospital-a", 2)
    with cluster.client("hospital-a") as stub:
        status = stub.GetEntryStatus(
            chain_service_pb2.GetEntryStatusRequest(entry_id=_entry_id(body)), timeout=5
        )
        assert status.state == common_pb2.ENTRY_STATE_SEALED
        entries = stub.GetEntries(chain_service_pb2.GetEntriesRequest(start=0, end=10), timeout=5)
    assert list(entries.entries).count(entry) == 1


def _entry_id(body: bytes) -> str:
    from swiftchain.chain.v1 import entry_pb2

    parsed = entry_pb2.EntryBody()
    parsed.ParseFromString(body)
    return parsed.entry_id
