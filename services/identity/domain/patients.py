"""Patients, their device keys, and challenge-response login to short-lived tokens.

A patient is a random subject id and the Ed25519 keys of its devices; nothing else about the
person is kept but the registering organization's own opaque reference. Registering a patient
gives the registrar a one-time enrollment code (:mod:`chain.enrollment_codes`), never a key: the
patient's device generates its key and enrolls it with the code and a proof of possession bound
to the code, so no key of the patient ever exists outside the patient's device. A code is kept
only as its digest, is good once, for :data:`ENROLLMENT_CODE_LIFETIME` unless configured
otherwise, and only for a patient's first device: once one is enrolled, more devices are added
by a request an active device signs, and the registrar gets no code again. A device logs in by
signing a single-use challenge (``"swiftchain/login/v1\\n" || challenge_id || "\\n" || nonce``)
and gets a bearer token naming its subject and device; revoking the device ends its tokens
everywhere (the ``PatientDeviceRevoked`` event feeds every server's revocation list).

The token says who calls, but does not by itself add or revoke a device: that also takes a
signature over the request by one of the patient's active devices
(:mod:`services.identity.domain.request_signatures`), so a stolen token cannot let a thief's
device in or lock the patient's out. With a :class:`DeviceKeyLog`, every enrollment, addition and
revocation is also a KEY entry under the patient's subject tag, written with the change (the
store's outbox), carrying the device's proof or signature, which every node checks again.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from cryptography.exceptions import InvalidSignature

from chain.enrollment_codes import EnrollmentCode, new_enrollment_code, parse_enrollment_code
from chain.entry_rules import SIGNATURE_SIZE
from chain.errors import (
    AlreadyExistsError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from chain.signed_messages import device_add_message, device_revoke_message, enrollment_message
from services.identity.domain.device_keys import DeviceKeyLog
from services.identity.domain.keys import check_possession, check_public_key
from services.identity.domain.organizations import PRODUCER, KeyEntry
from services.identity.domain.request_signatures import (
    RequestSignature,
    check_fresh,
    check_shape,
    check_signature,
    remember_nonce,
    require_signature,
)
from services.platform.events import envelope
from services.platform.tokens import IssuedToken, TokenIssuer
from swiftchain.events.v1 import events_pb2

LOGIN_CONTEXT = b"swiftchain/login/v1\n"
CHALLENGE_LIFETIME = timedelta(seconds=60)
#: How long an enrollment code is good for by default. Enrollment happens at the registrar's
#: desk or in the app within minutes; a patient who misses it is given a new code (registering
#: the patient again voids the old one), and the shorter a code lives, the shorter the time in
#: which a code that leaked (a photo of the screen, a printout left behind) lets someone else
#: enroll as the patient.
ENROLLMENT_CODE_LIFETIME = timedelta(hours=1)
NONCE_SIZE = 32
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SUBJECT = re.compile(r"pt-[A-Za-z0-9_-]{22}")
_ACTIVE_DEVICE = "one of the patient's active devices"


def new_subject_id() -> str:
    """A random, opaque subject id ("pt-" and 128 random bits)."""
    return "pt-" + secrets.token_urlsafe(16)


def new_device_key_id() -> str:
    """A random, never reused device key id ("dev-" and 128 random bits)."""
    return "dev-" + secrets.token_urlsafe(16)


def login_message(challenge_id: str, nonce: bytes) -> bytes:
    """The bytes a device signs to answer a login challenge."""
    return LOGIN_CONTEXT + challenge_id.encode() + b"\n" + nonce


@dataclass
class Device:
    """One device key of a patient."""

    key_id: str
    public_key: bytes
    label: str
    create_time: datetime
    revoke_time: datetime | None = None

    @property
    def active(self) -> bool:
        """True until revoked."""
        return self.revoke_time is None


@dataclass(frozen=True)
class PendingEnrollment:
    """The enrollment code a patient's first device may enroll with: its digest and expiry."""

    code_digest: bytes
    expire_time: datetime


