"""The three FHIR exports speak one vocabulary (services/platform/fhir_vocabulary.py), so they
join: one scenario runs through the real domains, each export is validated as R4B with
fhir.resources, and the identifiers that name the same thing are compared across them.

A hospital anchors a record version authored by one of its practitioners (anchoring), the log
seals it; the patient grants the hospital consent and the practitioner's access is decided
(consent); the audit service reads every event those produced (audit). Then Provenance, Consent
and AuditEvent must cite the same record version, log entries, patient, organization,
practitioner and directive version, and every entry state must be a code of the one system.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.consent import Consent
from fhir.resources.R4B.provenance import Provenance

from services.anchoring.domain import RecordAnchoring
from services.anchoring.domain.provenance import provenance_bundle
from services.audit.domain import KIND_ACCESS, KIND_CONSENT, KIND_RECORD, AuditBook, TrailFilterSpec
from services.audit.fhir import audit_event_bundle
from services.consent.fhir import consent_resource
from services.platform import fhir_vocabulary as fv
from services.platform.caller import Caller, Role
from swiftchain.common.v1 import common_pb2
from swiftchain.events.v1 import events_pb2
from tests.unit.anchoring import fakes as anchoring_fakes
from tests.unit.audit import fakes as audit_fakes
from tests.unit.consent.test_domain import HOSPITAL, PATIENT, World, as_hospital, identity_event

#: A real practitioner id shape: ``pr-`` and URL-safe base64, so it may hold ``_`` (not a FHIR id).
PRACTITIONER = "pr-Xy_4kQ" + "A" * 16
RECORD = "obs-1"
#: Where the log put the record version: leaf 4 of a sealed tree of 5.
LEAF_INDEX, TREE_SIZE = 4, 5

SYSTEMS = {
    fv.ORGANIZATION_SYSTEM,
    fv.PRACTITIONER_SYSTEM,
    fv.PATIENT_SYSTEM,
    fv.RECORD_VERSION_SYSTEM,
    fv.DIRECTIVE_VERSION_SYSTEM,
    fv.LOG_ENTRY_SYSTEM,
    fv.SIGNING_KEY_SYSTEM,
}
STATES = {"pending", "sequenced", "sealed", "rejected"}


@dataclass(frozen=True)
class Exports:
    """The three exports of one scenario, as JSON dicts (each already validated)."""

    provenance: dict[str, Any]
    consent: dict[str, Any]
    #: AuditEvents by the kind of their trail item.
    audit: dict[int, dict[str, Any]]
    #: Entry ids of the record version, the grant and the access decision.
    record_entry: str
    consent_entry: str
    access_entry: str


def anchor_and_seal() -> tuple[RecordAnchoring, list[events_pb2.EventEnvelope], str]:
    """The hospital anchors version 1 of its record by the practitioner, Kafka orders it and
    the log seals it: the anchoring store records the seal as the seal tracker does, and the
    RecordSealed event says so to the audit service. Returns anchoring, the events anchoring
    published, and the version's entry id."""
    store = anchoring_fakes.FakeStore()
    anchoring = RecordAnchoring(store, anchoring_fakes.known_keys(), anchoring_fakes.TAG_KEY)
    client = anchoring_fakes.sdk(HOSPITAL)
    draft = client.record_version(
        RECORD,
        1,
        b'{"resourceType":"Observation"}',
        subject_id=PATIENT,
        author_practitioner_id=PRACTITIONER,
        reason_code="clinical-update",
    )
    signed = [anchoring_fakes.request(r) for r in client.sign([draft])]
    [outcome] = anchoring.anchor(HOSPITAL, signed, anchoring_fakes.NOW)
    version = outcome.anchored
    assert version is not None, outcome.error
    version.ordering_offset = 0
    anchoring.ordered([version], anchoring_fakes.NOW)  # its RecordAnchored event
    sealed = replace(
        version,
        leaf_index=LEAF_INDEX,
        sealed_tree_size=TREE_SIZE,
        sealed_time=anchoring_fakes.NOW,
    )
    seal = events_pb2.RecordSealed(
        organization_id=HOSPITAL,
        record_id=RECORD,
        version=1,
        entry_id=version.entry_id,
        leaf_index=LEAF_INDEX,
        tree_size=TREE_SIZE,
    )
    store.set_log_state([sealed], [audit_fakes.event(seal, producer="anchoring")])
    return anchoring, store.events, version.entry_id


