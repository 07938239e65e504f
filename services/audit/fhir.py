"""Trail items as FHIR R4 ``AuditEvent`` resources, shaped after IHE Basic Audit Log Patterns
(BALP): the acting organization (and practitioner) as agents with the requestor flag, the audit
service as the observing source, the patient and the record or directive as entities, the
purpose of use for access decisions, and the log entry (id, leaf index, sealed tree size) as an
extension, so that each event can be checked against the log.

No health data: identifiers only, as on the log.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from services.audit.domain import KIND_ACCESS, KIND_CONSENT, KIND_KEY, KIND_RECORD, TrailRecord
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2

LOG_EXTENSION = "https://swiftchain.health/fhir/StructureDefinition/log-entry"
PATIENT_SYSTEM = "https://swiftchain.health/fhir/sid/patient"
ORGANIZATION_SYSTEM = "https://swiftchain.health/fhir/sid/organization"
PRACTITIONER_SYSTEM = "https://swiftchain.health/fhir/sid/practitioner"
RECORD_SYSTEM = "https://swiftchain.health/fhir/sid/record"
DIRECTIVE_SYSTEM = "https://swiftchain.health/fhir/sid/consent-directive"
KEY_SYSTEM = "https://swiftchain.health/fhir/sid/signing-key"
CATEGORY_SYSTEM = "https://swiftchain.health/fhir/CodeSystem/data-category"
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_LIFECYCLE = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
_OBJECT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
_EXTRA_SECURITY = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

#: RECORD actions -> (ISO 21089 lifecycle event, FHIR AuditEvent action).
_RECORD_ACTIONS = {
    common_pb2.RECORD_ACTION_CREATE: ("originate", "C"),
    common_pb2.RECORD_ACTION_AMEND: ("amend", "U"),
    common_pb2.RECORD_ACTION_CORRECT: ("amend", "U"),
    common_pb2.RECORD_ACTION_MERGE: ("merge", "U"),
    common_pb2.RECORD_ACTION_ERASE: ("destroy", "D"),
}


def _coding(system: str, code: str, display: str = "") -> dict[str, str]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return coding


def _instant(item: TrailRecord) -> str:
    return item.time.isoformat().replace("+00:00", "Z")


def _organization(organization_id: str) -> dict[str, Any]:
    return {
        "type": "Organization",
        "identifier": {"system": ORGANIZATION_SYSTEM, "value": organization_id},
    }


def _agents(item: TrailRecord) -> list[dict[str, Any]]:
    agents: list[dict[str, Any]] = []
    if item.actor_organization_id:
        agents.append(
            {
                "type": {"coding": [_coding(_DCM, "110153", "Source Role ID")]},
                "who": _organization(item.actor_organization_id),
                "requestor": True,
            }
        )
    practitioner = item.detail.get("practitioner_id") or item.detail.get("author_practitioner_id")
    if practitioner:
        agents.append(
            {
                "type": {
                    "coding": [
                        _coding(_PARTICIPATION, "AUT" if item.kind == KIND_RECORD else "IRCP")
                    ]
                },
                "who": {
                    "type": "Practitioner",
                    "identifier": {"system": PRACTITIONER_SYSTEM, "value": practitioner},
                },
                "requestor": True,
            }
        )
    if item.kind == KIND_CONSENT:
        agents.append(
            {
                "type": {"coding": [_coding(_PARTICIPATION, "AUT", "author (originator)")]},
                "who": {
                    "type": "Patient",
                    "identifier": {"system": PATIENT_SYSTEM, "value": item.patient_subject_id},
                }
                if item.patient_subject_id
                else {"display": "the patient (or a delegate), by a device signature"},
                "requestor": True,
            }
        )
    if not agents:
        agents.append({"who": {"display": "unknown"}, "requestor": False})
    return agents


def _entities(item: TrailRecord) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    if item.patient_subject_id:
        entities.append(
            {
                "what": {
                    "type": "Patient",
                    "identifier": {"system": PATIENT_SYSTEM, "value": item.patient_subject_id},
                },
                "type": _coding(_OBJECT_TYPE, "1", "Person"),
                "role": _coding(_OBJECT_ROLE, "1", "Patient"),
            }
        )
    detail = item.detail
    if item.kind == KIND_RECORD:
        entities.append(
            {
                "what": {
                    "identifier": {
                        "system": f"{RECORD_SYSTEM}/{item.actor_organization_id}",
                        "value": f"{detail.get('record_id', '')}/_history/"
                        f"{detail.get('version', 0)}",
                    }
                },
                "type": _coding(_OBJECT_TYPE, "2", "System Object"),
                "role": _coding(_OBJECT_ROLE, "4", "Domain Resource"),
            }
        )
    elif item.kind == KIND_CONSENT:
        entities.append(
            {
                "what": {
                    "type": "Consent",
                    "identifier": {
                        "system": DIRECTIVE_SYSTEM,
                        "value": f"{detail.get('directive_id', '')}/_history/"
                        f"{detail.get('version', 0)}",
                    },
                },
                "type": _coding(_OBJECT_TYPE, "2", "System Object"),
                "role": _coding(_OBJECT_ROLE, "4", "Domain Resource"),
            }
        )
    elif item.kind == KIND_ACCESS and detail.get("deciding_directive_id"):
        entities.append(
            {
                "what": {
                    "type": "Consent",
                    "identifier": {
                        "system": DIRECTIVE_SYSTEM,
                        "value": f"{detail['deciding_directive_id']}/_history/"
                        f"{detail.get('deciding_directive_version', 0)}",
                    },
                },
                "type": _coding(_OBJECT_TYPE, "2", "System Object"),
                "role": _coding(_OBJECT_ROLE, "13", "Security Resource"),
            }
        )
    elif item.kind == KIND_KEY:
        entities.append(
            {
                "what": {"identifier": {"system": KEY_SYSTEM, "value": detail.get("key_id", "")}},
                "type": _coding(_OBJECT_TYPE, "2", "System Object"),
                "role": _coding(_OBJECT_ROLE, "13", "Security Resource"),
            }
        )
    return entities


def _log_extension(item: TrailRecord) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"url": "entryId", "valueString": item.entry_id}]
    if item.leaf_index is not None:
        parts.append({"url": "leafIndex", "valueUnsignedInt": item.leaf_index})
    if item.sealed_tree_size is not None:
        parts.append({"url": "sealedTreeSize", "valueUnsignedInt": item.sealed_tree_size})
    parts.append(
        {
            "url": "state",
            "valueCode": common_pb2.EntryState.Name(common_pb2.EntryState.ValueType(item.state))
            .removeprefix("ENTRY_STATE_")
            .lower(),
        }
    )
    return {"url": LOG_EXTENSION, "extension": parts}


def _what_happened(item: TrailRecord) -> tuple[dict[str, str], list[dict[str, str]], str, str]:
    """(type, subtypes, action, outcome) of an item."""
    detail = item.detail
    if item.kind == KIND_RECORD:
        lifecycle, action = _RECORD_ACTIONS.get(
            common_pb2.RecordAction.ValueType(int(detail.get("action", 0))), ("originate", "C")
        )
        return (
            _coding(_DCM, "110110", "Patient Record"),
            [_coding(_LIFECYCLE, lifecycle)],
            action,
            "0",
        )
    if item.kind == KIND_CONSENT:
        revoked = detail.get("status") == entry_pb2.DIRECTIVE_STATUS_REVOKED
        first = int(detail.get("version", 1)) == 1
        lifecycle = "deactivate" if revoked else "originate" if first else "amend"
        return (
            _coding(_DCM, "110110", "Patient Record"),
            [_coding(_LIFECYCLE, lifecycle)],
            "D" if revoked else "C" if first else "U",
            "0",
        )
    if item.kind == KIND_ACCESS:
        permitted = detail.get("decision") == common_pb2.ACCESS_DECISION_PERMIT
        return (
            _coding(_DCM, "110113", "Security Alert")
            if detail.get("break_glass")
            else _coding(_DCM, "110110", "Patient Record"),
            [_coding(_LIFECYCLE, "access", "Access/View Record Lifecycle Event")],
            "E",
            "0" if permitted else "4",
        )
    return (
        _coding(_DCM, "110136", "Security Roles Changed"),
        [
            _coding(
                _LIFECYCLE,
                "originate" if detail.get("action") == entry_pb2.KEY_ACTION_REGISTER else "amend",
            )
        ],
        "U",
        "0",
    )


def audit_event(item: TrailRecord) -> dict[str, Any]:
    """The FHIR R4 AuditEvent of one trail item."""
    event_type, subtypes, action, outcome = _what_happened(item)
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": item.entry_id,
        "type": event_type,
        "subtype": subtypes,
        "action": action,
        "recorded": _instant(item),
        "outcome": outcome,
        "agent": _agents(item),
        "source": {
            "observer": {"display": "swiftchain audit service"},
            "type": [_coding(_SOURCE_TYPE, "4", "Application Server")],
        },
        "entity": _entities(item),
        "extension": [_log_extension(item)],
    }
    if item.kind == KIND_ACCESS:
        detail = item.detail
        purpose = "ETREAT" if detail.get("break_glass") else str(detail.get("purpose", ""))
        if purpose:
            resource["purposeOfEvent"] = [{"coding": [_coding(_ACT_REASON, purpose)]}]
        reason = common_pb2.AccessReason.Name(
            common_pb2.AccessReason.ValueType(int(detail.get("reason", 0)))
        )
        resource["outcomeDesc"] = reason.removeprefix("ACCESS_REASON_").replace("_", " ").lower()
        if detail.get("data_category"):
            resource["entity"].append(
                {
                    "what": {"display": "data category"},
                    "type": _coding(_OBJECT_TYPE, "4", "Other"),
                    "detail": [{"type": "category", "valueString": str(detail["data_category"])}],
                }
            )
    return resource


def audit_event_bundle(items: Sequence[TrailRecord]) -> str:
    """A FHIR R4 Bundle (type collection) of the items' AuditEvents, as JSON text."""
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": f"urn:uuid:{item.entry_id}", "resource": audit_event(item)}
            for item in items
        ],
    }
    return json.dumps(bundle, separators=(",", ":"))
