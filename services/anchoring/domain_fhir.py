"""A record's provenance as FHIR R4 ``Provenance`` resources, in a ``collection`` Bundle.

One Provenance per anchored version: ``target`` the hospital's record at that version,
``recorded`` when it was anchored, ``activity`` from v3 DataOperation, the hospital (and the
authoring practitioner) as agents, the reason code, and the proof on the consortium log in an
extension (entry id, leaf hash, leaf index, sealed tree size, and the evidence bundle when one
is given). Plain dicts: the tests validate them with fhir.resources.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any

from services.anchoring.domain import RecordVersion
from swiftchain.common.v1 import common_pb2

PROOF_EXTENSION = "https://swiftchain.health/fhir/StructureDefinition/log-proof"
_DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
_AGENT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
_REASON_SYSTEM = "https://swiftchain.health/fhir/CodeSystem/record-reason"
_ACTIVITY = {
    common_pb2.RECORD_ACTION_CREATE: ("CREATE", "create"),
    common_pb2.RECORD_ACTION_AMEND: ("UPDATE", "revise"),
    common_pb2.RECORD_ACTION_CORRECT: ("UPDATE", "revise"),
    common_pb2.RECORD_ACTION_MERGE: ("UPDATE", "revise"),
    common_pb2.RECORD_ACTION_ERASE: ("NULLIFY", "nullify"),
}


def _instant(version: RecordVersion) -> str:
    return version.anchored_time.isoformat().replace("+00:00", "Z")


def _proof(version: RecordVersion, evidence_json: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [
        {"url": "entryId", "valueString": version.entry_id},
        {"url": "leafHash", "valueBase64Binary": base64.b64encode(version.leaf_hash).decode()},
        {"url": "state", "valueCode": common_pb2.EntryState.Name(version.state).lower()},  # type: ignore[arg-type]
    ]
    if version.leaf_index is not None:
        parts.append({"url": "leafIndex", "valueUnsignedInt": version.leaf_index})
    if version.sealed_tree_size is not None:
        parts.append({"url": "sealedTreeSize", "valueUnsignedInt": version.sealed_tree_size})
    if evidence_json:
        parts.append(
            {
                "url": "evidence",
                "valueAttachment": {
                    "contentType": "application/json",
                    "data": base64.b64encode(evidence_json.encode()).decode(),
                },
            }
        )
    return {"url": PROOF_EXTENSION, "extension": parts}


def provenance(version: RecordVersion, evidence_json: str = "") -> dict[str, Any]:
    """The Provenance resource of one anchored version."""
    code, display = _ACTIVITY[version.action]  # type: ignore[index]
    agents: list[dict[str, Any]] = [
        {
            "type": {"coding": [{"system": _AGENT_TYPE, "code": "custodian"}]},
            "who": {"reference": f"Organization/{version.organization_id}"},
        }
    ]
    if version.author_practitioner_id:
        agents.append(
            {
                "type": {"coding": [{"system": _AGENT_TYPE, "code": "author"}]},
                "who": {"reference": f"Practitioner/{version.author_practitioner_id}"},
                "onBehalfOf": {"reference": f"Organization/{version.organization_id}"},
            }
        )
    resource: dict[str, Any] = {
        "resourceType": "Provenance",
        "id": f"{version.entry_id}",
        "target": [
            {
                "identifier": {
                    "system": f"urn:swiftchain:record:{version.organization_id}",
                    "value": f"{version.record_id}|{version.version}",
                }
            }
        ],
        "recorded": _instant(version),
        "activity": {"coding": [{"system": _DATA_OPERATION, "code": code, "display": display}]},
        "agent": agents,
        "extension": [_proof(version, evidence_json)],
    }
    if version.reason_code:
        resource["reason"] = [
            {
                "coding": [{"system": _REASON_SYSTEM, "code": version.reason_code}],
                **({"text": version.reason_text} if version.reason_text else {}),
            }
        ]
    return resource


def provenance_bundle(
    versions: Sequence[RecordVersion], evidence: Mapping[str, str] | None = None
) -> str:
    """A FHIR ``collection`` Bundle of the versions' Provenance, as JSON text; ``evidence``
    maps entry ids to their evidence bundle JSON."""
    evidence = evidence or {}
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": provenance(v, evidence.get(v.entry_id, ""))} for v in versions],
    }
    return json.dumps(bundle, indent=2, sort_keys=True)
