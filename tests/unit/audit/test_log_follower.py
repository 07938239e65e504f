"""The log follower's gauge of how far the audit service's log index has got
(services/audit/log_follower.py), and the reading of it that ``make demo`` and the end-to-end
tests wait on (devstack/parties.py): the backlog of the audit is learnt from its metrics, not
from its database."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from devstack.parties import AUDIT_INDEXED_GAUGE, StackParties
from devstack.process import free_port
from devstack.stack import StackPorts
from services.audit import log_follower
from services.audit.domain import AuditBook, SealedView
from services.audit.log_follower import LogFollower
from swiftchain.chain.v1 import chain_service_pb2 as pb
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2
from tests.unit.audit.fakes import HOSPITAL, NOW, TAG_KEY, FakeAuditStore, FakeLogReader, tag


def raw_entry(entry_id: str) -> bytes:
    body = entry_pb2.EntryBody(
        entry_id=entry_id,
        kind=common_pb2.ENTRY_KIND_ACCESS,
        submitter_id=HOSPITAL,
        subject_tag=tag("pt-alice"),
    )
    body.time.FromDatetime(NOW)
    return entry_pb2.ChainEntry(body=body.SerializeToString()).SerializeToString()


class FakeChain:
    """A chain node's GetEntries, at most ``page`` entries a call."""

    def __init__(self, entries: list[bytes], page: int) -> None:
        self.entries = entries
        self.page = page

    def GetEntries(self, request: pb.GetEntriesRequest, timeout: float) -> pb.GetEntriesResponse:
        end = min(request.end, request.start + self.page)
        return pb.GetEntriesResponse(entries=self.entries[request.start : end])


def indexed() -> list[float]:
    return [o.value for o in log_follower._observe_indexed(mock.Mock())]


def test_the_gauge_follows_the_log_index_page_by_page() -> None:
    store = FakeAuditStore()
    book = AuditBook(store, TAG_KEY)
    book.attach_log(FakeLogReader(SealedView(0, "", NOW)))
    follower = LogFollower(mock.MagicMock(), book, position=2)
    assert indexed() == [2]  # what the store held at start
    chain = FakeChain([raw_entry(f"e-{n}") for n in range(7)], page=2)
    seen: list[float] = []
    real_index = book.index_leaves

    def index_and_look(*args: object, **kwargs: object) -> None:
        real_index(*args, **kwargs)  # type: ignore[arg-type]
        seen.extend(indexed())

    follower._chain = chain  # type: ignore[assignment]
    with mock.patch.object(book, "index_leaves", index_and_look):
        follower._index_to(pb.SealedCheckpoint(tree_size=7))
    # While a page is stored the gauge still tells the page before: it never runs ahead of
    # the store, and moves with every page of a long catch-up, not only at its end.
    assert seen == [2, 4, 6]
    assert indexed() == [7] and store.position == 7
    assert sorted(store.leaves) == [f"e-{n}" for n in range(2, 7)]


@pytest.fixture
def audit_metrics() -> Iterator[tuple[int, list[bytes]]]:
    """An HTTP endpoint on the audit's metrics port serving what the list holds."""
    port = free_port()
    served: list[bytes] = [b""]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(served[0])

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield port, served
    finally:
        server.shutdown()
        server.server_close()


def parties(metrics_port: int, tmp_path: Path) -> StackParties:
    ports = StackPorts(metrics=(("audit", metrics_port),))
    return StackParties(tmp_path, ports, tmp_path / "parties")


def test_devstack_reads_the_gauge_as_prometheus_serves_it(
    audit_metrics: tuple[int, list[bytes]], tmp_path: Path
) -> None:
    port, served = audit_metrics
    registry = CollectorRegistry()
    gauge = Gauge(
        AUDIT_INDEXED_GAUGE,
        "how far the log index has got",
        ["otel_scope_name"],
        registry=registry,
    )
    gauge.labels("swiftchain.audit").set(1234)
    served[0] = generate_latest(registry)
    assert parties(port, tmp_path)._audit_indexed_tree_size() == 1234
    served[0] = b"# nothing indexed yet\n"
    assert parties(port, tmp_path)._audit_indexed_tree_size() == 0


def test_an_audit_service_that_does_not_answer_is_not_caught_up(tmp_path: Path) -> None:
    assert parties(free_port(), tmp_path)._audit_indexed_tree_size() == 0
