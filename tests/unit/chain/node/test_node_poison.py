"""Nothing on its topics stops a chain node (issue 24): a record it cannot use — a null value,
no bytes, junk, a message of another kind — is rejected at its offset on every node (so all
still cut the same blocks), set aside in the node's store with its place and reason, and raised
as a ``POISON_RECORD`` alarm; a store that fails for a while is waited out; a thread that dies
anyway stops the node and is reported to the process's supervisor."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, cast

import pytest
from pymongo.errors import AutoReconnect

from chain.alarms import BAD_COSIGNATURE, POISON_RECORD
from chain.node.node import ChainNode
from chain.node.ports import NodeStore
from services.platform import poison
from services.platform.poison import PoisonRecord
from services.platform.threads import ThreadRegistry
from services.platform.topics import COSIGNATURES_TOPIC, ORDERING_TOPIC
from swiftchain.chain.v1 import ordering_pb2
from tests.unit.chain.node.fakes import FakeProducer, FakeReaders, by_kind
from tests.unit.chain.node.test_node import (
    CONFIG,
    NAMES,
    SIGNERS,
    WAIT,
    Cluster,
    cluster,
    eventually,
    order,
)

__all__ = ["cluster"]  # the fixture, shared with test_node.py

#: What anyone who can write to a topic can send; kafka-python hands a null value as None.
POISON: list[bytes] = [
    cast(bytes, None),
    b"",
    b"\xff\xfe junk",
    b"\x7a\x03abc",  # a well-formed protobuf of no kind the node knows
]


class MemorySink:
    """The process's store for records set aside, in memory."""

    def __init__(self) -> None:
        self.records: dict[str, PoisonRecord] = {}
        self._lock = threading.Lock()

    def set_aside(self, record: PoisonRecord) -> bool:
        with self._lock:
            return self.records.setdefault(record.record_id, record) is record

    def of(self, consumer: str) -> list[PoisonRecord]:
        with self._lock:
            found = [r for r in self.records.values() if r.consumer == consumer]
        return sorted(found, key=lambda r: r.offset)


@pytest.fixture
def sink() -> Iterator[MemorySink]:
    before = poison.process_store()
    made = MemorySink()
    poison.use_store(made)
    try:
        yield made
    finally:
        poison.use_store(before)


class FlakyStore:
    """A node store whose chosen writes fail ``failures`` times each (as pymongo fails while
    FerretDB is away: "connection closed"), or for good with another error."""

    def __init__(
        self, inner: Any, failures: int, methods: tuple[str, ...], error: type[Exception]
    ) -> None:
        self._inner = inner
        self._failures = dict.fromkeys(methods, failures)
        self._error = error
        self.failed = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name not in self._failures:
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._failures[name] > 0:
                self._failures[name] -= 1
                self.failed += 1
                raise self._error(f"{name}: connection closed")
            return attribute(*args, **kwargs)

        return call


def test_poison_on_the_ordering_topic_is_rejected_alike_on_every_node_and_set_aside(
    cluster: Cluster, sink: MemorySink
) -> None:
    for name in NAMES:
        cluster.start(name)
    order(cluster.kafka, 1)
    for value in POISON:  # offsets 1-4
        cluster.kafka.append(ORDERING_TOPIC, value)
    order(cluster.kafka, 7)
    notes = {name: cluster.sealed(name, 8) for name in NAMES}
    assert len({n.note for n in notes.values()}) == 1  # the same blocks, byte for byte
    assert notes["hospital-a"].tree_size == 8
    for name in NAMES:
        store = cluster.stores[name]
        node = cluster.nodes[name]
        assert node.running and node.failure is None
        # Rejections are stored after the block that passes them (its seal may come first).
        eventually(lambda store=store: store.count_rejections() == 4)  # type: ignore[misc]
        reasons = {
            offset: rejection.reason
            for offset in range(1, 5)
            if (rejection := store.find_rejection(f"offset:{offset}")) is not None
        }
        assert reasons == {
            1: "expected an OrderingRecord, got a record with no value",
            2: "expected an OrderingRecord, got an empty record",
            3: "expected an OrderingRecord, got other bytes",
            4: "expected an OrderingRecord, got other bytes",
        }
        eventually(lambda store=store: len(by_kind(store, POISON_RECORD)) == 4)  # type: ignore[misc]
        alarms = sorted(by_kind(store, POISON_RECORD), key=lambda a: a.id)
        assert [a.id for a in alarms] == [
            f"poison-record/{ORDERING_TOPIC}/0/{o}" for o in range(1, 5)
        ]
        assert all(a.member == "" and "set aside" in (a.detail or "") for a in alarms)
        kept = sink.of(f"chain-node-{name}")
        assert [(r.topic, r.partition, r.offset) for r in kept] == [
            (ORDERING_TOPIC, 0, o) for o in range(1, 5)
        ]
        assert [r.value for r in kept] == POISON
        assert kept[0].reason == reasons[1]


