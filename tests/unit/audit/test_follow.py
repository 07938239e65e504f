"""A followed trail stream (services/audit/servicer.py): what it remembers having sent stays as
far back as it still looks, and a change wakes only the streams it may concern."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.audit.domain.records import TrailQuery, TrailRecord
from services.audit.servicer import _may_see, _Sent
from swiftchain.common.v1 import common_pb2

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


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
    sent = _Sent()
    assert sent.add(item("e-1", 0))
    assert not sent.add(item("e-1", 0))
    assert sent.add(item("e-1", 0, sealed=True))
    assert sent.latest == NOW


def test_what_a_stream_no_longer_looks_at_is_forgotten() -> None:
    sent = _Sent()
    for second in range(1000):
        sent.add(item(f"e-{second}", second))
    sent.forget_before(NOW + timedelta(seconds=990))
    assert len(sent) == 10


def test_a_change_wakes_the_streams_whose_patient_organization_and_kind_it_matches() -> None:
    change = item("e-1", 0, tag=b"t1")
    assert _may_see(TrailQuery(subject_tag=b"t1"), change)
    assert not _may_see(TrailQuery(subject_tag=b"t2"), change)
    assert _may_see(TrailQuery(organization_id="hospital-a"), change)
    assert not _may_see(TrailQuery(organization_id="hospital-b"), change)
    assert not _may_see(TrailQuery(kinds=(common_pb2.ENTRY_KIND_RECORD,)), change)
    assert _may_see(TrailQuery(), change)
