"""Followed trail streams (services/audit/following.py, StreamTrail with ``follow``): one look at
the store serves every stream, each stream keeps only its own trail's items, an item stored while
a stream reads its first pages still reaches it, and a stream whose caller does not read holds a
bounded backlog and reads its recent trail again instead."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.audit import following
from services.audit.domain import After, AuditBook, ItemChange, TrailQuery, TrailRecord
from services.audit.following import Follower, SentItems, TrailChanges
from services.audit.servicer import AuditServicer
from services.platform.caller import Caller, Role, bound_caller
from swiftchain.audit.v1 import audit_service_pb2 as pb
from swiftchain.common.v1 import common_pb2
from tests.unit.audit.fakes import TAG_KEY, FakeAuditStore

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
REGULATOR = Caller(Role.REGULATOR, "regulator-1")


def item(entry_id: str, seconds: int, *, sealed: bool = False, tag: bytes = b"t1") -> TrailRecord:
    return TrailRecord(
        entry_id=entry_id,
        kind=common_pb2.ENTRY_KIND_ACCESS,
        time=NOW + timedelta(seconds=seconds),
        organizations=("hospital-a",),
        subject_tag=tag,
        leaf_index=3 if sealed else None,
        sealed_tree_size=4 if sealed else None,
    )


def test_an_item_is_sent_again_only_when_its_state_changes() -> None:
    sent = SentItems()
    assert sent.add(item("e-1", 0))
    assert not sent.add(item("e-1", 0))
    assert sent.add(item("e-1", 0, sealed=True))
    assert sent.latest == NOW


def test_what_a_stream_no_longer_looks_at_is_forgotten() -> None:
    sent = SentItems()
    for second in range(1000):
        sent.add(item(f"e-{second}", second))
    sent.forget_before(NOW + timedelta(seconds=990))
    assert len(sent) == 10


def test_a_query_includes_the_items_of_its_patient_organization_kind_and_time() -> None:
    change = item("e-1", 0, tag=b"t1")
    assert TrailQuery(subject_tag=b"t1").includes(change)
    assert not TrailQuery(subject_tag=b"t2").includes(change)
    assert TrailQuery(organization_id="hospital-a").includes(change)
    assert not TrailQuery(organization_id="hospital-b").includes(change)
    assert not TrailQuery(kinds=(common_pb2.ENTRY_KIND_RECORD,)).includes(change)
    assert TrailQuery().includes(change)
    # from start_time included, to end_time excluded, as the store applies them
    assert TrailQuery(start_time=change.time).includes(change)
    assert not TrailQuery(start_time=change.time + timedelta(seconds=1)).includes(change)
    assert not TrailQuery(end_time=change.time).includes(change)
    assert TrailQuery(end_time=change.time + timedelta(seconds=1)).includes(change)
    # an item known only from its seal (no kind yet) is on no trail
    assert not TrailQuery().includes(TrailRecord("e-2", 0, NOW))


def test_a_stream_whose_caller_does_not_read_drops_its_backlog_and_says_so() -> None:
    async def scenario() -> None:
        follower = Follower(TrailQuery(), backlog=10)
        follower.hand([item(f"e-{n}", n) for n in range(8)])
        handed = await follower.next(1)
        assert (len(handed.items), handed.fell_behind) == (8, False)
        follower.hand([item(f"e-{n}", n) for n in range(8)])
        follower.hand([item(f"e-{n}", n) for n in range(8, 16)])
        handed = await follower.next(1)
        assert (handed.items, handed.fell_behind) == ([], True)
        follower.hand([item("e-99", 99)])
        handed = await follower.next(1)
        assert (len(handed.items), handed.fell_behind) == (1, False)

    asyncio.run(scenario())


class CountingStore(FakeAuditStore):
    """The fake store, safe across the server's threads, counting its trail reads and running
    ``after_first_read`` once, just after the first read with no start time (a stream's first
    page) returns."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.after_first_read: Callable[[], None] | None = None
        self._lock = threading.Lock()

    def items(self, query: TrailQuery, after: After | None, limit: int) -> list[TrailRecord]:
        with self._lock:
            self.reads += 1
            found = super().items(query, after, limit)
        if query.start_time is None and self.after_first_read is not None:
            hook, self.after_first_read = self.after_first_read, None
            hook()
        return found

    def apply_changes(self, changes: Sequence[ItemChange], *, only_existing: bool = False) -> None:
        with self._lock:
            super().apply_changes(changes, only_existing=only_existing)

    def add(self, entry_id: str, *, organization: str = "hospital-a", seconds: int = 0) -> None:
        self.apply_changes(
            [
                ItemChange(
                    entry_id,
                    f"ev-{entry_id}",
                    {
                        "kind": common_pb2.ENTRY_KIND_ACCESS,
                        "time": NOW + timedelta(seconds=seconds),
                        "actor_organization_id": organization,
                        "organizations": [organization],
                        "subject_tag": b"t" * 32,
                    },
                )
            ]
        )