@dataclass
class Recovery:
    """A recovery of a patient that lost its devices: a new device key, waiting until
    ``complete_after`` during which the patient's devices see it and may cancel it
    (:mod:`services.identity.domain.recovery`)."""

    recovery_id: str
    #: The id the new device key gets (assigned when the recovery begins).
    key_id: str
    public_key: bytes
    label: str
    #: The recovery code's digest, and the new key's signature over its recovery request.
    code_digest: bytes
    proof: bytes
    #: When the new device asked (its signed request time): the waiting period's start.
    request_time: datetime
    complete_after: datetime
    cancel_time: datetime | None = None
    #: The device key that cancelled it.
    cancelled_by: str = ""
    complete_time: datetime | None = None

    @property
    def status(self) -> str:
        """PENDING, CANCELLED or COMPLETED."""
        if self.cancel_time is not None:
            return "CANCELLED"
        return "PENDING" if self.complete_time is None else "COMPLETED"


@dataclass
class Patient:
    """A patient: a random subject id and its devices."""

    subject_id: str
    registered_by: str
    create_time: datetime
    #: organization id -> that organization's opaque reference to the patient.
    references: dict[str, str] = field(default_factory=dict)
    devices: list[Device] = field(default_factory=list)
    version: int = 0
    #: Nonces of the device-signed requests accepted lately, with their request times.
    request_nonces: dict[bytes, datetime] = field(default_factory=dict)
    #: The code its first device may enroll with; None once one has enrolled.
    enrollment: PendingEnrollment | None = None
    #: The recovery code a hospital issued last, until a new device begins a recovery with it.
    recovery_code: PendingEnrollment | None = None
    #: Its recoveries, oldest first.
    recoveries: list[Recovery] = field(default_factory=list)

    def device(self, key_id: str) -> Device:
        """The device ``key_id``; NotFoundError if the patient has none such."""
        for device in self.devices:
            if device.key_id == key_id:
                return device
        raise NotFoundError(f"patient {self.subject_id} has no device key {key_id!r}")


@dataclass(frozen=True)
class Registration:
    """The idempotency record of one RegisterPatient: its key (which holds every detail of the
    request) and the subject id it created."""

    key: str
    subject_id: str


@dataclass(frozen=True)
class Registered:
    """A registration's outcome: the patient, whether it was created now, and the enrollment
    code to show the patient, once (the service keeps only its digest)."""

    patient: Patient
    created: bool
    code: EnrollmentCode
    code_expire_time: datetime


@dataclass(frozen=True)
class Challenge:
    """A login challenge for one device."""

    challenge_id: str
    subject_id: str
    device_key_id: str
    nonce: bytes
    expire_time: datetime


class PatientStore(Protocol):
    """What patients need from storage (services/identity/store/patients.py)."""

    def claim_registration(self, registration: Registration) -> Registration:
        """Record ``registration`` unless its key is taken; return the one on record."""

    def get(self, subject_id: str) -> Patient | None:
        """The patient, or None."""

    def create(self, patient: Patient, events: Sequence[events_pb2.EventEnvelope]) -> bool:
        """Insert with its events in one write; False if the subject id exists."""

    def update(
        self,
        patient: Patient,
        events: Sequence[events_pb2.EventEnvelope],
        entries: Sequence[KeyEntry] = (),
    ) -> None:
        """Write if unchanged since read (then bump the version), with KEY ``entries`` to
        submit to the log; else ConflictError."""

    def add_challenge(self, challenge: Challenge) -> None:
        """Store a new challenge."""

    def consume_challenge(self, challenge_id: str) -> Challenge | None:
        """Mark the challenge used and return it, atomically; None if unknown or used."""

    def add_enrollment_code(
        self, code_digest: bytes, subject_id: str, expire_time: datetime
    ) -> None:
        """Record which patient the code with ``code_digest`` enrolls a device for."""

    def enrollment_subject(self, code_digest: bytes) -> str | None:
        """The subject id the code with ``code_digest`` was issued for; None if unknown."""


