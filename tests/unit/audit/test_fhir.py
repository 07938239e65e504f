"""Trail items as FHIR AuditEvents (services/audit/fhir.py): every kind validates as an R4B
AuditEvent (fhir.resources, as tests/e2e/test_audit.py reads them), names the patient and the log
entry, and says what happened (action, outcome, purpose), in the shared vocabulary
(services/platform/fhir_vocabulary.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle

from services.audit.domain import DENY, AuditBook, TrailFilterSpec, TrailRecord
from services.audit.fhir import audit_event, audit_event_bundle
from services.platform import fhir_vocabulary as fv
from services.platform.caller import Caller, Role
from swiftchain.common.v1 import common_pb2
from tests.unit.audit.fakes import (
    HOSPITAL,
    NOW,
    PATIENT,
    TAG_KEY,
    FakeAuditStore,
    access_decided,
    consent_granted,
    consent_revoked,
    key_registered,
    patient_registered,
    record_anchored,
    record_sealed,
)

REGULATOR = Caller(Role.REGULATOR, "regulator-1")


def trail() -> dict[str, TrailRecord]:
    """One item of each kind, as a regulator's trail returns them."""
    book = AuditBook(FakeAuditStore(), TAG_KEY)
    book.apply_events(
        [
            patient_registered(PATIENT),
            key_registered("e-key"),
            record_anchored("e-rec", record_id="r-1", version=1),
            record_sealed("e-rec", 4, 5),
            record_anchored(
                "e-amend", record_id="r-1", version=2, action=common_pb2.RECORD_ACTION_AMEND
            ),
            consent_granted("e-con", directive_id="d-1", version=1),
            consent_revoked("e-rev", directive_id="d-1", version=2),
            access_decided("e-permit", directive=("d-1", 1), when=NOW + timedelta(seconds=1)),
            access_decided("e-deny", decision=DENY, when=NOW + timedelta(seconds=2)),
            access_decided("e-bg", break_glass=True, when=NOW + timedelta(seconds=3)),
        ]
    )
    page = book.trail(REGULATOR, TrailFilterSpec(), "", 100)
    return {item.entry_id: item for item in page.items}


@pytest.fixture(scope="module")
def items() -> dict[str, TrailRecord]:
    return trail()


def log_parts(resource: dict[str, Any]) -> dict[str, Any]:
    """The log-entry extension's parts by name: the entry id, the state code, the numbers."""
    (extension,) = [e for e in resource["extension"] if e["url"] == fv.LOG_ENTRY_EXTENSION]
    parts = {
        part["url"]: next(v for k, v in part.items() if k != "url")
        for part in extension["extension"]
    }
    assert parts["entry"]["system"] == fv.LOG_ENTRY_SYSTEM
    assert parts["state"]["system"] == fv.ENTRY_STATE_SYSTEM
    return {**parts, "entry": parts["entry"]["value"], "state": parts["state"]["code"]}


def patient_identifiers(event: AuditEvent) -> list[str]:
    return [
        entity.what.identifier.value
        for entity in event.entity or []
        if entity.what is not None
        and entity.what.type == "Patient"
        and entity.what.identifier is not None
        and entity.what.identifier.system == fv.PATIENT_SYSTEM
        and entity.what.identifier.value is not None
    ]


@pytest.mark.parametrize(
    "entry_id", ["e-rec", "e-amend", "e-con", "e-rev", "e-permit", "e-deny", "e-bg"]
)
def test_every_patient_item_validates_and_names_the_patient_and_the_entry(
    items: dict[str, TrailRecord], entry_id: str
) -> None:
    resource = audit_event(items[entry_id])
    event = AuditEvent.model_validate(resource)
    assert event.id == entry_id
    assert event.recorded is not None
    assert event.agent and event.source and event.source.observer
    assert patient_identifiers(event) == [PATIENT]
    assert log_parts(resource)["entry"] == entry_id


