"""Patients, registrations, enrollment codes, login challenges and practitioners in Mongo.

Uniqueness without transactions comes from ``_id``s: a registration's ``_id`` is its
idempotency key (organization + reference, or organization + request id), a practitioner's is
organization + display_ref, so a concurrent duplicate insert fails with a duplicate key and the
record on file wins. A challenge is used up by one conditional update (``used`` false -> true).
An enrollment code is known by its digest only (the ``_id`` of the record naming its patient);
it is used up with the patient's own versioned write that adds the first device and clears the
patient's pending code, so two enrollments with one code cannot both succeed. Expiry is a field
checked on read, not a TTL index (FerretDB v1 has none); sweeps delete what expired.
A patient's KEY entries (its device keys on the log) are written with the change that made
them, into ``entries_to_submit`` (with their registration records and salts in
``key_records``), and forgotten once Kafka acknowledged them, as an organization's are.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

import mongoengine as me

from chain.errors import ConflictError
from services.identity.domain.organizations import KeyEntry
from services.identity.domain.patients import (
    Challenge,
    Device,
    Patient,
    PendingEnrollment,
    Practitioner,
    Recovery,
    Registration,
)
from services.identity.store import ALIAS
from services.identity.store.nonces import RequestNonceDoc, nonce_docs, nonces_of
from services.identity.store.organizations import KeyRecordDoc
from services.platform.mongo import as_utc
from services.platform.outbox import OutboxDocument, document_lock, outbox_update
from swiftchain.events.v1 import events_pb2


class DeviceDoc(me.EmbeddedDocument):
    """A patient's device key."""

    key_id = me.StringField(required=True)
    public_key = me.BinaryField(required=True)
    label = me.StringField(default="")
    create_time = me.DateTimeField(required=True)
    revoke_time = me.DateTimeField(null=True)


class PendingEnrollmentDoc(me.EmbeddedDocument):
    """The digest and expiry of the code a patient's first device may enroll with."""

    code_digest = me.BinaryField(required=True)
    expire_time = me.DateTimeField(required=True)


class RecoveryDoc(me.EmbeddedDocument):
    """A recovery of a patient that lost its devices (services/identity/domain/recovery.py)."""

    recovery_id = me.StringField(required=True)
    key_id = me.StringField(required=True)
    public_key = me.BinaryField(required=True)
    label = me.StringField(default="")
    code_digest = me.BinaryField(required=True)
    proof = me.BinaryField(required=True)
    request_time = me.DateTimeField(required=True)
    complete_after = me.DateTimeField(required=True)
    cancel_time = me.DateTimeField(null=True)
    cancelled_by = me.StringField(default="")
    complete_time = me.DateTimeField(null=True)


class PatientDoc(OutboxDocument):
    """A patient, ``_id`` = subject id."""

    meta: ClassVar[dict[str, Any]] = {"collection": "patients", "db_alias": ALIAS}

    id = me.StringField(primary_key=True)
    registered_by = me.StringField(required=True)
    references = me.DictField()
    devices = me.EmbeddedDocumentListField(DeviceDoc)
    create_time = me.DateTimeField(required=True)
    version = me.IntField(default=0)
    request_nonces = me.EmbeddedDocumentListField(RequestNonceDoc)
    enrollment = me.EmbeddedDocumentField(PendingEnrollmentDoc, null=True)
    recovery_code = me.EmbeddedDocumentField(PendingEnrollmentDoc, null=True)
    recoveries = me.EmbeddedDocumentListField(RecoveryDoc)
    #: The registration records (and salts) of the patient's KEY entries.
    key_records = me.EmbeddedDocumentListField(KeyRecordDoc)
    #: Signed KEY entries not yet acknowledged by Kafka, oldest first.
    entries_to_submit = me.ListField(me.BinaryField())
    submit_pending = me.BooleanField(default=False)


class RegistrationDoc(me.Document):
    """One RegisterPatient idempotency key and the subject it created."""

    meta: ClassVar[dict[str, Any]] = {"collection": "patient_registrations", "db_alias": ALIAS}

    id = me.StringField(primary_key=True)
    subject_id = me.StringField(required=True)


class EnrollmentCodeDoc(me.Document):
    """An enrollment code, ``_id`` = the hex of its digest, and the patient it is for."""

    meta: ClassVar[dict[str, Any]] = {"collection": "enrollment_codes", "db_alias": ALIAS}

    id = me.StringField(primary_key=True)
    subject_id = me.StringField(required=True)
    expire_time = me.DateTimeField(required=True)


class ChallengeDoc(me.Document):
    """A login challenge."""

    meta: ClassVar[dict[str, Any]] = {"collection": "login_challenges", "db_alias": ALIAS}

    id = me.StringField(primary_key=True)
    subject_id = me.StringField(required=True)
    device_key_id = me.StringField(required=True)
    nonce = me.BinaryField(required=True)
    expire_time = me.DateTimeField(required=True)
    used = me.BooleanField(default=False)