def check_label(label: str) -> None:
    """That a device label is at most 64 characters (InvalidInputError saying how long)."""
    if len(label) > 64:
        raise InvalidInputError(
            f"expected a device label of at most 64 characters, got {len(label)}"
        )


def _check_subject(subject_id: str) -> None:
    if not _SUBJECT.fullmatch(subject_id):
        raise InvalidInputError(
            f"expected a subject id like 'pt-…' (25 characters), got {subject_id!r}"
        )


class PatientDirectory:
    """Registers patients and devices and logs devices in."""

    def __init__(
        self,
        store: PatientStore,
        tokens: TokenIssuer,
        *,
        challenge_lifetime: timedelta = CHALLENGE_LIFETIME,
        enrollment_code_lifetime: timedelta = ENROLLMENT_CODE_LIFETIME,
        device_keys: DeviceKeyLog | None = None,
    ) -> None:
        self._store = store
        self._device_keys = device_keys
        self._tokens = tokens
        self._challenge_lifetime = challenge_lifetime
        self._enrollment_code_lifetime = enrollment_code_lifetime

    def register(
        self, registered_by: str, hospital_reference: str, request_id: str, now: datetime
    ) -> Registered:
        """Register a patient for ``registered_by`` (idempotent on its reference when given,
        else on ``request_id``) and issue an enrollment code for its first device. Repeating
        the registration before a device has enrolled issues a new code and voids the old one;
        after that it is refused, since more devices need a signature by an active one."""
        if not _UUID.fullmatch(request_id):
            raise InvalidInputError(
                f"expected a request id as a lower-case UUID, got {request_id!r}"
            )
        if hospital_reference and not 1 <= len(hospital_reference) <= 128:
            raise InvalidInputError(
                f"expected a hospital reference of 1-128 characters, got {len(hospital_reference)}"
            )
        key = (
            f"ref\x00{registered_by}\x00{hospital_reference}"
            if hospital_reference
            else f"req\x00{registered_by}\x00{request_id}"
        )
        claimed = self._store.claim_registration(Registration(key, new_subject_id()))
        existing = self._store.get(claimed.subject_id)
        if existing is not None:
            return self._issue_code_again(existing, registered_by, now)
        patient = Patient(claimed.subject_id, registered_by, now)
        if hospital_reference:
            patient.references[registered_by] = hospital_reference
        code = self._new_code(patient, now)
        registered = envelope(
            events_pb2.PatientRegistered(
                subject_id=patient.subject_id, registered_by=registered_by
            ),
            producer=PRODUCER,
            subject=patient.subject_id,
            now=now,
        )
        if not self._store.create(patient, [registered]):
            # A concurrent identical request created it first: this one's code is for that one.
            stored = self._store.get(claimed.subject_id)
            assert stored is not None
            return self._issue_code_again(stored, registered_by, now)
        return self._registered(patient, registered_by, True, code)

    def _issue_code_again(self, patient: Patient, registered_by: str, now: datetime) -> Registered:
        """A new code for a registered patient that has no device yet (the old code is void);
        PreconditionError once it has one."""
        if any(d.active for d in patient.devices):
            raise PreconditionError(
                f"patient {patient.subject_id} has enrolled a device already: an enrollment "
                "code is for a patient's first device only; another device is added by a "
                "request signed by one of the patient's active devices "
                "(swiftchain identity add-device)"
            )
        if patient.devices:
            raise PreconditionError(
                f"patient {patient.subject_id}'s devices are all revoked: a registrar cannot "
                "give it a new first device, as that would let the registrar act as the "
                "patient; a patient that lost its devices recovers with a recovery code and a "
                "waiting period instead (swiftchain identity recovery-code)"
            )
        code = self._new_code(patient, now)
        self._store.update(patient, [])
        return self._registered(patient, registered_by, False, code)

    def _new_code(self, patient: Patient, now: datetime) -> EnrollmentCode:
        """A fresh code for ``patient``, recorded by its digest and set as its pending one."""
        code = new_enrollment_code()
        pending = PendingEnrollment(code.digest, now + self._enrollment_code_lifetime)
        self._store.add_enrollment_code(
            pending.code_digest, patient.subject_id, pending.expire_time
        )
        patient.enrollment = pending
        return code

    def _registered(
        self, patient: Patient, registered_by: str, created: bool, code: EnrollmentCode
    ) -> Registered:
        assert patient.enrollment is not None  # _new_code set it
        return Registered(
            self._as_seen_by(patient, registered_by),
            created,
            code,
            patient.enrollment.expire_time,
        )

    def enroll(
        self, code_text: str, public_key: bytes, proof: bytes, label: str, now: datetime
    ) -> tuple[str, Device]:
        """Enroll the device key ``public_key`` as the first device of the patient that the
        one-time code ``code_text`` was issued for, with ``proof`` (the key's signature over
        :func:`chain.signed_messages.enrollment_message`). Returns the subject id and the
        device. The code is used up; a malformed request uses up nothing, and the same key
        enrolling with the same code again gets its device back."""
        code = parse_enrollment_code(code_text)
        check_label(label)
        key = check_public_key(public_key)
        if len(proof) != SIGNATURE_SIZE:
            raise InvalidInputError(
                f"expected a 64-byte Ed25519 proof of possession, got {len(proof)} bytes"
            )
        try:
            key.verify(proof, enrollment_message(code.digest, public_key))
        except InvalidSignature:
            raise InvalidInputError(
                "expected a proof of possession signed by the new key over "
                "'swiftchain/patient-device-enroll/v1\\n', the code's digest and the key, got a "
                "signature that does not verify"
            ) from None
        subject_id = self._store.enrollment_subject(code.digest)
        if subject_id is None:
            raise UnauthenticatedError(
                "this enrollment code is unknown or expired: check it, or ask the registrar "
                "for a new one"
            )
        patient = self._patient(subject_id)
        if patient.devices and patient.devices[0].public_key == public_key:
            # This key enrolled with this code already: a retry whose first answer was lost.
            return patient.subject_id, patient.devices[0]
        self._check_pending(patient, code, now)
        device = Device(new_device_key_id(), public_key, label, now)
        patient.devices.append(device)
        patient.enrollment = None
        entries = (
            [
                self._device_keys.enrolled(
                    patient.subject_id, device.key_id, public_key, code.digest, proof, now
                )
            ]
            if self._device_keys
            else []
        )
        self._store.update(patient, [self._device_added(patient, device, now)], entries)
        return patient.subject_id, device

    @staticmethod
    def _check_pending(patient: Patient, code: EnrollmentCode, now: datetime) -> None:
        """UnauthenticatedError unless ``code`` is ``patient``'s pending code, still good."""
        pending = patient.enrollment
        if patient.devices:
            raise UnauthenticatedError(
                "this enrollment code was used already: if not by this device, someone else "
                "enrolled with it; tell the registrar"
            )
        if pending is None or pending.code_digest != code.digest:
            raise UnauthenticatedError(
                "this enrollment code was replaced by a newer one: use the last code the "
                "registrar gave"
            )
        if now >= pending.expire_time:
            raise UnauthenticatedError(
                f"this enrollment code expired at {pending.expire_time.isoformat()}; ask the "
                "registrar for a new one"
            )

    def add_device(
        self,
        subject_id: str,
        public_key: bytes,
        proof: bytes,
        label: str,
        signed: RequestSignature | None,
        now: datetime,
    ) -> Device:
        """Add a device key to a patient (proof of possession over the subject id), on a
        request signed by one of the patient's active devices."""
        _check_subject(subject_id)
        check_label(label)
        check_possession(subject_id, public_key, proof)
        signed = require_signature(signed, _ACTIVE_DEVICE)
        request_time = check_shape(signed)
        patient = self._patient(subject_id)
        message = device_add_message(public_key, signed.key_id, request_time, signed.nonce)
        self.check_device_signed(patient, signed, message, now)
        if any(d.public_key == public_key for d in patient.devices):
            raise AlreadyExistsError("this public key is registered for the patient already")
        device = Device(new_device_key_id(), public_key, label, now)
        patient.devices.append(device)
        patient.request_nonces = remember_nonce(patient.request_nonces, signed, now)
        entries = (
            [self._device_keys.added(subject_id, device.key_id, public_key, signed, now)]
            if self._device_keys
            else []
        )
        self._store.update(patient, [self._device_added(patient, device, now)], entries)
        return device

    def revoke_device(
        self, subject_id: str, key_id: str, signed: RequestSignature | None, now: datetime
    ) -> Device:
        """Revoke a device key, on a request signed by one of the patient's active devices
        (the device itself may sign); revoking a revoked one changes nothing but uses up the
        request's nonce."""
        _check_subject(subject_id)
        if not key_id:
            raise InvalidInputError("expected the id of the device key to revoke, got none")
        signed = require_signature(signed, _ACTIVE_DEVICE)
        request_time = check_shape(signed)
        patient = self._patient(subject_id)
        message = device_revoke_message(key_id, signed.key_id, request_time, signed.nonce)
        self.check_device_signed(patient, signed, message, now)
        device = patient.device(key_id)
        patient.request_nonces = remember_nonce(patient.request_nonces, signed, now)
        if not device.active:
            self._store.update(patient, [])
            return device
        device.revoke_time = now
        event = events_pb2.PatientDeviceRevoked(subject_id=subject_id, key_id=key_id)
        entries = (
            [self._device_keys.revoked(subject_id, key_id, signed, now)]
            if self._device_keys
            else []
        )
        self._store.update(
            patient, [envelope(event, producer=PRODUCER, subject=subject_id, now=now)], entries
        )
        return device

    @staticmethod
    def check_device_signed(
        patient: Patient, signed: RequestSignature, message: bytes, now: datetime
    ) -> None:
        """PermissionDeniedError unless an active device of ``patient`` signed ``message``
        lately, with a nonce not seen before (the caller remembers the nonce with its change)."""
        signer = next((d for d in patient.devices if d.key_id == signed.key_id), None)
        if signer is None:
            raise PermissionDeniedError(
                f"expected a signature by {_ACTIVE_DEVICE}, got one by {signed.key_id!r}, "
                f"which is not a device of patient {patient.subject_id}"
            )
        if not signer.active:
            raise PermissionDeniedError(
                f"expected a signature by {_ACTIVE_DEVICE}, got one by device "
                f"{signed.key_id!r}, which was revoked; sign with an active device"
            )
        check_fresh(signed, patient.request_nonces, now)
        check_signature(signer.public_key, signed, message, "device key")

    def begin_login(self, subject_id: str, device_key_id: str, now: datetime) -> Challenge:
        """A fresh single-use challenge for an active device of the patient."""
        _check_subject(subject_id)
        device = self._patient(subject_id).device(device_key_id)
        if not device.active:
            raise UnauthenticatedError(
                f"device key {device_key_id!r} was revoked; use another device"
            )
        challenge = Challenge(
            challenge_id=str(uuid.uuid4()),
            subject_id=subject_id,
            device_key_id=device_key_id,
            nonce=secrets.token_bytes(NONCE_SIZE),
            expire_time=now + self._challenge_lifetime,
        )
        self._store.add_challenge(challenge)
        return challenge

    def complete_login(self, challenge_id: str, signature: bytes, now: datetime) -> IssuedToken:
        """A bearer token, if ``signature`` answers the challenge in time; the challenge is
        used up whatever the outcome, so a signature cannot be replayed or guessed at."""
        if not _UUID.fullmatch(challenge_id):
            raise InvalidInputError(
                f"expected a challenge id as a lower-case UUID, got {challenge_id!r}"
            )
        if len(signature) != 64:
            raise InvalidInputError(
                f"expected a 64-byte Ed25519 signature, got {len(signature)} bytes"
            )
        challenge = self._store.consume_challenge(challenge_id)
        if challenge is None:
            raise UnauthenticatedError(
                f"challenge {challenge_id} is unknown or was used already; start a new login"
            )
        if now >= challenge.expire_time:
            raise UnauthenticatedError(
                f"challenge {challenge_id} expired at {challenge.expire_time.isoformat()}; "
                "start a new login"
            )
        device = self._patient(challenge.subject_id).device(challenge.device_key_id)
        if not device.active:
            raise UnauthenticatedError(f"device key {device.key_id!r} was revoked")
        try:
            check_public_key(device.public_key).verify(
                signature, login_message(challenge_id, challenge.nonce)
            )
        except InvalidSignature:
            raise UnauthenticatedError(
                "the login signature does not verify with the device key"
            ) from None
        return self._tokens.issue(challenge.subject_id, device.key_id, now)

    def _patient(self, subject_id: str) -> Patient:
        patient = self._store.get(subject_id)
        if patient is None:
            raise NotFoundError(f"no patient {subject_id} is registered")
        return patient

    @staticmethod
    def _device_added(patient: Patient, device: Device, now: datetime) -> events_pb2.EventEnvelope:
        return envelope(
            events_pb2.PatientDeviceAdded(
                subject_id=patient.subject_id, key_id=device.key_id, public_key=device.public_key
            ),
            producer=PRODUCER,
            subject=patient.subject_id,
            now=now,
        )

    @staticmethod
    def _as_seen_by(patient: Patient, organization_id: str) -> Patient:
        """The patient with only ``organization_id``'s own reference."""
        own = patient.references.get(organization_id)
        return Patient(
            patient.subject_id,
            patient.registered_by,
            patient.create_time,
            {organization_id: own} if own else {},
            patient.devices,
            patient.version,
            patient.request_nonces,
            patient.enrollment,
            patient.recovery_code,
            patient.recoveries,
        )


