"""A directive version as a FHIR R4 ``Consent`` resource (plain dicts; tests validate them with
fhir.resources).

status ``active`` (``inactive`` once revoked), scope ``patient-privacy``, category LOINC 59284-0
(patient consent), the patient, ``dateTime`` the patient's issue time, the provision tree
(type, period, the grantee as actor with role IRCP, purposes as v3 ActReason codings, data
categories as codes of our code system, nested provisions), and two extensions: the patient's
signature (a FHIR ``Signature``, key id as ``who`` identifier) and the CONSENT entry on the log
(entry id, leaf index).
"""

from __future__ import annotations

import base64
from typing import Any

from services.consent.domain import AcceptedVersion
from swiftchain.chain.v1 import entry_pb2
from swiftchain.consent.v1 import directive_pb2

SIGNATURE_EXTENSION = "https://swiftchain.health/fhir/StructureDefinition/directive-signature"
LOG_EXTENSION = "https://swiftchain.health/fhir/StructureDefinition/log-entry"
CATEGORY_SYSTEM = "https://swiftchain.health/fhir/CodeSystem/data-category"
PATIENT_SYSTEM = "https://swiftchain.health/fhir/sid/patient"
ORGANIZATION_SYSTEM = "https://swiftchain.health/fhir/sid/organization"
PRACTITIONER_SYSTEM = "https://swiftchain.health/fhir/sid/practitioner"
DEVICE_KEY_SYSTEM = "https://swiftchain.health/fhir/sid/device-key"
_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
_SIGNATURE_TYPE = "urn:iso-astm:E1762-95:2013"


def _instant(seconds_message: Any) -> str:
    return str(seconds_message.ToDatetime().isoformat()) + "Z"


def _actor(grantee: directive_pb2.Grantee) -> dict[str, Any]:
    if grantee.WhichOneof("grantee") == "practitioner_id":
        reference = {
            "type": "Practitioner",
            "identifier": {"system": PRACTITIONER_SYSTEM, "value": grantee.practitioner_id},
        }
    else:
        reference = {
            "type": "Organization",
            "identifier": {"system": ORGANIZATION_SYSTEM, "value": grantee.organization_id},
        }
    return {
        "role": {"coding": [{"system": _PARTICIPATION, "code": "IRCP"}]},
        "reference": reference,
    }


def _provision(
    provision: directive_pb2.Provision, grantee: directive_pb2.Grantee | None
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "type": "permit" if provision.type == directive_pb2.PROVISION_TYPE_PERMIT else "deny"
    }
    period: dict[str, str] = {}
    if provision.HasField("start_time"):
        period["start"] = _instant(provision.start_time)
    if provision.HasField("end_time"):
        period["end"] = _instant(provision.end_time)
    if period:
        result["period"] = period
    if grantee is not None:
        result["actor"] = [_actor(grantee)]
    if provision.purposes:
        result["purpose"] = [{"system": _ACT_REASON, "code": p} for p in provision.purposes]
    if provision.data_categories:
        result["code"] = [
            {"coding": [{"system": CATEGORY_SYSTEM, "code": c}]} for c in provision.data_categories
        ]
    if provision.provisions:
        result["provision"] = [_provision(child, None) for child in provision.provisions]
    return result


def consent_resource(version: AcceptedVersion) -> dict[str, Any]:
    """The FHIR R4 Consent for one directive version."""
    directive = version.directive
    signed = directive_pb2.SignedDirective.FromString(version.signed)
    log_parts: list[dict[str, Any]] = [
        {"url": "entryId", "valueString": version.entry_id},
        {"url": "version", "valueUnsignedInt": version.version},
    ]
    if version.leaf_index is not None:
        log_parts.append({"url": "leafIndex", "valueUnsignedInt": version.leaf_index})
    return {
        "resourceType": "Consent",
        "id": version.document_id,
        "meta": {"versionId": str(version.version)},
        "status": "active" if directive.status == entry_pb2.DIRECTIVE_STATUS_ACTIVE else "inactive",
        "scope": {"coding": [{"system": _SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {
            "type": "Patient",
            "identifier": {"system": PATIENT_SYSTEM, "value": version.patient_subject_id},
        },
        "dateTime": _instant(directive.issue_time),
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
            ]
        },
        "provision": _provision(directive.provision, directive.grantee),
        "extension": [
            {
                "url": SIGNATURE_EXTENSION,
                "valueSignature": {
                    "type": [{"system": _SIGNATURE_TYPE, "code": "1.2.840.10065.1.12.1.7"}],
                    "when": version.accept_time.isoformat().replace("+00:00", "Z"),
                    "who": {
                        "identifier": {"system": DEVICE_KEY_SYSTEM, "value": version.signer_key_id}
                    },
                    "sigFormat": "application/octet-stream",
                    "data": base64.b64encode(signed.signature).decode(),
                },
            },
            {"url": LOG_EXTENSION, "extension": log_parts},
        ],
    }