class PractitionerDoc(OutboxDocument):
    """A practitioner, ``_id`` = organization id + NUL + display_ref."""

    meta: ClassVar[dict[str, Any]] = {"collection": "practitioners", "db_alias": ALIAS}

    id = me.StringField(primary_key=True)
    practitioner_id = me.StringField(required=True)
    organization_id = me.StringField(required=True)
    display_ref = me.StringField(required=True)
    role_code = me.StringField(required=True)
    active = me.BooleanField(default=True)
    create_time = me.DateTimeField(required=True)


#: Documents that carry events for the outbox relay.
OUTBOX_DOCUMENTS: tuple[type[OutboxDocument], ...] = (PatientDoc, PractitionerDoc)


def _device_doc(device: Device) -> DeviceDoc:
    return DeviceDoc(
        key_id=device.key_id,
        public_key=device.public_key,
        label=device.label,
        create_time=device.create_time,
        revoke_time=device.revoke_time,
    )


def _enrollment_doc(pending: PendingEnrollment | None) -> PendingEnrollmentDoc | None:
    if pending is None:
        return None
    return PendingEnrollmentDoc(code_digest=pending.code_digest, expire_time=pending.expire_time)


def _enrollment(doc: PendingEnrollmentDoc | None) -> PendingEnrollment | None:
    if doc is None:
        return None
    return PendingEnrollment(bytes(doc.code_digest), as_utc(doc.expire_time))


def _recovery_doc(recovery: Recovery) -> RecoveryDoc:
    return RecoveryDoc(
        recovery_id=recovery.recovery_id,
        key_id=recovery.key_id,
        public_key=recovery.public_key,
        label=recovery.label,
        code_digest=recovery.code_digest,
        proof=recovery.proof,
        request_time=recovery.request_time,
        complete_after=recovery.complete_after,
        cancel_time=recovery.cancel_time,
        cancelled_by=recovery.cancelled_by,
        complete_time=recovery.complete_time,
    )


def _recovery(doc: RecoveryDoc) -> Recovery:
    return Recovery(
        recovery_id=doc.recovery_id,
        key_id=doc.key_id,
        public_key=bytes(doc.public_key),
        label=doc.label,
        code_digest=bytes(doc.code_digest),
        proof=bytes(doc.proof),
        request_time=as_utc(doc.request_time),
        complete_after=as_utc(doc.complete_after),
        cancel_time=as_utc(doc.cancel_time) if doc.cancel_time else None,
        cancelled_by=doc.cancelled_by,
        complete_time=as_utc(doc.complete_time) if doc.complete_time else None,
    )


def _patient(doc: PatientDoc) -> Patient:
    return Patient(
        subject_id=doc.id,
        registered_by=doc.registered_by,
        create_time=as_utc(doc.create_time),
        references=dict(doc.references),
        devices=[
            Device(
                d.key_id,
                bytes(d.public_key),
                d.label,
                as_utc(d.create_time),
                as_utc(d.revoke_time) if d.revoke_time else None,
            )
            for d in doc.devices
        ],
        version=doc.version,
        request_nonces=nonces_of(doc.request_nonces),
        enrollment=_enrollment(doc.enrollment),
        recovery_code=_enrollment(doc.recovery_code),
        recoveries=[_recovery(r) for r in doc.recoveries],
    )


