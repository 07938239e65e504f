"""The one gRPC server factory used by every Swiftchain process.

It adds health (``grpc.health.v1``), server reflection, message size limits, the tracing,
authorization and error-mapping interceptors, TLS (mTLS on the main port, server-only TLS on the
public port; see services/platform/tls.py for why two ports), and a graceful shutdown on SIGTERM or
SIGINT.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import server_interceptor

from services.platform import threads
from services.platform.auth import start_authorization
from services.platform.errors import ErrorMappingInterceptor
from services.platform.revocations import RevocationList
from services.platform.settings import ProcessSettings
from services.platform.telemetry import configure_logging, configure_metrics, configure_tracing
from services.platform.tls import server_credentials

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceRegistration:
    """A servicer to mount: its full name (for health and reflection) and how to add it."""

    full_name: str
    add_to_server: Callable[[grpc.Server], None]


class Server:
    """A started gRPC server with its health servicer; stop it with :meth:`stop`."""

    def __init__(
        self,
        server: grpc.Server,
        health_servicer: health.HealthServicer,
        port: int,
        public_port: int = 0,
    ) -> None:
        self._server = server
        self.health = health_servicer
        self.port = port
        #: The bound public (server-only TLS) port; 0 when there is none.
        self.public_port = public_port
        self._stopped = threading.Event()

    def stop(self, grace: float) -> None:
        """Report NOT_SERVING, let in-flight RPCs finish for up to ``grace`` s, then stop."""
        if self._stopped.is_set():
            return
        self.health.enter_graceful_shutdown()
        self._server.stop(grace).wait()
        self._stopped.set()

    def wait(self) -> None:
        """Block until the server has stopped."""
        self._stopped.wait()


def build_server(
    settings: ProcessSettings,
    services: Sequence[ServiceRegistration],
    *,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
) -> Server:
    """Create, bind and start a server for ``services``; all report SERVING once started."""
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    tracing: grpc.ServerInterceptor = server_interceptor()  # type: ignore[no-untyped-call]
    chain: list[grpc.ServerInterceptor] = [tracing, *interceptors]
    chain.append(ErrorMappingInterceptor())
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="rpc"),
        interceptors=chain,
        options=options,
    )
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in services:
        service.add_to_server(server)
    names = [s.full_name for s in services]
    reflection.enable_server_reflection(
        [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    public_port = 0
    if settings.tls_dir is None:
        port = server.add_insecure_port(settings.address)
    else:
        port = server.add_secure_port(
            settings.address, server_credentials(settings.tls_dir, require_client_cert=True)
        )
        if settings.public_port:
            public_port = server.add_secure_port(
                settings.public_address,
                server_credentials(settings.tls_dir, require_client_cert=False),
            )
            if public_port == 0:
                raise OSError(f"cannot listen on {settings.public_address}: address in use")
    if port == 0:
        raise OSError(f"cannot listen on {settings.address}: address in use or not allowed")
    server.start()
    serving = health_pb2.HealthCheckResponse.SERVING
    health_servicer.set("", serving)
    for name in names:
        health_servicer.set(name, serving)
    _log.info(
        "%s listening on %s:%d (%s)%s",
        settings.process_name,
        settings.listen_host,
        port,
        "mTLS" if settings.tls_dir else "plaintext",
        f" and public TLS port {public_port}" if public_port else "",
    )
    return Server(server, health_servicer, port, public_port)


def run_until_signalled(
    server: Server, grace: float, on_stop: Callable[[], None] = lambda: None
) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully and call ``on_stop``. A supervised
    thread that dies (services/platform/threads.py) turns health NOT_SERVING and stops the
    server the same way, and the process then exits with status 1."""
    stop_requested = threading.Event()

    def _request_stop(signum: int, _frame: FrameType | None) -> None:
        _log.info("signal %s: shutting down (grace %.1fs)", signal.Signals(signum).name, grace)
        stop_requested.set()

    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    deaths = threads.watch_deaths(server.health.enter_graceful_shutdown, stop_requested.set)
    stop_requested.wait()
    status = deaths.stop()
    server.stop(grace)
    on_stop()
    _log.info("stopped")
    if status:
        raise SystemExit(status)


def configure_process(settings: ProcessSettings) -> None:
    """Logging, tracing and metrics for a process, from its settings; call first in ``main``."""
    configure_logging(
        settings.log_level, json_lines=settings.log_json, service_name=settings.process_name
    )
    configure_tracing(settings.process_name, spans_file=settings.spans_file)
    configure_metrics(
        settings.process_name,
        prometheus_host=settings.listen_host,
        prometheus_port=settings.metrics_port,
    )


def serve(
    settings: ProcessSettings,
    services: Sequence[ServiceRegistration],
    *,
    on_stop: Callable[[], None] = lambda: None,
    revocations: RevocationList | None = None,
) -> None:
    """Build the server (with authorization on every call), serve until SIGTERM or SIGINT, stop
    gracefully, then ``on_stop``.

    ``revocations`` lets the process that records revocations (identity) apply them to its own
    list at once rather than when its own Kafka feed delivers them.
    """
    authorization = start_authorization(settings, revocations=revocations)

    def stop_all() -> None:
        on_stop()
        authorization.stop()

    server = build_server(settings, services, interceptors=[authorization.interceptor])
    run_until_signalled(server, settings.shutdown_grace_seconds, stop_all)
