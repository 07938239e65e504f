"""Anchoring's rules (services/anchoring/domain/) on a fake store, with the chain's own
validator over real keys, and the FHIR export validated with fhir.resources (its vocabulary is
services/platform/fhir_vocabulary.py; tests/unit/test_fhir_vocabulary.py joins the three
exports)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from fhir.resources.R4B.bundle import Bundle

from chain.errors import ConflictError, InvalidInputError, PermissionDeniedError, PreconditionError
from sdk.anchoring import HospitalClient, RecordVersionDraft
from services.anchoring.domain import RecordAnchoring, RecordVersion
from services.anchoring.domain.provenance import provenance_bundle
from services.platform import fhir_vocabulary as fv
from services.platform.caller import Caller, Role
from swiftchain.anchoring.v1 import anchoring_service_pb2 as pb
from tests.unit.anchoring.fakes import (
    CONSORTIUM,
    NOW,
    OTHER_KEY,
    SUBJECT,
    TAG_KEY,
    FakeStore,
    NoChannel,
    drafts,
    known_keys,
    request,
    sdk,
)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def anchoring(store: FakeStore) -> RecordAnchoring:
    return RecordAnchoring(store, known_keys(), TAG_KEY)


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
        consortium=CONSORTIUM,
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
    assert first["target"] == [
        {"identifier": {"system": fv.RECORD_VERSION_SYSTEM, "value": "hospital-a/rec-1/_history/1"}}
    ]
    [log] = first["extension"]
    assert log["url"] == fv.LOG_ENTRY_EXTENSION
    parts = {part["url"]: part for part in log["extension"]}
    assert parts["entry"]["valueIdentifier"] == fv.log_entry(versions[0].entry_id)
    assert parts["state"]["valueCoding"] == {"system": fv.ENTRY_STATE_SYSTEM, "code": "pending"}


PRACTITIONER_WITH_UNDERSCORE = "pr-a_b" + "A" * 19


def test_fhir_provenance_references_a_practitioner_by_identifier(
    anchoring: RecordAnchoring,
) -> None:
    """Practitioner ids are not FHIR ids (they may hold ``_``): no literal reference."""
    draft = sdk().record_version(
        "rec-1", 1, b"v1", subject_id=SUBJECT, author_practitioner_id=PRACTITIONER_WITH_UNDERSCORE
    )
    anchor(anchoring, [draft])
    versions = anchoring.versions(Caller(Role.HOSPITAL, "hospital-a"), "hospital-a", "rec-1")
    Bundle.model_validate_json(provenance_bundle(versions))
    resource = json.loads(provenance_bundle(versions))["entry"][0]["resource"]
    author = next(a for a in resource["agent"] if a["type"]["coding"][0]["code"] == "author")
    assert author["who"] == {
        "type": "Practitioner",
        "identifier": {"system": fv.PRACTITIONER_SYSTEM, "value": PRACTITIONER_WITH_UNDERSCORE},
    }
    assert author["onBehalfOf"] == fv.organization("hospital-a")
    assert "Practitioner/" not in json.dumps(resource)
