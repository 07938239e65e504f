"""The audit domain (services/audit/domain/: EventTranslator and AuditBook) on an in-memory
store: events become trail items idempotently, trails are scoped to what the caller may see and
paged, completeness compares the read model with the log index, and flags are raised (break-glass,
denial bursts, access without a permitting consent) and reviewed."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import grpc
import pytest

from chain.errors import InvalidInputError, NotFoundError, PermissionDeniedError
from services.audit.domain import (
    DECISIONS_KEPT,
    DENY,
    KIND_ACCESS,
    KIND_CONSENT,
    KIND_KEY,
    KIND_RECORD,
    PERMIT,
    AuditBook,
    AuditPolicy,
    EventTranslator,
    FlagQuery,
    FlagRecord,
    LogLeaf,
    SealedView,
    TrailFilterSpec,
    TrailRecord,
    flag_id,
    read_cursor,
)
from services.platform.caller import Caller, Role
from services.platform.errors import status_code_for
from swiftchain.audit.v1 import audit_service_pb2 as apb
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2
from swiftchain.events.v1 import events_pb2
from tests.unit.audit.fakes import (
    HOSPITAL,
    NOW,
    OTHER_HOSPITAL,
    OTHER_PATIENT,
    PATIENT,
    TAG_KEY,
    FakeAuditStore,
    FakeLogReader,
    access_decided,
    consent_granted,
    consent_revoked,
    event,
    key_registered,
    patient_registered,
    record_anchored,
    record_rejected,
    record_sealed,
    tag,
)

REGULATOR = Caller(Role.REGULATOR, "regulator-1")
GRACE = AuditPolicy().consent_check_grace


def as_patient(subject_id: str) -> Caller:
    return Caller(Role.PATIENT, subject_id, device_key_id="dk-1")


def as_hospital(organization_id: str) -> Caller:
    return Caller(Role.HOSPITAL, organization_id, certificate_serial="01")


class World:
    """A book on a fake store, following a fake chain node."""

    def __init__(self, policy: AuditPolicy | None = None) -> None:
        self.store = FakeAuditStore()
        self.reader = FakeLogReader(SealedView(0, "", NOW))
        self.book = AuditBook(self.store, TAG_KEY, policy)
        self.book.attach_log(self.reader)

    def item(self, entry_id: str) -> TrailRecord:
        return self.store.items_by_id([entry_id])[entry_id]

    def all_flags(self) -> list[FlagRecord]:
        flags, more = self.book.flags(FlagQuery(), "", 1000)
        assert not more
        return flags

    def seal(self, leaves: list[tuple[str, bytes, int]], tree_size: int) -> None:
        """Index leaves ``(entry id, subject tag, kind)`` at consecutive indexes from 0 and
        make the node's view ``tree_size``."""
        self.book.index_leaves(
            [
                LogLeaf(entry_id, i, kind, HOSPITAL, subject, NOW, tree_size)
                for i, (entry_id, subject, kind) in enumerate(leaves)
            ],
            tree_size,
        )
        self.reader.view = SealedView(tree_size, f"note {tree_size}", NOW + timedelta(minutes=5))


@pytest.fixture
def world() -> World:
    return World()


def ids(items: list[TrailRecord]) -> list[str]:
    return [item.entry_id for item in items]


# --- events -> items ---------------------------------------------------------------------


def test_a_batch_applied_twice_changes_nothing(world: World) -> None:
    batch = [
        patient_registered(PATIENT),
        record_anchored("e-rec"),
        record_sealed("e-rec", 0, 1),
        consent_granted("e-con"),
        access_decided("e-acc", directive=("d-1", 1)),
        access_decided("e-bg", break_glass=True, when=NOW + timedelta(seconds=1)),
        *[
            access_decided(f"e-deny-{n}", decision=DENY, when=NOW + timedelta(seconds=n))
            for n in range(5)
        ],
    ]
    world.book.apply_events(batch)
    before = world.store.snapshot()
    assert len(before["items"]) == 9
    assert len(before["flags"]) == 2  # the break-glass and the burst

    world.book.apply_events(batch)

    assert world.store.snapshot() == before
    trail = world.book.trail(REGULATOR, TrailFilterSpec(), "", 100)
    assert len(ids(trail.items)) == len(set(ids(trail.items))) == 9


def test_a_replayed_event_after_the_consent_check_raises_no_second_flag(world: World) -> None:
    batch = [access_decided("e-acc", directive=("d-unknown", 3))]
    world.book.apply_events(batch)
    assert world.book.check_consents(NOW + GRACE) == 1
    first = world.all_flags()

    world.book.apply_events(batch)
    world.book.check_consents(NOW + GRACE)

    assert world.all_flags() == first
    assert world.item("e-acc").flag_ids == (first[0].flag_id,)


def test_a_record_becomes_an_item_sealed_by_its_event(world: World) -> None:
    world.book.apply_events([record_anchored("e-1", record_id="r-9", version=2)])
    item = world.item("e-1")
    assert item.kind == KIND_RECORD
    assert item.time == NOW
    assert item.actor_organization_id == HOSPITAL
    assert item.organizations == (HOSPITAL,)
    assert item.subject_tag == tag(PATIENT)
    assert item.detail["record_id"] == "r-9"
    assert item.detail["version"] == 2
    assert item.detail["author_practitioner_id"] == "pr-1"
    assert item.state == common_pb2.ENTRY_STATE_PENDING

    world.book.apply_events([record_sealed("e-1", 41, 42)])
    item = world.item("e-1")
    assert (item.leaf_index, item.sealed_tree_size) == (41, 42)
    assert item.state == common_pb2.ENTRY_STATE_SEALED
    assert item.detail["record_id"] == "r-9"  # the seal kept what the anchor said


