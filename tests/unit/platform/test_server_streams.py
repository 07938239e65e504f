"""Servers built by the platform's factory (services/platform/server.py) hold thousands of idle
streams and still answer unary calls; per-caller limits answer RESOURCE_EXHAUSTED with a retry
hint; long waits end when the server says, not when the caller gives up."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from devstack.pki import ADMIN, ensure_pki
from devstack.process import free_port
from services.platform.auth import AuthInterceptor, Authorizer
from services.platform.revocations import RevocationList
from services.platform.server import Server, ServiceRegistration, build_server
from services.platform.settings import ProcessSettings
from services.platform.tls import client_credentials, public_client_credentials

STREAMS = 2000
BEGIN_LOGIN = "/swiftchain.identity.v1.IdentityService/BeginLogin"
WAITING = "/test.Waits/HowLong"


def _authorized(settings: ProcessSettings, services: list[ServiceRegistration]) -> Server:
    return build_server(
        settings, services, interceptors=[AuthInterceptor(Authorizer(RevocationList(), None))]
    )


def _open_watches(channel: grpc.Channel, count: int) -> list[Any]:
    """``count`` Health.Watch streams, each known to be open on the server (it answered)."""
    stub = health_pb2_grpc.HealthStub(channel)
    calls = [stub.Watch(health_pb2.HealthCheckRequest(), timeout=120) for _ in range(count)]
    for call in calls:
        assert next(call).status == health_pb2.HealthCheckResponse.SERVING
    return calls


def _cancel(calls: list[Any]) -> None:
    for call in calls:
        call.cancel()


def _retry_delay(error: grpc.RpcError) -> float:
    status = rpc_status.from_call(error)
    assert status is not None, "expected a rich status with details"
    for detail in status.details:
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(retry):
            return float(retry.retry_delay.ToMilliseconds()) / 1000
    raise AssertionError("expected a google.rpc.RetryInfo detail")


def test_thousands_of_idle_streams_leave_unary_calls_answered() -> None:
    server = build_server(ProcessSettings(process_name="streams", max_workers=2), [])
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            watches = _open_watches(channel, STREAMS)
            check = health_pb2_grpc.HealthStub(channel).Check
            answer = check(health_pb2.HealthCheckRequest(), timeout=10)
            _cancel(watches)
    finally:
        server.stop(0)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def pki_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pki")


def test_anonymous_health_watches_on_the_public_port_do_not_starve_authenticated_calls(
    pki_root: Path,
) -> None:
    pki = ensure_pki(pki_root, [("streams", "service")])
    server = _authorized(
        ProcessSettings(
            process_name="streams",
            tls_dir=pki.tls_dir("streams"),
            public_port=free_port(),
            max_workers=2,
            max_streams_per_caller=1000,
            anonymous_burst=1000,
        ),
        [],
    )
    public = grpc.secure_channel(
        f"localhost:{server.public_port}", public_client_credentials(pki.ca_pem)
    )
    admin = grpc.secure_channel(f"localhost:{server.port}", client_credentials(pki.tls_dir(ADMIN)))
    try:
        with public, admin:
            watches = _open_watches(public, 300)
            check = health_pb2_grpc.HealthStub(admin).Check
            answer = check(health_pb2.HealthCheckRequest(), timeout=10)
            _cancel(watches)
    finally:
        server.stop(0)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_a_caller_over_its_stream_limit_gets_resource_exhausted_with_a_retry_hint() -> None:
    server = _authorized(
        ProcessSettings(process_name="limits", max_streams_per_caller=3, retry_after_seconds=2),
        [],
    )

    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            watches = _open_watches(channel, 3)
            one_more = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            with pytest.raises(grpc.RpcError) as refused:
                next(one_more)
            _cancel(watches)
    finally:
        server.stop(0)
    error = refused.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "already holds 3 open streams" in (error.details() or "")
    assert _retry_delay(error) == 2.0


def _begin_login(server: grpc.aio.Server) -> None:
    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(
        lambda request, context: b"challenge"
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "swiftchain.identity.v1.IdentityService", {"BeginLogin": handler}
            ),
        )
    )


def test_anonymous_logins_past_the_burst_get_resource_exhausted_with_a_retry_hint() -> None:
    server = _authorized(
        ProcessSettings(process_name="limits", anonymous_burst=5, anonymous_calls_per_second=0.001),
        [ServiceRegistration("swiftchain.identity.v1.IdentityService", _begin_login)],
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            login: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(BEGIN_LOGIN)
            answers = [login(b"", timeout=5) for _ in range(5)]
            with pytest.raises(grpc.RpcError) as refused:
                login(b"", timeout=5)
    finally:
        server.stop(0)
    assert answers == [b"challenge"] * 5
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "too many anonymous calls from 127.0.0.1" in (refused.value.details() or "")
    assert _retry_delay(refused.value) > 0


def _how_long(request: bytes, context: grpc.ServicerContext) -> bytes:
    remaining = context.time_remaining()
    return f"{remaining:.1f}".encode()


def _waits(server: grpc.aio.Server) -> None:
    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(_how_long)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Waits", {"HowLong": handler}),)
    )


@pytest.fixture
def waits() -> Iterator[grpc.Channel]:
    server = build_server(
        ProcessSettings(process_name="waits", max_wait_seconds=3),
        [ServiceRegistration("test.Waits", _waits)],
    )
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel
    server.stop(0)


@pytest.mark.parametrize("deadline", [None, 3600.0])
def test_a_synchronous_handler_may_wait_no_longer_than_the_server_allows(
    waits: grpc.Channel, deadline: float | None
) -> None:
    how_long: grpc.UnaryUnaryMultiCallable[bytes, bytes] = waits.unary_unary(WAITING)
    assert float(how_long(b"", timeout=deadline)) <= 3.0


_release = threading.Event()
_entered = threading.Event()


def _stuck(request: bytes, context: grpc.ServicerContext) -> bytes:
    _entered.set()
    _release.wait(30)
    return b"done"


def _stuck_service(server: grpc.aio.Server) -> None:
    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(_stuck)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Stuck", {"Wait": handler}),)
    )


def test_a_full_server_refuses_a_unary_call_at_once_rather_than_queueing_it() -> None:
    server = build_server(
        ProcessSettings(process_name="full", max_workers=1, max_queued_calls=0),
        [ServiceRegistration("test.Stuck", _stuck_service)],
    )
    _release.clear()
    _entered.clear()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stuck: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                "/test.Stuck/Wait"
            )
            first = stuck.future(b"", timeout=30)
            assert _entered.wait(10)
            with pytest.raises(grpc.RpcError) as refused:
                stuck(b"", timeout=30)
            _release.set()
            assert first.result() == b"done"
    finally:
        _release.set()
        server.stop(0)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "the server is busy" in (refused.value.details() or "")
    assert _retry_delay(refused.value) > 0
