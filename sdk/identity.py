"""A patient's device enrolling its own key, and requests that change keys, signed by a key
their owner already holds.

A patient's keys are born on the patient's device and never leave it. A hospital or app that
registers a patient (:func:`register_patient_request`) is given a one-time enrollment code, not a
key; it shows the code to the patient, and the device generates its key and enrolls it with the
code (:func:`enroll_device`), so the registrar never holds anything to act as the patient with:

    registered = hospital_stub.RegisterPatient(register_patient_request("mrn-7"))
    show(registered.enrollment_code)                    # on the registrar's screen, once
    device = enroll_device(public_stub, code_typed_on_the_phone, "phone")   # on the phone

The identity service adds or revokes a patient's device only on a request signed by one of the
patient's active devices, and rotates or revokes an organization's signing key only on a
request signed by the organization's active signing key; a bearer token or a client certificate
alone is refused. These functions build such requests: the signature covers the request's
fields, the time and a fresh random nonce (``chain/signed_messages.py``), so send each request
once, within a few minutes, and build a new one to retry.

    device = PatientDevice.from_folder(Path("my-phone"))
    tablet = Ed25519PrivateKey.generate()
    stub.AddPatientDevice(add_device_request(device, tablet, "tablet"), metadata=bearer(token))

    hospital = OrganizationSigningKey.from_folder(Path("hospital-d"))
    new_key = Ed25519PrivateKey.generate()
    stub.RotateOrganizationKey(hospital.rotate_request(new_key, KEY_REASON_ROUTINE_ROTATION))

A patient that lost every device recovers with a recovery code a hospital issues
(``IssueRecoveryCode``): the new device signs its recovery request (:func:`recovery_request`),
the recovery waits (24 hours by default) while the patient's devices list it
(``ListRecoveries``) and may cancel it (:func:`cancel_recovery_request`), then completes
(``CompleteRecovery``).
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeAlias

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chain.enrollment_codes import parse_enrollment_code
from chain.signed_messages import (
    device_add_message,
    device_revoke_message,
    enrollment_message,
    organization_key_revoke_message,
    organization_key_rotate_message,
    possession_message,
    recovery_cancel_message,
    recovery_message,
)
from sdk.consent import PatientDevice
from swiftchain.chain.v1 import entry_pb2
from swiftchain.identity.v1 import identity_pb2, identity_service_pb2_grpc
from swiftchain.identity.v1 import identity_service_pb2 as pb

NONCE_SIZE = 32
#: Seconds an enrollment call may take.
ENROLL_TIMEOUT = 10.0
ReasonValue: TypeAlias = entry_pb2.KeyReason.ValueType


def _public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class _Freshness:
    request_time: datetime
    nonce: bytes

    @classmethod
    def new(cls, now: datetime | None) -> _Freshness:
        return cls(now or datetime.now(UTC), secrets.token_bytes(NONCE_SIZE))

    def signature(
        self, key: Ed25519PrivateKey, key_id: str, message: bytes
    ) -> identity_pb2.RequestSignature:
        signed = identity_pb2.RequestSignature(
            key_id=key_id, nonce=self.nonce, signature=key.sign(message)
        )
        signed.request_time.FromDatetime(self.request_time)
        return signed


def register_patient_request(reference: str = "") -> pb.RegisterPatientRequest:
    """A request to register a patient under the registrar's own opaque ``reference`` (may be
    empty for an app), with a fresh request id; its response carries the enrollment code."""
    return pb.RegisterPatientRequest(hospital_reference=reference, request_id=str(uuid.uuid4()))


def enrollment_request(code: str, key: Ed25519PrivateKey, label: str) -> pb.EnrollDeviceRequest:
    """A request to enroll ``key`` as a patient's first device with the one-time ``code``, with
    the key's proof of possession bound to the code. InvalidInputError (chain/errors.py) if the
    code is malformed or mistyped: nothing is sent then."""
    public = _public(key)
    digest = parse_enrollment_code(code).digest
    return pb.EnrollDeviceRequest(
        enrollment_code=code,
        public_key=public,
        proof_of_possession=key.sign(enrollment_message(digest, public)),
        label=label,
    )


def enroll_device(
    stub: identity_service_pb2_grpc.IdentityServiceStub,
    code: str,
    label: str,
    *,
    key: Ed25519PrivateKey | None = None,
    timeout: float = ENROLL_TIMEOUT,
) -> PatientDevice:
    """Generate a device key here, on the patient's device (or take ``key``, generated here
    and already saved), and enroll it with the one-time ``code`` (``stub`` on the identity
    service's public port; no credential but the code). Returns the device, to keep
    (``cli/identity_files.py`` writes its folder); the key is in no other hands. grpc.RpcError
    UNAUTHENTICATED if the code is unknown, expired, replaced or used: a code used by someone
    else means someone enrolled in the patient's name."""
    key = key or Ed25519PrivateKey.generate()
    enrolled = stub.EnrollDevice(enrollment_request(code, key, label), timeout=timeout)
    return PatientDevice(enrolled.subject_id, enrolled.device.key_id, key)


def recovery_request(
    code: str, key: Ed25519PrivateKey, label: str, *, now: datetime | None = None
) -> pb.BeginRecoveryRequest:
    """A request to begin recovering a patient with the one-time recovery ``code``, for the
    new device key ``key`` (generated on the device), signed by that key over the code's
    digest, the key and the request time. InvalidInputError if the code is malformed."""
    public = _public(key)
    digest = parse_enrollment_code(code).digest
    request_time = now or datetime.now(UTC)
    request = pb.BeginRecoveryRequest(
        recovery_code=code,
        public_key=public,
        label=label,
        signature=key.sign(recovery_message(digest, public, request_time)),
    )
    request.request_time.FromDatetime(request_time)
    return request


def cancel_recovery_request(
    device: PatientDevice, recovery_id: str, *, now: datetime | None = None
) -> pb.CancelRecoveryRequest:
    """A request to cancel the pending recovery ``recovery_id`` of ``device``'s patient,
    signed by ``device`` (which must be active)."""
    fresh = _Freshness.new(now)
    message = recovery_cancel_message(recovery_id, device.key_id, fresh.request_time, fresh.nonce)
    return pb.CancelRecoveryRequest(
        subject_id=device.subject_id,
        recovery_id=recovery_id,
        request_signature=fresh.signature(device.key, device.key_id, message),
    )


def add_device_request(
    device: PatientDevice,
    new_key: Ed25519PrivateKey,
    label: str,
    *,
    now: datetime | None = None,
) -> pb.AddPatientDeviceRequest:
    """A request to add ``new_key`` as a device of ``device``'s patient, with the new key's
    proof of possession and signed by ``device`` (which must be active)."""
    public = _public(new_key)
    fresh = _Freshness.new(now)
    message = device_add_message(public, device.key_id, fresh.request_time, fresh.nonce)
    return pb.AddPatientDeviceRequest(
        subject_id=device.subject_id,
        public_key=public,
        proof_of_possession=new_key.sign(possession_message(device.subject_id, public)),
        label=label,
        request_signature=fresh.signature(device.key, device.key_id, message),
    )


def revoke_device_request(
    device: PatientDevice, key_id: str, *, now: datetime | None = None
) -> pb.RevokePatientDeviceRequest:
    """A request to revoke the device ``key_id`` of ``device``'s patient (``device`` itself,
    or another), signed by ``device`` (which must be active)."""
    fresh = _Freshness.new(now)
    message = device_revoke_message(key_id, device.key_id, fresh.request_time, fresh.nonce)
    return pb.RevokePatientDeviceRequest(
        subject_id=device.subject_id,
        key_id=key_id,
        request_signature=fresh.signature(device.key, device.key_id, message),
    )


@dataclass(frozen=True)
class OrganizationSigningKey:
    """An organization's active signing key: its id on the log and the private key."""

    organization_id: str
    key_id: str
    key: Ed25519PrivateKey

    @classmethod
    def from_folder(cls, folder: Path) -> OrganizationSigningKey:
        """The key of a folder made by ``swiftchain identity register-org`` (``organization.json``
        and ``signing-key.pem``, as ``rotate-key`` keeps them current)."""
        facts = json.loads((folder / "organization.json").read_text())
        key = serialization.load_pem_private_key((folder / "signing-key.pem").read_bytes(), None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"expected an Ed25519 signing key in {folder}, got another key type")
        if not facts.get("key_id"):
            raise ValueError(f"{folder / 'organization.json'} names no signing key id")
        return cls(str(facts["organization_id"]), str(facts["key_id"]), key)

    def rotate_request(
        self,
        new_key: Ed25519PrivateKey,
        reason: ReasonValue,
        *,
        replaces_key_id: str = "",
        now: datetime | None = None,
    ) -> pb.RotateOrganizationKeyRequest:
        """A request to replace ``replaces_key_id`` (this key, unless told otherwise) with
        ``new_key``, with the new key's proof of possession and signed by this key."""
        replaced = replaces_key_id or self.key_id
        public = _public(new_key)
        fresh = _Freshness.new(now)
        message = organization_key_rotate_message(
            self.organization_id,
            replaced,
            public,
            reason,
            self.key_id,
            fresh.request_time,
            fresh.nonce,
        )
        return pb.RotateOrganizationKeyRequest(
            organization_id=self.organization_id,
            replaces_key_id=replaced,
            new_public_key=public,
            proof_of_possession=new_key.sign(possession_message(self.organization_id, public)),
            reason=reason,
            request_signature=fresh.signature(self.key, self.key_id, message),
        )

    def revoke_request(
        self, key_id: str, reason: ReasonValue, *, now: datetime | None = None
    ) -> pb.RevokeOrganizationKeyRequest:
        """A request to revoke the organization's key ``key_id`` (this key or another of its
        active keys), signed by this key."""
        fresh = _Freshness.new(now)
        message = organization_key_revoke_message(
            self.organization_id, key_id, reason, self.key_id, fresh.request_time, fresh.nonce
        )
        return pb.RevokeOrganizationKeyRequest(
            organization_id=self.organization_id,
            key_id=key_id,
            reason=reason,
            request_signature=fresh.signature(self.key, self.key_id, message),
        )
