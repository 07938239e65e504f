"""The consent domain (services/consent/domain/, ConsentBook) with an in-memory store, a
directory fed with identity events, and a sender and notification sink that only record.

Covers grant, amend and revoke with their versions (stale -> ABORTED), signatures, delegation
within and after its expiry, and that decisions are recorded, deduplicated by request id and
handed to the sender with their ACCESS entry and events.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import Message

from chain.entry import EntrySigner, read_body
from chain.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    StaleVersionError,
)
from cli.identity_files import raw_public
from sdk.consent import DENY, MANAGE_CONSENT, PERMIT, VIEW, PatientDevice, organization, provision
from services.consent.domain import (
    ACCESS_TOPIC,
    CONSENT_TOPIC,
    AcceptedVersion,
    ConsentBook,
    Directory,
    Outgoing,
    StoredDecision,
)
from services.platform.caller import Caller, Role
from services.platform.consortium_files import CONSENT_KEY_ID
from services.platform.errors import status_code_for
from services.platform.events import envelope
from services.platform.paging import filter_key, page_token
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2
from swiftchain.consent.v1 import consent_service_pb2 as pb
from swiftchain.consent.v1 import directive_pb2
from swiftchain.events.v1 import events_pb2

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
TAG_KEY = bytes(range(32))
HOSPITAL = "hospital-a"
OTHER_HOSPITAL = "hospital-b"
PRACTITIONER = "pr-" + "1".ljust(22, "0")
PATIENT = "pt-" + "patient".ljust(22, "0")
CARER = "pt-" + "carer".ljust(22, "0")
STRANGER = "pt-" + "stranger".ljust(22, "0")


class FakeStore:
    """The ConsentStore protocol in memory, with the same conflict rules as the real one."""

    def __init__(self) -> None:
        self.versions: dict[tuple[str, int], AcceptedVersion] = {}
        self.decisions: dict[str, StoredDecision] = {}
        #: Set to make the next add_version lose to a concurrent writer.
        self.concurrent_writer = False

    def load_versions(self) -> list[AcceptedVersion]:
        return [copy.copy(v) for _, v in sorted(self.versions.items())]

    def add_version(self, version: AcceptedVersion) -> None:
        key = (version.document_id, version.version)
        if self.concurrent_writer or key in self.versions:
            self.concurrent_writer = False
            raise StaleVersionError(f"version {version.version} was stored by another request")
        self.versions[key] = copy.copy(version)

    def add_decision(self, decision: StoredDecision) -> StoredDecision:
        return self.decisions.setdefault(decision.key, decision)


class Sink:
    """Records notifications."""

    def __init__(self) -> None:
        self.notifications: list[pb.Notification] = []

    def publish(self, notification: pb.Notification) -> None:
        self.notifications.append(notification)


def device(subject: str) -> PatientDevice:
    return PatientDevice(subject, f"dk-{subject}", Ed25519PrivateKey.generate())


def identity_event(payload: Message) -> events_pb2.EventEnvelope:
    return envelope(payload, producer="identity", subject="", now=NOW)


class World:
    """A book with a hospital, a practitioner, a patient, a carer and a stranger."""

    def __init__(self) -> None:
        self.store = FakeStore()
        self.directory = Directory()
        self.sent: list[Outgoing] = []
        self.sink = Sink()
        self.patient, self.carer, self.stranger = device(PATIENT), device(CARER), device(STRANGER)
        for organization_id in (HOSPITAL, OTHER_HOSPITAL):
            self.directory.apply(
                identity_event(
                    events_pb2.OrganizationRegistered(
                        organization_id=organization_id,
                        role=common_pb2.ORGANIZATION_ROLE_HOSPITAL,
                    )
                )
            )
        self.directory.apply(
            identity_event(
                events_pb2.PractitionerRegistered(
                    practitioner_id=PRACTITIONER, organization_id=HOSPITAL
                )
            )
        )
        for person in (self.patient, self.carer, self.stranger):
            self.directory.apply(
                identity_event(
                    events_pb2.PatientDeviceAdded(
                        subject_id=person.subject_id,
                        key_id=person.key_id,
                        public_key=raw_public(person.key),
                    )
                )
            )
        self.book = self.new_book()

    def new_book(self) -> ConsentBook:
        return ConsentBook(
            self.store,
            self.directory,
            EntrySigner(CONSENT_KEY_ID, Ed25519PrivateKey.generate()),
            TAG_KEY,
            send=self.sent.append,
            notify=self.sink,
            key_grace_seconds=0.0,
        )

    def grant(
        self,
        rule: directive_pb2.Provision | None = None,
        *,
        grantee: str = HOSPITAL,
        now: datetime = NOW,
    ) -> AcceptedVersion:
        directive = self.patient.directive(
            grantee=organization(grantee), provision=rule or provision(PERMIT), now=now
        )
        return self.book.accept_directive(
            as_patient(PATIENT),
            self.patient.sign_directive(directive),
            revoke=False,
            first=True,
            now=now,
        )

    def change(
        self,
        current: AcceptedVersion,
        *,
        rule: directive_pb2.Provision | None = None,
        revoke: bool = False,
        version: int | None = None,
        now: datetime = NOW,
    ) -> AcceptedVersion:
        directive = directive_pb2.ConsentDirective()
        directive.CopyFrom(current.directive)
        directive.version = version or current.version + 1
        directive.status = (
            entry_pb2.DIRECTIVE_STATUS_REVOKED if revoke else entry_pb2.DIRECTIVE_STATUS_ACTIVE
        )
        if rule is not None:
            directive.provision.CopyFrom(rule)
        return self.book.accept_directive(
            as_patient(PATIENT),
            self.patient.sign_directive(directive),
            revoke=revoke,
            first=False,
            now=now,
        )

    def delegate(
        self, scopes: list[directive_pb2.DelegationScope.ValueType], expire: datetime
    ) -> AcceptedVersion:
        delegation = self.patient.delegation(CARER, scopes=scopes, expire=expire)
        delegation.issue_time.FromDatetime(NOW)
        return self.book.accept_delegation(
            as_patient(PATIENT), self.patient.sign_delegation(delegation), remove=False, now=NOW
        )

    def check(
        self,
        *,
        caller: str = HOSPITAL,
        category: str = "laboratory",
        purpose: str = "TREAT",
        request_id: str = "",
        now: datetime = NOW,
    ) -> StoredDecision:
        return self.book.check_access(
            as_hospital(caller), PATIENT, category, purpose, "", request_id, now
        )


def as_patient(subject: str) -> Caller:
    return Caller(Role.PATIENT, subject)


def as_hospital(organization_id: str) -> Caller:
    return Caller(Role.HOSPITAL, organization_id)


def body(item: Outgoing) -> entry_pb2.EntryBody:
    return read_body(item.entry)


def payload_type(item: Outgoing) -> list[tuple[str, str]]:
    return [(topic, event.type) for topic, event in item.events]


@pytest.fixture
def world() -> World:
    return World()


# --- grant, amend, revoke ------------------------------------------------------------------


def test_a_grant_is_version_one_stored_sent_as_a_consent_entry_and_notified(world: World) -> None:
    granted = world.grant()
    assert granted.version == 1 and granted.signer_subject_id == PATIENT
    assert world.store.versions[(granted.document_id, 1)].entry_id == granted.entry_id
    [item] = world.sent
    entry = body(item)
    assert entry.kind == common_pb2.ENTRY_KIND_CONSENT
    assert (entry.consent.directive_id, entry.consent.version) == (granted.document_id, 1)
    assert entry.entry_id == granted.entry_id and not entry.references
    assert payload_type(item) == [(CONSENT_TOPIC, "swiftchain.events.v1.ConsentGranted")]
    [note] = world.sink.notifications
    assert note.kind == pb.NOTIFICATION_KIND_CONSENT_CHANGED and note.directive_version == 1


def test_an_amendment_is_the_next_version_and_refers_to_the_previous_entry(world: World) -> None:
    granted = world.grant()
    amended = world.change(granted, rule=provision(PERMIT, purposes=["HRESCH"]))
    assert amended.version == 2
    entry = body(world.sent[-1])
    assert [(r.kind, r.entry_id) for r in entry.references] == [
        (entry_pb2.REFERENCE_KIND_PREVIOUS_VERSION, granted.entry_id)
    ]
    assert payload_type(world.sent[-1]) == [(CONSENT_TOPIC, "swiftchain.events.v1.ConsentAmended")]
    # The amendment decides from now on: research is permitted, treatment no longer is.
    assert world.check(purpose="HRESCH").decision == common_pb2.ACCESS_DECISION_PERMIT
    assert world.check().reason == common_pb2.ACCESS_REASON_NO_CONSENT


def test_after_a_revocation_access_is_denied_as_revoked(world: World) -> None:
    granted = world.grant()
    revoked = world.change(granted, revoke=True)
    assert revoked.status == entry_pb2.DIRECTIVE_STATUS_REVOKED
    assert payload_type(world.sent[-1]) == [(CONSENT_TOPIC, "swiftchain.events.v1.ConsentRevoked")]
    decision = world.check()
    assert decision.decision == common_pb2.ACCESS_DECISION_DENY
    assert decision.reason == common_pb2.ACCESS_REASON_REVOKED
    with pytest.raises(PreconditionError, match="revoked; grant a new directive"):
        world.change(revoked)


def test_a_stale_version_is_aborted_and_changes_nothing(world: World) -> None:
    granted = world.grant()
    world.change(granted, rule=provision(PERMIT, purposes=["HRESCH"]))
    sent = len(world.sent)
    with pytest.raises(StaleVersionError, match="expected version 3") as raised:
        world.change(granted, rule=provision(DENY))  # signed against version 1: it says 2
    assert status_code_for(raised.value) == grpc.StatusCode.ABORTED
    assert len(world.sent) == sent
    assert [v.version for _, v in sorted(world.store.versions.items())] == [1, 2]


def test_a_concurrent_writer_that_won_in_the_store_aborts_the_loser(world: World) -> None:
    granted = world.grant()
    world.store.concurrent_writer = True
    with pytest.raises(StaleVersionError):
        world.change(granted)
    assert len(world.sent) == 1
    # The book did not remember the lost version: the next one is still version 2.
    assert world.change(granted).version == 2


def test_a_resent_version_gets_the_same_answer_and_nothing_new(world: World) -> None:
    directive = world.patient.directive(
        grantee=organization(HOSPITAL), provision=provision(PERMIT), now=NOW
    )
    signed = world.patient.sign_directive(directive)
    caller = as_patient(PATIENT)
    first = world.book.accept_directive(caller, signed, revoke=False, first=True, now=NOW)
    again = world.book.accept_directive(caller, signed, revoke=False, first=True, now=NOW)
    assert again is first and len(world.sent) == 1


def test_grant_rules_first_version_only_once_and_only_version_one(world: World) -> None:
    granted = world.grant()
    directive = granted.directive
    other = directive_pb2.ConsentDirective()
    other.CopyFrom(directive)
    other.provision.CopyFrom(provision(DENY))
    with pytest.raises(AlreadyExistsError):
        world.book.accept_directive(
            as_patient(PATIENT),
            world.patient.sign_directive(other),
            revoke=False,
            first=True,
            now=NOW,
        )
    fresh = world.patient.directive(
        grantee=organization(HOSPITAL), provision=provision(PERMIT), version=2, now=NOW
    )
    with pytest.raises(InvalidInputError, match="expected version 1"):
        world.book.accept_directive(
            as_patient(PATIENT),
            world.patient.sign_directive(fresh),
            revoke=False,
            first=True,
            now=NOW,
        )
    with pytest.raises(NotFoundError, match="grant it first"):
        unknown = world.patient.directive(
            grantee=organization(HOSPITAL), provision=provision(PERMIT), version=2, now=NOW
        )
        world.book.accept_directive(
            as_patient(PATIENT),
            world.patient.sign_directive(unknown),
            revoke=False,
            first=False,
            now=NOW,
        )
    assert len(world.sent) == 1


def test_forged_and_foreign_signatures_are_refused(world: World) -> None:
    directive = world.patient.directive(
        grantee=organization(HOSPITAL), provision=provision(PERMIT), now=NOW
    )
    forged = world.patient.sign_directive(directive)
    forged.signature = bytes(64)
    foreign = world.stranger.sign_directive(directive)
    for signed, message in ((forged, "does not verify"), (foreign, "of another person")):
        with pytest.raises(PermissionDeniedError, match=message):
            world.book.accept_directive(
                as_patient(PATIENT), signed, revoke=False, first=True, now=NOW
            )
    assert not world.sent and not world.store.versions


def test_load_rebuilds_the_book_and_returns_versions_kafka_never_acknowledged(
    world: World,
) -> None:
    granted = world.grant()
    world.store.versions[(granted.document_id, 1)].logged = False
    book = world.new_book()
    [unlogged] = book.load()
    assert unlogged.entry_id == granted.entry_id
    assert book.outgoing_for(unlogged).entry == granted.entry
    assert (
        book.check_access(
            as_hospital(HOSPITAL), PATIENT, "laboratory", "TREAT", "", "", NOW
        ).deciding_directive_id
        == granted.document_id
    )


# --- delegation -----------------------------------------------------------------------------


def carer_grants(world: World, delegation: AcceptedVersion, now: datetime) -> AcceptedVersion:
    directive = world.carer.directive(
        grantee=organization(OTHER_HOSPITAL),
        provision=provision(PERMIT),
        patient=PATIENT,
        delegation_id=delegation.document_id,
        now=now,
    )
    return world.book.accept_directive(
        as_patient(CARER), world.carer.sign_directive(directive), revoke=False, first=True, now=now
    )


def test_a_delegate_manages_consents_until_the_delegation_expires(world: World) -> None:
    delegation = world.delegate([MANAGE_CONSENT], NOW + timedelta(days=1))
    assert payload_type(world.sent[-1]) == [(CONSENT_TOPIC, "swiftchain.events.v1.DelegateAdded")]
    granted = carer_grants(world, delegation, NOW + timedelta(hours=1))
    assert granted.signer_subject_id == CARER and granted.patient_subject_id == PATIENT
    assert [(r.kind, r.entry_id) for r in body(world.sent[-1]).references] == [
        (entry_pb2.REFERENCE_KIND_DELEGATION, delegation.entry_id)
    ]
    assert world.book.may_act_for(as_patient(CARER), PATIENT, VIEW, NOW + timedelta(hours=23))
    later = NOW + timedelta(days=1, seconds=1)
    with pytest.raises(PermissionDeniedError, match="expired"):
        carer_grants(world, delegation, later)
    assert not world.book.may_act_for(as_patient(CARER), PATIENT, VIEW, later)


def test_a_view_only_delegate_may_read_but_not_sign(world: World) -> None:
    delegation = world.delegate([VIEW], NOW + timedelta(days=1))
    assert world.book.may_act_for(as_patient(CARER), PATIENT, VIEW, NOW)
    with pytest.raises(PermissionDeniedError, match="does not grant"):
        carer_grants(world, delegation, NOW)
    # Someone the patient never named may do neither.
    assert not world.book.may_act_for(as_patient(STRANGER), PATIENT, VIEW, NOW)


def test_only_the_patient_adds_delegates_and_the_expiry_must_be_ahead(world: World) -> None:
    delegation = world.patient.delegation(CARER, scopes=[VIEW], expire=NOW - timedelta(hours=1))
    delegation.issue_time.FromDatetime(NOW - timedelta(days=1))
    signed = world.patient.sign_delegation(delegation)
    with pytest.raises(InvalidInputError, match="expiry time in the future"):
        world.book.accept_delegation(as_patient(PATIENT), signed, remove=False, now=NOW)
    with pytest.raises(PermissionDeniedError, match="only patient"):
        world.book.accept_delegation(as_patient(CARER), signed, remove=False, now=NOW)


# --- decisions --------------------------------------------------------------------------------


def test_a_decision_is_recorded_sent_with_its_access_entry_and_notified(world: World) -> None:
    granted = world.grant()
    world.sent.clear()
    request_id = str(uuid.uuid4())
    decision = world.check(request_id=request_id)
    assert decision.decision == common_pb2.ACCESS_DECISION_PERMIT
    assert (decision.deciding_directive_id, decision.deciding_directive_version) == (
        granted.document_id,
        1,
    )
    assert world.store.decisions[f"{HOSPITAL}/{request_id}"] is decision
    [item] = world.sent
    assert item.decision is decision and item.entry == decision.entry
    entry = body(item)
    assert entry.kind == common_pb2.ENTRY_KIND_ACCESS
    assert entry.access.deciding_directive_version == 1
    assert [(r.kind, r.entry_id) for r in entry.references] == [
        (entry_pb2.REFERENCE_KIND_DECIDING_CONSENT, granted.entry_id)
    ]
    assert payload_type(item) == [(ACCESS_TOPIC, "swiftchain.events.v1.AccessDecided")]
    decided = events_pb2.AccessDecided()
    item.events[0][1].payload.Unpack(decided)
    assert decided.request_id == request_id and decided.access_entry_id == decision.entry_id
    assert world.sink.notifications[-1].kind == pb.NOTIFICATION_KIND_ACCESS_DECIDED
    # What a restart sends again is the same entry and the same events.
    assert world.book.decision_outgoing(decision) == item


def test_a_retried_request_gets_the_first_decision_and_sends_nothing_new(world: World) -> None:
    world.grant()
    request_id = str(uuid.uuid4())
    first = world.check(request_id=request_id)
    sent = len(world.sent)
    again = world.check(request_id=request_id, now=NOW + timedelta(seconds=5))
    assert again is first and len(world.sent) == sent
    with pytest.raises(ConflictError, match="request id was used already"):
        world.check(request_id=request_id, category="genetics")


def test_no_consent_and_an_explicit_deny_are_told_apart(world: World) -> None:
    world.grant(provision(PERMIT, nested=[provision(DENY, categories=["genetics"])]))
    denied = world.check(category="genetics")
    assert (denied.decision, denied.reason) == (
        common_pb2.ACCESS_DECISION_DENY,
        common_pb2.ACCESS_REASON_EXPLICIT_DENY,
    )
    nothing = world.check(caller=OTHER_HOSPITAL)
    assert (nothing.decision, nothing.reason, nothing.deciding_directive_id) == (
        common_pb2.ACCESS_DECISION_DENY,
        common_pb2.ACCESS_REASON_NO_CONSENT,
        "",
    )
    # Both are decisions on the log all the same.
    assert {body(i).access.reason for i in world.sent if i.decision is not None} == {
        common_pb2.ACCESS_REASON_EXPLICIT_DENY,
        common_pb2.ACCESS_REASON_NO_CONSENT,
    }


def test_break_glass_permits_flags_announces_and_tells_the_patient(world: World) -> None:
    decision = world.book.break_glass(
        as_hospital(HOSPITAL),
        PATIENT,
        "laboratory",
        "unconscious",
        "patient brought in unconscious, no relatives reachable",
        PRACTITIONER,
        "",
        str(uuid.uuid4()),
        NOW,
    )
    assert decision.break_glass and decision.purpose == "ETREAT"
    assert decision.reason == common_pb2.ACCESS_REASON_BREAK_GLASS
    [item] = world.sent
    assert body(item).access.break_glass
    assert payload_type(item) == [
        (ACCESS_TOPIC, "swiftchain.events.v1.AccessDecided"),
        (ACCESS_TOPIC, "swiftchain.events.v1.BreakGlassUsed"),
    ]
    assert world.sink.notifications[-1].kind == pb.NOTIFICATION_KIND_BREAK_GLASS


def test_bad_requests_are_refused_before_anything_is_recorded(world: World) -> None:
    with pytest.raises(InvalidInputError, match="data category"):
        world.check(category="everything")
    with pytest.raises(InvalidInputError, match="PurposeOfUse"):
        world.check(purpose="CURIOSITY")
    with pytest.raises(InvalidInputError, match="request id"):
        world.check(request_id="not-a-uuid")
    with pytest.raises(PermissionDeniedError, match="does not belong"):
        world.book.check_access(
            as_hospital(OTHER_HOSPITAL), PATIENT, "laboratory", "TREAT", PRACTITIONER, "", NOW
        )
    assert not world.store.decisions and not world.sent


# --- listing page by page -------------------------------------------------------------------


def list_all(
    world: World,
    caller: Caller,
    *,
    size: int,
    status: entry_pb2.DirectiveStatus.ValueType = entry_pb2.DIRECTIVE_STATUS_UNSPECIFIED,
    between_pages: Callable[[int], None] = lambda page: None,
) -> tuple[list[str], list[int]]:
    """(directive ids in the order listed, the number of delegations on each page), following
    the page tokens to the end; ``between_pages(n)`` runs after page n."""
    listed: list[str] = []
    delegations: list[int] = []
    token = ""
    while True:
        page = world.book.list_page(
            caller, PATIENT, grantee=None, status=status, size=size, token=token, now=NOW
        )
        listed.extend(d[0].document_id for d in page.directives)
        delegations.append(len(page.delegations))
        token = page.next_page_token
        if not token:
            return listed, delegations
        between_pages(len(delegations))


def test_paging_while_directives_change_lists_each_one_once_newest_granted_first(
    world: World,
) -> None:
    granted = [
        world.grant(now=NOW + timedelta(seconds=n), grantee=(HOSPITAL, OTHER_HOSPITAL)[n % 2])
        for n in range(6)
    ]
    # Granted in the same millisecond as the first: the directive id orders the two.
    same_ms = world.grant(now=NOW + timedelta(microseconds=10))
    world.delegate([VIEW], NOW + timedelta(days=1))
    oldest = sorted([granted[0].document_id, same_ms.document_id], reverse=True)
    expected = [v.document_id for v in reversed(granted[1:])] + oldest
    later = NOW + timedelta(minutes=1)
    fresh: list[AcceptedVersion] = []

    def meanwhile(page: int) -> None:
        fresh.append(world.grant(now=later + timedelta(seconds=page)))
        if page == 1:
            # By update time, these two would move onto the page already read.
            last, next_to_last = (
                world.book.history(as_patient(PATIENT), d, NOW)[-1]
                for d in (expected[-1], expected[-2])
            )
            world.change(last, now=later)
            world.change(next_to_last, revoke=True, now=later)

    listed, delegations = list_all(world, as_patient(PATIENT), size=2, between_pages=meanwhile)
    assert listed == expected
    assert delegations == [1, 0, 0, 0]  # delegations come with the first page only
    again, _ = list_all(world, as_patient(PATIENT), size=3)
    assert sorted(again) == sorted(expected + [v.document_id for v in fresh])
    assert len(again) == len(set(again))


def test_a_hospital_pages_through_its_own_directives_only(world: World) -> None:
    ours = {world.grant(now=NOW + timedelta(seconds=n)).document_id for n in range(5)}
    world.grant(grantee=OTHER_HOSPITAL)
    listed, delegations = list_all(world, as_hospital(HOSPITAL), size=2)
    assert set(listed) == ours and len(listed) == len(ours) and delegations == [0, 0, 0]


def test_a_page_token_is_refused_with_another_filter_or_patient(world: World) -> None:
    for n in range(3):
        world.grant(now=NOW + timedelta(seconds=n))
    active = entry_pb2.DIRECTIVE_STATUS_ACTIVE
    first = world.book.list_page(
        as_patient(PATIENT), PATIENT, grantee=None, status=active, size=1, token="", now=NOW
    )
    assert first.next_page_token
    regulator = Caller(Role.REGULATOR, "regulator-1")
    for patient, status, grantee in [
        (PATIENT, entry_pb2.DIRECTIVE_STATUS_UNSPECIFIED, None),
        (PATIENT, active, organization(HOSPITAL)),
        (STRANGER, active, None),
    ]:
        with pytest.raises(InvalidInputError, match="different filter") as refused:
            world.book.list_page(
                regulator,
                patient,
                grantee=grantee,
                status=status,
                size=1,
                token=first.next_page_token,
                now=NOW,
            )
        assert status_code_for(refused.value) == grpc.StatusCode.INVALID_ARGUMENT
    # The same filter continues, whoever asks.
    second = world.book.list_page(
        regulator,
        PATIENT,
        grantee=None,
        status=active,
        size=1,
        token=first.next_page_token,
        now=NOW,
    )
    assert second.directives and second.directives[0] != first.directives[0]


def test_a_forged_page_token_is_invalid_input(world: World) -> None:
    world.grant()
    active = entry_pb2.DIRECTIVE_STATUS_ACTIVE
    key = filter_key("ListConsents", PATIENT, "", "", int(active))
    for token in ["not a token", page_token(("yesterday", "d-1"), key), page_token((1,), key)]:
        with pytest.raises(InvalidInputError, match="page token"):
            world.book.list_page(
                as_patient(PATIENT),
                PATIENT,
                grantee=None,
                status=active,
                size=1,
                token=token,
                now=NOW,
            )