def test_a_record_is_dated_when_it_was_anchored_not_when_the_event_was_sent(
    world: World,
) -> None:
    anchored = record_anchored("e-1", when=NOW)
    anchored.time.FromDatetime(NOW + timedelta(minutes=3))
    world.book.apply_events([anchored])
    assert world.item("e-1").time == NOW


def test_a_rejected_record_is_rejected(world: World) -> None:
    world.book.apply_events([record_anchored("e-1"), record_rejected("e-1", "bad signature")])
    item = world.item("e-1")
    assert item.rejected and item.rejection_detail == "bad signature"
    assert item.state == common_pb2.ENTRY_STATE_REJECTED


def test_a_seal_read_before_the_anchor_event_is_not_lost(world: World) -> None:
    # The log follower indexed the leaf before the anchoring event arrived.
    world.book.index_leaves([LogLeaf("e-1", 7, KIND_RECORD, HOSPITAL, tag(PATIENT), NOW, 8)], 8)
    assert world.store.items_by_id(["e-1"]) == {}
    world.book.apply_events([record_anchored("e-1")])
    assert (world.item("e-1").leaf_index, world.item("e-1").sealed_tree_size) == (7, 8)
    assert world.store.log_position() == 8


def test_a_consent_becomes_an_item_and_a_directive_version(world: World) -> None:
    world.book.apply_events([consent_granted("e-c", directive_id="d-7", version=3)])
    item = world.item("e-c")
    assert item.kind == KIND_CONSENT
    assert item.actor_organization_id == ""
    assert item.organizations == (HOSPITAL,)
    assert item.patient_subject_id == PATIENT
    assert item.subject_tag == tag(PATIENT)
    assert item.detail["directive_id"] == "d-7"
    assert item.detail["version"] == 3
    assert item.detail["status"] == entry_pb2.DIRECTIVE_STATUS_ACTIVE
    assert item.detail["grantee_organization_id"] == HOSPITAL
    known = world.store.directive("d-7", 3)
    assert known is not None and known.active and known.grantee_organization_id == HOSPITAL

    world.book.apply_events([consent_revoked("e-r", directive_id="d-7", version=4)])
    assert world.item("e-r").detail["status"] == entry_pb2.DIRECTIVE_STATUS_REVOKED
    revoked = world.store.directive("d-7", 4)
    assert revoked is not None and not revoked.active


def test_an_access_decision_becomes_an_item(world: World) -> None:
    world.book.apply_events(
        [access_decided("e-a", decision=DENY, organization=OTHER_HOSPITAL, category="imaging")]
    )
    item = world.item("e-a")
    assert item.kind == KIND_ACCESS
    assert item.actor_organization_id == OTHER_HOSPITAL
    assert item.organizations == (OTHER_HOSPITAL,)
    assert item.patient_subject_id == PATIENT
    assert item.subject_tag == tag(PATIENT)
    assert item.detail["decision"] == DENY
    assert item.detail["reason"] == common_pb2.ACCESS_REASON_NO_CONSENT
    assert item.detail["data_category"] == "imaging"
    assert item.detail["purpose"] == "TREAT"
    assert item.detail["practitioner_id"] == "pr-1"
    assert item.detail["break_glass"] is False


def test_a_key_registration_becomes_a_key_item(world: World) -> None:
    world.book.apply_events([key_registered("e-k")])
    item = world.item("e-k")
    assert item.kind == KIND_KEY
    assert item.detail == {
        "key_id": "k-1",
        "owner_id": HOSPITAL,
        "action": entry_pb2.KEY_ACTION_REGISTER,
    }


def test_events_the_audit_does_not_keep_have_no_effect() -> None:
    translator = EventTranslator(TAG_KEY)
    effects = translator.effects(
        event(events_pb2.CertificateIssued(organization_id=HOSPITAL, serial_number="01"))
    )
    assert effects.changes == [] and effects.flags == [] and effects.directive is None


def test_an_event_whose_payload_is_not_its_type_is_invalid_input(world: World) -> None:
    wrong = event(events_pb2.KeyRegistered(owner_id=HOSPITAL, entry_id="e-k"))
    wrong.type = "swiftchain.events.v1.AccessDecided"
    with pytest.raises(InvalidInputError, match="AccessDecided"):
        world.book.apply_events([record_anchored("e-1"), wrong])
    # The batch is translated before anything is written.
    assert world.store.items_doc == {}


# --- trails: scope -----------------------------------------------------------------------


def populated() -> World:
    world = World()
    world.book.apply_events(
        [
            patient_registered(PATIENT),
            record_anchored("a-rec", when=NOW),
            access_decided("a-acc", when=NOW + timedelta(seconds=1), directive=("d-1", 1)),
            record_anchored("b-rec", organization=OTHER_HOSPITAL, when=NOW + timedelta(seconds=2)),
            access_decided("bob-acc", patient=OTHER_PATIENT, when=NOW + timedelta(seconds=3)),
            consent_granted("a-con", grantee=OTHER_HOSPITAL, when=NOW + timedelta(seconds=4)),
        ]
    )
    return world


