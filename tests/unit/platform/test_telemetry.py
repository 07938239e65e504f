"""Telemetry plumbing with the SDK's in-memory exporter: trace context over gRPC and Kafka
headers, the chain node's entry spans, the anchoring seal span, the span file, JSON logs, and
the consumer-lag reading."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kafka import TopicPartition
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from chain.node.entry_spans import EntrySpans
from services.anchoring.domain import RecordVersion
from services.anchoring.observability import SealObserver
from services.platform import kafka
from services.platform.server import build_server
from services.platform.settings import ProcessSettings
from services.platform.telemetry import (
    JsonFormatter,
    SpanFileExporter,
    _otlp_exporter,
    _TraceContextFilter,
    configure_tracing,
)
from services.platform.tls import open_channel
from tests.unit.anchoring.fakes import NOW

Spans = Callable[[], list[ReadableSpan]]


def version(record_id: str) -> RecordVersion:
    return RecordVersion(
        organization_id="hospital-a",
        record_id=record_id,
        version=1,
        action=1,
        commitment=b"c" * 32,
        subject_tag=b"t" * 32,
        previous_version_commitment=b"",
        author_practitioner_id="",
        reason_code="clinical-update",
        reason_text="",
        entry_id=f"entry-{record_id}",
        entry=b"",
        key_id="k1",
        leaf_hash=record_id.encode().ljust(32, b"\0"),
        anchored_time=NOW,
        seal_due_time=NOW + timedelta(seconds=5),
    )


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    configure_tracing("unit-tests", memory)
    yield memory
    memory.shutdown()


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> Spans:
    exporter.clear()

    def finished() -> list[ReadableSpan]:
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider)
        provider.force_flush()
        return list(exporter.get_finished_spans())

    return finished


def _tracer() -> trace.Tracer:
    return trace.get_tracer("tests")


def _named(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    matching = [s for s in spans if s.name == name]
    assert len(matching) == 1, f"expected one span {name!r}, got {[s.name for s in spans]}"
    return matching[0]


def _ids(span: ReadableSpan) -> tuple[int, int]:
    context = span.get_span_context()
    assert context is not None
    return context.trace_id, context.span_id


def test_a_grpc_call_carries_the_trace_to_the_server(spans: Spans) -> None:
    server = build_server(ProcessSettings(port=0), [])
    channel = open_channel(f"127.0.0.1:{server.port}", None)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        with _tracer().start_as_current_span("caller") as caller:
            assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == 1
            with pytest.raises(grpc.RpcError):
                stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
    finally:
        channel.close()
        server.stop(0)
    finished = spans()
    clients = [s for s in finished if s.kind == trace.SpanKind.CLIENT]
    servers = [s for s in finished if s.kind == trace.SpanKind.SERVER]
    assert [s.name for s in clients] == ["grpc.health.v1.Health/Check"] * 2
    assert len(servers) == 2
    trace_id = caller.get_span_context().trace_id
    for client, served in zip(clients, servers, strict=True):
        assert _ids(client)[0] == _ids(served)[0] == trace_id
        assert served.parent is not None and served.parent.span_id == _ids(client)[1]
    assert clients[0].status.is_ok
    assert not clients[1].status.is_ok
    assert clients[1].attributes is not None
    assert clients[1].attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]


def test_a_publish_span_puts_its_context_in_the_headers(spans: Spans) -> None:
    with _tracer().start_as_current_span("call"), kafka.publish_span("topic.v1", 3):
        headers = kafka.trace_headers()
    publish = _named(spans(), "topic.v1 publish")
    assert publish.kind == trace.SpanKind.PRODUCER
    assert publish.attributes is not None
    assert publish.attributes["messaging.batch.message_count"] == 3
    restored = trace.get_current_span(kafka.context_from_headers(headers)).get_span_context()
    assert (restored.trace_id, restored.span_id) == _ids(publish)


@dataclass
class _Record:
    offset: int
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def _published(name: str, count: int, first: int) -> tuple[None, list[_Record]]:
    with _tracer().start_as_current_span(name):
        headers = kafka.trace_headers()
    return None, [_Record(first + i, headers) for i in range(count)]


def test_the_node_spans_one_group_per_trace_from_read_to_seal(spans: Spans) -> None:
    _, first = _published("first", 3, 0)
    _, second = _published("second", 2, 3)
    untraced = [_Record(5)]
    entry_spans = EntrySpans("hospital-a")
    entry_spans.read([*first, *second, *untraced])

    entry_spans.persisted(cut_offset=2, tree_size=3)  # a block with the first trace only
    finished = spans()
    [sequenced] = [s for s in finished if s.name == "chain.node.sequence"]
    parent = _named(finished, "first")
    assert sequenced.parent is not None and sequenced.parent.span_id == _ids(parent)[1]
    assert sequenced.kind == trace.SpanKind.CONSUMER
    assert sequenced.attributes is not None
    assert sequenced.attributes["swiftchain.entry_count"] == 3
    assert sequenced.attributes["swiftchain.node"] == "hospital-a"

    entry_spans.persisted(cut_offset=5, tree_size=6)
    entry_spans.sealed(3)  # seals the first block's group only
    seals = [s for s in spans() if s.name == "chain.node.seal"]
    assert [s.parent.span_id for s in seals if s.parent] == [_ids(parent)[1]]
    entry_spans.sealed(6)
    seals = [s for s in spans() if s.name == "chain.node.seal"]
    second_parent = _named(spans(), "second")
    assert {s.parent.span_id for s in seals if s.parent} == {
        _ids(parent)[1],
        _ids(second_parent)[1],
    }
    assert len([s for s in spans() if s.name == "chain.node.sequence"]) == 2


def test_a_block_sealed_before_it_is_reported_persisted_ends_its_seal_span_at_once(
    spans: Spans,
) -> None:
    """The cosigning thread can seal a block on the other members' cosignatures before the
    sequencing thread reports it persisted; the seal span must not wait for the next seal."""
    _, records = _published("raced", 1, 0)
    entry_spans = EntrySpans("hospital-c")
    entry_spans.read(records)
    entry_spans.sealed(1)
    entry_spans.persisted(cut_offset=0, tree_size=1)
    names = [s.name for s in spans()]
    assert names.count("chain.node.sequence") == 1
    assert names.count("chain.node.seal") == 1


def test_the_seal_span_ends_the_accepting_calls_trace(spans: Spans) -> None:
    observer = SealObserver()
    versions = [version(record_id=f"r-{i}") for i in range(3)]
    with _tracer().start_as_current_span("AnchorRecords") as call:
        observer.accepted(versions)
    observer.accepted([version(record_id="untraced")])  # outside any trace: not remembered
    for index, item in enumerate(versions):
        item.leaf_index, item.sealed_tree_size = index, 10
    observer.sealed(versions[:2], NOW + timedelta(seconds=1))
    observer.sealed(versions[2:], NOW + timedelta(seconds=2))
    sealed = [s for s in spans() if s.name == "anchoring.record_sealed"]
    assert len(sealed) == 2
    for span in sealed:
        assert span.parent is not None
        assert span.parent.span_id == call.get_span_context().span_id
    counts = [s.attributes["swiftchain.entry_count"] for s in sealed if s.attributes]
    assert sorted(int(str(count)) for count in counts) == [1, 2]


def test_the_span_file_holds_one_json_span_a_line(tmp_path: Path, spans: Spans) -> None:
    with _tracer().start_as_current_span("written"):
        pass
    path = tmp_path / "spans" / "process.jsonl"
    SpanFileExporter(path).export(spans())
    SpanFileExporter(path).export(spans())
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    span = json.loads(lines[0])
    assert span["name"] == "written" and span["context"]["trace_id"].startswith("0x")


def _log_json(
    log: Callable[[logging.Logger], None], formatter: logging.Formatter | None = None
) -> list[dict[str, Any]]:
    """The JSON objects that ``log`` writes through a handler like configure_logging's."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(_TraceContextFilter())
    handler.setFormatter(formatter or JsonFormatter())
    logger = logging.getLogger("tests.telemetry")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        log(logger)
    finally:
        logger.removeHandler(handler)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_log_lines_carry_the_trace_and_span_ids() -> None:
    spans: list[trace.Span] = []

    def log(logger: logging.Logger) -> None:
        with _tracer().start_as_current_span("logged") as span:
            spans.append(span)
            logger.warning("inside %s", "a span")
        logger.warning("outside")

    inside, outside = _log_json(log)
    context = spans[0].get_span_context()
    assert inside["message"] == "inside a span" and inside["level"] == "WARNING"
    assert inside["logger"] == "tests.telemetry"
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"
    assert outside["trace_id"] == "" and outside["span_id"] == ""


