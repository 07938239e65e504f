"""Patients, their device keys, and challenge-response login to short-lived tokens.

A patient is a random subject id and the Ed25519 keys of its devices; nothing else about the
person is kept but the registering organization's own opaque reference. A device logs in by
signing a single-use challenge (``"swiftchain/login/v1\\n" || challenge_id || "\\n" || nonce``)
and gets a bearer token naming its subject and device; revoking the device ends its tokens
everywhere (the ``PatientDeviceRevoked`` event feeds every server's revocation list).

The token says who calls, but does not by itself add or revoke a device: that also takes a
signature over the request by one of the patient's active devices
(:mod:`services.identity.domain.request_signatures`), so a stolen token cannot let a thief's
device in or lock the patient's out.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from cryptography.exceptions import InvalidSignature

from chain.errors import (
    AlreadyExistsError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from chain.signed_messages import device_add_message, device_revoke_message
from services.identity.domain.keys import check_possession, check_public_key
from services.identity.domain.organizations import PRODUCER
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

    def device(self, key_id: str) -> Device:
        """The device ``key_id``; NotFoundError if the patient has none such."""
        for device in self.devices:
            if device.key_id == key_id:
                return device
        raise NotFoundError(f"patient {self.subject_id} has no device key {key_id!r}")


@dataclass(frozen=True)
class Registration:
    """The idempotency record of one RegisterPatient: its key, the request's fingerprint and
    the subject id it created."""

    key: str
    fingerprint: str
    subject_id: str


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

    def update(self, patient: Patient, events: Sequence[events_pb2.EventEnvelope]) -> None:
        """Write if unchanged since read (then bump the version); else ConflictError."""

    def add_challenge(self, challenge: Challenge) -> None:
        """Store a new challenge."""

    def consume_challenge(self, challenge_id: str) -> Challenge | None:
        """Mark the challenge used and return it, atomically; None if unknown or used."""


def _check_label(label: str) -> None:
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
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._challenge_lifetime = challenge_lifetime

    def register(
        self,
        registered_by: str,
        hospital_reference: str,
        device_public_key: bytes,
        device_proof: bytes,
        device_label: str,
        request_id: str,
        now: datetime,
    ) -> tuple[Patient, bool]:
        """Register a patient for ``registered_by`` (idempotent on its reference when given,
        else on ``request_id``); returns the patient and whether it was created now."""
        if not _UUID.fullmatch(request_id):
            raise InvalidInputError(
                f"expected a request id as a lower-case UUID, got {request_id!r}"
            )
        if hospital_reference and not 1 <= len(hospital_reference) <= 128:
            raise InvalidInputError(
                f"expected a hospital reference of 1-128 characters, got {len(hospital_reference)}"
            )
        _check_label(device_label)
        if device_public_key:
            check_possession(request_id, device_public_key, device_proof)
        elif device_proof or device_label:
            raise InvalidInputError("expected a device public key with its proof and label")
        key = (
            f"ref\x00{registered_by}\x00{hospital_reference}"
            if hospital_reference
            else f"req\x00{registered_by}\x00{request_id}"
        )
        fingerprint = hashlib.sha256(
            b"\x00".join(
                [
                    registered_by.encode(),
                    hospital_reference.encode(),
                    device_public_key,
                    device_label.encode(),
                ]
            )
        ).hexdigest()
        claimed = self._store.claim_registration(Registration(key, fingerprint, new_subject_id()))
        if claimed.fingerprint != fingerprint:
            raise AlreadyExistsError(
                "a patient is registered already under this "
                + ("hospital reference" if hospital_reference else "request id")
                + " with different details"
            )
        existing = self._store.get(claimed.subject_id)
        if existing is not None:
            return self._as_seen_by(existing, registered_by), False
        patient = Patient(claimed.subject_id, registered_by, now)
        if hospital_reference:
            patient.references[registered_by] = hospital_reference
        events = [
            envelope(
                events_pb2.PatientRegistered(
                    subject_id=patient.subject_id, registered_by=registered_by
                ),
                producer=PRODUCER,
                subject=patient.subject_id,
                now=now,
            )
        ]
        if device_public_key:
            device = Device(new_device_key_id(), device_public_key, device_label, now)
            patient.devices.append(device)
            events.append(self._device_added(patient, device, now))
        if not self._store.create(patient, events):
            # A concurrent identical request created it first: report that one.
            stored = self._store.get(claimed.subject_id)
            assert stored is not None
            return self._as_seen_by(stored, registered_by), False
        return self._as_seen_by(patient, registered_by), True

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
        _check_label(label)
        check_possession(subject_id, public_key, proof)
        signed = require_signature(signed, _ACTIVE_DEVICE)
        request_time = check_shape(signed)
        patient = self._patient(subject_id)
        message = device_add_message(
            subject_id, public_key, label, signed.key_id, request_time, signed.nonce
        )
        self._check_device_signed(patient, signed, message, now)
        if any(d.public_key == public_key for d in patient.devices):
            raise AlreadyExistsError("this public key is registered for the patient already")
        device = Device(new_device_key_id(), public_key, label, now)
        patient.devices.append(device)
        patient.request_nonces = remember_nonce(patient.request_nonces, signed, now)
        self._store.update(patient, [self._device_added(patient, device, now)])
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
        message = device_revoke_message(
            subject_id, key_id, signed.key_id, request_time, signed.nonce
        )
        self._check_device_signed(patient, signed, message, now)
        device = patient.device(key_id)
        patient.request_nonces = remember_nonce(patient.request_nonces, signed, now)
        if not device.active:
            self._store.update(patient, [])
            return device
        device.revoke_time = now
        event = events_pb2.PatientDeviceRevoked(subject_id=subject_id, key_id=key_id)
        self._store.update(
            patient, [envelope(event, producer=PRODUCER, subject=subject_id, now=now)]
        )
        return device

    @staticmethod
    def _check_device_signed(
        patient: Patient, signed: RequestSignature, message: bytes, now: datetime
    ) -> None:
        """PermissionDeniedError unless an active device of ``patient`` signed ``message``
        lately, with a nonce not seen before."""
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