def test_a_patient_sees_only_their_own_trail() -> None:
    world = populated()
    page = world.book.trail(as_patient(PATIENT), TrailFilterSpec(), "", 100)
    assert ids(page.items) == ["a-rec", "a-acc", "b-rec", "a-con"]
    # A record names the patient only by tag; the book fills in who it is for them.
    assert {item.patient_subject_id for item in page.items} == {PATIENT}
    same = world.book.trail(
        as_patient(PATIENT), TrailFilterSpec(patient_subject_id=PATIENT), "", 100
    )
    assert ids(same.items) == ids(page.items)
    bob = world.book.trail(as_patient(OTHER_PATIENT), TrailFilterSpec(), "", 100)
    assert ids(bob.items) == ["bob-acc"]


def test_a_patient_asking_for_another_trail_is_denied() -> None:
    world = populated()
    with pytest.raises(PermissionDeniedError) as raised:
        world.book.trail(
            as_patient(OTHER_PATIENT), TrailFilterSpec(patient_subject_id=PATIENT), "", 100
        )
    assert status_code_for(raised.value) == grpc.StatusCode.PERMISSION_DENIED


def test_a_hospital_sees_only_its_own_organization() -> None:
    world = populated()
    a = world.book.trail(as_hospital(HOSPITAL), TrailFilterSpec(), "", 100)
    assert ids(a.items) == ["a-rec", "a-acc", "bob-acc"]
    assert all(HOSPITAL in item.organizations for item in a.items)
    # Without asking for a patient, the hospital is not told whom its items are about.
    assert {item.patient_subject_id for item in a.items} == {""}
    # The consent granted to hospital-b concerns it.
    b = world.book.trail(as_hospital(OTHER_HOSPITAL), TrailFilterSpec(), "", 100)
    assert ids(b.items) == ["b-rec", "a-con"]
    with pytest.raises(PermissionDeniedError) as raised:
        world.book.trail(
            as_hospital(HOSPITAL), TrailFilterSpec(organization_id=OTHER_HOSPITAL), "", 1
        )
    assert status_code_for(raised.value) == grpc.StatusCode.PERMISSION_DENIED


def test_a_hospital_may_narrow_to_a_patient_within_its_own_items() -> None:
    world = populated()
    page = world.book.trail(
        as_hospital(HOSPITAL), TrailFilterSpec(patient_subject_id=PATIENT), "", 100
    )
    assert ids(page.items) == ["a-rec", "a-acc"]
    assert {item.patient_subject_id for item in page.items} == {PATIENT}


def test_a_regulator_sees_everything_and_may_filter() -> None:
    world = populated()
    page = world.book.trail(REGULATOR, TrailFilterSpec(), "", 100)
    assert ids(page.items) == ["a-rec", "a-acc", "b-rec", "bob-acc", "a-con"]
    assert not page.more
    by_org = world.book.trail(REGULATOR, TrailFilterSpec(organization_id=OTHER_HOSPITAL), "", 100)
    assert ids(by_org.items) == ["b-rec", "a-con"]
    by_kind = world.book.trail(REGULATOR, TrailFilterSpec(kinds=(KIND_ACCESS,)), "", 100)
    assert ids(by_kind.items) == ["a-acc", "bob-acc"]
    by_time = world.book.trail(
        REGULATOR,
        TrailFilterSpec(start_time=NOW + timedelta(seconds=1), end_time=NOW + timedelta(seconds=3)),
        "",
        100,
    )
    assert ids(by_time.items) == ["a-acc", "b-rec"]  # start inclusive, end exclusive


@pytest.mark.parametrize(
    "role", [Role.ADMIN, Role.APP, Role.SERVICE, Role.CHAIN_NODE, Role.ANONYMOUS]
)
def test_other_roles_may_not_read_trails(role: Role) -> None:
    world = populated()
    with pytest.raises(PermissionDeniedError):
        world.book.trail(Caller(role, "someone"), TrailFilterSpec(), "", 100)


def test_an_empty_or_inverted_time_range_is_invalid() -> None:
    world = populated()
    with pytest.raises(InvalidInputError) as raised:
        world.book.trail(REGULATOR, TrailFilterSpec(start_time=NOW, end_time=NOW), "", 10)
    assert status_code_for(raised.value) == grpc.StatusCode.INVALID_ARGUMENT


# --- trails: pages -----------------------------------------------------------------------


def test_pages_cover_the_trail_once_in_order() -> None:
    world = World()
    world.book.apply_events(
        [access_decided(f"e-{n}", when=NOW + timedelta(seconds=n)) for n in range(5)]
    )
    first = world.book.trail(REGULATOR, TrailFilterSpec(), "", 2)
    second = world.book.trail(REGULATOR, TrailFilterSpec(), first.next_page_token, 2)
    last = world.book.trail(REGULATOR, TrailFilterSpec(), second.next_page_token, 2)
    assert (ids(first.items), first.more) == (["e-0", "e-1"], True)
    assert (ids(second.items), second.more) == (["e-2", "e-3"], True)
    assert (ids(last.items), last.more, last.next_page_token) == (["e-4"], False, "")
    # A page that ends exactly at the last item says nothing more follows.
    exact = world.book.trail(REGULATOR, TrailFilterSpec(), "", 5)
    assert (len(exact.items), exact.more) == (5, False)


