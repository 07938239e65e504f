"""The servicer's ordering: a stored chunk is resent only when nobody is ordering it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from services.anchoring.domain import RecordAnchoring, RecordVersion
from services.anchoring.servicer import AnchoringServicer
from services.platform.log_writer import Ordered, entry_id_of
from tests.unit.anchoring.fakes import (
    NOW,
    TAG_KEY,
    FakeStore,
    drafts,
    known_keys,
    request,
    sdk,
    servicer_on,
)


class SlowWriter:
    """Orders entries; while the first call is in Kafka, the resend thread looks at the store."""

    def __init__(self) -> None:
        self.submitted: list[bytes] = []
        self.servicer: AnchoringServicer | None = None
        self.unordered: list[RecordVersion] = []

    def write(
        self,
        entries: Sequence[bytes],
        *,
        on_ordered: Callable[[Sequence[Ordered]], None],
        timeout: float = 30.0,
    ) -> list[Ordered]:
        first_call = not self.submitted
        self.submitted.extend(entries)
        if first_call and self.servicer is not None:
            self.servicer.resend(lambda: self.unordered)  # what the resend thread would do now
        start = len(self.submitted) - len(entries)
        placed = [Ordered(entry_id_of(e), start + i, NOW) for i, e in enumerate(entries)]
        on_ordered(placed)
        return placed


def make(store: FakeStore, submitter: SlowWriter) -> AnchoringServicer:
    servicer = servicer_on(store, submitter)
    submitter.servicer = servicer
    return servicer


def anchored(store: FakeStore, count: int) -> list[RecordVersion]:
    anchoring = RecordAnchoring(store, known_keys(), TAG_KEY)
    signed = [request(r) for r in sdk().sign(drafts(count))]
    return [o.anchored for o in anchoring.anchor("hospital-a", signed, NOW) if o.anchored]


def test_a_chunk_being_ordered_is_not_resent() -> None:
    store = FakeStore()
    submitter = SlowWriter()
    servicer = make(store, submitter)
    versions = anchored(store, 3)
    submitter.unordered = versions  # stored, not yet acknowledged: what store.unordered returns

    servicer.order(versions)

    assert len(submitter.submitted) == 3  # once each, no duplicate sent by the resend
    assert all(v.ordering_offset is not None for v in versions)


def test_a_chunk_ordered_while_the_store_is_read_is_not_resent() -> None:
    store = FakeStore()
    submitter = SlowWriter()
    servicer = make(store, submitter)
    submitter.servicer = None
    versions = anchored(store, 2)
    read_before_ordering = [RecordVersion(**vars(v)) for v in versions]

    def read_store() -> list[RecordVersion]:
        servicer.order(versions)  # the request thread finishes while the store is read
        return read_before_ordering

    servicer.resend(read_store)

    assert len(submitter.submitted) == 2  # the stale read is not resent


def test_a_chunk_that_nobody_orders_is_resent() -> None:
    store = FakeStore()
    submitter = SlowWriter()
    servicer = make(store, submitter)
    versions = anchored(store, 2)
    submitter.servicer = None

    servicer.resend(lambda: versions)

    assert len(submitter.submitted) == 2
    assert [v.ordering_offset for v in versions] == [0, 1]


class _Deadline:
    def __init__(self, remaining: float | None) -> None:
        self._remaining = remaining

    def time_remaining(self) -> float | None:
        return self._remaining


def test_a_call_waits_for_kafka_only_as_long_as_its_deadline_allows() -> None:
    from services.anchoring.servicer import KAFKA_WAIT, _kafka_wait

    assert _kafka_wait(_Deadline(None)) == KAFKA_WAIT  # type: ignore[arg-type]
    assert _kafka_wait(_Deadline(120.0)) == KAFKA_WAIT  # type: ignore[arg-type]
    assert _kafka_wait(_Deadline(20.0)) == 19.5  # type: ignore[arg-type]
    assert _kafka_wait(_Deadline(0.2)) == 0.1  # type: ignore[arg-type]
