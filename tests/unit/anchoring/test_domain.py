"""Anchoring's rules (services/anchoring/domain.py) on a fake store, with the chain's own
validator over real keys, and the FHIR export validated with fhir.resources."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fhir.resources.R4B.bundle import Bundle

from chain.consortium import GenesisKey
from chain.errors import ConflictError, InvalidInputError, PermissionDeniedError, PreconditionError
from cli.identity_files import raw_public
from sdk.anchoring import HospitalClient, RecordVersionDraft
from services.anchoring.domain import AnchorRequest, RecordAnchoring, RecordVersion
from services.anchoring.domain_fhir import provenance_bundle
from services.common.caller import Caller, Role
from services.common.events import envelope
from services.common.known_keys import KnownKeys
from swiftchain.anchoring.v1 import anchoring_service_pb2 as pb
from swiftchain.common.v1 import common_pb2
from swiftchain.events.v1 import events_pb2

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
TAG_KEY = bytes(range(32))
SUBJECT = "pt-AAAAAAAAAAAAAAAAAAAAAA"


class FakeStore:
    def __init__(self) -> None:
        self.versions: dict[tuple[str, str, int], RecordVersion] = {}
        self.events: list[events_pb2.EventEnvelope] = []

    def get_many(
        self, keys: Sequence[tuple[str, str, int]]
    ) -> dict[tuple[str, str, int], RecordVersion]:
        return {k: copy.copy(self.versions[k]) for k in keys if k in self.versions}

    def insert_new(self, versions: Sequence[RecordVersion]) -> list[RecordVersion]:
        raced = [self.versions[v.key] for v in versions if v.key in self.versions]
        for version in versions:
            self.versions.setdefault(version.key, copy.copy(version))
        return raced

    def set_ordered(
        self, ordered: Sequence[RecordVersion], events: Sequence[events_pb2.EventEnvelope]
    ) -> None:
        for version in ordered:
            self.versions[version.key].ordering_offset = version.ordering_offset
        self.events.extend(events)

    def unordered(self, older_than: datetime) -> list[RecordVersion]:
        return [v for v in self.versions.values() if v.ordering_offset is None]

    def set_sealed(
        self, version: RecordVersion, events: Sequence[events_pb2.EventEnvelope]
    ) -> None:
        self.versions[version.key] = copy.copy(version)
        self.events.extend(events)

    def by_entry(self, entry_id: str) -> RecordVersion | None:
        return next((v for v in self.versions.values() if v.entry_id == entry_id), None)

    def of_record(self, organization_id: str, record_id: str) -> list[RecordVersion]:
        return sorted(
            (v for v in self.versions.values() if v.key[:2] == (organization_id, record_id)),
            key=lambda v: v.version,
        )


HOSPITAL_KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()


def known_keys() -> KnownKeys:
    keys = KnownKeys([GenesisKey("registrar", "identity", ("KEY",), bytes(32 * [7]))])
    for owner, key in (("hospital-a", HOSPITAL_KEY), ("hospital-b", OTHER_KEY)):
        event = events_pb2.KeyRegistered(
            owner_id=owner,
            key_id=f"{owner}#1",
            public_key=raw_public(key),
            allowed_kinds=[common_pb2.ENTRY_KIND_RECORD],
        )
        keys.apply(envelope(event, producer="identity", subject=owner, now=NOW))
    return keys


class NoChannel:
    def unary_unary(self, *args: object, **kwargs: object) -> None:
        return None

    unary_stream = stream_unary = stream_stream = unary_unary


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def anchoring(store: FakeStore) -> RecordAnchoring:
    return RecordAnchoring(store, known_keys(), TAG_KEY)


def sdk(owner: str = "hospital-a", key: Ed25519PrivateKey = HOSPITAL_KEY) -> HospitalClient:
    return HospitalClient(NoChannel(), owner, f"{owner}#1", key, TAG_KEY)  # type: ignore[arg-type]


def request(message: pb.AnchorRecordRequest) -> AnchorRequest:
    return AnchorRequest(
        message.signed_entry,
        message.record_id,
        message.version,
        message.action,
        message.commitment,
        message.subject_tag,
        message.previous_version_commitment,
        message.author_practitioner_id,
        message.reason_code,
        message.reason_text,
    )


def drafts(count: int, record_id: str = "rec-1") -> list[RecordVersionDraft]:
    client = sdk()
    made: list[RecordVersionDraft] = []
    for version in range(1, count + 1):
        made.append(
            client.record_version(
                record_id,
                version,
                f"v{version}".encode(),
                subject_id=SUBJECT,
                previous=made[-1] if made else None,
            )
        )
    return made


def anchor(anchoring: RecordAnchoring, items: Sequence[RecordVersionDraft]) -> list[object]:
    outcomes = anchoring.anchor("hospital-a", [request(r) for r in sdk().sign(items)], NOW)
    return [o.error if o.error else o.anchored for o in outcomes]


def test_versions_in_order_are_anchored_and_a_retry_returns_the_same_entry(
    anchoring: RecordAnchoring, store: FakeStore
) -> None:
    items = drafts(3)
    signed = [request(r) for r in sdk().sign(items)]
    first = anchoring.anchor("hospital-a", signed, NOW)
    assert [o.created for o in first] == [True, True, True]
    again = anchoring.anchor("hospital-a", signed, NOW)
    assert [o.anchored.entry_id for o in again if o.anchored] == [
        o.anchored.entry_id for o in first if o.anchored
    ]
    assert not any(o.created for o in again)
    assert len(store.versions) == 3


def test_another_commitment_for_an_anchored_version_is_a_conflict(
    anchoring: RecordAnchoring,
) -> None:
    anchor(anchoring, drafts(1))
    [error] = anchor(anchoring, [sdk().record_version("rec-1", 1, b"other", subject_id=SUBJECT)])
    assert isinstance(error, ConflictError) and "another commitment" in str(error)


def test_a_version_gap_and_a_wrong_previous_commitment_are_refused(
    anchoring: RecordAnchoring,
) -> None:
    items = drafts(3)
    [gap] = anchor(anchoring, [items[0], items[2]])[1:]
    assert isinstance(gap, PreconditionError) and "follows no anchored version 2" in str(gap)
    wrong = sdk().record_version("rec-1", 2, b"v2", subject_id=SUBJECT, previous=drafts(1)[0])
    [error] = anchor(anchoring, [wrong])
    assert isinstance(error, PreconditionError) and "previous-version commitment" in str(error)


def test_fields_must_match_the_signed_entry(anchoring: RecordAnchoring) -> None:
    [signed] = sdk().sign(drafts(1))
    for change, message in (
        ({"version": 2}, "expected version to equal"),
        ({"commitment": b"\x01" * 32}, "expected commitment to equal"),
        ({"record_id": "rec-2"}, "record_tag"),
        ({"reason_text": "x" * 1001}, "at most 1000 characters"),
    ):
        altered = pb.AnchorRecordRequest()
        altered.CopyFrom(signed)
        for name, value in change.items():
            setattr(altered, name, value)
        [outcome] = anchoring.anchor("hospital-a", [request(altered)], NOW)
        assert isinstance(outcome.error, InvalidInputError), change
        assert message in str(outcome.error), (change, outcome.error)


def test_an_entry_of_another_hospital_or_by_its_key_is_not_the_callers(
    anchoring: RecordAnchoring,
) -> None:
    other = sdk("hospital-b", OTHER_KEY)
    [foreign] = other.sign([other.record_version("rec-1", 1, b"v", subject_id=SUBJECT)])
    [outcome] = anchoring.anchor("hospital-a", [request(foreign)], NOW)
    assert isinstance(outcome.error, PermissionDeniedError)
    # hospital-a's entry signed with hospital-b's key:
    borrowed = HospitalClient(
        NoChannel(),  # type: ignore[arg-type]
        "hospital-a",
        "hospital-b#1",
        OTHER_KEY,
        TAG_KEY,
    )
    [signed] = borrowed.sign(drafts(1))
    [outcome] = anchoring.anchor("hospital-a", [request(signed)], NOW)
    assert isinstance(outcome.error, PermissionDeniedError) and "hospital-b" in str(outcome.error)


def test_a_tampered_signature_is_invalid(anchoring: RecordAnchoring) -> None:
    [signed] = sdk().sign(drafts(1))
    tampered = bytearray(signed.signed_entry)
    tampered[-3] ^= 1
    signed.signed_entry = bytes(tampered)
    [outcome] = anchoring.anchor("hospital-a", [request(signed)], NOW)
    assert isinstance(outcome.error, InvalidInputError) and "signature" in str(outcome.error)


def test_only_the_hospital_and_regulators_see_its_records(anchoring: RecordAnchoring) -> None:
    [version] = anchor(anchoring, drafts(1))
    assert isinstance(version, RecordVersion)
    hospital, regulator = Caller(Role.HOSPITAL, "hospital-a"), Caller(Role.REGULATOR, "reg")
    assert anchoring.version_for(hospital, version.entry_id).entry_id == version.entry_id
    assert anchoring.version_for(regulator, version.entry_id).entry_id == version.entry_id
    with pytest.raises(Exception, match="no record version was anchored"):
        anchoring.version_for(Caller(Role.HOSPITAL, "hospital-b"), version.entry_id)
    result, _ = anchoring.verify(hospital, "hospital-a", "rec-1", 1, version.commitment)
    assert result == pb.VERIFY_RESULT_MATCH


def test_fhir_provenance_validates(anchoring: RecordAnchoring) -> None:
    anchor(anchoring, drafts(3))
    versions = anchoring.versions(Caller(Role.HOSPITAL, "hospital-a"), "hospital-a", "rec-1")
    bundle = Bundle.model_validate_json(provenance_bundle(versions))
    assert len(bundle.entry or []) == 3
    first = json.loads(provenance_bundle(versions))["entry"][0]["resource"]
    assert first["activity"]["coding"][0]["code"] == "CREATE"
    assert first["extension"][0]["url"].endswith("log-proof")
