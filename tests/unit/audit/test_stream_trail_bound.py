"""A followed StreamTrail remembers what it sent, within bounds: a long trail sent first, a
stream that runs for days, or a burst of items never grows its memory past the cap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.audit.domain import TrailRecord
from services.audit.following import MAX_SENT_STATES, SentItems
from swiftchain.common.v1 import common_pb2

START = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def item(index: int, seconds: float, *, sealed: bool = False) -> TrailRecord:
    return TrailRecord(
        f"00000000-0000-4000-8000-{index:012d}",
        common_pb2.ENTRY_KIND_ACCESS,
        START + timedelta(seconds=seconds),
        leaf_index=index if sealed else None,
        sealed_tree_size=index + 1 if sealed else None,
    )


def test_a_long_trail_sent_first_leaves_at_most_the_cap() -> None:
    sent = SentItems()
    for index in range(20_000):  # one item a second: hours of trail
        sent.add(item(index, index))
        assert len(sent) <= MAX_SENT_STATES
    assert sent.latest == START + timedelta(seconds=19_999)


def test_a_burst_within_the_window_is_capped_too() -> None:
    sent = SentItems(cap=100)
    for index in range(1_000):  # all within one second
        sent.add(item(index, index / 1000))
        assert len(sent) <= 100


def test_within_the_bounds_an_unchanged_item_is_not_sent_twice_and_a_change_is() -> None:
    sent = SentItems(cap=100)
    for index in range(50):
        assert sent.add(item(index, index))
    assert not sent.add(item(10, 10))  # seen again, unchanged
    assert sent.add(item(10, 10, sealed=True))  # its state changed: sent again
    assert not sent.add(item(10, 10, sealed=True))


def test_what_lies_before_the_window_goes_first() -> None:
    sent = SentItems(cap=8, lookback=timedelta(seconds=60))
    for index in range(4):
        sent.add(item(index, index))  # long ago
    for index in range(4, 9):
        sent.add(item(index, 1000 + index))  # the ninth goes past the cap
    assert len(sent) == 5  # the four old ones went, the recent five stay
    assert not sent.add(item(8, 1008))
