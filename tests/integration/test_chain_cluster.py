"""Three real chain nodes on the real broker and FerretDB (DESIGN §3.2-§3.4)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pymongo
import pytest

from chain.checkpoint import parse_checkpoint, verify_sealed_checkpoint
from chain.hashing import leaf_hash
from chain.note import parse_note
from chain.proof_verify import verify_inclusion
from devstack.chain_cluster import MEMBERS, ChainCluster
from swiftchain.chain.v1 import chain_service_pb2, entry_pb2
from swiftchain.common.v1 import common_pb2

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path, kafka_bootstrap: str, mongo_uri: str) -> Iterator[ChainCluster]:
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
        leaf_hash(response.entry),
        response.leaf_index,
        checkpoint.size,
        list(response.proof),
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
    # Resubmitted after it was persisted (a retry after a lost acknowledgement), next to a
    # new entry: the stored copy is found, the new one is appended.
    fresh = cluster.hospital.sign_entry(cluster.record_body())
    cluster.submit([entry, fresh])
    cluster.wait_sealed_size("hospital-a", 3)
    with cluster.client("hospital-a") as stub:
        entries = stub.GetEntries(chain_service_pb2.GetEntriesRequest(start=0, end=10), timeout=5)
    assert list(entries.entries).count(entry) == 1
    assert list(entries.entries).count(fresh) == 1


def _entry_id(body: bytes) -> str:
    parsed = entry_pb2.EntryBody()
    parsed.ParseFromString(body)
    return parsed.entry_id


def _checkpoint_text(note: str) -> str:
    return parse_note(note.encode()).text


def _sealed_checkpoints(cluster: ChainCluster, name: str, up_to: int) -> dict[int, str]:
    """Tree size -> checkpoint text of every checkpoint node ``name`` sealed, up to the one of
    ``up_to`` entries. (Where blocks end depends on the cuts, time-to-cut included, which every
    node makes alike; not necessarily at multiples of batch_max.)"""
    sealed: dict[int, str] = {}
    with cluster.client(name) as stub:
        for response in stub.WatchCheckpoints(
            chain_service_pb2.WatchCheckpointsRequest(from_tree_size=1), timeout=30
        ):
            sealed[response.checkpoint.tree_size] = _checkpoint_text(response.checkpoint.note)
            if response.checkpoint.tree_size >= up_to:
                return sealed
    raise AssertionError(f"{name} has no sealed checkpoint of {up_to} entries")


def _submit_records(cluster: ChainCluster, count: int, per_record: int = 10) -> None:
    """``count`` batch-signed entries, ``per_record`` to a Kafka record (blocks end only at
    record boundaries, so small records keep blocks near batch_max)."""
    entries = cluster.hospital.sign_batch([cluster.record_body() for _ in range(count)])
    for start in range(0, count, per_record):
        cluster.submit(entries[start : start + per_record])


def test_two_of_three_nodes_seal(cluster: ChainCluster) -> None:
    cluster.start("hospital-a")
    cluster.start("hospital-b")
    cluster.submit([cluster.hospital_key_entry()])
    _submit_records(cluster, 99)
    note = cluster.wait_sealed_size("hospital-a", 100)
    checkpoint = verify_sealed_checkpoint(
        note.encode(), cluster.config.verifiers, 2, cluster.config.origin
    )
    assert checkpoint.size == 100
    assert "hospital-c" not in note


def test_sigkilled_node_resumes_and_reaches_the_same_root(cluster: ChainCluster) -> None:
    cluster.start_all()
    cluster.submit([cluster.hospital_key_entry()])
    _submit_records(cluster, 149)
    cluster.wait_sealed_size("hospital-c", 150)
    cluster.kill("hospital-c")
    _submit_records(cluster, 100)
    cluster.wait_sealed_size("hospital-a", 250)
    cluster.start("hospital-c")
    cluster.wait_sealed_size("hospital-c", 250)
    resumed = _sealed_checkpoints(cluster, "hospital-c", 250)[250]
    assert resumed == _sealed_checkpoints(cluster, "hospital-a", 250)[250]


def test_wiped_node_rebuilds_identical_checkpoints(cluster: ChainCluster) -> None:
    cluster.start_all()
    cluster.submit([cluster.hospital_key_entry()])
    _submit_records(cluster, 199)
    cluster.wait_sealed_size("hospital-b", 200)
    cluster.stop("hospital-b")
    cluster.drop_database("hospital-b")
    cluster.wipe_data_dir("hospital-b")
    cluster.start("hospital-b")
    cluster.wait_sealed_size("hospital-b", 200)
    rebuilt = _sealed_checkpoints(cluster, "hospital-b", 200)
    assert rebuilt == _sealed_checkpoints(cluster, "hospital-a", 200)
    assert 200 in rebuilt and len(rebuilt) >= 4  # batch_max 50: at least four blocks


def test_a_node_whose_volume_is_lost_rebuilds_its_files_from_offset_0(
    cluster: ChainCluster,
) -> None:
    """The data directory gone, the database kept (a PersistentVolume lost): the node writes
    the same files again and signs nothing new until it has; the log an earlier version kept in
    Mongo is dropped."""
    cluster.start_all()
    cluster.submit([cluster.hospital_key_entry()])
    _submit_records(cluster, 299)
    cluster.wait_sealed_size("hospital-b", 300)
    cluster.stop("hospital-b")
    before = _tree_files(cluster.data_dir("hospital-b"))
    cluster.wipe_data_dir("hospital-b")
    # what a store of an earlier version kept in Mongo: dropped on start, never read
    client: pymongo.MongoClient[dict[str, object]]
    with pymongo.MongoClient(cluster.mongo_uri) as client:
        database: Any = client[cluster.database("hospital-b")]
        database["tiles"].insert_one({"_id": "0/0", "data": b"old"})
        database["entry_bundles_000000"].insert_one({"_id": "000000000000", "data": b"old"})
    cluster.start("hospital-b")
    cluster.wait_sealed_size("hospital-b", 300)
    assert _tree_files(cluster.data_dir("hospital-b")) == before
    with pymongo.MongoClient(cluster.mongo_uri) as client:
        names = client[cluster.database("hospital-b")].list_collection_names()
    assert "tiles" not in names and not any(n.startswith("entry_bundles") for n in names)
    assert cluster.status("hospital-b").alarm_count == 0
    rebuilt = _sealed_checkpoints(cluster, "hospital-b", 300)
    assert rebuilt == _sealed_checkpoints(cluster, "hospital-a", 300)


def _tree_files(root: Path) -> dict[str, bytes]:
    """The tile and bundle files under a data directory (not the checkpoint, which follows
    seals)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in (root / "tile").rglob("*") if p.is_file()
    }


