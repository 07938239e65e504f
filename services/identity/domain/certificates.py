"""Client certificates for organizations: issue from a CSR, revoke by serial number.

The platform CA (:mod:`services.platform.ca`) signs; this module decides *what* it signs:
only for a registered, active organization, with the subject set from the registry (common name
= organization id, organizational unit = the role the certificate grants), never from the CSR.
Revocations are published as ``CertificateRevoked`` events, which every process reads into its
revocation list (services/platform/revocations.py) and checks on every call.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from chain.errors import InvalidInputError, NotFoundError, PreconditionError
from services.identity.domain.organizations import PRODUCER, OrganizationRegistry
from services.platform.caller import Role
from services.platform.convert import timestamp
from services.platform.events import envelope
from swiftchain.common.v1 import common_pb2
from swiftchain.events.v1 import events_pb2
from swiftchain.identity.v1 import identity_pb2

#: Client certificates are short-lived: renew (IssueCertificate again) before they expire.
CLIENT_CERTIFICATE_LIFETIME = timedelta(days=30)
_SERIAL = re.compile(r"[0-9a-f]{1,40}")
_UNIT_BY_ROLE = {
    common_pb2.ORGANIZATION_ROLE_HOSPITAL: Role.HOSPITAL.value,
    common_pb2.ORGANIZATION_ROLE_REGULATOR: Role.REGULATOR.value,
    common_pb2.ORGANIZATION_ROLE_APP_OPERATOR: Role.APP.value,
    common_pb2.ORGANIZATION_ROLE_CONSORTIUM_ADMIN: Role.ADMIN.value,
}


class IssuedCertificateLike(Protocol):
    """What the CA returns for an issued certificate."""

    @property
    def pem(self) -> str: ...

    @property
    def chain_pem(self) -> str: ...

    @property
    def serial_hex(self) -> str: ...

    @property
    def not_before(self) -> datetime: ...

    @property
    def not_after(self) -> datetime: ...


class Signer(Protocol):
    """The platform CA, as this module uses it."""

    def issue_for_csr(
        self,
        csr_pem: str,
        *,
        common_name: str,
        unit: str,
        now: datetime,
        lifetime: timedelta,
    ) -> IssuedCertificateLike:
        """Sign the CSR's key into a certificate with the given subject; InvalidInputError for
        a CSR that is malformed, badly self-signed or has an unsupported key."""
        ...


@dataclass
class CertificateRecord:
    """An issued certificate as the identity service keeps it."""

    serial_hex: str
    organization_id: str
    certificate_pem: str
    chain_pem: str
    fingerprint_sha256: bytes
    not_before: datetime
    not_after: datetime
    revoke_time: datetime | None = None
    revoke_reason: int = 0


class CertificateStore(Protocol):
    """What certificates need from storage (services/identity/store/certificates.py)."""

    def insert(self, record: CertificateRecord, events: Sequence[events_pb2.EventEnvelope]) -> None:
        """Store a newly issued certificate with its events in one write."""

    def get(self, serial_hex: str) -> CertificateRecord | None:
        """The certificate with this serial, or None."""

    def mark_revoked(
        self,
        serial_hex: str,
        revoke_time: datetime,
        reason: int,
        events: Sequence[events_pb2.EventEnvelope],
    ) -> bool:
        """Mark it revoked with its events in one write, unless it is already; True if now."""


class CertificateAuthority:
    """Issues and revokes organizations' client certificates."""

    def __init__(
        self,
        store: CertificateStore,
        signer: Signer,
        organizations: OrganizationRegistry,
        *,
        lifetime: timedelta = CLIENT_CERTIFICATE_LIFETIME,
    ) -> None:
        self._store = store
        self._signer = signer
        self._organizations = organizations
        self._lifetime = lifetime

    def issue(self, organization_id: str, csr_pem: str, now: datetime) -> CertificateRecord:
        """A client certificate for an active organization, from its CSR."""
        organization = self._organizations.get(organization_id)
        if organization.status != identity_pb2.ORGANIZATION_STATUS_ACTIVE:
            raise PreconditionError(
                f"expected organization {organization_id!r} to be ACTIVE, got "
                + identity_pb2.OrganizationStatus.Name(organization.status)
            )
        if not csr_pem.strip():
            raise InvalidInputError("expected a PEM certificate signing request, got nothing")
        issued = self._signer.issue_for_csr(
            csr_pem,
            common_name=organization_id,
            unit=_UNIT_BY_ROLE[organization.role],
            now=now,
            lifetime=self._lifetime,
        )
        fingerprint = x509.load_pem_x509_certificate(issued.pem.encode()).fingerprint(
            hashes.SHA256()
        )
        record = CertificateRecord(
            serial_hex=issued.serial_hex,
            organization_id=organization_id,
            certificate_pem=issued.pem,
            chain_pem=issued.chain_pem,
            fingerprint_sha256=fingerprint,
            not_before=issued.not_before,
            not_after=issued.not_after,
        )
        event = events_pb2.CertificateIssued(
            organization_id=organization_id,
            serial_number=issued.serial_hex,
            fingerprint_sha256=fingerprint,
            not_before_time=timestamp(issued.not_before),
            not_after_time=timestamp(issued.not_after),
        )
        self._store.insert(
            record, [envelope(event, producer=PRODUCER, subject=organization_id, now=now)]
        )
        return record

    def revoke(
        self,
        serial_hex: str,
        reason: identity_pb2.CertificateRevocationReason.ValueType,
        now: datetime,
    ) -> CertificateRecord:
        """Revoke a certificate; revoking it again changes nothing and returns the record."""
        if not _SERIAL.fullmatch(serial_hex):
            raise InvalidInputError(
                f"expected a serial number as lower-case hex without separators, got {serial_hex!r}"
            )
        if reason == identity_pb2.CERTIFICATE_REVOCATION_REASON_UNSPECIFIED or (
            reason not in identity_pb2.CertificateRevocationReason.values()
        ):
            raise InvalidInputError(
                "expected a revocation reason (KEY_COMPROMISE, AFFILIATION_CHANGED, SUPERSEDED "
                f"or CESSATION_OF_OPERATION), got {reason}"
            )
        record = self._store.get(serial_hex)
        if record is None:
            raise NotFoundError(f"no certificate with serial number {serial_hex} was issued")
        if record.revoke_time is not None:
            return record
        event = events_pb2.CertificateRevoked(
            organization_id=record.organization_id, serial_number=serial_hex, reason=reason
        )
        events = [envelope(event, producer=PRODUCER, subject=record.organization_id, now=now)]
        if self._store.mark_revoked(serial_hex, now, reason, events):
            record.revoke_time, record.revoke_reason = now, reason
            return record
        stored = self._store.get(serial_hex)  # revoked by a concurrent call: report that one
        assert stored is not None
        return stored
