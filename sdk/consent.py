"""For patient apps: build consent directives and delegations and sign them with a device key.

A device signs "swiftchain/directive/v1\\n" || directive bytes (or the delegation prefix) with
its Ed25519 key; the consent service checks the signature against the device key that identity
registered, and never re-serializes the signed bytes.

    device = PatientDevice.from_folder(Path("my-device"))
    signed = device.sign_directive(device.directive(
        grantee=organization("hospital-b"),
        provision=provision(PERMIT, purposes=["TREAT"], categories=["laboratory"]),
    ))
    stub.GrantConsent(GrantConsentRequest(signed_directive=signed), metadata=bearer(token))
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chain.signed_messages import DELEGATION_PREFIX, DIRECTIVE_PREFIX
from swiftchain.chain.v1 import entry_pb2
from swiftchain.consent.v1 import consent_service_pb2 as pb
from swiftchain.consent.v1 import directive_pb2

PERMIT = directive_pb2.PROVISION_TYPE_PERMIT
DENY = directive_pb2.PROVISION_TYPE_DENY
ACTIVE = entry_pb2.DIRECTIVE_STATUS_ACTIVE
REVOKED = entry_pb2.DIRECTIVE_STATUS_REVOKED
MANAGE_CONSENT = directive_pb2.DELEGATION_SCOPE_MANAGE_CONSENT
VIEW = directive_pb2.DELEGATION_SCOPE_VIEW


def organization(organization_id: str) -> directive_pb2.Grantee:
    """A grantee: a hospital (any of its practitioners)."""
    return directive_pb2.Grantee(organization_id=organization_id)


def practitioner(practitioner_id: str) -> directive_pb2.Grantee:
    """A grantee: one practitioner, acting through its hospital."""
    return directive_pb2.Grantee(practitioner_id=practitioner_id)


def provision(
    provision_type: directive_pb2.ProvisionType.ValueType,
    *,
    purposes: Sequence[str] = (),
    categories: Sequence[str] = (),
    start: datetime | None = None,
    end: datetime | None = None,
    nested: Sequence[directive_pb2.Provision] = (),
) -> directive_pb2.Provision:
    """A provision (FHIR ``Consent.provision``); empty lists and absent times match anything."""
    result = directive_pb2.Provision(
        type=provision_type,
        purposes=list(purposes),
        data_categories=list(categories),
        provisions=list(nested),
    )
    if start is not None:
        result.start_time.FromDatetime(start)
    if end is not None:
        result.end_time.FromDatetime(end)
    return result


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying a patient's token."""
    return (("authorization", f"Bearer {token}"),)


@dataclass(frozen=True)
class PatientDevice:
    """A patient's (or a delegate's) device: subject id, device key id and private key."""

    subject_id: str
    key_id: str
    key: Ed25519PrivateKey

    @classmethod
    def from_folder(cls, folder: Path) -> PatientDevice:
        """The device of a folder made by ``swiftchain identity register-patient``."""
        import json

        facts = json.loads((folder / "device.json").read_text())
        key = serialization.load_pem_private_key((folder / "device-key.pem").read_bytes(), None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"expected an Ed25519 device key in {folder}, got another key type")
        return cls(facts["subject_id"], facts["key_id"], key)

    def directive(
        self,
        *,
        grantee: directive_pb2.Grantee,
        provision: directive_pb2.Provision,
        patient: str = "",
        directive_id: str = "",
        version: int = 1,
        status: entry_pb2.DirectiveStatus.ValueType = ACTIVE,
        delegation_id: str = "",
        now: datetime | None = None,
    ) -> directive_pb2.ConsentDirective:
        """A directive version (version 1 of a new directive unless told otherwise)."""
        result = directive_pb2.ConsentDirective(
            directive_id=directive_id or str(uuid.uuid4()),
            version=version,
            patient_subject_id=patient or self.subject_id,
            grantee=grantee,
            status=status,
            provision=provision,
            delegation_id=delegation_id,
        )
        result.issue_time.FromDatetime(now or datetime.now(UTC))
        return result

    def next_version(
        self,
        current: pb.ConsentVersion,
        *,
        provision: directive_pb2.Provision | None = None,
        revoke: bool = False,
        delegation_id: str = "",
    ) -> directive_pb2.ConsentDirective:
        """The version after ``current``: an amendment with a new provision, or a revocation
        (which carries a copy of the current provision)."""
        directive = directive_pb2.ConsentDirective()
        directive.CopyFrom(current.directive)
        directive.version = current.directive.version + 1
        directive.status = REVOKED if revoke else ACTIVE
        directive.delegation_id = delegation_id
        if provision is not None:
            directive.provision.CopyFrom(provision)
        directive.issue_time.FromDatetime(datetime.now(UTC))
        return directive

    def sign_directive(
        self, directive: directive_pb2.ConsentDirective
    ) -> directive_pb2.SignedDirective:
        """Serialize once and sign those bytes."""
        raw = directive.SerializeToString()
        return directive_pb2.SignedDirective(
            directive=raw,
            signer_key_id=self.key_id,
            signature=self.key.sign(DIRECTIVE_PREFIX + raw),
        )

    def delegation(
        self,
        delegate_subject_id: str,
        *,
        scopes: Sequence[directive_pb2.DelegationScope.ValueType],
        expire: datetime,
        delegation_id: str = "",
        version: int = 1,
        status: entry_pb2.DirectiveStatus.ValueType = ACTIVE,
    ) -> directive_pb2.Delegation:
        """A delegation version: ``delegate_subject_id`` may act for this patient until
        ``expire``."""
        result = directive_pb2.Delegation(
            delegation_id=delegation_id or str(uuid.uuid4()),
            version=version,
            patient_subject_id=self.subject_id,
            delegate_subject_id=delegate_subject_id,
            scopes=list(scopes),
            status=status,
        )
        result.issue_time.FromDatetime(datetime.now(UTC))
        result.expire_time.FromDatetime(expire)
        return result

    def sign_delegation(
        self, delegation: directive_pb2.Delegation
    ) -> directive_pb2.SignedDelegation:
        """Serialize once and sign those bytes."""
        raw = delegation.SerializeToString()
        return directive_pb2.SignedDelegation(
            delegation=raw,
            signer_key_id=self.key_id,
            signature=self.key.sign(DELEGATION_PREFIX + raw),
        )