def run_scenario() -> Exports:
    anchoring, anchoring_events, record_entry = anchor_and_seal()

    world = World()
    registered = events_pb2.PractitionerRegistered(
        practitioner_id=PRACTITIONER, organization_id=HOSPITAL
    )
    world.directory.apply(identity_event(registered))
    granted = world.grant()  # the patient permits the hospital
    decision = world.book.check_access(
        as_hospital(HOSPITAL),
        PATIENT,
        "laboratory",
        "TREAT",
        PRACTITIONER,
        "",  # no request id: a fresh decision
        audit_fakes.NOW,
    )
    assert decision.decision == common_pb2.ACCESS_DECISION_PERMIT

    audit = AuditBook(audit_fakes.FakeAuditStore(), audit_fakes.TAG_KEY)
    audit.apply_events(
        [
            audit_fakes.patient_registered(PATIENT),
            *anchoring_events,
            *(event for sent in world.sent for _, event in sent.events),
        ]
    )
    regulator = Caller(Role.REGULATOR, "regulator-1")
    items = audit.trail(regulator, TrailFilterSpec(), "", 100).items

    provenance = Bundle.model_validate_json(
        provenance_bundle(anchoring.versions(Caller(Role.HOSPITAL, HOSPITAL), HOSPITAL, RECORD))
    )
    audit_bundle = Bundle.model_validate_json(audit_event_bundle(items))
    consent = consent_resource(granted)
    Consent.model_validate(consent)
    [provenance_entry] = provenance.entry or []
    assert provenance_entry.resource is not None
    provenance_json = provenance_entry.resource.model_dump(mode="json")
    Provenance.model_validate(provenance_json)
    audit_json = [
        e.resource.model_dump(mode="json") for e in audit_bundle.entry or [] if e.resource
    ]
    for resource in audit_json:
        AuditEvent.model_validate(resource)
    by_id = {resource["id"]: resource for resource in audit_json}
    kinds = {item.entry_id: item.kind for item in items}
    assert sorted(kinds.values()) == sorted([KIND_RECORD, KIND_CONSENT, KIND_ACCESS])
    return Exports(
        provenance=provenance_json,
        consent=consent,
        audit={kind: by_id[entry_id] for entry_id, kind in kinds.items()},
        record_entry=record_entry,
        consent_entry=granted.entry_id,
        access_entry=decision.entry_id,
    )


@pytest.fixture(scope="module")
def exports() -> Exports:
    return run_scenario()


# --- reading the exports ----------------------------------------------------------------------


