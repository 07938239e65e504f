"""Traces and metrics of the running platform (DESIGN §7).

The test process records its own client spans with the SDK's in-memory exporter; every process
of the stack writes its spans to a JSON-lines file (``SWIFTCHAIN_SPANS_FILE``). One anchor and
one access check must each be one trace: the hospital's call, the service's server span and
its Kafka publish, every chain node's sequencing and sealing, and (for an anchor) the anchoring
service's record of the seal. The Prometheus endpoints must serve the platform's metrics.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.platform.telemetry import configure_tracing
from swiftchain.consent.v1 import consent_service_pb2 as cpb
from swiftchain.consent.v1 import consent_service_pb2_grpc
from tests.e2e.platform import Platform, wait_for

pytestmark = pytest.mark.e2e
NODES = ("hospital-a", "hospital-b", "hospital-c")
ORDERING_PUBLISH = "chain.ordering.v1 publish"


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    configure_tracing("e2e-tests", memory)
    yield memory
    memory.shutdown()  # the processor stays installed; the exporter keeps nothing more


def _client_trace_id(exporter: InMemorySpanExporter, method: str) -> str:
    """The trace id of the test's newest client span of ``method``, as the span files write it."""
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.force_flush()
    spans = [s for s in exporter.get_finished_spans() if s.name.endswith(method)]
    assert spans, f"expected a client span of {method} in the test process"
    context = spans[-1].get_span_context()
    assert context is not None
    return f"0x{context.trace_id:032x}"


def _spans_of(spans_dir: Path, trace_id: str) -> dict[str, list[dict[str, Any]]]:
    """Process name -> its spans in the trace ``trace_id``."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in spans_dir.glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if trace_id not in line:
                continue
            span = json.loads(line)
            if span["context"]["trace_id"] == trace_id:
                found.setdefault(path.stem, []).append(span)
    return found


def _wait_trace(
    platform: Platform, trace_id: str, expected: dict[str, set[str]], timeout: float = 60.0
) -> dict[str, list[dict[str, Any]]]:
    """The trace's spans once every process in ``expected`` wrote the span names it lists."""
    seen: dict[str, list[dict[str, Any]]] = {}

    def complete() -> bool:
        nonlocal seen
        seen = _spans_of(platform.spans_dir, trace_id)
        return all(
            names <= {s["name"] for s in seen.get(process, [])}
            for process, names in expected.items()
        )

    try:
        wait_for(f"the spans of trace {trace_id}", complete, timeout)
    except AssertionError:
        names = {process: sorted({s["name"] for s in spans}) for process, spans in seen.items()}
        raise AssertionError(f"expected spans {expected}, got {names}") from None
    return seen


