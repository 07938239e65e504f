"""The log follower (services/audit/log_follower.py): its check of every sealed checkpoint it
follows (a quorum of the consortium's pinned member keys, consistency with the last accepted
checkpoint, kept across restarts; a failure is flagged once and nothing is indexed past it), its
gauge of how far the audit service's log index has got, and the reading of that gauge that
``make demo`` and the end-to-end tests wait on (devstack/parties.py): the backlog of the audit
is learnt from its metrics, not from its database."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from chain.note import Signer
from devstack.parties import AUDIT_INDEXED_GAUGE, StackParties
from devstack.process import free_port
from devstack.stack import StackPorts
from services.audit import log_follower
from services.audit.domain import (
    AuditBook,
    CheckpointGate,
    CheckpointRejection,
    ConsistencyProver,
    FlagRecord,
    SealedView,
)
from services.audit.log_follower import LogFollower
from swiftchain.audit.v1 import audit_service_pb2 as apb
from swiftchain.chain.v1 import chain_service_pb2 as pb
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2
from tests.unit.audit.fakes import (
    CONSORTIUM,
    HOSPITAL,
    IMPOSTOR,
    MEMBER_SIGNERS,
    NEWCOMER,
    NODE_NAME,
    NOW,
    TAG_KEY,
    FakeAuditStore,
    FakeChainNode,
    FakeLogReader,
    admit,
    approve,
    propose,
    remove,
    tag,
)


def raw_entry(entry_id: str) -> bytes:
    body = entry_pb2.EntryBody(
        entry_id=entry_id,
        kind=common_pb2.ENTRY_KIND_ACCESS,
        submitter_id=HOSPITAL,
        subject_tag=tag("pt-alice"),
    )
    body.time.FromDatetime(NOW)
    return entry_pb2.ChainEntry(body=body.SerializeToString()).SerializeToString()


def indexed() -> list[float]:
    return [o.value for o in log_follower._observe_indexed(mock.Mock())]


def following(
    node: FakeChainNode, store: FakeAuditStore | None = None
) -> tuple[LogFollower, FakeAuditStore]:
    """A log follower of ``node`` started as the service starts it: from the store's position
    and last accepted checkpoint (a fresh store unless one is given, as after a restart)."""
    store = store or FakeAuditStore()
    book = AuditBook(store, TAG_KEY)
    book.attach_log(FakeLogReader(SealedView(0, "", NOW)))
    gate = CheckpointGate(CONSORTIUM, store.log_checkpoint())
    follower = LogFollower(mock.MagicMock(), book, store.log_position(), gate, clock=lambda: NOW)
    follower._chain = node  # type: ignore[assignment]
    return follower, store


def entries(count: int) -> list[bytes]:
    return [raw_entry(f"e-{n}") for n in range(count)]


def test_the_gauge_follows_the_log_index_page_by_page() -> None:
    store = FakeAuditStore()
    store.position = 2
    node = FakeChainNode(entries(7), page=2)
    follower, _ = following(node, store)
    assert indexed() == [2]  # what the store held at start
    seen: list[float] = []
    book = follower._book
    real_index = book.index_leaves

    def index_and_look(*args: object, **kwargs: object) -> None:
        real_index(*args, **kwargs)  # type: ignore[arg-type]
        seen.extend(indexed())

    with mock.patch.object(book, "index_leaves", index_and_look):
        follower._index_to(node.seal(7))
    # While a page is stored the gauge still tells the page before: it never runs ahead of
    # the store, and moves with every page of a long catch-up, not only at its end.
    assert seen == [2, 4, 6]
    assert indexed() == [7] and store.position == 7
    assert sorted(store.leaves) == [f"e-{n}" for n in range(2, 7)]


# --- the check of every checkpoint followed -------------------------------------------------


def node_prover(node: FakeChainNode) -> ConsistencyProver:
    return lambda first, second: (
        node.GetConsistencyProof(
            pb.GetConsistencyProofRequest(first_size=first, second_size=second), timeout=1
        ).proof
    )


def bad_checkpoint_flags(store: FakeAuditStore) -> list[FlagRecord]:
    return [f for f in store.flag_records.values() if f.kind == apb.FLAG_KIND_BAD_CHECKPOINT]


def test_a_good_sequence_is_indexed_and_each_checkpoint_proved_consistent() -> None:
    node = FakeChainNode(entries(8))
    for size in (3, 5, 8):
        node.seal(size)
    follower, store = following(node)
    follower._follow_once()
    assert store.position == 8
    assert sorted(store.leaves) == [f"e-{n}" for n in range(8)]
    assert store.leaves["e-4"].sealed_tree_size == 5
    assert node.proofs_asked == [(3, 5), (5, 8)]  # the first is believed on its signatures
    assert store.checkpoint == node.sealed[-1].note
    assert store.flag_records == {}
    view = follower.sync()
    assert (view.tree_size, view.note) == (8, node.sealed[-1].note)


@pytest.mark.parametrize(
    ("signers", "reason"),
    [
        (
            [MEMBER_SIGNERS[0], IMPOSTOR],
            "expected a quorum of 2 member signatures, got 1 (by hospital-a); signatures by "
            "keys of no member at this size count for nothing: "
            f"hospital-b+{IMPOSTOR.key_hash:08x}",
        ),
        ([MEMBER_SIGNERS[0]], "expected a quorum of 2 member signatures, got 1 (by hospital-a)."),
    ],
    ids=["a foreign signature", "below quorum"],
)
def test_a_checkpoint_without_a_quorum_of_member_keys_is_flagged_once_and_not_indexed(
    signers: list[Signer], reason: str
) -> None:
    node = FakeChainNode(entries(8))
    node.seal(3)
    node.seal(5, signers)
    follower, store = following(node)
    follower._follow_once()
    assert store.position == 3 and sorted(store.leaves) == ["e-0", "e-1", "e-2"]
    assert store.checkpoint == node.sealed[0].note
    [flag] = bad_checkpoint_flags(store)
    assert flag.organization_id == NODE_NAME
    assert flag.summary.startswith(
        f"chain node {NODE_NAME} served a sealed checkpoint of tree size 5 that the audit "
        "service refused: "
    )
    assert reason in flag.summary
    assert "last accepted checkpoint (tree size 3)" in flag.summary
    # The follower keeps following: the node serves the bad checkpoint again, nothing moves and
    # no second flag is raised; a good checkpoint after it is indexed.
    follower._follow_once()
    assert node.served_from == [1, 4]
    assert store.position == 3 and len(store.flag_records) == 1
    node.seal(8)
    follower._follow_once()
    assert store.position == 8 and len(store.leaves) == 8
    assert node.proofs_asked[-1] == (3, 8)
    assert len(store.flag_records) == 1


def test_the_follower_checks_each_checkpoint_against_the_members_the_votes_lead_to() -> None:
    a, b, c = MEMBER_SIGNERS
    admit_d, remove_c = (
        "00000001-0000-4000-8000-0000000000ad",
        "00000002-0000-4000-8000-00000000000c",
    )
    node = FakeChainNode(
        [
            raw_entry("e-0"),
            propose(a, 1, admit_d, admit(NEWCOMER)),
            approve(b, 2, admit_d),
            propose(a, 3, remove_c, remove(c.name)),
            approve(NEWCOMER, 4, remove_c),
            raw_entry("e-5"),
            raw_entry("e-6"),
        ]
    )
    node.seal(3, [a, NEWCOMER])  # hospital-d admitted by vote from size 3: passes
    node.seal(6, [b, c])  # hospital-c voted out from size 5: only hospital-b counts
    follower, store = following(node)
    follower._follow_once()
    assert store.position == 3 and store.checkpoint == node.sealed[0].note
    [flag] = bad_checkpoint_flags(store)
    assert "served a sealed checkpoint of tree size 6" in flag.summary
    assert "expected a quorum of 2 member signatures, got 1 (by hospital-b)" in flag.summary
    node.seal(7, [NEWCOMER, b])
    follower._follow_once()
    assert store.position == 7 and store.checkpoint == node.sealed[-1].note
    assert len(bad_checkpoint_flags(store)) == 1


def test_a_forked_tree_is_flagged_once_and_nothing_past_the_fork_is_indexed() -> None:
    node = FakeChainNode(entries(9))
    node.seal(4)
    follower, store = following(node)
    follower._follow_once()
    assert store.position == 4
    # The node rewrites leaf 2 and has a quorum sign the new tree: signatures pass, the
    # consistency proof (from the node's own tree) does not lead from the accepted root.
    node.fork(2, raw_entry("e-rewritten"))
    node.seal(6)
    node.seal(9)
    follower._follow_once()
    follower._follow_once()
    assert store.position == 4 and sorted(store.leaves) == [f"e-{n}" for n in range(4)]
    assert store.checkpoint == node.sealed[0].note
    [flag] = bad_checkpoint_flags(store)
    assert "checkpoint of tree size 6" in flag.summary
    assert "not consistent with tree size 4, the last checkpoint the audit service accepted" in (
        flag.summary
    )
    assert len(store.flag_records) == 1  # neither the 9 nor the retries raised another


def test_a_bad_latest_checkpoint_leaves_the_view_at_the_last_accepted_one() -> None:
    node = FakeChainNode(entries(5))
    node.seal(3)
    node.seal(5, [MEMBER_SIGNERS[2]])
    follower, store = following(node)
    follower._follow_once()
    view = follower.sync()
    assert (view.tree_size, view.note) == (3, node.sealed[0].note)
    assert len(bad_checkpoint_flags(store)) == 1


def test_a_restart_keeps_the_last_accepted_checkpoint() -> None:
    node = FakeChainNode(entries(9))
    node.seal(4)
    before, store = following(node)
    before._follow_once()
    accepted = store.checkpoint
    assert accepted == node.sealed[0].note
    # After a restart the follower starts from the store: its view is the accepted checkpoint
    # without asking the node again...
    after, _ = following(node, store)
    view = after.sync()
    assert (view.tree_size, view.note) == (4, accepted)
    # ... and a fork served after the restart is caught against it, though a checkpoint seen
    # first would be believed on its signatures alone.
    node.fork(1, raw_entry("e-rewritten"))
    forked = node.seal(6)
    fresh = CheckpointGate(CONSORTIUM).check(forked.note, 6, node_prover(node))
    assert not isinstance(fresh, CheckpointRejection)
    after._follow_once()
    assert store.position == 4 and store.checkpoint == accepted
    [flag] = bad_checkpoint_flags(store)
    assert "not consistent with tree size 4" in flag.summary


def test_after_a_restart_the_next_checkpoint_is_proved_from_the_stored_one() -> None:
    node = FakeChainNode(entries(9))
    node.seal(4)
    before, store = following(node)
    before._follow_once()
    node.seal(9)
    after, _ = following(node, store)
    after._follow_once()
    assert node.proofs_asked == [(4, 9)]
    assert store.position == 9 and store.checkpoint == node.sealed[-1].note
    assert store.flag_records == {}


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
