"""Recovery of a patient that lost every device: a hospital's recovery code and a waiting period.

Without a device the patient can sign nothing, and nobody else may add a device for it (that
would let whoever did act as the patient). So a hospital that knows the patient (it registered
it, or holds a reference to it) issues a one-time recovery code, shown to the patient once, as an
enrollment code is (:mod:`chain.enrollment_codes`: kept as its digest, good for an hour by
default). The patient's new device makes its key and begins a recovery with the code, signing
its request (:func:`chain.signed_messages.recovery_message`) over the code's digest, its key and
the time it asks. The recovery then waits (:data:`DEFAULT_WAITING_PERIOD` unless configured,
never less than the log's :data:`chain.holder_signatures.RECOVERY_WAIT_FLOOR`): every device of
the patient that is still active sees it in the patient's list of recoveries and can cancel it
with a signed request (:func:`chain.signed_messages.recovery_cancel_message`), so a hospital, or
someone who got hold of the code, cannot take the patient over while the patient still holds a
device. Once the wait is over the recovery completes: the new key becomes an active device and
a KEY entry carries the device's own recovery request to the log, where every node checks the
request's signature and that the entry comes at least the floor after it.

The time is always passed in; nothing here reads a clock.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidSignature

from chain.enrollment_codes import EnrollmentCode, new_enrollment_code, parse_enrollment_code
from chain.entry_rules import SIGNATURE_SIZE
from chain.errors import (
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from chain.holder_signatures import RECOVERY_WAIT_FLOOR
from chain.signed_messages import recovery_cancel_message, recovery_message
from services.identity.domain.device_keys import DeviceKeyLog
from services.identity.domain.keys import check_public_key
from services.identity.domain.organizations import PRODUCER
from services.identity.domain.patients import (
    ENROLLMENT_CODE_LIFETIME,
    Device,
    Patient,
    PatientDirectory,
    PatientStore,
    PendingEnrollment,
    Recovery,
    check_label,
    new_device_key_id,
)
from services.identity.domain.request_signatures import (
    MAX_CLOCK_AHEAD,
    MAX_REQUEST_AGE,
    RequestSignature,
    check_shape,
    remember_nonce,
    require_signature,
)
from services.platform.events import envelope
from swiftchain.events.v1 import events_pb2

#: How long a recovery waits for the patient's devices to cancel it, by default.
DEFAULT_WAITING_PERIOD = timedelta(hours=24)
_ACTIVE_DEVICE = "one of the patient's active devices"


class RecoveryDesk:
    """Issues recovery codes, begins, lists, cancels and completes recoveries."""

    def __init__(
        self,
        store: PatientStore,
        *,
        waiting_period: timedelta = DEFAULT_WAITING_PERIOD,
        code_lifetime: timedelta = ENROLLMENT_CODE_LIFETIME,
        device_keys: DeviceKeyLog | None = None,
    ) -> None:
        if waiting_period < RECOVERY_WAIT_FLOOR:
            raise InvalidInputError(
                f"expected a recovery waiting period of at least {RECOVERY_WAIT_FLOOR} (the "
                f"log refuses a shorter one), got {waiting_period}"
            )
        self._store = store
        self._waiting_period = waiting_period
        self._code_lifetime = code_lifetime
        self._device_keys = device_keys

    def issue_code(
        self, subject_id: str, issued_by: str, now: datetime
    ) -> tuple[EnrollmentCode, datetime]:
        """A one-time recovery code for a patient that has had a device, issued by a hospital
        that knows the patient; the code and when it expires. A newer code voids the older."""
        patient = self._patient(subject_id)
        if issued_by != patient.registered_by and issued_by not in patient.references:
            raise PermissionDeniedError(
                f"expected the hospital that registered patient {subject_id} or holds a "
                f"reference to it, got {issued_by!r}, which does neither"
            )
        if not patient.devices:
            raise PreconditionError(
                f"patient {subject_id} has never had a device: its first device enrolls with "
                "an enrollment code (register the patient again for a new one)"
            )
        if _pending(patient) is not None:
            raise PreconditionError(
                f"patient {subject_id} has a recovery pending already; it completes or is "
                "cancelled first"
            )
        code = new_enrollment_code()
        expire_time = now + self._code_lifetime
        self._store.add_enrollment_code(code.digest, subject_id, expire_time)
        patient.recovery_code = PendingEnrollment(code.digest, expire_time)
        self._store.update(patient, [])
        return code, expire_time

    def begin(
        self,
        code_text: str,
        public_key: bytes,
        proof: bytes,
        label: str,
        request_time: datetime,
        now: datetime,
    ) -> tuple[str, Recovery]:
        """Begin a recovery with the recovery code ``code_text`` for the new device key
        ``public_key``, whose signature ``proof`` covers the recovery request made at
        ``request_time``; the subject id and the pending recovery. The code is used up; the
        same key beginning again with the same code gets its recovery back."""
        code = parse_enrollment_code(code_text)
        check_label(label)
        _check_recovery_proof(code, public_key, proof, request_time, now)
        subject_id = self._store.enrollment_subject(code.digest)
        if subject_id is None:
            raise UnauthenticatedError(
                "this recovery code is unknown or expired: ask the hospital for a new one"
            )
        patient = self._patient(subject_id)
        again = next((r for r in patient.recoveries if r.code_digest == code.digest), None)
        if again is not None and again.public_key == public_key:
            return subject_id, again  # a retry whose first answer was lost
        _check_code(patient, code, now)
        if any(d.public_key == public_key for d in patient.devices):
            raise InvalidInputError("expected a new device key, got one the patient has had")
        recovery = Recovery(
            recovery_id=str(uuid.uuid4()),
            key_id=new_device_key_id(),
            public_key=public_key,
            label=label,
            code_digest=code.digest,
            proof=proof,
            request_time=request_time,
            complete_after=request_time + self._waiting_period,
        )
        patient.recovery_code = None
        patient.recoveries.append(recovery)
        self._store.update(patient, [])
        return subject_id, recovery

    def recoveries(self, subject_id: str) -> list[Recovery]:
        """The patient's recoveries, newest first: what its devices read to learn that someone
        is recovering the patient, and cancel it if that is not the patient."""
        return list(reversed(self._patient(subject_id).recoveries))

    def cancel(
        self,
        subject_id: str,
        recovery_id: str,
        signed: RequestSignature | None,
        now: datetime,
    ) -> Recovery:
        """Cancel a pending recovery, on a request signed by one of the patient's active
        devices; cancelling a cancelled one changes nothing but uses up the nonce."""
        if not recovery_id:
            # The request's own fields first: an empty request is malformed, not unsigned.
            raise InvalidInputError("expected the id of the recovery to cancel, got none")
        signed = require_signature(signed, _ACTIVE_DEVICE)
        request_time = check_shape(signed)
        patient = self._patient(subject_id)
        message = recovery_cancel_message(recovery_id, signed.key_id, request_time, signed.nonce)
        PatientDirectory.check_device_signed(patient, signed, message, now)
        recovery = _recovery(patient, recovery_id)
        if recovery.status == "COMPLETED":
            raise PreconditionError(
                f"recovery {recovery_id} completed at {_iso(recovery.complete_time)}: revoke "
                f"its device {recovery.key_id!r} instead"
            )
        patient.request_nonces = remember_nonce(patient.request_nonces, signed, now)
        if recovery.status == "PENDING":
            recovery.cancel_time = now
            recovery.cancelled_by = signed.key_id
        self._store.update(patient, [])
        return recovery

    def complete(self, subject_id: str, recovery_id: str, now: datetime) -> Device:
        """Make a recovery's device key an active device of the patient once its waiting
        period is over and nobody cancelled it; completing it again returns the device."""
        patient = self._patient(subject_id)
        recovery = _recovery(patient, recovery_id)
        if recovery.status == "COMPLETED":
            return patient.device(recovery.key_id)
        if recovery.status == "CANCELLED":
            raise PermissionDeniedError(
                f"recovery {recovery_id} was cancelled at {_iso(recovery.cancel_time)} by the "
                f"patient's device {recovery.cancelled_by!r}"
            )
        if now < recovery.complete_after:
            raise PreconditionError(
                f"recovery {recovery_id} waits until {recovery.complete_after.isoformat()} for "
                "the patient's devices to cancel it; complete it after that"
            )
        device = Device(recovery.key_id, recovery.public_key, recovery.label, now)
        patient.devices.append(device)
        recovery.complete_time = now
        entries = (
            [
                self._device_keys.recovered(
                    subject_id,
                    device.key_id,
                    device.public_key,
                    recovery.code_digest,
                    recovery.proof,
                    recovery.request_time,
                    now,
                )
            ]
            if self._device_keys
            else []
        )
        added = events_pb2.PatientDeviceAdded(
            subject_id=subject_id, key_id=device.key_id, public_key=device.public_key
        )
        event = envelope(added, producer=PRODUCER, subject=subject_id, now=now)
        self._store.update(patient, [event], entries)
        return device

    def _patient(self, subject_id: str) -> Patient:
        patient = self._store.get(subject_id)
        if patient is None:
            raise NotFoundError(f"no patient {subject_id} is registered")
        return patient


def _check_recovery_proof(
    code: EnrollmentCode, public_key: bytes, proof: bytes, request_time: datetime, now: datetime
) -> None:
    """InvalidInputError unless ``proof`` is ``public_key``'s signature over its recovery
    request; PermissionDeniedError if the request time is stale or ahead of the clock."""
    key = check_public_key(public_key)
    if len(proof) != SIGNATURE_SIZE:
        raise InvalidInputError(
            f"expected a 64-byte Ed25519 recovery request signature, got {len(proof)} bytes"
        )
    try:
        key.verify(proof, recovery_message(code.digest, public_key, request_time))
    except InvalidSignature:
        raise InvalidInputError(
            "expected the new key's signature over 'swiftchain/patient-device-recover/v1\\n', "
            "the code's digest, the key and the request time, got one that does not verify"
        ) from None
    if not now - MAX_REQUEST_AGE <= request_time <= now + MAX_CLOCK_AHEAD:
        raise PermissionDeniedError(
            f"expected a recovery request made within {MAX_REQUEST_AGE} of the service's clock "
            f"({now.isoformat()}), got one made at {request_time.isoformat()}; sign it again"
        )


def _check_code(patient: Patient, code: EnrollmentCode, now: datetime) -> None:
    """UnauthenticatedError unless ``code`` is the patient's latest recovery code, unexpired."""
    pending = patient.recovery_code
    if pending is None or pending.code_digest != code.digest:
        raise UnauthenticatedError(
            "this recovery code was used already or replaced by a newer one: use the last "
            "code the hospital gave"
        )
    if now >= pending.expire_time:
        raise UnauthenticatedError(
            f"this recovery code expired at {pending.expire_time.isoformat()}; ask the "
            "hospital for a new one"
        )


def _pending(patient: Patient) -> Recovery | None:
    return next((r for r in patient.recoveries if r.status == "PENDING"), None)


def _recovery(patient: Patient, recovery_id: str) -> Recovery:
    for recovery in patient.recoveries:
        if recovery.recovery_id == recovery_id:
            return recovery
    raise NotFoundError(f"patient {patient.subject_id} has no recovery {recovery_id!r}")


def _iso(time: datetime | None) -> str:
    return time.isoformat() if time else "?"