def test_json_log_lines_carry_extra_fields_and_the_service() -> None:
    (line,) = _log_json(
        lambda logger: logger.info("sealed", extra={"block": 7, "organization_id": "hospital-a"}),
        JsonFormatter("anchoring"),
    )
    assert line["message"] == "sealed" and line["level"] == "INFO"
    assert line["block"] == 7 and line["organization_id"] == "hospital-a"
    assert line["service"] == "anchoring"


def test_json_log_lines_without_a_service_name_have_no_service_field() -> None:
    (line,) = _log_json(lambda logger: logger.info("plain"))
    assert "service" not in line


def test_json_log_time_is_zone_aware_iso_8601_with_milliseconds() -> None:
    (line,) = _log_json(lambda logger: logger.info("timed"))
    time = datetime.fromisoformat(line["time"])
    assert time.tzinfo is not None and time.utcoffset() == timedelta(0)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["time"])
    assert abs(datetime.now(UTC) - time) < timedelta(minutes=1)


def test_json_log_lines_carry_the_exception() -> None:
    def log(logger: logging.Logger) -> None:
        try:
            raise ValueError("bad input")
        except ValueError:
            logger.exception("failed")

    (line,) = _log_json(log)
    assert line["message"] == "failed" and line["level"] == "ERROR"
    assert "ValueError: bad input" in line["exception"]