def test_items_at_the_same_time_are_ordered_by_entry_id_sealed_or_not() -> None:
    world = World()
    world.book.apply_events([access_decided(e, when=NOW) for e in ("z", "y", "x")])
    first = world.book.trail(REGULATOR, TrailFilterSpec(), "", 2)
    assert ids(first.items) == ["x", "y"]
    # Sealing gives an item a leaf index; its place in the order stays where it was.
    world.book.index_leaves(
        [
            LogLeaf("z", 3, KIND_ACCESS, HOSPITAL, tag(PATIENT), NOW, 5),
            LogLeaf("x", 4, KIND_ACCESS, HOSPITAL, tag(PATIENT), NOW, 5),
        ],
        5,
    )
    rest = world.book.trail(REGULATOR, TrailFilterSpec(), first.next_page_token, 2)
    assert (ids(rest.items), rest.more) == (["z"], False)
    assert ids(world.book.trail(REGULATOR, TrailFilterSpec(), "", 10).items) == ["x", "y", "z"]


def all_pages(
    world: World, spec: TrailFilterSpec, size: int, between: list[list[str]]
) -> list[str]:
    """Every page of a regulator's trail; before the page after the n-th, the events of
    ``between[n]`` (ACCESS decisions ``"<id>@<second>"``) are applied."""
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = world.book.trail(REGULATOR, spec, token, size)
        seen += ids(page.items)
        if not page.more:
            return seen
        for entry in between[pages] if pages < len(between) else []:
            entry_id, second = entry.split("@")
            when = NOW + timedelta(seconds=int(second))
            world.book.apply_events([access_decided(entry_id, when=when)])
        token = page.next_page_token
        pages += 1


def test_items_inserted_while_paging_shift_nothing_and_each_comes_once() -> None:
    world = World()
    world.book.apply_events(
        [access_decided(f"e-{n:02}", when=NOW + timedelta(seconds=n)) for n in range(0, 20, 2)]
    )
    seen = all_pages(
        world,
        TrailFilterSpec(),
        3,
        [
            # After e-00, e-02, e-04: one before the page's end (an offset would repeat e-04),
            # one at the same time as its last item but after it by id, one ahead.
            ["ins-a@1", "e-04b@4", "ins-b@11"],
            # After e-04b, e-06, e-08: one far ahead, one at the very end, one behind.
            ["ins-c@15", "ins-d@30", "ins-e@0"],
        ],
    )
    assert len(seen) == len(set(seen))
    behind = {"ins-a", "ins-e"}  # inserted before the page already read: not repeated
    everything = ids(world.book.trail(REGULATOR, TrailFilterSpec(), "", 100).items)
    assert seen == [entry for entry in everything if entry not in behind]
    assert {"e-04b", "ins-b", "ins-c", "ins-d"} <= set(seen)
    assert {f"e-{n:02}" for n in range(0, 20, 2)} <= set(seen)


def test_a_page_token_with_another_filter_or_not_ours_is_invalid_argument() -> None:
    world = populated()
    accesses = TrailFilterSpec(kinds=(KIND_ACCESS,))
    token = world.book.trail(REGULATOR, accesses, "", 1).next_page_token
    assert token
    assert ids(world.book.trail(REGULATOR, accesses, token, 1).items) == ["bob-acc"]
    refused = [
        (REGULATOR, TrailFilterSpec(), token),
        (REGULATOR, TrailFilterSpec(kinds=(KIND_RECORD,)), token),
        # The same filter scoped to another caller pages another listing.
        (as_hospital(HOSPITAL), accesses, token),
        (REGULATOR, accesses, "not-a-token"),
    ]
    for caller, spec, bad in refused:
        with pytest.raises(InvalidInputError) as raised:
            world.book.trail(caller, spec, bad, 1)
        assert status_code_for(raised.value) == grpc.StatusCode.INVALID_ARGUMENT
    # A position of the right length but not a (time, id) is not one of ours either.
    with pytest.raises(InvalidInputError):
        read_cursor(("2026-12-03", "e-1"))
    with pytest.raises(InvalidInputError):
        read_cursor((10**30, "e-1"))


# --- evidence ----------------------------------------------------------------------------


def test_export_proves_the_sealed_entries_and_lists_the_others(world: World) -> None:
    world.book.apply_events(
        [
            record_anchored("e-sealed"),
            record_anchored("e-late", record_id="r-2"),
            record_anchored("e-bad", record_id="r-3"),
            record_rejected("e-bad", "bad signature"),
        ]
    )
    world.seal([("e-sealed", tag(PATIENT), KIND_RECORD)], 1)
    exported = world.book.export(REGULATOR, TrailFilterSpec(), [], "old note")
    assert exported.entry_count == 1
    assert exported.unsealed_entry_ids == ["e-late"]
    assert exported.rejected_entry_ids == ["e-bad"]
    assert world.reader.evidence_asked == [([("e-sealed", 0)], "old note")]
    assert "e-sealed" in exported.bundle_json