def _one(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    matching = [s for s in spans if s["name"] == name]
    assert matching, f"expected a span {name!r}, got {sorted(s['name'] for s in spans)}"
    return matching[0]


def _assert_nodes_continue_the_publish(
    seen: dict[str, list[dict[str, Any]]], publisher: str
) -> None:
    publish = _one(seen[publisher], ORDERING_PUBLISH)
    for node in NODES:
        sequence = _one(seen[node], "chain.node.sequence")
        assert sequence["parent_id"] == publish["context"]["span_id"], node
        assert sequence["kind"] == "SpanKind.CONSUMER"
        seal = _one(seen[node], "chain.node.seal")
        assert seal["parent_id"] == publish["context"]["span_id"], node
        assert seal["attributes"]["swiftchain.tree_size"] >= 1


def test_one_anchor_is_one_trace_across_grpc_kafka_and_the_nodes(
    platform: Platform, exporter: InMemorySpanExporter
) -> None:
    client = platform.hospital_client(platform.hospital)
    draft = client.record_version(
        f"traced-{uuid.uuid4().hex[:8]}", 1, b"a traced record", subject_id="patient-traced"
    )
    [result] = client.anchor([draft])
    assert result.HasField("receipt"), result.error.message
    trace_id = _client_trace_id(exporter, "AnchorRecords")

    seen = _wait_trace(
        platform,
        trace_id,
        {
            "anchoring": {
                "/swiftchain.anchoring.v1.AnchoringService/AnchorRecords",
                ORDERING_PUBLISH,
                "anchoring.record_sealed",
            },
            **{node: {"chain.node.sequence", "chain.node.seal"} for node in NODES},
        },
    )
    server = _one(seen["anchoring"], "/swiftchain.anchoring.v1.AnchoringService/AnchorRecords")
    publish = _one(seen["anchoring"], ORDERING_PUBLISH)
    assert publish["parent_id"] == server["context"]["span_id"]
    assert publish["kind"] == "SpanKind.PRODUCER"
    _assert_nodes_continue_the_publish(seen, "anchoring")
    sealed = _one(seen["anchoring"], "anchoring.record_sealed")
    assert sealed["parent_id"] == server["context"]["span_id"]
    assert sealed["attributes"]["swiftchain.entry_count"] == 1
    assert client.receipt(result.receipt.entry_id)  # the receipt the trace ends with is there


def test_one_access_check_is_one_trace_down_to_its_access_entry(
    platform: Platform, exporter: InMemorySpanExporter
) -> None:
    stub = consent_service_pb2_grpc.ConsentServiceStub(
        platform.channel(platform.hospital, "consent")
    )
    response = stub.CheckAccess(
        cpb.CheckAccessRequest(
            patient_subject_id=platform.patient.id,
            data_category="laboratory",
            purpose="TREAT",
            request_id=str(uuid.uuid4()),
        ),
        timeout=15,
    )
    assert response.access_entry_id
    trace_id = _client_trace_id(exporter, "CheckAccess")

    seen = _wait_trace(
        platform,
        trace_id,
        {
            "consent": {"/swiftchain.consent.v1.ConsentService/CheckAccess", ORDERING_PUBLISH},
            **{node: {"chain.node.sequence", "chain.node.seal"} for node in NODES},
        },
    )
    server = _one(seen["consent"], "/swiftchain.consent.v1.ConsentService/CheckAccess")
    assert _one(seen["consent"], ORDERING_PUBLISH)["context"]["trace_id"] == trace_id
    assert server["kind"] == "SpanKind.SERVER"
    _assert_nodes_continue_the_publish(seen, "consent")


def _scrape(platform: Platform, process: str) -> str:
    port = platform.stack.ports.metrics_port(process)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text: str = response.read().decode()
    return text


def _value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total, found = 0.0, False
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total, found = total + float(match.group(3)), True
    assert found, f"expected a sample {name}{labels or ''} in:\n{text[:3000]}"
    return total


def test_the_prometheus_endpoints_serve_the_platform_metrics(platform: Platform) -> None:
    client = platform.hospital_client(platform.hospital)
    promise = client.anchor_one(
        client.record_version(f"metered-{uuid.uuid4().hex[:8]}", 1, b"x", subject_id="p-m")
    )
    assert client.receipt(promise.entry_id)
    stub = consent_service_pb2_grpc.ConsentServiceStub(
        platform.channel(platform.hospital, "consent")
    )
    stub.CheckAccess(
        cpb.CheckAccessRequest(
            patient_subject_id=platform.patient.id,
            data_category="laboratory",
            purpose="TREAT",
            request_id=str(uuid.uuid4()),
        ),
        timeout=15,
    )

    def anchoring_metered() -> bool:
        text = _scrape(platform, "anchoring")
        return "swiftchain_anchoring_anchors_sealed_total" in text

    wait_for("the anchoring service's seal metrics", anchoring_metered, 60)
    anchoring = _scrape(platform, "anchoring")
    assert _value(anchoring, "swiftchain_anchoring_anchors_total", outcome="accepted") >= 1
    assert _value(anchoring, "swiftchain_anchoring_anchors_sealed_total") >= 1
    assert _value(anchoring, "swiftchain_anchoring_seal_latency_milliseconds_count") >= 1

    consent = _scrape(platform, "consent")
    assert _value(consent, "swiftchain_consent_decisions_total", decision="DENY") >= 1

    deadline = time.monotonic() + 30
    while True:  # the gauge is read at the node's next poll
        node = _scrape(platform, "hospital-a")
        if "swiftchain_kafka_consumer_lag" in node or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert _value(node, "swiftchain_kafka_consumer_lag", topic="chain.ordering.v1") >= 0
    assert _value(node, "swiftchain_chain_checkpoints_sealed_total") >= 1
    audit = _scrape(platform, "audit")
    assert _value(audit, "swiftchain_kafka_consumer_lag") >= 0
