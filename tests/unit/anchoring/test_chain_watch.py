"""The chain watcher (services/anchoring/chain_watch.py) against an in-process ChainService: a
watcher that has fallen behind records everything sealed so far in one write, not one per
checkpoint it missed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from services.anchoring.chain_watch import ChainWatch
from services.anchoring.domain import RecordAnchoring, RecordVersion
from services.anchoring.tracking import SealTracker
from swiftchain.chain.v1 import chain_service_pb2, chain_service_pb2_grpc
from tests.unit.anchoring.fakes import NOW, TAG_KEY, FakeStore, drafts, known_keys, request, sdk

PAGE = 4  # entries per GetEntries page, so that catching up takes several pages


class _Log(chain_service_pb2_grpc.ChainServiceServicer):
    """Sealed checkpoints of sizes 2, 4, ... over ``entries``, all sealed before the watcher
    reads the first (it is behind by all of them)."""

    def __init__(self, entries: list[bytes]) -> None:
        self.entries = entries
        self.pages = 0

    def _sealed(self, size: int) -> chain_service_pb2.SealedCheckpoint:
        return chain_service_pb2.SealedCheckpoint(tree_size=size)

    def WatchCheckpoints(
        self, request: chain_service_pb2.WatchCheckpointsRequest, context: grpc.ServicerContext
    ) -> Iterator[chain_service_pb2.WatchCheckpointsResponse]:
        for size in range(2, len(self.entries) + 1, 2):
            if size >= request.from_tree_size:
                yield chain_service_pb2.WatchCheckpointsResponse(checkpoint=self._sealed(size))
        while context.is_active():
            time.sleep(0.05)

    def GetCheckpoint(
        self, request: chain_service_pb2.GetCheckpointRequest, context: grpc.ServicerContext
    ) -> chain_service_pb2.GetCheckpointResponse:
        return chain_service_pb2.GetCheckpointResponse(checkpoint=self._sealed(len(self.entries)))

    def GetEntries(
        self, request: chain_service_pb2.GetEntriesRequest, context: grpc.ServicerContext
    ) -> chain_service_pb2.GetEntriesResponse:
        self.pages += 1
        end = min(request.end, len(self.entries), request.start + PAGE)
        return chain_service_pb2.GetEntriesResponse(
            start=request.start,
            entries=self.entries[request.start : end],
            sealed_tree_size=len(self.entries),
        )


def _ordered_versions(store: FakeStore, tracker: SealTracker, count: int) -> list[RecordVersion]:
    anchoring = RecordAnchoring(store, known_keys(), TAG_KEY)
    signed = [request(r) for r in sdk().sign(drafts(count, "rec-watch"))]
    versions = [o.anchored for o in anchoring.anchor("hospital-a", signed, NOW) if o.anchored]
    tracker.watch(versions)
    for offset, version in enumerate(versions):
        version.ordering_offset = offset
    store.set_ordered(versions, [])
    tracker.ordered(versions, NOW)
    return versions


@pytest.fixture
def log_server() -> Iterator[tuple[_Log, grpc.Channel]]:
    log = _Log([])  # type: ignore[abstract]  # serves only what the watcher calls
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    chain_service_pb2_grpc.add_ChainServiceServicer_to_server(log, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield log, channel
    channel.close()
    server.stop(grace=None)


def test_a_watcher_behind_by_many_checkpoints_records_them_in_one_write(
    log_server: tuple[_Log, grpc.Channel],
) -> None:
    log, channel = log_server
    store = FakeStore()
    tracker = SealTracker(store)
    versions = _ordered_versions(store, tracker, 10)
    log.entries = [v.entry for v in versions]
    writes = store.log_state_writes
    watch = ChainWatch(channel, tracker, clock=lambda: NOW)
    watch.start()
    try:
        deadline = time.monotonic() + 10
        while tracker.watched and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        watch.stop()
    assert tracker.watched == 0
    assert store.log_state_writes == writes + 1, "five missed checkpoints, one write"
    assert log.pages == 3  # 10 leaves, 4 a page
    stored = [store.versions[v.key] for v in versions]
    assert [(v.leaf_index, v.sealed_tree_size) for v in stored] == [(i, 10) for i in range(10)]
    assert store.position == 10