def test_export_of_named_entries_requires_that_the_caller_sees_each(world: World) -> None:
    world.book.apply_events([access_decided("mine"), access_decided("bobs", patient=OTHER_PATIENT)])
    world.seal([("mine", tag(PATIENT), KIND_ACCESS), ("bobs", tag(OTHER_PATIENT), KIND_ACCESS)], 2)
    mine = world.book.export(as_patient(PATIENT), None, ["mine"], "")
    assert mine.entry_count == 1
    with pytest.raises(NotFoundError, match="bobs"):
        world.book.export(as_patient(PATIENT), None, ["mine", "bobs"], "")
    with pytest.raises(InvalidInputError):
        world.book.export(REGULATOR, None, [], "")


# --- completeness ------------------------------------------------------------------------


def test_a_patient_whose_trail_matches_the_log_is_complete(world: World) -> None:
    world.book.apply_events([record_anchored("e-1"), access_decided("e-2")])
    world.seal([("e-1", tag(PATIENT), KIND_RECORD), ("e-2", tag(PATIENT), KIND_ACCESS)], 2)
    result = world.book.completeness(PATIENT, NOW + timedelta(minutes=6))
    assert result.complete
    assert result.checked_tree_size == 2
    assert world.all_flags() == []


def test_a_patients_device_key_entries_are_no_missing_trail_items(world: World) -> None:
    # A patient's device keys are KEY entries under its tag on the log, with no trail item.
    world.book.apply_events([record_anchored("e-1")])
    world.seal([("e-1", tag(PATIENT), KIND_RECORD), ("k-phone", tag(PATIENT), KIND_KEY)], 2)
    result = world.book.completeness(PATIENT, NOW + timedelta(minutes=6))
    assert result.complete, result


def test_completeness_reports_what_each_side_lacks(world: World) -> None:
    old = NOW - timedelta(minutes=10)
    world.book.apply_events(
        [
            record_anchored("e-both", when=old),
            record_anchored("e-only-model", record_id="r-2", when=old),
            record_anchored("e-recent", record_id="r-3", when=NOW + timedelta(minutes=5)),
            access_decided("e-bob", patient=OTHER_PATIENT, when=old),
        ]
    )
    world.seal(
        [
            ("e-both", tag(PATIENT), KIND_RECORD),
            ("e-only-log", tag(PATIENT), KIND_ACCESS),
            ("e-bob-only-log", tag(OTHER_PATIENT), KIND_ACCESS),
        ],
        3,
    )
    # A leaf beyond the node's sealed view is not counted yet.
    world.store.put_leaves([LogLeaf("e-future", 3, KIND_ACCESS, HOSPITAL, tag(PATIENT), NOW, 4)])

    result = world.book.completeness(PATIENT, NOW + timedelta(minutes=6))

    assert result.missing_in_read_model == ["e-only-log"]
    # e-recent is younger than the grace before the checkpoint's cut time: not due yet.
    assert result.missing_in_log == ["e-only-model"]
    assert not result.complete
    (flag,) = world.all_flags()
    assert flag.kind == apb.FLAG_KIND_INCOMPLETE_TRAIL
    assert flag.patient_subject_id == PATIENT
    assert set(flag.entry_ids) == {"e-only-log", "e-only-model"}
    # Checking again finds the same gaps and raises no second flag.
    world.book.completeness(PATIENT, NOW + timedelta(minutes=7))
    assert len(world.all_flags()) == 1


def test_a_rejected_item_is_missing_from_the_log(world: World) -> None:
    world.book.apply_events([record_anchored("e-1"), record_rejected("e-1", "stale key")])
    world.seal([], 0)
    result = world.book.completeness(PATIENT, NOW)
    assert result.missing_in_log == ["e-1"]


def test_completeness_needs_a_patient(world: World) -> None:
    with pytest.raises(InvalidInputError) as raised:
        world.book.completeness("", NOW)
    assert status_code_for(raised.value) == grpc.StatusCode.INVALID_ARGUMENT


# --- flags -------------------------------------------------------------------------------


def test_break_glass_raises_a_flag_on_its_item(world: World) -> None:
    world.book.apply_events([access_decided("e-bg", break_glass=True)])
    (flag,) = world.all_flags()
    assert flag.kind == apb.FLAG_KIND_BREAK_GLASS
    assert flag.status == apb.FLAG_STATUS_OPEN
    assert flag.organization_id == HOSPITAL
    assert flag.patient_subject_id == PATIENT
    assert flag.entry_ids == ("e-bg",)
    assert flag.flag_id == flag_id("break-glass", "e-bg")
    assert world.item("e-bg").flag_ids == (flag.flag_id,)
    # Break-glass has its own flag: no consent check follows.
    assert world.book.check_consents(NOW + timedelta(hours=1)) == 0


def test_a_permitted_access_raises_no_flag(world: World) -> None:
    world.book.apply_events([access_decided("e-1")])
    assert world.all_flags() == []


def deny(
    n: int, organization: str = HOSPITAL, step: timedelta = timedelta(seconds=5)
) -> events_pb2.EventEnvelope:
    return access_decided(
        f"{organization}-deny-{n}", decision=DENY, organization=organization, when=NOW + step * n
    )