@pytest.fixture
def quick_looks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(following, "FOLLOW_POLL", 0.01)


def test_a_hundred_followed_streams_cost_one_read_per_look() -> None:
    store = CountingStore()
    store.add("e-a", organization="hospital-a")
    store.add("e-b", organization="hospital-b")
    changes = TrailChanges(AuditBook(store, TAG_KEY), lambda: NOW, threading.Event())

    async def scenario() -> None:
        a = [changes.follow(TrailQuery(organization_id="hospital-a")) for _ in range(50)]
        b = [changes.follow(TrailQuery(organization_id="hospital-b")) for _ in range(50)]
        # the first look runs at once; the next only after FOLLOW_POLL
        handed = [await follower.next(5) for follower in a + b]
        assert {h.items[0].entry_id for h in handed[:50]} == {"e-a"}
        assert {h.items[0].entry_id for h in handed[50:]} == {"e-b"}
        assert all(len(h.items) == 1 for h in handed)
        for follower in a + b:
            changes.unfollow(follower)

    asyncio.run(scenario())
    assert store.reads == 1


async def collect(stream: AsyncIterator[pb.StreamTrailResponse], wanted: set[str]) -> list[str]:
    seen: list[str] = []
    async for response in stream:
        seen.append(response.item.entry_id)
        if wanted <= set(seen):
            break
    return seen


def follow_trail(servicer: AuditServicer, wanted: set[str]) -> list[str]:
    """The entry ids a regulator's followed stream sends until it has sent ``wanted``."""

    async def scenario() -> list[str]:
        with bound_caller(REGULATOR):
            request = pb.StreamTrailRequest(follow=True)
            stream: Any = servicer.StreamTrail(request, None)  # type: ignore[arg-type]
            try:
                return await asyncio.wait_for(collect(stream, wanted), 10)
            finally:
                await stream.aclose()

    return asyncio.run(scenario())


@pytest.mark.usefixtures("quick_looks")
def test_an_item_stored_while_a_stream_reads_its_first_pages_reaches_it() -> None:
    store = CountingStore()
    store.add("e-1")
    store.after_first_read = lambda: store.add("e-2", seconds=1)
    servicer = AuditServicer(AuditBook(store, TAG_KEY), clock=lambda: NOW)
    assert follow_trail(servicer, {"e-1", "e-2"}) == ["e-1", "e-2"]


@pytest.mark.usefixtures("quick_looks")
def test_a_stream_that_fell_behind_reads_its_recent_trail_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(following, "MAX_BACKLOG", 2)
    store = CountingStore()
    store.add("e-0")
    burst = {f"e-{n}" for n in range(1, 6)}

    def store_burst() -> None:
        for entry_id in sorted(burst):
            store.add(entry_id, seconds=1)

    store.after_first_read = store_burst
    servicer = AuditServicer(AuditBook(store, TAG_KEY), clock=lambda: NOW)
    sent = follow_trail(servicer, {"e-0"} | burst)
    assert sorted(sent) == sorted({"e-0"} | burst)  # each once
