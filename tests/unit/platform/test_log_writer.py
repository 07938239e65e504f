"""The log writer (services/platform/log_writer.py) against a fake Kafka and an in-process
chain node: entries written are reported ordered, then sealed or rejected from sealed
checkpoints alone; a seal seen early waits for the acknowledgement; a restarted service learns
what settled while it was away."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from chain.errors import InvalidInputError, UnavailableError
from services.platform.log_writer import LogWriter, Ordered, Rejected, Sealed, entry_id_of
from swiftchain.chain.v1 import chain_service_pb2 as pb
from swiftchain.chain.v1 import chain_service_pb2_grpc, entry_pb2, ordering_pb2
from swiftchain.common.v1 import common_pb2

TOPIC = "chain.ordering.v1"


def entry(entry_id: str | None = None) -> bytes:
    body = entry_pb2.EntryBody(entry_id=entry_id or str(uuid.uuid4()))
    return entry_pb2.ChainEntry(body=body.SerializeToString()).SerializeToString()


@dataclass
class _Metadata:
    offset: int
    timestamp: int


class _Future:
    def __init__(self, metadata: _Metadata | None) -> None:
        self._metadata = metadata

    def get(self, timeout: float) -> _Metadata:
        if self._metadata is None:
            raise RuntimeError("KafkaTimeoutError: broker away")
        return self._metadata


@dataclass
class FakeKafka:
    """The ordering topic: records in order, each at its offset."""

    records: list[bytes] = field(default_factory=list)
    down: bool = False
    headers: list[Any] = field(default_factory=list)

    def send(self, topic: str, value: bytes, headers: Any = None) -> _Future:
        assert topic == TOPIC
        if self.down:
            return _Future(None)
        self.records.append(value)
        self.headers.append(headers)
        return _Future(_Metadata(len(self.records) - 1, 1_765_000_000_000 + len(self.records)))

    def flush(self, timeout: float) -> None:
        return None


class FakeNode(chain_service_pb2_grpc.ChainServiceServicer):
    """Applies the topic's records when told to cut: new entry ids become leaves, entry ids in
    ``reject`` or seen before are rejected; a cut that adds leaves seals a checkpoint carrying
    its cut offset (as a real node, it cuts no block of rejections alone)."""

    def __init__(self, kafka: FakeKafka) -> None:
        self.kafka = kafka
        self.leaves: list[str] = []
        self.entries: list[bytes] = []
        self.rejected: dict[str, str] = {}
        self.reject: set[str] = set()
        self.applied = -1
        self.checkpoints: list[pb.SealedCheckpoint] = []
        self.status_calls = 0
        self.changed = threading.Condition()

    def cut(self) -> None:
        with self.changed:
            for offset in range(self.applied + 1, len(self.kafka.records)):
                record = ordering_pb2.OrderingRecord.FromString(self.kafka.records[offset])
                batch = list(record.batch.entries) if record.HasField("batch") else [record.entry]
                for raw in batch:
                    entry_id = entry_id_of(raw)
                    if entry_id in self.leaves:
                        self.rejected.setdefault(entry_id, "duplicate")
                    elif entry_id in self.reject:
                        self.rejected[entry_id] = "bad signature"
                    else:
                        self.leaves.append(entry_id)
                        self.entries.append(raw)
                self.applied = offset
            if self.checkpoints and self.checkpoints[-1].tree_size == len(self.leaves):
                return
            if not self.leaves:
                return
            self.checkpoints.append(
                pb.SealedCheckpoint(tree_size=len(self.leaves), cut_offset=max(self.applied, 0))
            )
            self.changed.notify_all()

    def WatchCheckpoints(
        self, request: pb.WatchCheckpointsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchCheckpointsResponse]:
        sent = 0
        while context.is_active():
            with self.changed:
                ready = self.checkpoints[sent:]
                if not ready:
                    self.changed.wait(0.05)
            for checkpoint in ready:
                sent += 1
                if checkpoint.tree_size >= request.from_tree_size:
                    yield pb.WatchCheckpointsResponse(checkpoint=checkpoint)

    def GetCheckpoint(
        self, request: pb.GetCheckpointRequest, context: grpc.ServicerContext
    ) -> pb.GetCheckpointResponse:
        if not self.checkpoints:
            context.abort(grpc.StatusCode.NOT_FOUND, "nothing sealed yet")
        return pb.GetCheckpointResponse(checkpoint=self.checkpoints[-1])

    def GetEntries(
        self, request: pb.GetEntriesRequest, context: grpc.ServicerContext
    ) -> pb.GetEntriesResponse:
        end = min(request.end, request.start + 3)  # small pages: reading spans several
        return pb.GetEntriesResponse(start=request.start, entries=self.entries[request.start : end])

    def GetEntryStatus(
        self, request: pb.GetEntryStatusRequest, context: grpc.ServicerContext
    ) -> pb.GetEntryStatusResponse:
        self.status_calls += 1
        if request.entry_id in self.leaves:
            return pb.GetEntryStatusResponse(
                entry_id=request.entry_id,
                state=common_pb2.ENTRY_STATE_SEALED,
                leaf_index=self.leaves.index(request.entry_id),
            )
        if request.entry_id in self.rejected:
            return pb.GetEntryStatusResponse(
                entry_id=request.entry_id,
                state=common_pb2.ENTRY_STATE_REJECTED,
                rejection_reason=entry_pb2.REJECTION_REASON_BAD_SIGNATURE,
                rejection_detail=self.rejected[request.entry_id],
            )
        context.abort(grpc.StatusCode.NOT_FOUND, "never seen")
        raise AssertionError


@dataclass
class Fates:
    sealed: list[Sealed] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    reports: int = 0

    def entries_sealed(self, sealed: Sequence[Sealed]) -> None:
        self.reports += 1
        self.sealed.extend(sealed)
        self.events.extend(f"sealed {s.entry_id}" for s in sealed)

    def entries_rejected(self, rejected: Sequence[Rejected]) -> None:
        self.rejected.extend(rejected)


@dataclass
class Position:
    size: int = 0

    def log_position(self) -> int:
        return self.size

    def set_log_position(self, tree_size: int) -> None:
        self.size = tree_size


@pytest.fixture
def node() -> Iterator[tuple[FakeNode, grpc.Channel]]:
    fake = FakeNode(FakeKafka())  # type: ignore[abstract]  # serves what the writer calls
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    chain_service_pb2_grpc.add_ChainServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield fake, channel
    channel.close()
    server.stop(grace=None)


def wait_until(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def started(writer: LogWriter) -> LogWriter:
    writer.start()
    return writer


def test_written_entries_are_ordered_then_sealed_at_their_leaves(
    node: tuple[FakeNode, grpc.Channel],
) -> None:
    fake, channel = node
    fates = Fates()
    writer = started(LogWriter(fake.kafka, channel, fates))
    try:
        wait_until(lambda: writer._position == 0, "the writer follows")
        entries = [entry() for _ in range(5)]
        recorded: list[Ordered] = []
        placed = writer.write(entries, on_ordered=recorded.extend)
        assert recorded == placed
        assert [p.entry_id for p in placed] == [entry_id_of(e) for e in entries]
        assert {p.offset for p in placed} == {0}, "five entries travel in one batch record"
        assert placed[0].time.tzinfo is not None
        fake.cut()
        wait_until(lambda: len(fates.sealed) == 5, "five seals")
        assert [(s.entry_id, s.leaf_index, s.tree_size) for s in fates.sealed] == [
            (entry_id_of(e), i, 5) for i, e in enumerate(entries)
        ]
        assert writer.followed == 0
        assert fake.status_calls == 0, "seals come from checkpoints, not from status lookups"
    finally:
        writer.stop()


def test_an_entry_the_log_leaves_out_is_reported_rejected_with_its_reason(
    node: tuple[FakeNode, grpc.Channel],
) -> None:
    fake, channel = node
    fates = Fates()
    writer = started(LogWriter(fake.kafka, channel, fates))
    try:
        wait_until(lambda: writer._position == 0, "the writer follows")
        good, bad, untracked = entry(), entry(), entry()
        fake.reject = {entry_id_of(bad), entry_id_of(untracked)}
        writer.write([good, bad, untracked], follow=[True, True, False])
        fake.cut()
        wait_until(lambda: writer.followed == 0, "both followed entries settle")
        assert [s.entry_id for s in fates.sealed] == [entry_id_of(good)]
        assert fates.rejected == [
            Rejected(entry_id_of(bad), entry_pb2.REJECTION_REASON_BAD_SIGNATURE, "bad signature")
        ]
        assert fake.status_calls == 1, "one lookup, for the entry the checkpoint left out"
    finally:
        writer.stop()


def test_entries_ordered_after_the_cut_are_not_judged_by_it(
    node: tuple[FakeNode, grpc.Channel],
) -> None:
    fake, channel = node
    fates = Fates()
    writer = started(LogWriter(fake.kafka, channel, fates))
    try:
        wait_until(lambda: writer._position == 0, "the writer follows")
        first = entry()
        writer.write([first])
        fake.cut()
        wait_until(lambda: len(fates.sealed) == 1, "the first seal")
        fake.kafka.records.append(ordering_pb2.OrderingRecord(entry=entry()).SerializeToString())
        later = entry()
        writer.write([later])  # offset 2: after the next cut only
        assert writer.followed == 1
        assert not fates.rejected
        fake.cut()
        wait_until(lambda: len(fates.sealed) == 2, "the second seal")
        assert fates.sealed[1] == Sealed(entry_id_of(later), 2, 3)
    finally:
        writer.stop()


def test_a_seal_seen_before_the_acknowledgement_is_recorded_waits_for_it(
    node: tuple[FakeNode, grpc.Channel],
) -> None:
    fake, channel = node
    fates = Fates()
    writer = started(LogWriter(fake.kafka, channel, fates))
    try:
        wait_until(lambda: writer._position == 0, "the writer follows")
        one = entry()

        def on_ordered(placed: Sequence[Ordered]) -> None:
            fake.cut()  # sealed while the service is still recording the offsets
            wait_until(lambda: writer._position == 1, "the writer read the checkpoint")
            assert not fates.sealed, "no seal before the service has recorded the order"
            fates.events.append(f"ordered {placed[0].entry_id}")

        writer.write([one], on_ordered=on_ordered)
        assert fates.events == [f"ordered {entry_id_of(one)}", f"sealed {entry_id_of(one)}"]
        assert fates.sealed == [Sealed(entry_id_of(one), 0, 1)]
    finally:
        writer.stop()


def test_kafka_away_is_unavailable_and_the_entry_stays_followed_for_the_resend(
    node: tuple[FakeNode, grpc.Channel],
) -> None:
    fake, channel = node
    fates = Fates()
    writer = started(LogWriter(fake.kafka, channel, fates))
    try:
        wait_until(lambda: writer._position == 0, "the writer follows")
        one = entry()
        fake.kafka.down = True
        with pytest.raises(UnavailableError, match="could not hand entries to Kafka"):
            writer.write([one])
        assert writer.followed == 1
        fake.kafka.down = False
        writer.write([one])
        fake.cut()
        wait_until(lambda: len(fates.sealed) == 1, "the resent entry's seal")
    finally:
        writer.stop()


def test_a_restart_without_a_position_looks_up_what_settled_meanwhile(
    node: tuple[FakeNode, grpc.Channel],
) -> None:
    fake, channel = node
    sealed_meanwhile, rejected_meanwhile, never_sent = entry(), entry(), entry()
    fake.reject = {entry_id_of(rejected_meanwhile)}
    fake.kafka.send(TOPIC, ordering_pb2.OrderingRecord(entry=sealed_meanwhile).SerializeToString())
    fake.kafka.send(
        TOPIC, ordering_pb2.OrderingRecord(entry=rejected_meanwhile).SerializeToString()
    )
    fake.cut()
    fates = Fates()
    writer = LogWriter(fake.kafka, channel, fates)
    writer.resume(
        [
            (entry_id_of(sealed_meanwhile), None),
            (entry_id_of(rejected_meanwhile), 1),
            (entry_id_of(never_sent), None),
        ]
    )
    writer.start()
    try:
        wait_until(lambda: writer.followed == 1, "two of three settle")
        assert fates.sealed == [Sealed(entry_id_of(sealed_meanwhile), 0, 1)]
        assert [r.entry_id for r in fates.rejected] == [entry_id_of(rejected_meanwhile)]
        writer.write([never_sent])
        fake.cut()
        wait_until(lambda: writer.followed == 0, "the resent entry settles")
        assert fates.sealed[-1] == Sealed(entry_id_of(never_sent), 1, 2)
    finally:
        writer.stop()


def test_a_restart_with_a_position_reads_on_from_it_and_stores_each_checkpoint(
    node: tuple[FakeNode, grpc.Channel],
) -> None:
    fake, channel = node
    old, mine = entry(), entry()
    fake.kafka.send(TOPIC, ordering_pb2.OrderingRecord(entry=old).SerializeToString())
    fake.cut()
    fake.kafka.send(TOPIC, ordering_pb2.OrderingRecord(entry=mine).SerializeToString())
    fake.cut()
    fates = Fates()
    position = Position(size=1)
    writer = LogWriter(fake.kafka, channel, fates, position=position)
    writer.resume([(entry_id_of(mine), 1)])
    writer.start()
    try:
        wait_until(lambda: writer.followed == 0, "the resumed entry settles")
        assert fates.sealed == [Sealed(entry_id_of(mine), 1, 2)]
        assert position.size == 2
        assert fake.status_calls == 0
    finally:
        writer.stop()


def test_a_resent_entry_whose_first_copy_was_sealed_is_reported_at_that_leaf(
    node: tuple[FakeNode, grpc.Channel],
) -> None:
    fake, channel = node
    fates = Fates()
    writer = started(LogWriter(fake.kafka, channel, fates))
    try:
        one = entry()
        fake.kafka.send(TOPIC, ordering_pb2.OrderingRecord(entry=one).SerializeToString())
        fake.cut()
        wait_until(lambda: writer._position == 1, "the writer follows")
        writer.write([one])  # the copy at offset 1 is a duplicate
        fake.kafka.send(TOPIC, ordering_pb2.OrderingRecord(entry=entry()).SerializeToString())
        fake.cut()  # the next block is what tells that offset 1 was decided
        wait_until(lambda: writer.followed == 0, "the resent entry settles")
        assert fates.sealed == [Sealed(entry_id_of(one), 0, 2)]
        assert not fates.rejected
    finally:
        writer.stop()


def test_bytes_without_an_entry_id_are_refused_before_anything_is_sent(
    node: tuple[FakeNode, grpc.Channel],
) -> None:
    fake, channel = node
    writer = LogWriter(fake.kafka, channel, Fates())
    with pytest.raises(InvalidInputError, match="expected ChainEntry bytes with an entry id"):
        writer.write([b"\xff\xff not an entry"])
    assert fake.kafka.records == []


def test_a_writer_behind_by_many_checkpoints_reports_them_in_one_call(
    node: tuple[FakeNode, grpc.Channel],
) -> None:
    fake, channel = node
    entries = [entry() for _ in range(10)]
    for offset, one in enumerate(entries):
        fake.kafka.send(TOPIC, ordering_pb2.OrderingRecord(entry=one).SerializeToString())
        if offset % 2:
            fake.cut()  # five checkpoints sealed before the writer reads the first
    fates = Fates()
    position = Position()
    writer = LogWriter(fake.kafka, channel, fates, position=position)
    writer.resume([(entry_id_of(one), offset) for offset, one in enumerate(entries)])
    writer.start()
    try:
        wait_until(lambda: writer.followed == 0, "all ten settle")
        assert fates.reports == 1, "five missed checkpoints, one report"
        assert [s.leaf_index for s in fates.sealed] == list(range(10))
        assert position.size == 10
    finally:
        writer.stop()
