"""Issued client certificates in Mongo: one document per certificate, ``_id`` = serial (hex)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

import mongoengine as me

from services.identity.domain.certificates import CertificateRecord
from services.identity.store import ALIAS
from services.platform.mongo import as_utc
from services.platform.outbox import OutboxDocument, document_lock, outbox_update
from swiftchain.events.v1 import events_pb2


class CertificateDoc(OutboxDocument):
    """One issued certificate and, once revoked, when and why."""

    meta: ClassVar[dict[str, Any]] = {"collection": "certificates", "db_alias": ALIAS}

    id = me.StringField(primary_key=True)
    organization_id = me.StringField(required=True)
    certificate_pem = me.StringField(required=True)
    chain_pem = me.StringField(required=True)
    fingerprint_sha256 = me.BinaryField(required=True)
    not_before = me.DateTimeField(required=True)
    not_after = me.DateTimeField(required=True)
    revoke_time = me.DateTimeField(null=True)
    revoke_reason = me.IntField(default=0)


def _from_doc(doc: CertificateDoc) -> CertificateRecord:
    return CertificateRecord(
        serial_hex=doc.id,
        organization_id=doc.organization_id,
        certificate_pem=doc.certificate_pem,
        chain_pem=doc.chain_pem,
        fingerprint_sha256=bytes(doc.fingerprint_sha256),
        not_before=as_utc(doc.not_before),
        not_after=as_utc(doc.not_after),
        revoke_time=as_utc(doc.revoke_time) if doc.revoke_time else None,
        revoke_reason=doc.revoke_reason,
    )


class CertificateStore:
    """The domain's CertificateStore on mongoengine (connection alias ``identity``)."""

    def insert(self, record: CertificateRecord, events: Sequence[events_pb2.EventEnvelope]) -> None:
        """Store a newly issued certificate with its events in one write."""
        doc = CertificateDoc(
            id=record.serial_hex,
            organization_id=record.organization_id,
            certificate_pem=record.certificate_pem,
            chain_pem=record.chain_pem,
            fingerprint_sha256=record.fingerprint_sha256,
            not_before=record.not_before,
            not_after=record.not_after,
        )
        doc.add_events(events)
        doc.save(force_insert=True)

    def get(self, serial_hex: str) -> CertificateRecord | None:
        """The certificate with this serial, or None."""
        doc = CertificateDoc.objects(id=serial_hex).first()
        return _from_doc(doc) if doc else None

    def mark_revoked(
        self,
        serial_hex: str,
        revoke_time: datetime,
        reason: int,
        events: Sequence[events_pb2.EventEnvelope],
    ) -> bool:
        """Mark it revoked with its events in one write unless it is already; True if now."""
        with document_lock(CertificateDoc._get_collection_name(), serial_hex):
            updated = CertificateDoc.objects(id=serial_hex, revoke_time=None).update_one(
                set__revoke_time=revoke_time, set__revoke_reason=reason, **outbox_update(events)
            )
        return bool(updated)