class PatientStore:
    """The domain's PatientStore and PractitionerStore on mongoengine (alias ``identity``)."""

    def claim_registration(self, registration: Registration) -> Registration:
        """Record ``registration`` unless its key is taken; return the one on record."""
        try:
            RegistrationDoc(id=registration.key, subject_id=registration.subject_id).save(
                force_insert=True
            )
        except me.NotUniqueError:
            doc = RegistrationDoc.objects(id=registration.key).first()
            return Registration(doc.id, doc.subject_id)
        return registration

    def get(self, subject_id: str) -> Patient | None:
        """The patient, or None."""
        doc = PatientDoc.objects(id=subject_id).first()
        return _patient(doc) if doc else None

    def create(self, patient: Patient, events: Sequence[events_pb2.EventEnvelope]) -> bool:
        """Insert with its events; False if the subject id exists."""
        doc = PatientDoc(
            id=patient.subject_id,
            registered_by=patient.registered_by,
            references=dict(patient.references),
            devices=[_device_doc(d) for d in patient.devices],
            create_time=patient.create_time,
            request_nonces=nonce_docs(patient.request_nonces),
            enrollment=_enrollment_doc(patient.enrollment),
        )
        doc.add_events(events)
        try:
            doc.save(force_insert=True)
        except me.NotUniqueError:
            return False
        return True

    def update(
        self,
        patient: Patient,
        events: Sequence[events_pb2.EventEnvelope],
        entries: Sequence[KeyEntry] = (),
    ) -> None:
        """Write the devices, references, recent request nonces and pending enrollment code,
        with KEY ``entries`` to submit, if nobody changed the patient since it was read."""
        changes: dict[str, Any] = {
            "set__devices": [_device_doc(d) for d in patient.devices],
            "set__references": dict(patient.references),
            "set__request_nonces": nonce_docs(patient.request_nonces),
            "set__enrollment": _enrollment_doc(patient.enrollment),
            "set__recovery_code": _enrollment_doc(patient.recovery_code),
            "set__recoveries": [_recovery_doc(r) for r in patient.recoveries],
            "inc__version": 1,
            **outbox_update(events),
        }
        if entries:
            changes["push_all__key_records"] = [
                KeyRecordDoc(entry_id=e.entry_id, record=e.record, salt=e.salt) for e in entries
            ]
            changes["push_all__entries_to_submit"] = [e.entry for e in entries]
            changes["set__submit_pending"] = True
        with document_lock(PatientDoc._get_collection_name(), patient.subject_id):
            updated = PatientDoc.objects(id=patient.subject_id, version=patient.version).update_one(
                **changes
            )
        if not updated:
            raise ConflictError(
                f"patient {patient.subject_id} was changed by another request at the same time; "
                "retry"
            )
        patient.version += 1

    def entries_to_submit(self) -> list[tuple[str, list[bytes]]]:
        """(subject id, signed KEY entries) not yet acknowledged by Kafka."""
        return [
            (doc.id, [bytes(e) for e in doc.entries_to_submit])
            for doc in PatientDoc.objects(submit_pending=True).only("id", "entries_to_submit")
        ]

    def mark_submitted(self, subject_id: str, entries: Sequence[bytes]) -> None:
        """Forget KEY entries Kafka has acknowledged."""
        with document_lock(PatientDoc._get_collection_name(), subject_id):
            PatientDoc.objects(id=subject_id).update_one(pull_all__entries_to_submit=list(entries))
            PatientDoc.objects(id=subject_id, entries_to_submit__size=0).update_one(
                set__submit_pending=False
            )

    def add_challenge(self, challenge: Challenge) -> None:
        """Store a new challenge."""
        ChallengeDoc(
            id=challenge.challenge_id,
            subject_id=challenge.subject_id,
            device_key_id=challenge.device_key_id,
            nonce=challenge.nonce,
            expire_time=challenge.expire_time,
        ).save(force_insert=True)

    def consume_challenge(self, challenge_id: str) -> Challenge | None:
        """Mark the challenge used and return it; None if unknown or used already."""
        # FerretDB v1 runs a conditional update as a read then a write, so two concurrent
        # answers could both see it unused and both log in; within this process the document
        # lock makes the check and the mark one step.
        with document_lock("challenges", challenge_id):
            if not ChallengeDoc.objects(id=challenge_id, used=False).update_one(set__used=True):
                return None
        doc = ChallengeDoc.objects(id=challenge_id).first()
        return Challenge(
            doc.id, doc.subject_id, doc.device_key_id, bytes(doc.nonce), as_utc(doc.expire_time)
        )

    def sweep_challenges(self, now: datetime) -> int:
        """Delete challenges that expired (no TTL index on FerretDB); how many."""
        return int(ChallengeDoc.objects(expire_time__lt=now).delete())

    def add_enrollment_code(
        self, code_digest: bytes, subject_id: str, expire_time: datetime
    ) -> None:
        """Record which patient the code with ``code_digest`` enrolls a device for."""
        EnrollmentCodeDoc(
            id=code_digest.hex(), subject_id=subject_id, expire_time=expire_time
        ).save(force_insert=True)

    def enrollment_subject(self, code_digest: bytes) -> str | None:
        """The subject id the code with ``code_digest`` was issued for; None if unknown."""
        doc = EnrollmentCodeDoc.objects(id=code_digest.hex()).first()
        return str(doc.subject_id) if doc else None

    def sweep_enrollment_codes(self, now: datetime) -> int:
        """Delete the records of enrollment codes that expired; how many."""
        return int(EnrollmentCodeDoc.objects(expire_time__lt=now).delete())

    def insert_or_get(
        self, practitioner: Practitioner, events: Sequence[events_pb2.EventEnvelope]
    ) -> Practitioner:
        """Insert unless (organization, display_ref) exists; return the one on record."""
        doc = PractitionerDoc(
            id=f"{practitioner.organization_id}\x00{practitioner.display_ref}",
            practitioner_id=practitioner.practitioner_id,
            organization_id=practitioner.organization_id,
            display_ref=practitioner.display_ref,
            role_code=practitioner.role_code,
            create_time=practitioner.create_time,
        )
        doc.add_events(events)
        try:
            doc.save(force_insert=True)
        except me.NotUniqueError:
            doc = PractitionerDoc.objects(id=doc.id).first()
        return Practitioner(
            doc.practitioner_id,
            doc.organization_id,
            doc.display_ref,
            doc.role_code,
            as_utc(doc.create_time),
            doc.active,
        )