class _Consumer:
    def __init__(self, highwater: dict[TopicPartition, int | None], positions: dict[Any, int]):
        self._highwater = highwater
        self._positions = positions

    def assignment(self) -> set[TopicPartition]:
        return set(self._highwater)

    def highwater(self, partition: TopicPartition) -> int | None:
        return self._highwater[partition]

    def position(self, partition: TopicPartition, timeout_ms: int | None = None) -> int:
        return self._positions[partition]


def test_consumer_lag_is_the_records_behind_the_high_watermark() -> None:
    a0, a1, b0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)
    consumer = _Consumer({a0: 100, a1: 50, b0: None}, {a1: 45, b0: 0})
    kafka.record_lag(consumer, "group-x", {a0: [_Record(89)]})
    observed = {
        (o.attributes or {}).get("topic"): o.value
        for o in kafka._observe_lag(None)  # type: ignore[arg-type]
        if (o.attributes or {}).get("consumer") == "group-x"
    }
    assert observed == {"a": (100 - 90) + (50 - 45)}  # b's watermark is not known yet


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver, as a collector runs one."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.names.extend(span.name for span in scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


def test_spans_go_to_the_otlp_collector_the_environment_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collector = _Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        exporter = _otlp_exporter()
        assert exporter is not None
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        provider.get_tracer("test").start_span("exported over otlp").end()
        provider.shutdown()
    finally:
        server.stop(grace=None)
    assert collector.names == ["exported over otlp"]


def test_no_otlp_exporter_without_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert _otlp_exporter() is None
