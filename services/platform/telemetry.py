"""OpenTelemetry and logging setup, once per process.

Traces: gRPC calls carry the W3C trace context in their metadata (:func:`traced_channel` on the
client, the instrumentation's interceptor on the server) and Kafka records in their headers
(services/platform/kafka.py). Spans go to OTLP (gRPC) when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set,
to a JSON-lines file when a process is given one, nowhere otherwise.
Metrics: a Prometheus endpoint when a port is given, OTLP as for spans. Log lines carry the
current trace and span ids, as text or JSON (python-json-logger).
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from opentelemetry import metrics, propagate, trace
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry, start_http_server
from pythonjsonlogger import json as json_logger

_configured = False
_tracer = trace.get_tracer("swiftchain.grpc")
#: The Prometheus registry of this process: only our metrics (not the client's own process and
#: platform collectors, which would duplicate OpenTelemetry's resource attributes).
_PROMETHEUS_REGISTRY = CollectorRegistry(auto_describe=True)


class _TraceContextFilter(logging.Filter):
    """Adds trace_id and span_id of the current span to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        record.trace_id = format(context.trace_id, "032x") if context.is_valid else ""
        record.span_id = format(context.span_id, "016x") if context.is_valid else ""
        return True


class JsonFormatter(json_logger.JsonFormatter):
    """One JSON object per line: time, level, logger, message, trace and span ids, the service
    (when given), the fields passed with ``extra=``, and the exception if any.

    The time is UTC in ISO 8601 with milliseconds and its offset, so lines from processes on
    machines in other zones sort and compare as they are.
    """

    def __init__(self, service_name: str = "") -> None:
        super().__init__(
            ["asctime", "levelname", "name", "message", "trace_id", "span_id"],
            rename_fields={
                "asctime": "time",
                "levelname": "level",
                "name": "logger",
                "exc_info": "exception",
            },
            static_fields={"service": service_name} if service_name else None,
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802  (overrides logging's name)
        return datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")


def configure_logging(
    level: str = "INFO", *, json_lines: bool = False, service_name: str = ""
) -> None:
    """Root logging to stderr, text or JSON, always with trace ids; JSON lines also name the
    service."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_TraceContextFilter())
    if json_lines:
        handler.setFormatter(JsonFormatter(service_name))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [trace=%(trace_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("kafka").setLevel(logging.WARNING)


def _otlp_exporter() -> SpanExporter | None:
    """The OTLP span exporter when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (it reads its endpoint,
    headers and TLS settings from the standard OTEL_EXPORTER_OTLP_* variables)."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return None
    return OTLPSpanExporter()


class SpanFileExporter(SpanExporter):
    """Appends every finished span to a file, one JSON object a line (OpenTelemetry's own span
    JSON). For tests and local debugging, where no collector runs: several processes can write
    files in one folder and a reader joins them by trace id."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(span.to_json(indent=None) + "\n" for span in spans)
        with self._lock, self._path.open("a", encoding="utf-8") as handle:
            handle.write(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release: every export opens and closes the file."""


def configure_tracing(
    service_name: str, exporter: SpanExporter | None = None, *, spans_file: Path | None = None
) -> TracerProvider:
    """Install the process-wide tracer provider (idempotent) and return it.

    Spans go to ``exporter`` when given (an in-memory exporter in tests), to ``spans_file`` when
    given, and to OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.
    """
    global _configured
    current = trace.get_tracer_provider()
    if _configured and isinstance(current, TracerProvider):
        provider = current
    else:
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        otlp = _otlp_exporter()
        if otlp is not None:
            provider.add_span_processor(BatchSpanProcessor(otlp))
        trace.set_tracer_provider(provider)
        _configured = True
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
    if spans_file is not None:
        provider.add_span_processor(
            BatchSpanProcessor(SpanFileExporter(spans_file), schedule_delay_millis=500)
        )
    return provider


def configure_metrics(
    service_name: str, *, prometheus_host: str = "127.0.0.1", prometheus_port: int = 0
) -> MeterProvider:
    """Install the process-wide meter provider and return it: a Prometheus endpoint
    (``/metrics`` on ``prometheus_port``; none when 0) and OTLP when
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set. Meters made before this call start reporting then.
    """
    readers: list[MetricReader] = []
    if prometheus_port:
        readers.append(PrometheusMetricReader(registry=_PROMETHEUS_REGISTRY))
        start_http_server(prometheus_port, addr=prometheus_host, registry=_PROMETHEUS_REGISTRY)
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    provider = MeterProvider(
        resource=Resource.create({"service.name": service_name}), metric_readers=readers
    )
    metrics.set_meter_provider(provider)
    return provider


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class _TracingClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """A client span per call, its context in the call's metadata (``traceparent``); the span
    ends when the call completes, with its status code."""

    def _call(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        method = str(details.method).lstrip("/")
        service, _, name = method.partition("/")
        span = _tracer.start_span(
            method,
            kind=trace.SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        metadata = [*(details.metadata or ()), *carrier.items()]
        traced = _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )
        try:
            call = continuation(traced, request)
        except BaseException:
            span.end()
            raise

        def finish(done: Any) -> None:
            code = done.code()
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code != grpc.StatusCode.OK:
                span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))
            span.end()

        call.add_done_callback(finish)
        return call

    intercept_unary_unary = _call  # type: ignore[assignment]
    intercept_unary_stream = _call  # type: ignore[assignment]
    intercept_stream_unary = _call  # type: ignore[assignment]
    intercept_stream_stream = _call  # type: ignore[assignment]


def traced_channel(channel: grpc.Channel) -> grpc.Channel:
    """``channel`` with a client span per call and the W3C trace context in its metadata, so
    the server's span joins the caller's trace."""
    return grpc.intercept_channel(channel, _TracingClientInterceptor())