def test_a_burst_of_denials_raises_one_flag_that_grows(world: World) -> None:
    count = AuditPolicy().denial_burst_count
    world.book.apply_events([deny(n) for n in range(count - 1)])
    world.book.apply_events([deny(0, OTHER_HOSPITAL)])
    assert world.all_flags() == []

    world.book.apply_events([deny(count - 1)])
    (flag,) = world.all_flags()
    assert flag.kind == apb.FLAG_KIND_DENIAL_BURST
    assert flag.organization_id == HOSPITAL
    assert flag.entry_ids == tuple(f"{HOSPITAL}-deny-{n}" for n in range(count))

    world.book.apply_events([deny(count)])
    (grown,) = world.all_flags()
    assert grown.flag_id == flag.flag_id
    assert grown.entry_ids == (*flag.entry_ids, f"{HOSPITAL}-deny-{count}")


def test_a_burst_longer_than_the_window_stays_one_flag_until_it_pauses(world: World) -> None:
    window = AuditPolicy().denial_burst_window
    # One denial every 5 s for three windows: one burst, one flag.
    steady = [deny(n) for n in range(int(3 * window / timedelta(seconds=5)))]
    world.book.apply_events(steady)
    (flag,) = world.all_flags()
    assert len(flag.entry_ids) == len(steady)

    # After a pause longer than the window, a new burst is a new flag.
    later = NOW + timedelta(seconds=5) * len(steady) + window * 2
    again = [
        access_decided(f"again-{n}", decision=DENY, when=later + timedelta(seconds=n))
        for n in range(AuditPolicy().denial_burst_count)
    ]
    world.book.apply_events(again)
    flags = world.all_flags()
    assert len(flags) == 2
    assert flags[0].entry_ids == tuple(f"again-{n}" for n in range(len(again)))


def test_denials_spread_wider_than_the_window_are_no_burst(world: World) -> None:
    policy = AuditPolicy()
    step = policy.denial_burst_window / (policy.denial_burst_count - 1) + timedelta(seconds=1)
    world.book.apply_events([deny(n, step=step) for n in range(policy.denial_burst_count * 2)])
    assert world.all_flags() == []


def test_a_permit_naming_no_known_consent_is_flagged_after_the_grace(world: World) -> None:
    world.book.apply_events([access_decided("e-1", directive=("d-9", 2))])
    assert world.book.check_consents(NOW + GRACE - timedelta(seconds=1)) == 0
    assert world.all_flags() == []
    assert world.book.check_consents(NOW + GRACE) == 1
    (flag,) = world.all_flags()
    assert flag.kind == apb.FLAG_KIND_ACCESS_WITHOUT_CONSENT
    assert flag.entry_ids == ("e-1",)
    assert flag.organization_id == HOSPITAL
    assert flag.patient_subject_id == PATIENT
    assert "d-9" in flag.summary
    # Checked once: a later check does not look again.
    assert world.book.check_consents(NOW + GRACE * 10) == 0


def test_a_permit_backed_by_an_active_consent_to_the_requester_is_not_flagged(
    world: World,
) -> None:
    # The consent event arrives after the access (another topic): the grace covers it.
    world.book.apply_events([access_decided("e-1", directive=("d-1", 1))])
    world.book.apply_events([consent_granted("e-c", directive_id="d-1", version=1)])
    assert world.book.check_consents(NOW + GRACE) == 0
    assert world.all_flags() == []


@pytest.mark.parametrize(
    ("consent", "why"),
    [
        (
            consent_granted("e-c", directive_id="d-1", version=1, grantee=OTHER_HOSPITAL),
            "grants to",
        ),
        (consent_revoked("e-c", directive_id="d-1", version=1), "not active"),
    ],
)
def test_a_permit_whose_consent_does_not_permit_the_requester_is_flagged(
    world: World, consent: events_pb2.EventEnvelope, why: str
) -> None:
    world.book.apply_events([consent, access_decided("e-1", directive=("d-1", 1))])
    assert world.book.check_consents(NOW + GRACE) == 1
    (flag,) = world.all_flags()
    assert flag.kind == apb.FLAG_KIND_ACCESS_WITHOUT_CONSENT
    assert why in flag.summary


def test_a_record_anchored_after_a_denial_is_flagged(world: World) -> None:
    world.book.apply_events(
        [
            access_decided("e-deny", decision=DENY),
            record_anchored("e-rec", when=NOW + timedelta(seconds=1)),
            # Another hospital was not denied: its record is fine.
            record_anchored("e-ok", organization=OTHER_HOSPITAL, when=NOW + timedelta(seconds=1)),
        ]
    )
    assert world.book.check_consents(NOW + timedelta(minutes=1)) == 1
    (flag,) = world.all_flags()
    assert flag.kind == apb.FLAG_KIND_ACCESS_WITHOUT_CONSENT
    assert flag.entry_ids == ("e-rec",)


