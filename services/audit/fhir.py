"""Trail items as FHIR R4 ``AuditEvent`` resources, shaped after IHE Basic Audit Log Patterns
(BALP): the acting organization (and practitioner) as agents with the requestor flag, the audit
service as the observing source, the patient and the record or directive as entities, the
purpose of use for access decisions, and the log entry (entry, state, leaf index, sealed tree
size) as an extension, so that each event can be checked against the log. Identifiers, entry
states and references (logical, by identifier) are those of
:mod:`services.platform.fhir_vocabulary`, shared with the Provenance and Consent exports.

No health data: identifiers only, as on the log.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from services.audit.domain import KIND_ACCESS, KIND_CONSENT, KIND_KEY, KIND_RECORD, TrailRecord
from services.platform import fhir_vocabulary as fv
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2

_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_LIFECYCLE = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
_OBJECT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"

_AUTHOR = fv.coding(fv.PARTICIPATION_TYPE_SYSTEM, "AUT", "author (originator)")

#: RECORD actions -> (ISO 21089 lifecycle event, FHIR AuditEvent action).
_RECORD_ACTIONS = {
    common_pb2.RECORD_ACTION_CREATE: ("originate", "C"),
    common_pb2.RECORD_ACTION_AMEND: ("amend", "U"),
    common_pb2.RECORD_ACTION_CORRECT: ("amend", "U"),
    common_pb2.RECORD_ACTION_MERGE: ("merge", "U"),
    common_pb2.RECORD_ACTION_ERASE: ("destroy", "D"),
}


def _agents(item: TrailRecord) -> list[dict[str, Any]]:
    agents: list[dict[str, Any]] = []
    if item.actor_organization_id:
        agents.append(
            {
                "type": {"coding": [fv.coding(_DCM, "110153", "Source Role ID")]},
                "who": fv.organization(item.actor_organization_id),
                "requestor": True,
            }
        )
    practitioner = item.detail.get("practitioner_id") or item.detail.get("author_practitioner_id")
    if practitioner:
        role = "AUT" if item.kind == KIND_RECORD else "IRCP"
        agents.append(
            {
                "type": {"coding": [fv.coding(fv.PARTICIPATION_TYPE_SYSTEM, role)]},
                "who": fv.practitioner(str(practitioner)),
                "requestor": True,
            }
        )
    if item.kind == KIND_CONSENT:
        agents.append(
            {
                "type": {"coding": [dict(_AUTHOR)]},
                "who": fv.patient(item.patient_subject_id)
                if item.patient_subject_id
                else {"display": "the patient (or a delegate), by a device signature"},
                "requestor": True,
            }
        )
    if not agents:
        agents.append({"who": {"display": "unknown"}, "requestor": False})
    return agents


def _entity(
    what: dict[str, Any], object_type: tuple[str, str], role: tuple[str, str]
) -> dict[str, Any]:
    return {
        "what": what,
        "type": fv.coding(_OBJECT_TYPE, *object_type),
        "role": fv.coding(_OBJECT_ROLE, *role),
    }


_PERSON = ("1", "Person")
_SYSTEM_OBJECT = ("2", "System Object")
_DOMAIN_RESOURCE = ("4", "Domain Resource")
_SECURITY_RESOURCE = ("13", "Security Resource")


def _entities(item: TrailRecord) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    if item.patient_subject_id:
        entities.append(_entity(fv.patient(item.patient_subject_id), _PERSON, ("1", "Patient")))
    detail = item.detail
    if item.kind == KIND_RECORD:
        record = fv.record(
            item.actor_organization_id,
            str(detail.get("record_id", "")),
            int(detail.get("version", 0)),
        )
        entities.append(_entity(record, _SYSTEM_OBJECT, _DOMAIN_RESOURCE))
    elif item.kind == KIND_CONSENT:
        directive = fv.consent(str(detail.get("directive_id", "")), int(detail.get("version", 0)))
        entities.append(_entity(directive, _SYSTEM_OBJECT, _DOMAIN_RESOURCE))
    elif item.kind == KIND_ACCESS and detail.get("deciding_directive_id"):
        directive = fv.consent(
            str(detail["deciding_directive_id"]), int(detail.get("deciding_directive_version", 0))
        )
        entities.append(_entity(directive, _SYSTEM_OBJECT, _SECURITY_RESOURCE))
    elif item.kind == KIND_KEY:
        key = fv.signing_key(str(detail.get("key_id", "")))
        entities.append(_entity({"identifier": key}, _SYSTEM_OBJECT, _SECURITY_RESOURCE))
    return entities


def _what_happened(item: TrailRecord) -> tuple[dict[str, str], list[dict[str, str]], str, str]:
    """(type, subtypes, action, outcome) of an item."""
    detail = item.detail
    if item.kind == KIND_RECORD:
        lifecycle, action = _RECORD_ACTIONS.get(
            common_pb2.RecordAction.ValueType(int(detail.get("action", 0))), ("originate", "C")
        )
        return (
            fv.coding(_DCM, "110110", "Patient Record"),
            [fv.coding(_LIFECYCLE, lifecycle)],
            action,
            "0",
        )
    if item.kind == KIND_CONSENT:
        revoked = detail.get("status") == entry_pb2.DIRECTIVE_STATUS_REVOKED
        first = int(detail.get("version", 1)) == 1
        lifecycle = "deactivate" if revoked else "originate" if first else "amend"
        return (
            fv.coding(_DCM, "110110", "Patient Record"),
            [fv.coding(_LIFECYCLE, lifecycle)],
            "D" if revoked else "C" if first else "U",
            "0",
        )
    if item.kind == KIND_ACCESS:
        permitted = detail.get("decision") == common_pb2.ACCESS_DECISION_PERMIT
        return (
            fv.coding(_DCM, "110113", "Security Alert")
            if detail.get("break_glass")
            else fv.coding(_DCM, "110110", "Patient Record"),
            [fv.coding(_LIFECYCLE, "access", "Access/View Record Lifecycle Event")],
            "E",
            "0" if permitted else "4",
        )
    return (
        fv.coding(_DCM, "110136", "Security Roles Changed"),
        [
            fv.coding(
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
        "recorded": fv.instant(item.time),
        "outcome": outcome,
        "agent": _agents(item),
        "source": {
            "observer": {"display": "swiftchain audit service"},
            "type": [fv.coding(_SOURCE_TYPE, "4", "Application Server")],
        },
        "entity": _entities(item),
        "extension": [fv.log_entry_extension(item)],
    }
    if item.kind == KIND_ACCESS:
        detail = item.detail
        purpose = "ETREAT" if detail.get("break_glass") else str(detail.get("purpose", ""))
        if purpose:
            resource["purposeOfEvent"] = [{"coding": [fv.coding(fv.ACT_REASON_SYSTEM, purpose)]}]
        reason = common_pb2.AccessReason.Name(
            common_pb2.AccessReason.ValueType(int(detail.get("reason", 0)))
        )
        resource["outcomeDesc"] = reason.removeprefix("ACCESS_REASON_").replace("_", " ").lower()
        if detail.get("data_category"):
            resource["entity"].append(
                {
                    "what": {"display": "data category"},
                    "type": fv.coding(_OBJECT_TYPE, "4", "Other"),
                    "detail": [{"type": "category", "valueString": str(detail["data_category"])}],
                }
            )
    return resource


def audit_event_bundle(items: Sequence[TrailRecord]) -> str:
    """A FHIR R4 Bundle (type collection) of the items' AuditEvents, as JSON text."""
    bundle = fv.collection_bundle(audit_event(item) for item in items)
    return json.dumps(bundle, separators=(",", ":"))