def walk(value: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair in a JSON value, depth first."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield key, child
            yield from walk(child)
    elif isinstance(value, list):
        for child in value:
            yield from walk(child)


def log_entry(resource: dict[str, Any]) -> dict[str, Any]:
    """The parts of a resource's log-entry extension, by name."""
    [extension] = [e for e in resource["extension"] if e["url"] == fv.LOG_ENTRY_EXTENSION]
    return {part["url"]: part for part in extension["extension"]}


def agents(resource: dict[str, Any], resource_type: str) -> list[dict[str, str]]:
    """The identifiers of a resource's agents of one type."""
    return [
        agent["who"]["identifier"]
        for agent in resource["agent"]
        if agent["who"].get("type") == resource_type
    ]


def entities(event: dict[str, Any], resource_type: str | None) -> list[dict[str, str]]:
    """The identifiers of an AuditEvent's entities of one type (None: of no stated type)."""
    return [
        e["what"]["identifier"]
        for e in event["entity"]
        if "identifier" in e["what"] and e["what"].get("type") == resource_type
    ]


# --- the joins --------------------------------------------------------------------------------


def test_the_record_version_is_the_same_in_provenance_and_the_audit_event(
    exports: Exports,
) -> None:
    expected = fv.record_version(HOSPITAL, RECORD, 1)
    [target] = exports.provenance["target"]
    assert target["identifier"] == expected
    assert entities(exports.audit[KIND_RECORD], None) == [expected]


def test_the_log_entries_and_their_states_agree(exports: Exports) -> None:
    provenance = log_entry(exports.provenance)
    record_event = log_entry(exports.audit[KIND_RECORD])
    for parts in (provenance, record_event):
        assert parts["entry"]["valueIdentifier"] == fv.log_entry(exports.record_entry)
        assert parts["state"]["valueCoding"] == {"system": fv.ENTRY_STATE_SYSTEM, "code": "sealed"}
        assert parts["leafIndex"]["valueUnsignedInt"] == LEAF_INDEX
        assert parts["sealedTreeSize"]["valueUnsignedInt"] == TREE_SIZE
    assert log_entry(exports.consent)["entry"]["valueIdentifier"] == fv.log_entry(
        exports.consent_entry
    )
    assert log_entry(exports.audit[KIND_CONSENT])["entry"]["valueIdentifier"] == fv.log_entry(
        exports.consent_entry
    )
    assert log_entry(exports.audit[KIND_ACCESS])["entry"]["valueIdentifier"] == fv.log_entry(
        exports.access_entry
    )


def test_the_patient_is_the_same_in_the_consent_and_every_audit_event(exports: Exports) -> None:
    patient = fv.identifier(fv.PATIENT_SYSTEM, PATIENT)
    assert exports.consent["patient"] == {"type": "Patient", "identifier": patient}
    for event in exports.audit.values():
        assert entities(event, "Patient") == [patient]


def test_the_organization_is_the_same_in_all_three(exports: Exports) -> None:
    hospital = fv.identifier(fv.ORGANIZATION_SYSTEM, HOSPITAL)
    assert agents(exports.provenance, "Organization") == [hospital]
    [actor] = exports.consent["provision"]["actor"]
    assert actor["reference"]["identifier"] == hospital
    assert agents(exports.audit[KIND_RECORD], "Organization") == [hospital]
    assert agents(exports.audit[KIND_ACCESS], "Organization") == [hospital]


def test_the_practitioner_is_the_same_in_provenance_and_the_audit_events(
    exports: Exports,
) -> None:
    practitioner = fv.identifier(fv.PRACTITIONER_SYSTEM, PRACTITIONER)
    assert agents(exports.provenance, "Practitioner") == [practitioner]
    assert agents(exports.audit[KIND_RECORD], "Practitioner") == [practitioner]
    assert agents(exports.audit[KIND_ACCESS], "Practitioner") == [practitioner]


def test_the_directive_version_is_the_same_in_the_consent_and_the_audit_events(
    exports: Exports,
) -> None:
    [directive] = exports.consent["identifier"]
    assert directive["system"] == fv.DIRECTIVE_VERSION_SYSTEM
    assert directive["value"] == f"{exports.consent['id']}/_history/1"
    assert entities(exports.audit[KIND_CONSENT], "Consent") == [directive]
    assert entities(exports.audit[KIND_ACCESS], "Consent") == [directive]


# --- one vocabulary -----------------------------------------------------------------------------


def all_resources(exports: Exports) -> list[dict[str, Any]]:
    return [exports.provenance, exports.consent, *exports.audit.values()]


def test_every_identifier_is_of_a_vocabulary_system(exports: Exports) -> None:
    for resource in all_resources(exports):
        for key, value in walk(resource):
            if key in ("identifier", "valueIdentifier"):
                for one in value if isinstance(value, list) else [value]:
                    assert one["system"] in SYSTEMS, (resource["resourceType"], one)


def test_every_entry_state_is_a_code_of_the_one_system(exports: Exports) -> None:
    states = [log_entry(resource)["state"]["valueCoding"] for resource in all_resources(exports)]
    assert {s["system"] for s in states} == {fv.ENTRY_STATE_SYSTEM}
    assert {s["code"] for s in states} <= STATES
    text = json.dumps(all_resources(exports))
    assert "entry_state_" not in text.lower() and "urn:swiftchain" not in text


def test_references_are_by_identifier_only(exports: Exports) -> None:
    """No literal references (``Practitioner/<id>``): practitioner ids are not FHIR ids."""
    for resource in all_resources(exports):
        literal = [v for k, v in walk(resource) if k == "reference" and isinstance(v, str)]
        assert literal == [], resource["resourceType"]


def test_provenance_does_not_name_the_patient(exports: Exports) -> None:
    """Anchoring holds only the subject's tag: its export has no patient to leak."""
    assert PATIENT not in json.dumps(exports.provenance)
    assert fv.PATIENT_SYSTEM not in json.dumps(exports.provenance)


def test_the_entry_state_codes_are_the_enum_names_in_lower_case() -> None:
    states = [
        common_pb2.ENTRY_STATE_PENDING,
        common_pb2.ENTRY_STATE_SEQUENCED,
        common_pb2.ENTRY_STATE_SEALED,
        common_pb2.ENTRY_STATE_REJECTED,
    ]
    codes = [fv.entry_state_code(s) for s in states]
    assert codes == ["pending", "sequenced", "sealed", "rejected"]
