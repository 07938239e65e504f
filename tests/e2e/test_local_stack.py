"""What `make up` starts: every process answers health SERVING over mTLS on its main port and
over server-only TLS on its public port, refuses a client without a certificate on the main
port, lists its services through reflection, and stopping leaves no process behind. Runs the
real stack on free ports."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from devstack.ferretdb import ensure_ferretdb
from devstack.kafka import ensure_kafka
from devstack.pki import ADMIN
from devstack.stack import LocalStack, StackPorts
from services.platform.tls import open_channel, open_public_channel

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


def _listed_services(port: int, tls_dir: Path) -> set[str]:
    with open_channel(f"127.0.0.1:{port}", tls_dir) as channel:
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
        admin = stack.pki.tls_dir(ADMIN)
        for proc in stack.grpc_processes:
            listed = _listed_services(proc.port, admin)
            assert EXPECTED[proc.name] in listed, f"{proc.name} lists {sorted(listed)}"
            assert "grpc.health.v1.Health" in listed
            with open_public_channel(f"127.0.0.1:{proc.public_port}", stack.pki.ca_pem) as public:
                response = health_pb2_grpc.HealthStub(public).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
                assert response.status == health_pb2.HealthCheckResponse.SERVING
            with (
                open_public_channel(f"127.0.0.1:{proc.port}", stack.pki.ca_pem) as no_cert,
                pytest.raises(grpc.RpcError) as refused,
            ):
                health_pb2_grpc.HealthStub(no_cert).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, proc.name
            assert proc.process.pid is not None
            pids.append(proc.process.pid)
    finally:
        stack.stop()
    assert pids and not [pid for pid in pids if _alive(pid)], "a process outlived the stack"
