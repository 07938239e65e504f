"""The one gRPC server factory used by every Swiftchain process.

It adds health (``grpc.health.v1``), server reflection, message size limits, the tracing,
error-mapping, authorization and limit interceptors, TLS (mTLS on the main port, server-only TLS
on the public port; see services/platform/tls.py for why two ports), and a graceful shutdown on
SIGTERM or SIGINT.

The server is grpc's asyncio server, run on an event loop of its own thread, so that an open
stream holds a coroutine rather than a thread: a server holds tens of thousands of idle streams
(notifications, trail follows, checkpoint watches, health watches) while its unary calls keep
their latency. The services' handlers stay synchronous and run on a bounded thread pool
(services/platform/aio.py); overload is RESOURCE_EXHAUSTED with a retry hint, never a queue
that outlives the caller's deadline (services/platform/limits.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Coroutine, Sequence
from concurrent import futures
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer as AsyncHealthServicer
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from services.platform import threads
from services.platform.aio import Admission, StreamWriter, SyncAdapter
from services.platform.auth import AuthInterceptor, start_authorization
from services.platform.errors import ErrorMappingInterceptor
from services.platform.limits import CallerLimits, LimitSettings, LimitsInterceptor
from services.platform.revocations import RevocationList
from services.platform.settings import ProcessSettings
from services.platform.telemetry import configure_logging, configure_metrics, configure_tracing
from services.platform.tls import server_credentials

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: RPCs grpc itself admits beyond the platform's own limits before it refuses with
#: RESOURCE_EXHAUSTED: room for the calls that the limits refuse with a better message.
_GRPC_CONCURRENCY_MARGIN = 1000


@dataclass(frozen=True)
class ServiceRegistration:
    """A servicer to mount: its full name (for health and reflection) and how to add it."""

    full_name: str
    #: Adds the servicer to the (asyncio) server, as the generated ``add_*_to_server`` does;
    #: typed loosely so that a registration written against ``grpc.Server`` still fits.
    add_to_server: Callable[[Any], None]


class _EventLoop:
    """An asyncio event loop running on a daemon thread of its own."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        """Run ``coroutine`` on the loop and return its result (from another thread)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def on_loop_thread(self) -> bool:
        """True when called from the loop's own thread."""
        return threading.current_thread() is self._thread

    def close(self) -> None:
        """Cancel what still runs on the loop (grpc's bookkeeping of finished calls), stop the
        loop and end its thread."""
        if self._thread.is_alive():
            # stopping anyway: whatever does not end in time goes with the loop
            with contextlib.suppress(TimeoutError, RuntimeError):
                self.run(_cancel_the_rest(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


async def _cancel_the_rest() -> None:
    this = asyncio.current_task()
    rest = [task for task in asyncio.all_tasks() if task is not this]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)


class Health:
    """The server's ``grpc.health.v1`` statuses, settable from any thread."""

    def __init__(self, servicer: AsyncHealthServicer, loop: _EventLoop) -> None:
        self._servicer = servicer
        self._loop = loop

    def set(self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        """Report ``status`` for ``service`` ('' for the whole server) to checks and watchers."""
        self._call(self._servicer.set(service, status))

    def enter_graceful_shutdown(self) -> None:
        """Report NOT_SERVING for everything, for good."""
        self._call(self._servicer.enter_graceful_shutdown())

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> None:
        if self._loop.on_loop_thread():
            self._loop.loop.create_task(coroutine)
        else:
            self._loop.run(coroutine, timeout=10)


class Server:
    """A started gRPC server with its health statuses; stop it with :meth:`stop`."""

    def __init__(
        self,
        server: grpc.aio.Server,
        health_status: Health,
        loop: _EventLoop,
        pool: futures.ThreadPoolExecutor,
        port: int,
        public_port: int = 0,
        limits: CallerLimits | None = None,
    ) -> None:
        self._server = server
        self._loop = loop
        self._pool = pool
        self.health = health_status
        self.port = port
        #: The bound public (server-only TLS) port; 0 when there is none.
        self.public_port = public_port
        #: The per-caller limits' counters (None on a server without authorization).
        self.limits = limits
        self._stopped = threading.Event()
        self._stopping = threading.Lock()

    def stop(self, grace: float) -> None:
        """Report NOT_SERVING, let in-flight RPCs finish for up to ``grace`` s, then stop."""
        with self._stopping:
            if self._stopped.is_set():
                return
            self.health.enter_graceful_shutdown()
            self._loop.run(self._server.stop(grace))
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._loop.close()
            self._stopped.set()

    def wait(self) -> None:
        """Block until the server has stopped."""
        self._stopped.wait()


def _limit_settings(settings: ProcessSettings) -> LimitSettings:
    return LimitSettings(
        max_streams_per_caller=settings.max_streams_per_caller,
        max_streams=settings.max_streams,
        anonymous_calls_per_second=settings.anonymous_calls_per_second,
        anonymous_burst=settings.anonymous_burst,
        retry_after_seconds=settings.retry_after_seconds,
    )


def build_server(
    settings: ProcessSettings,
    services: Sequence[ServiceRegistration],
    *,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> Server:
    """Create, bind and start a server for ``services``; all report SERVING once started.

    ``interceptors`` run after tracing and error mapping, in order; when they include the
    authorization interceptor, the per-caller limits run after them (a server without
    authorization has no callers to tell apart, only its global limits)."""
    loop = _EventLoop(f"grpc-{settings.process_name}")
    try:
        return loop.run(_start(settings, services, interceptors, loop))
    except BaseException:
        loop.close()
        raise


async def _start(
    settings: ProcessSettings,
    services: Sequence[ServiceRegistration],
    interceptors: Sequence[grpc.aio.ServerInterceptor],
    loop: _EventLoop,
) -> Server:
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
        # Calls that arrive before the server asks for them wait in grpc's queue; past its
        # default of 1000 grpc cancels them, which a burst of reconnecting watchers reaches.
        ("grpc.server.max_pending_requests", settings.max_streams),
        ("grpc.server.max_pending_requests_hard_limit", 2 * settings.max_streams),
    ]
    pool = futures.ThreadPoolExecutor(
        max_workers=settings.max_workers, thread_name_prefix=f"rpc-{settings.process_name}"
    )
    loop.loop.set_default_executor(pool)
    admission = Admission(
        settings.max_workers + settings.max_queued_calls, settings.retry_after_seconds
    )
    tracing: grpc.aio.ServerInterceptor = aio_server_interceptor()  # type: ignore[no-untyped-call]
    chain: list[grpc.aio.ServerInterceptor] = [
        StreamWriter(),
        tracing,
        ErrorMappingInterceptor(),
        *interceptors,
    ]
    limits = None
    if any(isinstance(interceptor, AuthInterceptor) for interceptor in interceptors):
        limits = CallerLimits(_limit_settings(settings))
        chain.append(LimitsInterceptor(limits))
    chain.append(SyncAdapter(pool, admission, settings.max_wait_seconds))
    server = grpc.aio.server(
        interceptors=chain,
        options=options,
        maximum_concurrent_rpcs=settings.max_streams
        + admission.capacity
        + _GRPC_CONCURRENCY_MARGIN,
    )
    health_servicer = AsyncHealthServicer()
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
    await server.start()
    serving = health_pb2.HealthCheckResponse.SERVING
    await health_servicer.set("", serving)
    for name in names:
        await health_servicer.set(name, serving)
    _log.info(
        "%s listening on %s:%d (%s)%s",
        settings.process_name,
        settings.listen_host,
        port,
        "mTLS" if settings.tls_dir else "plaintext",
        f" and public TLS port {public_port}" if public_port else "",
    )
    return Server(server, Health(health_servicer, loop), loop, pool, port, public_port, limits)


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