@pytest.mark.parametrize("later", [PERMIT, DENY])
def test_a_record_after_a_denial_is_flagged_whatever_came_after_it(
    world: World, later: int
) -> None:
    # The decision that counts is the latest one before the record, not the latest one the
    # book has seen when the check runs (a grace period later).
    world.book.apply_events(
        [
            access_decided("e-deny", decision=DENY),
            record_anchored("e-rec", when=NOW + timedelta(seconds=1)),
            access_decided(
                "e-later", decision=later, when=NOW + timedelta(seconds=2), directive=("d-1", 1)
            ),
            consent_granted("e-c", directive_id="d-1", version=1),
        ]
    )
    world.book.check_consents(NOW + timedelta(minutes=1))
    flagged = {
        e
        for f in world.all_flags()
        if f.kind == apb.FLAG_KIND_ACCESS_WITHOUT_CONSENT
        for e in f.entry_ids
    }
    assert "e-rec" in flagged


def test_replayed_decisions_do_not_push_out_the_one_before_a_record(world: World) -> None:
    permit = access_decided("e-permit", when=NOW + timedelta(seconds=2), directive=("d-1", 1))
    world.book.apply_events(
        [
            access_decided("e-deny", decision=DENY),
            record_anchored("e-rec", when=NOW + timedelta(seconds=1)),
            consent_granted("e-c", directive_id="d-1", version=1),
        ]
    )
    for _ in range(DECISIONS_KEPT + 1):
        world.book.apply_events([permit])
    world.book.check_consents(NOW + timedelta(minutes=1))
    (flag,) = world.all_flags()
    assert flag.entry_ids == ("e-rec",)


def test_a_restarted_book_judges_a_record_by_the_decision_before_it(world: World) -> None:
    world.book.apply_events(
        [
            access_decided("e-deny", decision=DENY),
            record_anchored("e-rec", when=NOW + timedelta(seconds=1)),
            access_decided("e-permit", when=NOW + timedelta(seconds=2), directive=("d-1", 1)),
            consent_granted("e-c", directive_id="d-1", version=1),
        ]
    )
    restarted = AuditBook(world.store, TAG_KEY)
    restarted.load(NOW + timedelta(seconds=5))
    restarted.check_consents(NOW + timedelta(minutes=1))
    (flag,) = world.all_flags()
    assert flag.entry_ids == ("e-rec",)


def test_a_record_anchored_after_a_permit_is_not_flagged(world: World) -> None:
    world.book.apply_events(
        [
            access_decided("e-deny", decision=DENY),
            access_decided("e-permit", decision=PERMIT, when=NOW + timedelta(seconds=1)),
            consent_granted("e-c", directive_id="d-1", version=1),
        ]
    )
    world.book.apply_events(
        [
            access_decided("e-permit-2", when=NOW + timedelta(seconds=2), directive=("d-1", 1)),
            record_anchored("e-rec", when=NOW + timedelta(seconds=3)),
        ]
    )
    world.book.check_consents(NOW + timedelta(minutes=1))
    flagged = {e for f in world.all_flags() for e in f.entry_ids}
    assert "e-rec" not in flagged
    assert "e-permit-2" not in flagged


def test_a_restarted_book_still_checks_what_was_due(world: World) -> None:
    world.book.apply_events([access_decided("e-1", directive=("d-9", 1))])
    restarted = AuditBook(world.store, TAG_KEY)
    restarted.load(NOW)
    assert restarted.check_consents(NOW + GRACE) == 1
    assert [f.kind for f in world.all_flags()] == [apb.FLAG_KIND_ACCESS_WITHOUT_CONSENT]


def test_a_missed_seal_deadline_raises_a_flag_once(world: World) -> None:
    missed = event(
        events_pb2.SealDeadlineMissed(
            organization_id=HOSPITAL, record_id="r-1", version=1, entry_id="e-1"
        ),
        when=NOW + timedelta(minutes=2),
    )
    world.book.apply_events([record_anchored("e-1"), missed])
    world.book.apply_events([missed])
    (flag,) = world.all_flags()
    assert flag.kind == apb.FLAG_KIND_SEAL_DEADLINE_MISSED
    assert (flag.organization_id, flag.entry_ids) == (HOSPITAL, ("e-1",))
    assert world.item("e-1").flag_ids == (flag.flag_id,)


def test_a_cosignature_alarm_raises_a_flag_once(world: World) -> None:
    for _ in range(2):
        world.book.on_alarm("node-1", "alarm-7", "member-b", 40, "two roots", NOW)
    world.book.on_alarm("node-2", "alarm-7", "member-b", 40, "two roots", NOW)
    flags = world.all_flags()
    assert [f.kind for f in flags] == [apb.FLAG_KIND_COSIGNATURE_CONFLICT] * 2
    assert {f.organization_id for f in flags} == {"member-b"}
    assert all("two roots" in f.summary for f in flags)


def raise_break_glass(world: World) -> FlagRecord:
    world.book.apply_events([access_decided("e-bg", break_glass=True)])
    (flag,) = world.all_flags()
    return flag


def test_a_review_records_the_outcome_and_the_note(world: World) -> None:
    flag = raise_break_glass(world)
    later = NOW + timedelta(hours=1)
    reviewed = world.book.review(
        REGULATOR, flag.flag_id, apb.REVIEW_OUTCOME_JUSTIFIED, "ER admission", later
    )
    assert reviewed.status == apb.FLAG_STATUS_REVIEWED
    assert reviewed.review is not None
    assert reviewed.review.outcome == apb.REVIEW_OUTCOME_JUSTIFIED
    assert reviewed.review.note == "ER admission"
    assert reviewed.review.reviewer_id == REGULATOR.id
    assert reviewed.review.review_time == later
    assert world.store.flag(flag.flag_id) == reviewed
    open_flags, _ = world.book.flags(FlagQuery(status=apb.FLAG_STATUS_OPEN), "", 10)
    assert open_flags == []