def test_poison_on_the_cosignatures_topic_is_set_aside_and_sealing_goes_on(
    cluster: Cluster, sink: MemorySink
) -> None:
    node = cluster.start("hospital-a")
    cluster.start("hospital-b")
    for value in POISON:
        cluster.kafka.append(COSIGNATURES_TOPIC, value)
    forged = ordering_pb2.Cosignature(
        node="hospital-c", tree_size=4, checkpoint="x\n4\nAAAA\n", signature_line="— nope\n"
    ).SerializeToString()
    cluster.kafka.append(COSIGNATURES_TOPIC, forged)
    order(cluster.kafka, 4)
    cluster.sealed("hospital-a", 4)
    store = cluster.stores["hospital-a"]
    eventually(lambda: len(sink.of("chain-node-hospital-a-cosign")) == 5)
    kept = sink.of("chain-node-hospital-a-cosign")
    assert [(r.topic, r.offset) for r in kept] == [(COSIGNATURES_TOPIC, o) for o in range(5)]
    assert kept[0].reason == "expected a Cosignature, got a record with no value"
    # The fourth parses as a Cosignature (of no member): a BAD_COSIGNATURE, like the forged one.
    eventually(lambda: len(by_kind(store, POISON_RECORD)) == 3)
    assert len(by_kind(store, BAD_COSIGNATURE)) >= 1
    assert node.running and node.failure is None


def test_a_store_that_fails_for_a_while_is_waited_out(cluster: Cluster) -> None:
    for name in NAMES:
        flaky = FlakyStore(
            cluster.stores[name],
            3,
            ("write_block", "write_rejections", "seal_block", "raise_alarm"),
            AutoReconnect,
        )
        cluster.stores[name] = cast(Any, flaky)
        cluster.start(name)
    cluster.kafka.append(ORDERING_TOPIC, b"\xff junk")  # a rejection and an alarm to store
    order(cluster.kafka, 8)
    notes = {name: cluster.sealed(name, 8) for name in NAMES}
    assert len({n.note for n in notes.values()}) == 1
    for name in NAMES:
        assert cast(FlakyStore, cluster.stores[name]).failed >= 3
        assert cluster.nodes[name].running


def test_a_thread_that_dies_stops_the_node_and_is_reported(cluster: Cluster) -> None:
    store = FlakyStore(cluster.stores["hospital-a"], 1, ("write_block",), RuntimeError)
    registry = ThreadRegistry()
    deaths: list[str] = []
    registry.on_failure(lambda failure: deaths.append(failure.name))
    node = ChainNode(
        name="hospital-a",
        config=CONFIG,
        signer=SIGNERS["hospital-a"],
        store=cast(NodeStore, store),
        producer=FakeProducer(cluster.kafka),
        readers=FakeReaders(cluster.kafka),
        threads=registry,
    )
    node.start()
    try:
        order(cluster.kafka, 4)  # a block: its write fails for good
        eventually(lambda: not node.running, WAIT)
        assert deaths == ["sequencer"]
        assert isinstance(node.failure, RuntimeError)
        assert [f.name for f in registry.failures] == ["sequencer"]
    finally:
        node.stop(timeout=5)
