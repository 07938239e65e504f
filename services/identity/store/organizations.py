"""Organizations, their keys and their KEY entries in Mongo (FerretDB locally).

One document per organization (``_id`` = organization id) holds its keys, the signed KEY
entries not yet handed to Kafka (``entries_to_submit``), the ids of entries not yet seen on the
log (``awaiting_log``), the salted key records behind each entry's commitment, the nonces of
the key-signed requests accepted lately (``request_nonces``) and the outbox of its events: every
change is one atomic document write, guarded by a version number because FerretDB has no
transactions.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

import mongoengine as me

from chain.errors import ConflictError
from services.identity.domain.organizations import KeyEntry, Organization, OrganizationKey
from services.identity.store import ALIAS
from services.identity.store.nonces import RequestNonceDoc, nonce_docs, nonces_of
from services.platform.mongo import as_utc
from services.platform.outbox import OutboxDocument, document_lock, outbox_update
from swiftchain.events.v1 import events_pb2


class KeyDoc(me.EmbeddedDocument):
    """One key of an organization."""

    key_id = me.StringField(required=True)
    public_key = me.BinaryField(required=True)
    allowed_kinds = me.ListField(me.IntField())
    register_entry_id = me.StringField(required=True)
    registered_at_log_index = me.IntField(null=True)
    end_entry_id = me.StringField(default="")
    end_action = me.IntField(default=0)
    ended_at_log_index = me.IntField(null=True)
    create_time = me.DateTimeField(required=True)
    end_time = me.DateTimeField(null=True)


class KeyRecordDoc(me.EmbeddedDocument):
    """The registration record a KEY entry commits to, and its salt (kept off the log)."""

    entry_id = me.StringField(required=True)
    record = me.BinaryField(required=True)
    salt = me.BinaryField(required=True)


class OrganizationDoc(OutboxDocument):
    """An organization and everything about its keys."""

    meta: ClassVar[dict[str, Any]] = {"collection": "organizations", "db_alias": ALIAS}

    id = me.StringField(primary_key=True)
    display_name = me.StringField(required=True)
    role = me.IntField(required=True)
    status = me.IntField(required=True)
    keys = me.EmbeddedDocumentListField(KeyDoc)
    key_records = me.EmbeddedDocumentListField(KeyRecordDoc)
    entries_to_submit = me.ListField(me.BinaryField())
    submit_pending = me.BooleanField(default=False)
    awaiting_log = me.ListField(me.StringField())
    awaits_log = me.BooleanField(default=False)
    create_time = me.DateTimeField(required=True)
    update_time = me.DateTimeField(required=True)
    version = me.IntField(default=0)
    request_nonces = me.EmbeddedDocumentListField(RequestNonceDoc)


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def _key_from_doc(doc: KeyDoc) -> OrganizationKey:
    create_time = _utc(doc.create_time)
    assert create_time is not None
    return OrganizationKey(
        key_id=doc.key_id,
        public_key=bytes(doc.public_key),
        allowed_kinds=tuple(doc.allowed_kinds),
        register_entry_id=doc.register_entry_id,
        create_time=create_time,
        registered_at_log_index=doc.registered_at_log_index,
        end_entry_id=doc.end_entry_id,
        end_action=doc.end_action,
        ended_at_log_index=doc.ended_at_log_index,
        end_time=_utc(doc.end_time),
    )


def _key_to_doc(key: OrganizationKey) -> KeyDoc:
    return KeyDoc(
        key_id=key.key_id,
        public_key=key.public_key,
        allowed_kinds=list(key.allowed_kinds),
        register_entry_id=key.register_entry_id,
        registered_at_log_index=key.registered_at_log_index,
        end_entry_id=key.end_entry_id,
        end_action=int(key.end_action),
        ended_at_log_index=key.ended_at_log_index,
        create_time=key.create_time,
        end_time=key.end_time,
    )


def _from_doc(doc: OrganizationDoc) -> Organization:
    create_time, update_time = _utc(doc.create_time), _utc(doc.update_time)
    assert create_time is not None and update_time is not None
    return Organization(
        organization_id=doc.id,
        display_name=doc.display_name,
        role=doc.role,
        create_time=create_time,
        update_time=update_time,
        status=doc.status,
        keys=[_key_from_doc(k) for k in doc.keys],
        version=doc.version,
        request_nonces=nonces_of(doc.request_nonces),
    )


def _awaiting(organization: Organization) -> list[str]:
    waiting = []
    for key in organization.keys:
        if key.registered_at_log_index is None:
            waiting.append(key.register_entry_id)
        if key.end_entry_id and key.ended_at_log_index is None:
            waiting.append(key.end_entry_id)
    return waiting


class OrganizationStore:
    """The domain's OrganizationStore on mongoengine (connection alias ``identity``)."""

    def get(self, organization_id: str) -> Organization | None:
        """The organization, or None."""
        doc = OrganizationDoc.objects(id=organization_id).first()
        return _from_doc(doc) if doc else None

    def create(
        self,
        organization: Organization,
        entries: Sequence[KeyEntry],
        events: Sequence[events_pb2.EventEnvelope],
    ) -> bool:
        """Insert; False when an organization with that id exists already."""
        doc = OrganizationDoc(
            id=organization.organization_id,
            display_name=organization.display_name,
            role=int(organization.role),
            status=int(organization.status),
            keys=[_key_to_doc(k) for k in organization.keys],
            key_records=[
                KeyRecordDoc(entry_id=e.entry_id, record=e.record, salt=e.salt) for e in entries
            ],
            entries_to_submit=[e.entry for e in entries],
            submit_pending=bool(entries),
            awaiting_log=_awaiting(organization),
            awaits_log=bool(_awaiting(organization)),
            create_time=organization.create_time,
            update_time=organization.update_time,
            version=0,
            request_nonces=nonce_docs(organization.request_nonces),
        )
        doc.add_events(events)
        try:
            doc.save(force_insert=True)
        except me.NotUniqueError:
            return False
        return True

    def update(
        self,
        organization: Organization,
        entries: Sequence[KeyEntry],
        events: Sequence[events_pb2.EventEnvelope],
    ) -> None:
        """Write the organization if nobody changed it since it was read."""
        changes: dict[str, Any] = {
            "set__display_name": organization.display_name,
            "set__role": int(organization.role),
            "set__status": int(organization.status),
            "set__keys": [_key_to_doc(k) for k in organization.keys],
            "set__awaiting_log": _awaiting(organization),
            "set__awaits_log": bool(_awaiting(organization)),
            "set__update_time": organization.update_time,
            "set__request_nonces": nonce_docs(organization.request_nonces),
            "inc__version": 1,
            **outbox_update(events),
        }
        if entries:
            changes["push_all__key_records"] = [
                KeyRecordDoc(entry_id=e.entry_id, record=e.record, salt=e.salt) for e in entries
            ]
            changes["push_all__entries_to_submit"] = [e.entry for e in entries]
            changes["set__submit_pending"] = True
        with document_lock(OrganizationDoc._get_collection_name(), organization.organization_id):
            updated = OrganizationDoc.objects(
                id=organization.organization_id, version=organization.version
            ).update_one(**changes)
        if not updated:
            raise ConflictError(
                f"organization {organization.organization_id!r} was changed by another request "
                "at the same time; retry"
            )
        organization.version += 1

    def list_page(self, role: int, after_id: str, limit: int) -> list[Organization]:
        """Up to ``limit`` organizations with ids after ``after_id``, by id."""
        query = OrganizationDoc.objects(id__gt=after_id) if after_id else OrganizationDoc.objects
        if role:
            query = query.filter(role=role)
        return [_from_doc(d) for d in query.order_by("id").limit(limit)]

    def find_by_entry(self, entry_id: str) -> Organization | None:
        """The organization waiting for KEY entry ``entry_id`` to reach the log."""
        doc = OrganizationDoc.objects(awaiting_log=entry_id).first()
        return _from_doc(doc) if doc else None

    def entries_to_submit(self) -> list[tuple[str, list[bytes]]]:
        """(organization id, signed entries) not yet acknowledged by Kafka."""
        return [
            (doc.id, [bytes(e) for e in doc.entries_to_submit])
            for doc in OrganizationDoc.objects(submit_pending=True).only("id", "entries_to_submit")
        ]

    def mark_submitted(self, organization_id: str, entries: Sequence[bytes]) -> None:
        """Forget entries Kafka has acknowledged."""
        with document_lock(OrganizationDoc._get_collection_name(), organization_id):
            OrganizationDoc.objects(id=organization_id).update_one(
                pull_all__entries_to_submit=list(entries)
            )
            OrganizationDoc.objects(id=organization_id, entries_to_submit__size=0).update_one(
                set__submit_pending=False
            )

    def entries_awaiting_log(self) -> list[str]:
        """Ids of KEY entries submitted but not yet seen on the log."""
        waiting: list[str] = []
        for doc in OrganizationDoc.objects(awaits_log=True).only("awaiting_log"):
            waiting.extend(doc.awaiting_log)
        return waiting
