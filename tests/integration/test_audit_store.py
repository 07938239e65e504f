"""The audit store (services/audit/store.py) alone on the real FerretDB: the read model's upserts
and their idempotence, trail queries (patient tag, organization, kind, time range) in
(time, entry id) order, paged by a range condition strictly after a position, flags raised,
merged, reviewed and paged the same way, the log index, its position and the last accepted
checkpoint, directives and patients; and the audit book on top of it, applying one batch of
events twice and paging while items arrive."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.audit.domain import (
    KIND_ACCESS,
    KIND_CONSENT,
    KIND_RECORD,
    After,
    AuditBook,
    DirectiveVersion,
    FlagQuery,
    FlagRecord,
    FlagReviewRecord,
    ItemChange,
    LogLeaf,
    TrailFilterSpec,
    TrailQuery,
    TrailRecord,
)
from services.audit.store import ALIAS, INDEXES, AuditMongoStore
from services.platform import mongo
from services.platform.caller import Caller, Role
from swiftchain.audit.v1 import audit_service_pb2 as apb
from swiftchain.common.v1 import common_pb2
from tests.unit.audit.fakes import (
    TAG_KEY,
    access_decided,
    consent_granted,
    patient_registered,
    record_anchored,
    record_sealed,
)

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
TAG_A = bytes([1]) * 32
TAG_B = bytes([2]) * 32


@pytest.fixture(autouse=True)
def fresh_database(mongo_uri: str) -> Iterator[None]:
    mongo.connect(mongo_uri, f"audit_test_{uuid.uuid4().hex[:8]}", alias=ALIAS)
    yield
    mongo.disconnect(ALIAS)


@pytest.fixture
def store() -> AuditMongoStore:
    return AuditMongoStore()


def documents(collection: str) -> list[dict[str, Any]]:
    return list(mongo.database(ALIAS)[collection].find({}).sort([("_id", 1)]))


def item_fields(
    kind: int,
    when: datetime,
    *,
    organization: str = "hospital-a",
    tag: bytes = TAG_A,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "time": when,
        "actor_organization_id": organization,
        "organizations": [organization],
        "subject_tag": tag,
        **extra,
    }


def put(store: AuditMongoStore, entry_id: str, fields: dict[str, Any]) -> None:
    store.apply_changes([ItemChange(entry_id, f"ev-{entry_id}", fields)])


def ids(items: list[TrailRecord]) -> list[str]:
    return [item.entry_id for item in items]


# --- items -----------------------------------------------------------------------------------


def test_an_item_round_trips(store: AuditMongoStore) -> None:
    put(
        store,
        "e-1",
        item_fields(
            KIND_ACCESS,
            NOW,
            patient_subject_id="pt-1",
            detail={"decision": common_pb2.ACCESS_DECISION_DENY, "purpose": "TREAT"},
        ),
    )
    store.apply_changes([ItemChange("e-1", "ev-seal", {"leaf_index": 3, "sealed_tree_size": 4})])
    (item,) = store.items(TrailQuery(), None, 10)
    assert item == TrailRecord(
        entry_id="e-1",
        kind=KIND_ACCESS,
        time=NOW,
        actor_organization_id="hospital-a",
        organizations=("hospital-a",),
        subject_tag=TAG_A,
        patient_subject_id="pt-1",
        detail={"decision": common_pb2.ACCESS_DECISION_DENY, "purpose": "TREAT"},
        leaf_index=3,
        sealed_tree_size=4,
    )
    assert item.time.tzinfo is not None
    assert store.items_by_id(["e-1", "e-missing"]) == {"e-1": item}


def test_applying_the_same_changes_twice_writes_one_item_with_the_same_fields(
    store: AuditMongoStore,
) -> None:
    changes = [
        ItemChange("e-1", "ev-anchor", item_fields(KIND_RECORD, NOW, detail={"version": 1})),
        ItemChange("e-1", "ev-seal", {"leaf_index": 0, "sealed_tree_size": 1}),
        ItemChange("e-2", "ev-other", item_fields(KIND_ACCESS, NOW)),
    ]
    store.apply_changes(changes)
    before = documents("items")
    store.apply_changes(changes)
    after = documents("items")
    assert after == before
    assert [d["_id"] for d in after] == ["e-1", "e-2"]
    assert after[0]["event_ids"] == ["ev-anchor", "ev-seal"]
    assert after[0]["leaf_index"] == 0 and after[0]["detail"] == {"version": 1}


def test_changes_apply_in_order(store: AuditMongoStore) -> None:
    store.apply_changes(
        [
            ItemChange("e-1", "ev-1", item_fields(KIND_RECORD, NOW, rejected=False)),
            ItemChange("e-1", "ev-2", {"rejected": True, "rejection_detail": "bad key"}),
        ]
    )
    (item,) = store.items(TrailQuery(), None, 10)
    assert item.rejected and item.rejection_detail == "bad key"
    assert item.state == common_pb2.ENTRY_STATE_REJECTED


def test_only_existing_drops_changes_to_items_that_do_not_exist(store: AuditMongoStore) -> None:
    put(store, "e-1", item_fields(KIND_RECORD, NOW))
    store.apply_changes(
        [
            ItemChange("e-1", "", {"leaf_index": 5, "sealed_tree_size": 6}),
            ItemChange("e-new", "", {"leaf_index": 7, "sealed_tree_size": 8}),
        ],
        only_existing=True,
    )
    assert [d["_id"] for d in documents("items")] == ["e-1"]
    assert store.items_by_id(["e-1"])["e-1"].leaf_index == 5


def test_an_item_known_only_from_its_seal_is_not_on_any_trail(store: AuditMongoStore) -> None:
    # The seal event came before the anchor event: the document exists without a kind.
    store.apply_changes([ItemChange("e-1", "ev-seal", {"leaf_index": 0, "sealed_tree_size": 1})])
    assert store.items(TrailQuery(), None, 10) == []
    assert store.items_by_id(["e-1"]) == {}
    put(store, "e-1", item_fields(KIND_RECORD, NOW))
    (item,) = store.items(TrailQuery(), None, 10)
    assert (item.kind, item.leaf_index, item.sealed_tree_size) == (KIND_RECORD, 0, 1)


def trail_fixture(store: AuditMongoStore) -> None:
    """Eight items; three at NOW + 2 s (one unsealed, two sealed out of id order)."""
    second = timedelta(seconds=1)
    put(store, "a-rec", item_fields(KIND_RECORD, NOW))
    put(store, "a-acc", item_fields(KIND_ACCESS, NOW + second))
    put(store, "t-z", item_fields(KIND_ACCESS, NOW + 2 * second, leaf_index=4))
    put(store, "t-y", item_fields(KIND_ACCESS, NOW + 2 * second, leaf_index=9))
    put(store, "t-x", item_fields(KIND_ACCESS, NOW + 2 * second))
    put(store, "b-rec", item_fields(KIND_RECORD, NOW + 3 * second, organization="hospital-b"))
    put(
        store,
        "b-con",
        item_fields(KIND_CONSENT, NOW + 4 * second, organization="hospital-b", tag=TAG_B),
    )
    put(store, "a-late", item_fields(KIND_ACCESS, NOW + 5 * second, tag=TAG_B))


def test_a_trail_is_ordered_by_time_then_entry_id(store: AuditMongoStore) -> None:
    trail_fixture(store)
    assert ids(store.items(TrailQuery(), None, 100)) == [
        "a-rec",
        "a-acc",
        "t-x",  # sealed or not, the same time goes by entry id
        "t-y",
        "t-z",
        "b-rec",
        "b-con",
        "a-late",
    ]


def test_a_trail_filters_by_tag_organization_kind_and_time(store: AuditMongoStore) -> None:
    trail_fixture(store)
    assert ids(store.items(TrailQuery(subject_tag=TAG_B), None, 100)) == ["b-con", "a-late"]
    assert ids(store.items(TrailQuery(organization_id="hospital-b"), None, 100)) == [
        "b-rec",
        "b-con",
    ]
    assert ids(store.items(TrailQuery(kinds=(KIND_RECORD, KIND_CONSENT)), None, 100)) == [
        "a-rec",
        "b-rec",
        "b-con",
    ]
    window = TrailQuery(start_time=NOW + timedelta(seconds=2), end_time=NOW + timedelta(seconds=4))
    assert ids(store.items(window, None, 100)) == ["t-x", "t-y", "t-z", "b-rec"]
    combined = TrailQuery(
        subject_tag=TAG_A,
        organization_id="hospital-a",
        kinds=(KIND_ACCESS,),
        start_time=NOW + timedelta(seconds=1),
    )
    assert ids(store.items(combined, None, 100)) == ["a-acc", "t-x", "t-y", "t-z"]
    assert store.items(TrailQuery(subject_tag=bytes(32)), None, 100) == []


def test_a_query_includes_in_hand_exactly_the_items_the_store_finds(
    store: AuditMongoStore,
) -> None:
    # TrailQuery.includes lets a followed stream keep the items of its trail from a look at
    # everything; it must agree with the store's own conditions for every kind of filter.
    kinds = (0, KIND_ACCESS, KIND_RECORD, KIND_CONSENT)
    organizations = ((), ("hospital-a",), ("hospital-b",), ("hospital-a", "hospital-b"))
    in_hand = []
    for n in range(48):
        item = TrailRecord(
            entry_id=f"e-{n:02d}",
            kind=kinds[n % 4],
            time=NOW + timedelta(seconds=n % 7),
            organizations=organizations[n % 5 % 4],
            subject_tag=(TAG_A, TAG_B, b"")[n % 3],
        )
        in_hand.append(item)
        fields = item_fields(item.kind, item.time, tag=item.subject_tag)
        put(store, item.entry_id, fields | {"organizations": list(item.organizations)})
    queries = [
        TrailQuery(tag, organization, start, end, kind)
        for tag in (None, TAG_A, TAG_B)
        for organization in ("", "hospital-a", "hospital-b")
        for kind in ((), (KIND_ACCESS,), (KIND_RECORD, KIND_CONSENT))
        for start, end in (
            (None, None),
            (NOW + timedelta(seconds=2), None),
            (None, NOW + timedelta(seconds=4)),
            (NOW + timedelta(seconds=2), NOW + timedelta(seconds=4)),
        )
    ]
    for query in queries:
        expected = sorted(
            (item for item in in_hand if query.includes(item)),
            key=lambda item: (item.time, item.entry_id),
        )
        assert ids(store.items(query, None, 1000)) == ids(expected), query
    assert any(query.includes(item) for query in queries for item in in_hand)


def test_a_page_starts_strictly_after_a_position_with_the_filter_kept(
    store: AuditMongoStore,
) -> None:
    trail_fixture(store)
    everything = ids(store.items(TrailQuery(), None, 100))
    two = NOW + timedelta(seconds=2)
    # Inside the items of one time: the range goes on by entry id.
    assert ids(store.items(TrailQuery(), (two, "t-x"), 2)) == ["t-y", "t-z"]
    assert ids(store.items(TrailQuery(), (two, "t-z"), 100)) == everything[5:]
    # A position between items (one that was deleted, or never matched) works the same.
    assert ids(store.items(TrailQuery(), (two, "t-a"), 1)) == ["t-x"]
    assert store.items(TrailQuery(), (NOW + timedelta(seconds=5), "a-late"), 100) == []
    # Alongside the filter's own time range and its conditions.
    window = TrailQuery(
        start_time=NOW + timedelta(seconds=1), end_time=NOW + timedelta(seconds=4), kinds=(2, 4)
    )
    assert ids(store.items(window, (two, "t-y"), 100)) == ["t-z", "b-rec"]
    assert ids(store.items(TrailQuery(subject_tag=TAG_A), (two, "t-z"), 100)) == ["b-rec"]


def test_the_book_pages_every_item_once_while_items_arrive(store: AuditMongoStore) -> None:
    book = AuditBook(store, TAG_KEY)
    regulator = Caller(Role.REGULATOR, "regulator-1")
    # Milliseconds apart: what the store keeps of a time (BSON dates have no microseconds).
    ms = timedelta(milliseconds=1)
    book.apply_events([access_decided(f"e-{n:02}", when=NOW + n * ms) for n in range(0, 20, 2)])
    arrivals = iter(
        [
            # After e-00, e-02, e-04: one behind the page read (an offset would repeat
            # e-04), one at e-04's time but after it by id, one ahead.
            [("ins-a", 1), ("e-04b", 4), ("ins-b", 11)],
            # After e-04b, e-06, e-08: one far ahead, one at the very end, one behind.
            [("ins-c", 15), ("ins-d", 30), ("ins-e", 0)],
        ]
    )
    seen: list[str] = []
    token = ""
    while True:
        page = book.trail(regulator, TrailFilterSpec(), token, 3)
        seen += ids(page.items)
        if not page.more:
            break
        for entry_id, n in next(arrivals, []):
            book.apply_events([access_decided(entry_id, when=NOW + n * ms)])
        token = page.next_page_token
    everything = ids(book.trail(regulator, TrailFilterSpec(), "", 100).items)
    assert len(everything) == 16
    assert len(seen) == len(set(seen))
    assert seen == [entry for entry in everything if entry not in {"ins-a", "ins-e"}]


def test_flags_on_items_are_recorded_once_and_only_on_items_that_exist(
    store: AuditMongoStore,
) -> None:
    put(store, "e-1", item_fields(KIND_ACCESS, NOW))
    store.add_flag_to_items(["e-1", "e-absent"], "f-1")
    store.add_flag_to_items(["e-1"], "f-1")
    store.add_flag_to_items(["e-1"], "f-2")
    assert store.items_by_id(["e-1"])["e-1"].flag_ids == ("f-1", "f-2")
    assert [d["_id"] for d in documents("items")] == ["e-1"]


def test_recent_access_and_due_consent_checks(store: AuditMongoStore) -> None:
    put(store, "old", item_fields(KIND_ACCESS, NOW - timedelta(hours=1)))
    put(store, "new", item_fields(KIND_ACCESS, NOW, consent_check_due=True))
    put(store, "rec", item_fields(KIND_RECORD, NOW, consent_check_due=True))
    put(store, "done", item_fields(KIND_ACCESS, NOW + timedelta(seconds=1)))
    assert ids(store.recent_access(NOW)) == ["new", "done"]
    assert sorted(ids(store.unchecked_items())) == ["new", "rec"]
    store.mark_checked(["new", "absent"])
    assert ids(store.unchecked_items()) == ["rec"]
    assert [d["_id"] for d in documents("items")] == ["done", "new", "old", "rec"]


# --- the log index ---------------------------------------------------------------------------


def leaf(entry_id: str, index: int, tag: bytes = TAG_A, tree_size: int = 10) -> LogLeaf:
    return LogLeaf(entry_id, index, KIND_ACCESS, "hospital-a", tag, NOW, tree_size)


def test_the_log_position_starts_at_zero_and_moves(store: AuditMongoStore) -> None:
    assert store.log_position() == 0
    store.store_log_position(12)
    assert store.log_position() == 12
    store.store_log_position(40)
    assert store.log_position() == 40
    assert len(documents("position")) == 1


def test_the_last_accepted_checkpoint_is_kept_beside_the_position(store: AuditMongoStore) -> None:
    assert store.log_checkpoint() == ""
    store.store_log_position(12)
    store.store_log_checkpoint("origin\n12\n...\n\n\u2014 hospital-a AAAA\n")
    store.store_log_position(15)
    assert store.log_checkpoint() == "origin\n12\n...\n\n\u2014 hospital-a AAAA\n"
    store.store_log_checkpoint("origin\n15\n")
    assert (store.log_position(), store.log_checkpoint()) == (15, "origin\n15\n")
    assert len(documents("position")) == 1


def test_leaves_by_tag_come_in_leaf_order_and_are_written_once(store: AuditMongoStore) -> None:
    # Ids in another order than the leaves, to tell the two orders apart.
    leaves = [leaf("e-a", 7), leaf("e-c", 2), leaf("e-other", 3, TAG_B), leaf("e-b", 5)]
    store.put_leaves(leaves)
    store.put_leaves(leaves[:2])
    assert len(documents("leaves")) == 4
    assert store.leaves_with_tag(TAG_A) == [leaf("e-c", 2), leaf("e-b", 5), leaf("e-a", 7)]
    assert store.leaves_with_tag(TAG_B) == [leaf("e-other", 3, TAG_B)]
    assert store.leaves_with_tag(bytes(32)) == []
    assert store.leaves_by_id(["e-b", "e-missing"]) == {"e-b": leaf("e-b", 5)}


# --- directives and patients -----------------------------------------------------------------


def test_directives_and_patients_round_trip(store: AuditMongoStore) -> None:
    granted = DirectiveVersion("d-1", 1, True, "hospital-a", "pt-1")
    revoked = DirectiveVersion("d-1", 2, False, "hospital-a", "pt-1")
    for version in (granted, revoked, granted):
        store.put_directive(version)
    assert store.directive("d-1", 1) == granted
    assert store.directive("d-1", 2) == revoked
    assert store.directive("d-1", 3) is None
    store.put_patient(TAG_A, "pt-1")
    store.put_patient(TAG_A, "pt-1")
    assert store.patients([TAG_A, TAG_B]) == {TAG_A: "pt-1"}


# --- flags -----------------------------------------------------------------------------------


def flag(
    flag_id: str,
    *,
    kind: int = apb.FLAG_KIND_BREAK_GLASS,
    organization: str = "hospital-a",
    patient: str = "pt-1",
    when: datetime = NOW,
    entries: tuple[str, ...] = ("e-1",),
    summary: str = "break-glass",
) -> FlagRecord:
    return FlagRecord(flag_id, kind, organization, summary, when, entries, patient)


def test_a_flag_is_raised_open_and_merges_when_raised_again(store: AuditMongoStore) -> None:
    store.raise_flag(flag("f-1", entries=("e-1", "e-2"), summary="denied 2 times"))
    store.raise_flag(
        flag(
            "f-1",
            when=NOW + timedelta(minutes=1),
            entries=("e-2", "e-3"),
            summary="denied 3 times",
            organization="someone else",
        )
    )
    found = store.flag("f-1")
    assert found == FlagRecord(
        "f-1",
        apb.FLAG_KIND_BREAK_GLASS,
        "hospital-a",
        "denied 3 times",
        NOW,
        ("e-1", "e-2", "e-3"),
        "pt-1",
        apb.FLAG_STATUS_OPEN,
        None,
    )
    assert len(documents("flags")) == 1
    assert store.flag("f-unknown") is None


def test_flags_are_listed_newest_first_by_status_kind_organization_patient_and_time(
    store: AuditMongoStore,
) -> None:
    store.raise_flag(flag("f-old", when=NOW - timedelta(hours=1)))
    store.raise_flag(flag("f-b", organization="hospital-b", when=NOW))
    store.raise_flag(flag("f-a", when=NOW))
    store.raise_flag(flag("f-burst", kind=apb.FLAG_KIND_DENIAL_BURST, patient="", when=NOW))
    store.raise_flag(flag("f-new", patient="pt-2", when=NOW + timedelta(hours=1)))
    store.review_flag("f-a", FlagReviewRecord("reg-1", apb.REVIEW_OUTCOME_JUSTIFIED, "ok", NOW))

    def listed(query: FlagQuery, after: After | None = None, limit: int = 100) -> list[str]:
        return [f.flag_id for f in store.flags(query, after, limit)]

    # Same create time: by id.
    assert listed(FlagQuery()) == ["f-new", "f-a", "f-b", "f-burst", "f-old"]
    # Strictly after a position, newest first: the older ones, and the same time by id.
    assert listed(FlagQuery(), (NOW + timedelta(hours=1), "f-new"), 2) == ["f-a", "f-b"]
    assert listed(FlagQuery(), (NOW, "f-a"), 100) == ["f-b", "f-burst", "f-old"]
    assert listed(FlagQuery(), (NOW, "f-b0"), 100) == ["f-burst", "f-old"]  # between two
    assert listed(FlagQuery(status=apb.FLAG_STATUS_OPEN), (NOW, "f-b"), 100) == [
        "f-burst",
        "f-old",
    ]
    assert listed(FlagQuery(), (NOW - timedelta(hours=1), "f-old"), 2) == []
    assert listed(FlagQuery(status=apb.FLAG_STATUS_REVIEWED)) == ["f-a"]
    assert listed(FlagQuery(status=apb.FLAG_STATUS_OPEN)) == ["f-new", "f-b", "f-burst", "f-old"]
    assert listed(FlagQuery(kinds=(apb.FLAG_KIND_DENIAL_BURST,))) == ["f-burst"]
    assert listed(FlagQuery(organization_id="hospital-b")) == ["f-b"]
    assert listed(FlagQuery(patient_subject_id="pt-2")) == ["f-new"]
    assert listed(FlagQuery(start_time=NOW, end_time=NOW + timedelta(hours=1))) == [
        "f-a",
        "f-b",
        "f-burst",
    ]


def test_a_review_is_stored_with_its_history_and_survives_a_new_raise(
    store: AuditMongoStore,
) -> None:
    store.raise_flag(flag("f-1"))
    first = FlagReviewRecord("reg-1", apb.REVIEW_OUTCOME_ESCALATED, "ask the ward", NOW)
    second = FlagReviewRecord(
        "reg-2", apb.REVIEW_OUTCOME_JUSTIFIED, "ER admission", NOW + timedelta(hours=1)
    )
    assert store.review_flag("f-1", first) is not None
    reviewed = store.review_flag("f-1", second)
    assert reviewed is not None
    assert reviewed.status == apb.FLAG_STATUS_REVIEWED
    assert reviewed.review == second
    (doc,) = documents("flags")
    assert [h["note"] for h in doc["history"]] == ["ask the ward", "ER admission"]
    # The same cause raising it again adds entries but does not reopen it.
    store.raise_flag(flag("f-1", entries=("e-9",)))
    again = store.flag("f-1")
    assert again is not None
    assert again.status == apb.FLAG_STATUS_REVIEWED and again.review == second
    assert again.entry_ids == ("e-1", "e-9")


def test_reviewing_an_unknown_flag_changes_nothing(store: AuditMongoStore) -> None:
    review = FlagReviewRecord("reg-1", apb.REVIEW_OUTCOME_JUSTIFIED, "ok", NOW)
    assert store.review_flag("f-unknown", review) is None
    assert documents("flags") == []


# --- the book on the real store --------------------------------------------------------------


def every_collection() -> dict[str, list[dict[str, Any]]]:
    names = ("items", "leaves", "position", "directives", "patients", "flags")
    return {name: documents(name) for name in names}


def test_the_book_applies_a_batch_twice_without_a_change(store: AuditMongoStore) -> None:
    book = AuditBook(store, TAG_KEY)
    batch = [
        patient_registered("pt-alice"),
        record_anchored("e-rec", patient="pt-alice"),
        record_sealed("e-rec", 0, 1),
        consent_granted("e-con", patient="pt-alice", directive_id="d-1", version=1),
        access_decided("e-acc", patient="pt-alice", directive=("d-1", 1)),
        access_decided("e-bg", patient="pt-alice", break_glass=True),
    ]
    book.apply_events(batch)
    before = every_collection()
    assert [d["_id"] for d in before["items"]] == ["e-acc", "e-bg", "e-con", "e-rec"]
    assert len(before["flags"]) == 1

    book.apply_events(batch)

    assert every_collection() == before
    rec = store.items_by_id(["e-rec"])["e-rec"]
    assert (rec.leaf_index, rec.sealed_tree_size) == (0, 1)
    assert store.flag(before["flags"][0]["_id"]) is not None
    assert store.items_by_id(["e-bg"])["e-bg"].flag_ids == (before["flags"][0]["_id"],)


def test_the_secondary_indexes_are_created_once(store: AuditMongoStore) -> None:
    store.ensure_indexes()
    store.ensure_indexes()  # a restart creates nothing twice
    database = mongo.database(ALIAS)
    for name, keys in INDEXES.items():
        info = database[name].index_information()
        created = [list(index["key"]) for index in info.values()]
        for key in keys:
            assert [tuple(pair) for pair in key] in [
                [tuple(pair) for pair in k] for k in created
            ], f"{name}: {key} not among {created}"
