"""What `make up` starts: every process answers health SERVING and lists its services through
reflection, and stopping leaves no process behind. Runs the real stack on free ports."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from devstack.ferretdb import ensure_ferretdb
from devstack.kafka import ensure_kafka
from devstack.stack import LocalStack, StackPorts

pytestmark = pytest.mark.e2e

EXPECTED = {
    "hospital-a": "swiftchain.chain.v1.ChainService",
    "hospital-b": "swiftchain.chain.v1.ChainService",
    "hospital-c": "swiftchain.chain.v1.ChainService",
    "identity": "swiftchain.identity.v1.IdentityService",
    "anchoring": "swiftchain.anchoring.v1.AnchoringService",
    "consent": "swiftchain.consent.v1.ConsentService",
    "audit": "swiftchain.audit.v1.AuditService",
}


def _listed_services(port: int) -> set[str]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        return {s.name for r in responses for s in r.list_services_response.service}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_every_process_serves_health_and_reflection_and_stops_cleanly(tmp_path: Path) -> None:
    ensure_kafka(log=lambda line: None)
    ensure_ferretdb(log=lambda line: None)
    stack = LocalStack(tmp_path, StackPorts.free(), say=lambda line: None)
    pids: list[int] = []
    try:
        stack.start()  # raises unless every gRPC process answers health SERVING
        assert {p.name for p in stack.grpc_processes} == set(EXPECTED)
        for proc in stack.grpc_processes:
            listed = _listed_services(proc.port)
            assert EXPECTED[proc.name] in listed, f"{proc.name} lists {sorted(listed)}"
            assert "grpc.health.v1.Health" in listed
            assert proc.process.pid is not None
            pids.append(proc.process.pid)
    finally:
        stack.stop()
    assert pids and not [pid for pid in pids if _alive(pid)], "a process outlived the stack"
