"""A record's provenance as FHIR R4 ``Provenance`` resources, in a ``collection`` Bundle.

One Provenance per anchored version, in the vocabulary of
:mod:`services.platform.fhir_vocabulary`: ``target`` the record version by identifier,
``recorded`` when it was anchored, ``activity`` from v3 DataOperation, the hospital (custodian)
and the authoring practitioner (author, on behalf of the hospital) as agents referenced by
identifier, the reason code, and the log entry in an extension (entry, state, leaf hash, leaf
index, sealed tree size, and the evidence bundle when one is given). No patient: anchoring
holds only the subject's tag. Plain dicts: the tests validate them with fhir.resources.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from services.anchoring.domain import RecordVersion
from services.platform import fhir_vocabulary as fv
from swiftchain.common.v1 import common_pb2

_DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
_AGENT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
_ACTIVITY = {
    common_pb2.RECORD_ACTION_CREATE: ("CREATE", "create"),
    common_pb2.RECORD_ACTION_AMEND: ("UPDATE", "revise"),
    common_pb2.RECORD_ACTION_CORRECT: ("UPDATE", "revise"),
    common_pb2.RECORD_ACTION_MERGE: ("UPDATE", "revise"),
    common_pb2.RECORD_ACTION_ERASE: ("NULLIFY", "nullify"),
}


def provenance(version: RecordVersion, evidence_json: str = "") -> dict[str, Any]:
    """The Provenance resource of one anchored version."""
    code, display = _ACTIVITY[version.action]  # type: ignore[index]
    hospital = fv.organization(version.organization_id)
    agents: list[dict[str, Any]] = [
        {"type": {"coding": [fv.coding(_AGENT_TYPE, "custodian")]}, "who": hospital}
    ]
    if version.author_practitioner_id:
        agents.append(
            {
                "type": {"coding": [fv.coding(_AGENT_TYPE, "author")]},
                "who": fv.practitioner(version.author_practitioner_id),
                "onBehalfOf": hospital,
            }
        )
    resource: dict[str, Any] = {
        "resourceType": "Provenance",
        "id": version.entry_id,
        "target": [
            {
                "identifier": fv.record_version(
                    version.organization_id, version.record_id, version.version
                )
            }
        ],
        "recorded": fv.instant(version.anchored_time),
        "activity": {"coding": [fv.coding(_DATA_OPERATION, code, display)]},
        "agent": agents,
        "extension": [
            fv.log_entry_extension(
                version, leaf_hash=version.leaf_hash, evidence_json=evidence_json
            )
        ],
    }
    if version.reason_code:
        resource["reason"] = [
            {
                "coding": [fv.coding(fv.RECORD_REASON_SYSTEM, version.reason_code)],
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
    bundle = fv.collection_bundle(provenance(v, evidence.get(v.entry_id, "")) for v in versions)
    return json.dumps(bundle, indent=2, sort_keys=True)