def test_cosignatures_lost_with_the_process_are_sent_again_at_restart(
    cluster: ChainCluster,
) -> None:
    """A node sends its cosignatures without waiting for Kafka; a line that dies with the
    process before the broker has it is sent again when the node restarts."""
    lost = cluster.create_cosignatures_topic()
    cluster.start("hospital-a", cosignatures_topic=lost)  # its lines never reach the others
    cluster.submit([cluster.hospital_key_entry()])
    _submit_records(cluster, 59)
    _wait_tree_size(cluster, "hospital-a", 60)
    cluster.stop("hospital-a")
    cluster.start("hospital-b")
    _wait_tree_size(cluster, "hospital-b", 60)
    assert not cluster.status("hospital-b").HasField("last_sealed"), "b alone is no quorum"
    cluster.start("hospital-a")
    note = cluster.wait_sealed_size("hospital-b", 60)
    signers = [line.split()[1] for line in note.splitlines() if line.startswith("\u2014 ")]
    assert signers == ["hospital-a", "hospital-b"]


def _wait_tree_size(cluster: ChainCluster, name: str, size: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while cluster.status(name).tree_size < size:
        assert time.monotonic() < deadline, f"{name} did not persist {size} entries in time"
        time.sleep(0.1)


def test_node_with_an_altered_stored_entry_refuses_to_sign(cluster: ChainCluster) -> None:
    cluster.start_all()
    cluster.submit([cluster.hospital_key_entry()])
    _submit_records(cluster, 299)  # leaf 42 lands in a full (written-once) bundle file
    cluster.wait_sealed_size("hospital-c", 300)
    cluster.stop("hospital-c")
    cluster.tamper_entry("hospital-c", 42)
    cluster.start("hospital-c")
    assert cluster.status("hospital-c").alarm_count >= 1
    _submit_records(cluster, 50)
    note = cluster.wait_sealed_size("hospital-a", 350)
    assert parse_checkpoint(_checkpoint_text(note)).size == 350
    signers = [line.split()[1] for line in note.splitlines() if line.startswith("\u2014 ")]
    assert signers == ["hospital-a", "hospital-b"], "the tampered node must not sign"


def test_time_to_cut_seals_a_partial_block(
    tmp_path: Path, kafka_bootstrap: str, mongo_uri: str
) -> None:
    cluster = ChainCluster(
        tmp_path, kafka_bootstrap, mongo_uri, batch_max=1000, batch_timeout_ms=100
    )
    try:
        cluster.start_all()
        cluster.submit([cluster.hospital_key_entry()])
        _submit_records(cluster, 3)
        note = cluster.wait_sealed_size("hospital-a", 4, timeout=20)
        assert parse_checkpoint(_checkpoint_text(note)).size == 4  # far below batch_max
    finally:
        cluster.stop_all()


def test_the_log_writer_learns_seals_and_rejections_from_real_checkpoints(
    cluster: ChainCluster,
) -> None:
    import threading

    from services.platform.log_writer import LogWriter, Rejected, Sealed

    class Fates:
        def __init__(self) -> None:
            self.sealed: list[Sealed] = []
            self.rejected: list[Rejected] = []
            self.changed = threading.Event()

        def entries_sealed(self, sealed: Sequence[Sealed]) -> None:
            self.sealed.extend(sealed)
            self.changed.set()

        def entries_rejected(self, rejected: Sequence[Rejected]) -> None:
            self.rejected.extend(rejected)
            self.changed.set()

    cluster.start_all()
    fates = Fates()
    with cluster.channel("hospital-a") as channel:
        writer = LogWriter(cluster.producer, channel, fates, topic=cluster.ordering_topic)
        writer.start()
        try:
            [ordered] = writer.write([cluster.hospital_key_entry()])
            assert ordered.offset >= 0 and ordered.time.tzinfo is not None
            good_body = cluster.record_body()
            bad_body = cluster.record_body()
            bad = cluster.registrar.sign_entry(bad_body)  # registrar may not sign RECORD entries
            writer.write([cluster.hospital.sign_entry(good_body), bad])
            deadline = time.monotonic() + 30
            while writer.followed and time.monotonic() < deadline:
                fates.changed.wait(0.5)
                fates.changed.clear()
        finally:
            writer.stop()
    assert writer.followed == 0, "every entry settled from checkpoints"
    sealed = {s.entry_id: s.leaf_index for s in fates.sealed}
    assert sealed[_entry_id(good_body)] == 1
    [rejected] = fates.rejected
    assert rejected.entry_id == _entry_id(bad_body)
    assert rejected.reason == entry_pb2.REJECTION_REASON_KEY_NOT_ALLOWED
    assert "may sign" in rejected.detail


def test_a_member_signing_two_checkpoints_for_one_size_raises_an_alarm(
    cluster: ChainCluster,
) -> None:
    from chain.checkpoint import Checkpoint
    from chain.note import new_signer, signature_line
    from swiftchain.chain.v1 import ordering_pb2

    cluster.start("hospital-a")
    cluster.start("hospital-b")
    cluster.submit([cluster.hospital_key_entry()])
    _submit_records(cluster, 49)
    honest = parse_checkpoint(_checkpoint_text(cluster.wait_sealed_size("hospital-a", 50)))
    # hospital-c's key signs a second, different checkpoint for the same size
    forged = Checkpoint(
        origin=honest.origin,
        size=honest.size,
        root_hash=bytes(32),
        height=honest.height,
        previous_hash=honest.previous_hash,
        cut_time_ms=honest.cut_time_ms,
    ).to_text()
    c_key = new_signer(cluster.files.node_key_path("hospital-c").read_text().strip())
    for text in (_checkpoint_text(cluster.wait_sealed_size("hospital-a", 50)), forged):
        message = ordering_pb2.Cosignature(
            node="hospital-c",
            height=honest.height,
            tree_size=honest.size,
            checkpoint=text,
            signature_line=signature_line(c_key, text),
        )
        cluster.producer.send(cluster.cosignatures_topic, message.SerializeToString())
    cluster.producer.flush()
    deadline = time.monotonic() + 30
    kinds: set[str] = set()
    while time.monotonic() < deadline and "ALARM_KIND_COSIGNATURE_CONFLICT" not in kinds:
        with cluster.client("hospital-b") as stub:
            alarms = stub.ListAlarms(chain_service_pb2.ListAlarmsRequest(), timeout=5).alarms
        kinds = {chain_service_pb2.AlarmKind.Name(a.kind) for a in alarms}
        time.sleep(0.2)
    assert "ALARM_KIND_COSIGNATURE_CONFLICT" in kinds
    assert "ALARM_KIND_CHECKPOINT_MISMATCH" in kinds  # the forged text differs from b's own
    assert cluster.status("hospital-b").alarm_count >= 2