def test_a_key_item_validates_and_names_the_key(items: dict[str, TrailRecord]) -> None:
    resource = audit_event(items["e-key"])
    event = AuditEvent.model_validate(resource)
    assert patient_identifiers(event) == []
    named = [e.what.identifier for e in event.entity or [] if e.what and e.what.identifier]
    assert [(i.system, i.value) for i in named] == [(fv.SIGNING_KEY_SYSTEM, "k-1")]
    assert log_parts(resource)["entry"] == "e-key"


def test_a_sealed_item_carries_its_leaf_and_tree_size(items: dict[str, TrailRecord]) -> None:
    parts = log_parts(audit_event(items["e-rec"]))
    assert (parts["leafIndex"], parts["sealedTreeSize"], parts["state"]) == (4, 5, "sealed")
    pending = log_parts(audit_event(items["e-amend"]))
    assert "leafIndex" not in pending and pending["state"] == "pending"


def test_actions_and_outcomes_say_what_happened(items: dict[str, TrailRecord]) -> None:
    def summary(entry_id: str) -> tuple[str, str, str]:
        resource = audit_event(items[entry_id])
        return resource["action"], resource["outcome"], resource["subtype"][0]["code"]

    assert summary("e-rec") == ("C", "0", "originate")
    assert summary("e-amend") == ("U", "0", "amend")
    assert summary("e-con") == ("C", "0", "originate")
    assert summary("e-rev") == ("D", "0", "deactivate")
    assert summary("e-permit") == ("E", "0", "access")
    assert summary("e-deny") == ("E", "4", "access")


def test_an_access_names_its_requester_purpose_and_consent(items: dict[str, TrailRecord]) -> None:
    event = AuditEvent.model_validate(audit_event(items["e-permit"]))
    requestors = [
        a.who.identifier.value
        for a in event.agent
        if a.requestor and a.who and a.who.type == "Organization" and a.who.identifier
    ]
    assert requestors == [HOSPITAL]
    assert [c.code for p in event.purposeOfEvent or [] for c in p.coding or []] == ["TREAT"]
    consents = [
        e.what.identifier.value
        for e in event.entity or []
        if e.what and e.what.type == "Consent" and e.what.identifier
    ]
    assert consents == ["d-1/_history/1"]
    practitioners = [
        a.who.identifier.system
        for a in event.agent
        if a.who and a.who.type == "Practitioner" and a.who.identifier
    ]
    assert practitioners == [fv.PRACTITIONER_SYSTEM]


def test_a_record_item_names_the_record_version(items: dict[str, TrailRecord]) -> None:
    (record,) = [e for e in audit_event(items["e-amend"])["entity"] if "type" not in e["what"]]
    assert record["what"]["identifier"] == {
        "system": fv.RECORD_VERSION_SYSTEM,
        "value": f"{HOSPITAL}/r-1/_history/2",
    }


def test_break_glass_is_a_security_alert_for_emergency_treatment(
    items: dict[str, TrailRecord],
) -> None:
    resource = audit_event(items["e-bg"])
    assert resource["type"]["code"] == "110113"
    assert resource["purposeOfEvent"][0]["coding"][0]["code"] == "ETREAT"
    assert audit_event(items["e-permit"])["type"]["code"] == "110110"


def test_the_bundle_validates_and_holds_every_item_once(items: dict[str, TrailRecord]) -> None:
    ordered = list(items.values())
    bundle = Bundle.model_validate_json(audit_event_bundle(ordered))
    assert bundle.type == "collection"
    entries = bundle.entry or []
    assert [e.fullUrl for e in entries] == [f"urn:uuid:{item.entry_id}" for item in ordered]
    for entry in entries:
        assert entry.resource is not None
        AuditEvent.model_validate(entry.resource.model_dump())


def test_an_empty_trail_is_an_empty_bundle() -> None:
    bundle = Bundle.model_validate_json(audit_event_bundle([]))
    assert bundle.type == "collection" and not bundle.entry