def test_a_later_review_replaces_the_earlier_one(world: World) -> None:
    flag = raise_break_glass(world)
    world.book.review(REGULATOR, flag.flag_id, apb.REVIEW_OUTCOME_JUSTIFIED, "first look", NOW)
    second = Caller(Role.REGULATOR, "regulator-2")
    reviewed = world.book.review(
        second, flag.flag_id, apb.REVIEW_OUTCOME_ESCALATED, "needs a second look", NOW
    )
    assert reviewed.review is not None
    assert (reviewed.review.reviewer_id, reviewed.review.outcome, reviewed.review.note) == (
        "regulator-2",
        apb.REVIEW_OUTCOME_ESCALATED,
        "needs a second look",
    )
    assert [r.note for r in world.store.flag_history[flag.flag_id]] == [
        "first look",
        "needs a second look",
    ]


def test_reviewing_an_unknown_flag_is_not_found(world: World) -> None:
    raise_break_glass(world)
    with pytest.raises(NotFoundError) as raised:
        world.book.review(
            REGULATOR, str(uuid.uuid4()), apb.REVIEW_OUTCOME_JUSTIFIED, "checked", NOW
        )
    assert status_code_for(raised.value) == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("outcome", "note"),
    [
        (apb.REVIEW_OUTCOME_UNSPECIFIED, "checked"),
        (99, "checked"),
        (apb.REVIEW_OUTCOME_JUSTIFIED, ""),
        (apb.REVIEW_OUTCOME_JUSTIFIED, "   "),
        (apb.REVIEW_OUTCOME_JUSTIFIED, "x" * 4001),
    ],
)
def test_a_review_without_outcome_or_note_is_invalid(world: World, outcome: int, note: str) -> None:
    flag = raise_break_glass(world)
    with pytest.raises(InvalidInputError) as raised:
        world.book.review(REGULATOR, flag.flag_id, outcome, note, NOW)
    assert status_code_for(raised.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert world.store.flag(flag.flag_id) == flag


def test_only_a_regulator_reviews_flags(world: World) -> None:
    flag = raise_break_glass(world)
    with pytest.raises(PermissionDeniedError):
        world.book.review(
            as_hospital(HOSPITAL), flag.flag_id, apb.REVIEW_OUTCOME_JUSTIFIED, "it was us", NOW
        )
    assert world.store.flag(flag.flag_id) == flag


def test_flags_are_listed_newest_first_and_paged(world: World) -> None:
    world.book.apply_events(
        [
            access_decided(f"e-{n}", break_glass=True, when=NOW + timedelta(seconds=n))
            for n in range(3)
        ]
    )
    first, token = world.book.flags(FlagQuery(), "", 2)
    rest, after_rest = world.book.flags(FlagQuery(), token, 2)
    assert [f.entry_ids for f in first + rest] == [("e-2",), ("e-1",), ("e-0",)]
    assert bool(token) and after_rest == ""
    kinds, _ = world.book.flags(FlagQuery(kinds=(apb.FLAG_KIND_DENIAL_BURST,)), "", 10)
    assert kinds == []


def test_flags_raised_while_paging_shift_nothing_and_each_comes_once(world: World) -> None:
    def break_glass(entry_id: str, second: int) -> None:
        world.book.apply_events(
            [access_decided(entry_id, break_glass=True, when=NOW + timedelta(seconds=second))]
        )

    for n in range(0, 10, 2):
        break_glass(f"e-{n}", n)
    first, token = world.book.flags(FlagQuery(), "", 2)  # e-8, e-6
    break_glass("newer", 20)  # before the page already read, newest first: not repeated
    break_glass("older", 3)  # ahead: comes once
    seen = [f.entry_ids[0] for f in first]
    while token:
        page, token = world.book.flags(FlagQuery(), token, 2)
        seen += [f.entry_ids[0] for f in page]
    assert seen == ["e-8", "e-6", "e-4", "older", "e-2", "e-0"]


def test_a_flag_page_token_with_another_filter_is_invalid_argument(world: World) -> None:
    world.book.apply_events(
        [
            access_decided(f"e-{n}", break_glass=True, when=NOW + timedelta(seconds=n))
            for n in (1, 2)
        ]
    )
    _, token = world.book.flags(FlagQuery(status=apb.FLAG_STATUS_OPEN), "", 1)
    assert token
    with pytest.raises(InvalidInputError) as raised:
        world.book.flags(FlagQuery(), token, 1)
    assert status_code_for(raised.value) == grpc.StatusCode.INVALID_ARGUMENT
    trail_token = world.book.trail(REGULATOR, TrailFilterSpec(), "", 1).next_page_token
    with pytest.raises(InvalidInputError):
        world.book.flags(FlagQuery(), trail_token, 1)


def test_timestamps_are_kept_as_given(world: World) -> None:
    when = datetime(2026, 12, 3, 12, 0, 0, 123456, tzinfo=NOW.tzinfo)
    world.book.apply_events([access_decided("e-1", when=when)])
    assert world.item("e-1").time == when