@dataclass(frozen=True)
class Practitioner:
    """A practitioner of a hospital: a random id, the hospital's reference, a role code."""

    practitioner_id: str
    organization_id: str
    display_ref: str
    role_code: str
    create_time: datetime
    active: bool = True


class PractitionerStore(Protocol):
    """What practitioners need from storage."""

    def insert_or_get(
        self, practitioner: Practitioner, events: Sequence[events_pb2.EventEnvelope]
    ) -> Practitioner:
        """Insert unless (organization, display_ref) exists; return the one on record."""


class PractitionerDirectory:
    """Registers the practitioners of hospitals."""

    def __init__(self, store: PractitionerStore) -> None:
        self._store = store

    def register(
        self, organization_id: str, display_ref: str, role_code: str, now: datetime
    ) -> Practitioner:
        """Register (idempotent on organization and display_ref)."""
        if not 1 <= len(display_ref) <= 128:
            raise InvalidInputError(
                f"expected a display_ref of 1-128 characters, got {len(display_ref)}"
            )
        if not 1 <= len(role_code) <= 64:
            raise InvalidInputError(
                f"expected a role code of 1-64 characters, got {len(role_code)}"
            )
        practitioner = Practitioner(
            "pr-" + secrets.token_urlsafe(16), organization_id, display_ref, role_code, now
        )
        event = events_pb2.PractitionerRegistered(
            practitioner_id=practitioner.practitioner_id,
            organization_id=organization_id,
            role_code=role_code,
        )
        stored = self._store.insert_or_get(
            practitioner, [envelope(event, producer=PRODUCER, subject=organization_id, now=now)]
        )
        if stored.role_code != role_code:
            raise AlreadyExistsError(
                f"practitioner {display_ref!r} of {organization_id} is registered already with "
                f"role {stored.role_code!r}, not {role_code!r}"
            )
        return stored
