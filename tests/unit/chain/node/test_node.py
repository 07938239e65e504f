"""ChainNode on in-memory fakes (tests/unit/chain/node/fakes.py): entries ordered in come out as
checkpoints sealed by a quorum of nodes; the alarms the node raises are stored; a restarted node
resumes from its store and refuses to sign when the store disagrees with itself."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from chain.alarms import BAD_COSIGNATURE, CHECKPOINT_MISMATCH, COSIGNATURE_CONFLICT, STORE_MISMATCH
from chain.checkpoint import parse_checkpoint, verify_sealed_checkpoint
from chain.consortium import ConsortiumConfig, Member
from chain.cosigning import SealedCheckpoint
from chain.node.node import ChainNode
from chain.node.tile_store import TileStore
from chain.note import Signer, generate_key, new_signer, signature_line
from chain.sequencer import entry_record
from chain.tiles import bundle_bytes, bundle_entries, entries_path
from services.platform.topics import COSIGNATURES_TOPIC, ORDERING_TOPIC
from swiftchain.chain.v1 import entry_pb2, ordering_pb2
from tests.unit.chain.node.fakes import (
    FakeKafka,
    FakeProducer,
    FakeReaders,
    MemoryStore,
    alarm_kinds,
    by_kind,
)
from tests.unit.chain.test_sequencer import GENESIS, H1, record_body

ORIGIN = "swiftchain.test/log"
NAMES = ("hospital-a", "hospital-b", "hospital-c")
KEYS = {name: generate_key(name) for name in NAMES}
SIGNERS: dict[str, Signer] = {name: new_signer(skey) for name, (skey, _) in KEYS.items()}
CONFIG = ConsortiumConfig(
    origin=ORIGIN,
    quorum=2,
    members=tuple(Member(name, KEYS[name][1]) for name in NAMES),
    genesis_keys=GENESIS,
    batch_max=4,
    batch_timeout_ms=50,
)
WAIT = 10.0


def entry() -> bytes:
    return H1.sign_entry(record_body())


def order(kafka: FakeKafka, count: int) -> None:
    for _ in range(count):
        kafka.append(ORDERING_TOPIC, entry_record(entry()))


def cosignature(node: str, checkpoint: str, line: str) -> bytes:
    parsed = parse_checkpoint(checkpoint)
    return ordering_pb2.Cosignature(
        node=node,
        height=parsed.height,
        tree_size=parsed.size,
        checkpoint=checkpoint,
        signature_line=line,
    ).SerializeToString()


def parse_entry_id(raw: bytes) -> str:
    body = entry_pb2.EntryBody.FromString(entry_pb2.ChainEntry.FromString(raw).body)
    return body.entry_id


def eventually(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not hold in time")
        time.sleep(0.005)


class Cluster:
    """Nodes sharing one FakeKafka, each with its own MemoryStore; stopped at the end."""

    def __init__(self, root: Path) -> None:
        self.kafka = FakeKafka()
        self.stores = {name: MemoryStore(TileStore(root / name)) for name in NAMES}
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

    def sealed(self, name: str, size: int) -> SealedCheckpoint:
        found = self.nodes[name].wait_sealed(lambda s: s.tree_size >= size, WAIT)
        assert found is not None, f"{name} sealed no checkpoint of {size} leaves in time"
        assert self.nodes[name].failure is None
        return found

    def first_checkpoint(self, name: str) -> str:
        """The text of the first checkpoint ``name`` signed, once it did."""
        eventually(lambda: len(self.cosignatures_by(name)) >= 1)
        return self.cosignatures_by(name)[0].checkpoint

    def cosignatures_by(self, name: str) -> list[ordering_pb2.Cosignature]:
        out = []
        for record in self.kafka.records(COSIGNATURES_TOPIC):
            message = ordering_pb2.Cosignature.FromString(record.value)
            if message.node == name:
                out.append(message)
        return out


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path)
    try:
        yield made
    finally:
        for name in list(made.nodes):
            made.stop(name)


def test_entries_in_come_out_as_the_same_sealed_checkpoints_on_every_node(
    cluster: Cluster,
) -> None:
    for name in NAMES:
        cluster.start(name)
    order(cluster.kafka, 8)
    notes = {name: cluster.sealed(name, 8) for name in NAMES}
    assert len({s.note for s in notes.values()}) == 1
    sealed = notes["hospital-a"]
    assert (sealed.height, sealed.tree_size, sealed.cut_offset) == (2, 8, 7)
    verify_sealed_checkpoint(sealed.note.encode(), CONFIG.verifiers, 2, ORIGIN)
    node = cluster.nodes["hospital-a"]
    store = cluster.stores["hospital-a"]
    eventually(lambda: len(store.seals) == 2)
    assert [b.tree_size for b in store.blocks()] == [4, 8]
    assert store.seals[2] == (sealed.note, sealed.signers)
    assert len(store.entries) == 8
    assert node.applied_offset == 7
    assert node.find_leaf(parse_entry_id(store.entries[5])) == 5
    assert [s.tree_size for s in node.sealed_checkpoints()] == [4, 8]
    assert node.alarm_count == 0
    assert store.alarms() == []


def test_a_cosignature_that_does_not_verify_raises_a_bad_cosignature_alarm(
    cluster: Cluster,
) -> None:
    node = cluster.start("hospital-a")
    order(cluster.kafka, 4)
    ours = cluster.first_checkpoint("hospital-a")
    forged_line = signature_line(SIGNERS["hospital-b"], ours.replace("\n4\n", "\n5\n"))
    cluster.kafka.append(COSIGNATURES_TOPIC, cosignature("hospital-b", ours, forged_line))
    store = cluster.stores["hospital-a"]
    eventually(lambda: alarm_kinds(store) == [BAD_COSIGNATURE])
    (alarm,) = store.alarms()
    # a line that does not verify is nobody's: it names the member it claimed to be from
    assert (alarm.member, alarm.tree_size) == ("", 4)
    assert alarm.checkpoints == [ours]
    assert alarm.signature_lines == [forged_line]
    assert alarm.detail is not None
    assert "claiming to be from 'hospital-b'" in alarm.detail
    assert "invalid signature" in alarm.detail
    assert node.alarm_count == 1
    assert node.latest_sealed() is None  # the forged line did not count
    # the same bad line read again is not a second alarm; b's real line seals
    cluster.kafka.append(COSIGNATURES_TOPIC, cosignature("hospital-b", ours, forged_line))
    good = signature_line(SIGNERS["hospital-b"], ours)
    cluster.kafka.append(COSIGNATURES_TOPIC, cosignature("hospital-b", ours, good))
    assert cluster.sealed("hospital-a", 4).signers == ("hospital-a", "hospital-b")
    assert node.alarm_count == 1


def test_a_member_signing_two_checkpoints_for_one_size_is_stored_as_both_alarms(
    cluster: Cluster,
) -> None:
    node = cluster.start("hospital-b")
    order(cluster.kafka, 4)
    honest = cluster.first_checkpoint("hospital-b")
    forged = replace(parse_checkpoint(honest), root_hash=bytes(32)).to_text()
    lines = [signature_line(SIGNERS["hospital-c"], text) for text in (honest, forged)]
    for text, line in zip((honest, forged), lines, strict=True):
        cluster.kafka.append(COSIGNATURES_TOPIC, cosignature("hospital-c", text, line))
    store = cluster.stores["hospital-b"]
    eventually(lambda: sorted(alarm_kinds(store)) == [CHECKPOINT_MISMATCH, COSIGNATURE_CONFLICT])
    (conflict,) = by_kind(store, COSIGNATURE_CONFLICT)
    assert (conflict.member, conflict.tree_size) == ("hospital-c", 4)
    assert conflict.checkpoints == [honest, forged]
    assert conflict.signature_lines == lines
    (mismatch,) = by_kind(store, CHECKPOINT_MISMATCH)
    assert mismatch.checkpoints == [honest, forged]
    assert mismatch.signature_lines == [lines[1]]
    assert node.alarm_count == 2
    # c's line over our text still counts: b and c sealed it
    assert cluster.sealed("hospital-b", 4).signers == ("hospital-b", "hospital-c")


def test_a_partial_block_is_cut_by_the_nodes_time_to_cut(cluster: Cluster) -> None:
    cluster.start("hospital-a")
    cluster.start("hospital-b")
    order(cluster.kafka, 3)  # batch_max is 4: only a time-to-cut ends this block
    sealed = cluster.sealed("hospital-a", 3)
    assert sealed.tree_size == 3
    ttcs = [
        ordering_pb2.OrderingRecord.FromString(r.value)
        for r in cluster.kafka.records(ORDERING_TOPIC)[3:]
    ]
    assert ttcs and all(r.WhichOneof("record") == "ttc" for r in ttcs)
    assert {r.ttc.height for r in ttcs} == {1}
    assert sealed.cut_offset >= 3  # cut by a time-to-cut record


def test_a_malformed_record_is_rejected_and_the_rejection_stored(cluster: Cluster) -> None:
    node = cluster.start("hospital-a")
    cluster.kafka.append(ORDERING_TOPIC, b"\xff not a record")
    assert node.wait_until(lambda: node.store.count_rejections() == 1, WAIT)
    rejection = node.store.find_rejection("offset:0")
    assert rejection is not None
    assert rejection.reason == "expected an OrderingRecord, got other bytes"


def test_a_restarted_node_resumes_from_its_store_and_resends_unsealed_cosignatures(
    cluster: Cluster,
) -> None:
    cluster.start("hospital-a")
    cluster.start("hospital-b")
    order(cluster.kafka, 4)
    first = cluster.sealed("hospital-a", 4)
    cluster.stop("hospital-b")
    order(cluster.kafka, 4)  # a alone cannot seal block 2
    eventually(lambda: len(cluster.cosignatures_by("hospital-a")) == 2)
    eventually(lambda: len(cluster.stores["hospital-a"].seals) == 1)
    cluster.stop("hospital-a")
    node = cluster.start("hospital-a")
    assert node.latest_sealed() == first  # from its store, before anything is read
    assert node.can_sign
    assert cluster.stores["hospital-a"].alarms() == []
    assert node.applied_offset == 7
    assert node.tree.size == 8
    # block 2's cosignature is sent again at start (it may have been lost with the process)
    eventually(lambda: len(cluster.cosignatures_by("hospital-a")) == 3)
    cluster.start("hospital-b")
    second = cluster.sealed("hospital-a", 8)
    assert second.height == 2
    assert len(cluster.stores["hospital-a"].entries) == 8


def test_a_node_whose_store_disagrees_with_itself_refuses_to_sign(cluster: Cluster) -> None:
    cluster.start("hospital-a")
    order(cluster.kafka, 4)
    eventually(lambda: len(cluster.cosignatures_by("hospital-a")) == 1)
    cluster.stop("hospital-a")
    store = cluster.stores["hospital-a"]
    bundle = store.tiles.root / entries_path(0, 4)
    entries = bundle_entries(bundle.read_bytes())
    entries[1] = entry()  # another (valid) entry where leaf 1 was
    bundle.write_bytes(bundle_bytes(entries))
    node = cluster.start("hospital-a")
    assert not node.can_sign
    kinds = alarm_kinds(store)
    assert set(kinds) == {STORE_MISMATCH}
    assert store.alarms()[0].member == "hospital-a"
    assert node.alarm_count == len(kinds) >= 1
    order(cluster.kafka, 4)
    assert node.wait_until(lambda: node.applied_offset == 7, WAIT)
    time.sleep(0.1)
    assert len(cluster.cosignatures_by("hospital-a")) == 1  # nothing signed since


def test_a_node_whose_data_directory_is_gone_rebuilds_the_same_checkpoints(
    cluster: Cluster,
) -> None:
    cluster.start("hospital-a")
    cluster.start("hospital-b")
    order(cluster.kafka, 8)
    before = cluster.sealed("hospital-a", 8)
    cluster.stop("hospital-a")
    store = cluster.stores["hospital-a"]
    files = {p.relative_to(store.tiles.root): p.read_bytes() for p in _files(store.tiles.root)}
    shutil.rmtree(store.tiles.root)  # the volume is lost; the small state in the database is not
    node = cluster.start("hospital-a")
    assert node.can_sign
    again = cluster.sealed("hospital-a", 8)
    assert (again.text, again.tree_size) == (before.text, before.tree_size)
    checkpoint = store.tiles.root / "checkpoint"
    eventually(lambda: checkpoint.exists() and checkpoint.read_bytes() == files[Path("checkpoint")])
    rebuilt = {p.relative_to(store.tiles.root): p.read_bytes() for p in _files(store.tiles.root)}
    assert sorted(rebuilt) == sorted(files)
    assert rebuilt == files
    assert store.alarms() == []


def test_what_a_crash_wrote_past_the_last_block_is_dropped_and_written_again(
    cluster: Cluster,
) -> None:
    cluster.start("hospital-a")
    cluster.start("hospital-b")
    order(cluster.kafka, 4)
    cluster.sealed("hospital-a", 4)
    cluster.stop("hospital-a")
    store = cluster.stores["hospital-a"]
    # files of a block whose commit record was never written: other entries than will come
    store.tiles.write_log(4, [entry(), entry()], [])
    node = cluster.start("hospital-a")
    assert node.can_sign
    assert node.tree.size == 4
    order(cluster.kafka, 4)
    sealed = cluster.sealed("hospital-a", 8)
    assert sealed.note == cluster.sealed("hospital-b", 8).note
    assert store.entries == cluster.stores["hospital-b"].entries
    assert store.alarms() == []


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]
