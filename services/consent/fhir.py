"""A directive version as a FHIR R4 ``Consent`` resource (plain dicts; tests validate them with
fhir.resources), in the vocabulary of :mod:`services.platform.fhir_vocabulary`.

status ``active`` (``inactive`` once revoked), the directive version as identifier, scope
``patient-privacy``, category LOINC 59284-0 (patient consent), the patient by identifier,
``dateTime`` the patient's issue time, the provision tree (type, period, the grantee as actor
by identifier with role IRCP, purposes as v3 ActReason codings, data categories as codes of our
code system, nested provisions), and two extensions: the patient's signature (a FHIR
``Signature``, the signing key's identifier as ``who``) and the CONSENT entry on the log
(entry, state, leaf index).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from services.consent.domain import AcceptedVersion
from services.platform import fhir_vocabulary as fv
from swiftchain.chain.v1 import entry_pb2
from swiftchain.consent.v1 import directive_pb2

#: 9999-12-31T23:59:59Z, the last second a FHIR instant (and datetime) can say.
_LAST_SECOND = 253402300799
_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
_SIGNATURE_TYPE = "urn:iso-astm:E1762-95:2013"


def _instant(timestamp: Timestamp) -> str:
    """A FHIR instant; a stored time past what Python's datetime holds (year 9999) is written
    as the last instant of 9999, which is what such a time means for a consent period."""
    if timestamp.seconds >= _LAST_SECOND:
        return fv.instant(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))
    return fv.instant(timestamp.ToDatetime(tzinfo=UTC))


def _actor(grantee: directive_pb2.Grantee) -> dict[str, Any]:
    if grantee.WhichOneof("grantee") == "practitioner_id":
        reference = fv.practitioner(grantee.practitioner_id)
    else:
        reference = fv.organization(grantee.organization_id)
    return {
        "role": {"coding": [fv.coding(fv.PARTICIPATION_TYPE_SYSTEM, "IRCP")]},
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
        result["purpose"] = [fv.coding(fv.ACT_REASON_SYSTEM, p) for p in provision.purposes]
    if provision.data_categories:
        result["code"] = [
            {"coding": [fv.coding(fv.DATA_CATEGORY_SYSTEM, c)]} for c in provision.data_categories
        ]
    if provision.provisions:
        result["provision"] = [_provision(child, None) for child in provision.provisions]
    return result


def consent_resource(version: AcceptedVersion) -> dict[str, Any]:
    """The FHIR R4 Consent for one directive version."""
    directive = version.directive
    signed = directive_pb2.SignedDirective.FromString(version.signed)
    state = version.state
    return {
        "resourceType": "Consent",
        "id": version.document_id,
        "meta": {"versionId": str(version.version)},
        "identifier": [fv.directive_version(version.document_id, version.version)],
        "status": "active" if directive.status == entry_pb2.DIRECTIVE_STATUS_ACTIVE else "inactive",
        "scope": {"coding": [fv.coding(_SCOPE, "patient-privacy")]},
        "category": [{"coding": [fv.coding("http://loinc.org", "59284-0")]}],
        "patient": fv.patient(version.patient_subject_id),
        "dateTime": _instant(directive.issue_time),
        "policyRule": {"coding": [fv.coding(fv.ACT_CODE_SYSTEM, "OPTIN")]},
        "provision": _provision(directive.provision, directive.grantee),
        "extension": [
            {
                "url": fv.DIRECTIVE_SIGNATURE_EXTENSION,
                "valueSignature": {
                    "type": [fv.coding(_SIGNATURE_TYPE, "1.2.840.10065.1.12.1.7")],
                    "when": fv.instant(version.accept_time),
                    "who": {"identifier": fv.signing_key(version.signer_key_id)},
                    "sigFormat": "application/octet-stream",
                    "data": base64.b64encode(signed.signature).decode(),
                },
            },
            fv.log_entry_extension(fv.LogPlace(version.entry_id, state, version.leaf_index)),
        ],
    }
