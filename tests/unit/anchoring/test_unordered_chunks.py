"""What the anchoring service knows of its unordered chunks between two reads of the store: the
servicer names the chunks in Kafka's hands, and a chunk recorded as ordered while a sweep reads
the store is not known unordered after it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta

from services.anchoring.domain import RecordAnchoring, RecordVersion
from services.anchoring.store import _UnorderedChunk, _UnorderedChunks
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


class WatchingWriter:
    """Orders entries, noting which chunks the servicer says are being ordered meanwhile."""

    def __init__(self) -> None:
        self.seen: list[frozenset[str]] = []
        self.being_ordered: Callable[[], frozenset[str]] = frozenset

    def write(
        self,
        entries: Sequence[bytes],
        *,
        on_ordered: Callable[[Sequence[Ordered]], None],
        timeout: float = 30.0,
    ) -> list[Ordered]:
        self.seen.append(self.being_ordered())
        placed = [Ordered(entry_id_of(e), i, NOW) for i, e in enumerate(entries)]
        on_ordered(placed)
        return placed


def anchored(store: FakeStore, count: int, record_id: str) -> list[RecordVersion]:
    signed = [request(r) for r in sdk().sign(drafts(count, record_id))]
    outcomes = RecordAnchoring(store, known_keys(), TAG_KEY).anchor("hospital-a", signed, NOW)
    return [o.anchored for o in outcomes if o.anchored]


def test_the_servicer_names_the_chunks_in_kafkas_hands() -> None:
    store = FakeStore()
    writer = WatchingWriter()
    servicer = servicer_on(store, writer)
    writer.being_ordered = servicer.chunks_being_ordered
    first, second = anchored(store, 2, "rec-1"), anchored(store, 1, "rec-2")

    servicer.order(first)
    servicer.order(second)

    assert writer.seen == [frozenset({first[0].chunk_id}), frozenset({second[0].chunk_id})]
    assert servicer.chunks_being_ordered() == frozenset()


def chunk(ids: Sequence[str]) -> _UnorderedChunk:
    return _UnorderedChunk(NOW, tuple(ids))


def test_a_chunk_forgotten_during_a_sweep_stays_forgotten() -> None:
    known = _UnorderedChunks()
    known.put("kept", NOW, ["v1"])
    known.put("ordered", NOW, ["v2"])
    with known.sweep() as found:
        found.update(kept=chunk(["v1"]), ordered=chunk(["v2"]), previous=chunk(["v3"]))
        known.forget("ordered")  # recorded as ordered after the sweep read it
    later = NOW + timedelta(seconds=1)
    assert sorted(known.older_than(later)) == ["kept", "previous"]
    # Once no sweep runs, forgetting is not remembered: a chunk stored again is known again.
    known.put("ordered", NOW, ["v2"])
    assert sorted(known.older_than(later)) == ["kept", "ordered", "previous"]


def test_a_sweep_keeps_what_was_stored_while_it_read() -> None:
    known = _UnorderedChunks()
    with known.sweep() as found:
        found["old"] = chunk(["v1"])
        known.put("new", NOW, ["v2", "v3"])  # stored after the sweep's read passed it
    assert sorted(known.older_than(NOW + timedelta(seconds=1))) == ["new", "old"]
    assert known.older_than(NOW) == {}
    new = known.get("new")
    assert new is not None and new.version_ids == ("v2", "v3")
