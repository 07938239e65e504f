"""ChainService's waits on a server built by the platform's factory, over a node on in-memory
fakes: waiting calls hold no thread (sixty of them leave the node answering), a wait ends when
the server's maximum wait says, and a checkpoint watch is woken by the seal it waits for."""

from __future__ import annotations

import uuid

import grpc
import pytest

from chain.node.node import ChainNode
from chain.node.service import ChainServicer
from services.platform.server import Server, ServiceRegistration, build_server
from services.platform.settings import ProcessSettings
from swiftchain.chain.v1 import chain_service_pb2 as pb
from swiftchain.chain.v1 import chain_service_pb2_grpc as pb_grpc
from tests.unit.chain.node.test_node import Cluster, order
from tests.unit.chain.node.test_node import cluster as cluster

WAITERS = 60


def _serve(node: ChainNode, **settings: float) -> Server:
    servicer = ChainServicer(node)
    return build_server(
        ProcessSettings(process_name=node.name, max_workers=2, **settings),  # type: ignore[arg-type]
        [
            ServiceRegistration(
                "swiftchain.chain.v1.ChainService",
                lambda server: pb_grpc.add_ChainServiceServicer_to_server(servicer, server),
            )
        ],
    )


def test_sixty_calls_waiting_for_a_seal_leave_the_node_answering(cluster: Cluster) -> None:
    node = cluster.start("hospital-a")  # alone: a quorum of two never seals
    server = _serve(node)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.ChainServiceStub(channel)
            waiting = [
                stub.GetInclusionProof.future(
                    pb.GetInclusionProofRequest(entry_id=str(uuid.uuid4()), wait_until_sealed=True),
                    timeout=60,
                )
                for _ in range(WAITERS)
            ]
            status = stub.GetNodeStatus(pb.GetNodeStatusRequest(), timeout=10)
            still_waiting = sum(not call.done() for call in waiting)
            for call in waiting:
                call.cancel()
    finally:
        server.stop(0)
    assert status.node == "hospital-a"
    assert still_waiting == WAITERS


def test_a_wait_ends_at_the_servers_maximum_with_a_clear_status(cluster: Cluster) -> None:
    node = cluster.start("hospital-a")
    server = _serve(node, max_wait_seconds=0.5)
    entry_id = str(uuid.uuid4())
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.ChainServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.GetInclusionProof(
                    pb.GetInclusionProofRequest(entry_id=entry_id, wait_until_sealed=True),
                    timeout=3600,
                )
    finally:
        server.stop(0)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert refused.value.details() == (
        f"entry {entry_id} has not been seen by node hospital-a (after waiting 0.5 s, as long "
        "as this call may wait; ask again)"
    )


def test_a_checkpoint_watch_is_woken_by_the_seal(cluster: Cluster) -> None:
    node = cluster.start("hospital-a")
    server = _serve(node)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.ChainServiceStub(channel)
            watch = stub.WatchCheckpoints(pb.WatchCheckpointsRequest(from_tree_size=1), timeout=60)
            cluster.start("hospital-b")
            order(cluster.kafka, 4)
            first = next(watch)
            watch.cancel()
    finally:
        server.stop(0)
    assert first.checkpoint.tree_size == 4
    assert set(first.checkpoint.signers) == {"hospital-a", "hospital-b"}
