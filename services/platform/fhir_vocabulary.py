"""The one FHIR vocabulary of the three exports: Provenance (anchoring), Consent (consent) and
AuditEvent (audit) name the same things the same way, so that a reader can join them.

* **Identifier systems**, one per concept, each a fixed URI (never one per organization): an
  organization, a practitioner, a patient (subject id), a record version, a consent directive
  version, a log entry, a signing key. A value that needs more than one id spells them with
  ``/`` and ``/_history/<n>`` for the version, as FHIR spells versioned references.
* **Entry states**, one code system (:data:`ENTRY_STATE_SYSTEM`) with the codes of the
  ``EntryState`` enum without its prefix, lower case: ``pending``, ``sequenced``, ``sealed``,
  ``rejected``.
* **References** are logical, by identifier, always with their type when it is known:
  ``{"type": "Patient", "identifier": {"system": ..., "value": ...}}``. No FHIR server holds
  these resources here, and the platform's ids (practitioner ids with ``_``, record ids of any
  form) are not FHIR ids, so literal references (``Practitioner/<id>``) are never used.
* **The log entry** of a resource is one extension (:data:`LOG_ENTRY_EXTENSION`): the entry's
  identifier, its state, and what is known of its place in the log.

Only ids and commitments, as on the log: nothing here carries health data. Pure: no I/O, no
grpc, no database.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from swiftchain.common.v1 import common_pb2

__all__ = [
    "ACT_CODE_SYSTEM",
    "ACT_REASON_SYSTEM",
    "DATA_CATEGORY_SYSTEM",
    "DIRECTIVE_SIGNATURE_EXTENSION",
    "DIRECTIVE_VERSION_SYSTEM",
    "ENTRY_STATE_SYSTEM",
    "LOG_ENTRY_EXTENSION",
    "LOG_ENTRY_SYSTEM",
    "ORGANIZATION_SYSTEM",
    "PARTICIPATION_TYPE_SYSTEM",
    "PATIENT_SYSTEM",
    "PRACTITIONER_SYSTEM",
    "RECORD_REASON_SYSTEM",
    "RECORD_VERSION_SYSTEM",
    "SIGNING_KEY_SYSTEM",
    "LogPlace",
    "LogPlaced",
    "coding",
    "collection_bundle",
    "consent",
    "directive_version",
    "entry_state_code",
    "entry_state_coding",
    "identifier",
    "instant",
    "log_entry",
    "log_entry_extension",
    "organization",
    "patient",
    "practitioner",
    "record",
    "record_version",
    "reference",
    "signing_key",
]

_BASE: Final = "https://swiftchain.health/fhir"

# --- identifier systems (NamingSystem URIs), one per concept ---------------------------------
#: An organization (hospital, regulator, app operator): its organization id.
ORGANIZATION_SYSTEM: Final = f"{_BASE}/sid/organization"
#: A practitioner of a hospital: its practitioner id (unique across the consortium).
PRACTITIONER_SYSTEM: Final = f"{_BASE}/sid/practitioner"
#: A patient: the subject id.
PATIENT_SYSTEM: Final = f"{_BASE}/sid/patient"
#: One version of a hospital's record: ``<organization>/<record id>/_history/<version>``.
RECORD_VERSION_SYSTEM: Final = f"{_BASE}/sid/record-version"
#: One version of a consent directive: ``<directive id>/_history/<version>``.
DIRECTIVE_VERSION_SYSTEM: Final = f"{_BASE}/sid/consent-directive-version"
#: An entry of the consortium log: its entry id.
LOG_ENTRY_SYSTEM: Final = f"{_BASE}/sid/log-entry"
#: A signing key registered on the log (an organization's key, a patient's device key): its id.
SIGNING_KEY_SYSTEM: Final = f"{_BASE}/sid/signing-key"

# --- code systems -----------------------------------------------------------------------------
#: Where a log entry stands: ``pending``, ``sequenced``, ``sealed``, ``rejected``.
ENTRY_STATE_SYSTEM: Final = f"{_BASE}/CodeSystem/entry-state"
#: The data categories of consent provisions and access decisions.
DATA_CATEGORY_SYSTEM: Final = f"{_BASE}/CodeSystem/data-category"
#: The reason codes hospitals give when anchoring a record version.
RECORD_REASON_SYSTEM: Final = f"{_BASE}/CodeSystem/record-reason"
#: HL7 v3 ActReason: purposes of use.
ACT_REASON_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
#: HL7 v3 ParticipationType: author, information recipient.
PARTICIPATION_TYPE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
#: HL7 v3 ActCode: consent policies.
ACT_CODE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

# --- extensions -------------------------------------------------------------------------------
#: The log entry of a resource (see :func:`log_entry_extension`).
LOG_ENTRY_EXTENSION: Final = f"{_BASE}/StructureDefinition/log-entry"
#: The patient's signature over a consent directive.
DIRECTIVE_SIGNATURE_EXTENSION: Final = f"{_BASE}/StructureDefinition/directive-signature"


def identifier(system: str, value: str) -> dict[str, str]:
    """A FHIR Identifier."""
    return {"system": system, "value": value}


def reference(resource_type: str, business_id: Mapping[str, str]) -> dict[str, Any]:
    """A logical reference by identifier; ``resource_type`` empty when it is not known (a
    hospital's record may be any resource)."""
    result: dict[str, Any] = {"identifier": dict(business_id)}
    if resource_type:
        result["type"] = resource_type
    return result


def organization(organization_id: str) -> dict[str, Any]:
    """A reference to an organization."""
    return reference("Organization", identifier(ORGANIZATION_SYSTEM, organization_id))


def practitioner(practitioner_id: str) -> dict[str, Any]:
    """A reference to a practitioner."""
    return reference("Practitioner", identifier(PRACTITIONER_SYSTEM, practitioner_id))


def patient(subject_id: str) -> dict[str, Any]:
    """A reference to a patient."""
    return reference("Patient", identifier(PATIENT_SYSTEM, subject_id))


def consent(directive_id: str, version: int) -> dict[str, Any]:
    """A reference to one version of a consent directive (a FHIR Consent)."""
    return reference("Consent", directive_version(directive_id, version))


def record(organization_id: str, record_id: str, version: int) -> dict[str, Any]:
    """A reference to one version of a hospital's record (of a type only the hospital knows)."""
    return reference("", record_version(organization_id, record_id, version))


def record_version(organization_id: str, record_id: str, version: int) -> dict[str, str]:
    """The identifier of one version of a hospital's record."""
    return identifier(RECORD_VERSION_SYSTEM, f"{organization_id}/{record_id}/_history/{version}")


def directive_version(directive_id: str, version: int) -> dict[str, str]:
    """The identifier of one version of a consent directive."""
    return identifier(DIRECTIVE_VERSION_SYSTEM, f"{directive_id}/_history/{version}")


def log_entry(entry_id: str) -> dict[str, str]:
    """The identifier of a log entry."""
    return identifier(LOG_ENTRY_SYSTEM, entry_id)


def signing_key(key_id: str) -> dict[str, str]:
    """The identifier of a signing key."""
    return identifier(SIGNING_KEY_SYSTEM, key_id)


def coding(system: str, code: str, display: str = "") -> dict[str, str]:
    """A FHIR Coding (``display`` left out when empty)."""
    result = {"system": system, "code": code}
    if display:
        result["display"] = display
    return result


def entry_state_code(state: int) -> str:
    """The code of an ``EntryState``: ``ENTRY_STATE_SEALED`` -> ``sealed``."""
    name = common_pb2.EntryState.Name(common_pb2.EntryState.ValueType(state))
    return name.removeprefix("ENTRY_STATE_").lower()


def entry_state_coding(state: int) -> dict[str, str]:
    """An ``EntryState`` as a Coding of :data:`ENTRY_STATE_SYSTEM`."""
    return coding(ENTRY_STATE_SYSTEM, entry_state_code(state))


def instant(moment: datetime) -> str:
    """A FHIR instant in UTC, ``Z``-suffixed (a naive ``moment`` is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class LogPlaced(Protocol):
    """Something with a log entry and what is known of its place in the log (an anchored record
    version, a trail item, :class:`LogPlace`)."""

    @property
    def entry_id(self) -> str: ...

    @property
    def state(self) -> int:
        """An ``EntryState``."""
        ...

    @property
    def leaf_index(self) -> int | None: ...

    @property
    def sealed_tree_size(self) -> int | None: ...


@dataclass(frozen=True)
class LogPlace:
    """A log entry's place, for holders that keep it in other fields."""

    entry_id: str
    state: int
    leaf_index: int | None = None
    sealed_tree_size: int | None = None


def log_entry_extension(
    placed: LogPlaced, *, leaf_hash: bytes = b"", evidence_json: str = ""
) -> dict[str, Any]:
    """The :data:`LOG_ENTRY_EXTENSION` of a resource: the entry (``valueIdentifier``), its
    state (``valueCoding``), and when known its leaf hash, leaf index, the size of the sealed
    tree that holds it and an evidence bundle (``swiftchain-evidence/v1`` JSON)."""
    parts: list[dict[str, Any]] = [
        {"url": "entry", "valueIdentifier": log_entry(placed.entry_id)},
        {"url": "state", "valueCoding": entry_state_coding(placed.state)},
    ]
    if leaf_hash:
        parts.append({"url": "leafHash", "valueBase64Binary": base64.b64encode(leaf_hash).decode()})
    if placed.leaf_index is not None:
        parts.append({"url": "leafIndex", "valueUnsignedInt": placed.leaf_index})
    if placed.sealed_tree_size is not None:
        parts.append({"url": "sealedTreeSize", "valueUnsignedInt": placed.sealed_tree_size})
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
    return {"url": LOG_ENTRY_EXTENSION, "extension": parts}


def collection_bundle(resources: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A FHIR ``collection`` Bundle of ``resources``, each with ``urn:uuid:<id>`` as its full URL
    (their ids are entry ids, which are UUIDs)."""
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": f"urn:uuid:{resource['id']}", "resource": dict(resource)}
            for resource in resources
        ],
    }
