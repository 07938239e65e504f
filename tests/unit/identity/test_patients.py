"""Patients, enrollment codes, devices, login and practitioners
(services/identity/domain/patients.py), on a fake store with the same guarantees as the real
one."""

from __future__ import annotations

import copy
import dataclasses
import json
import secrets
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chain.consortium import GenesisKey
from chain.device_keys import check_consent_signature
from chain.enrollment_codes import EnrollmentCode, new_enrollment_code
from chain.entry import EntrySigner, parse_entry
from chain.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from chain.signed_messages import (
    DIRECTIVE_PREFIX,
    device_add_message,
    device_revoke_message,
    enrollment_message,
    possession_message,
    recovery_cancel_message,
    recovery_message,
)
from chain.tags import device_key_tag, subject_tag
from chain.validation import EntryRejectedError, EntryValidator, KeyRegistry
from services.identity.domain.device_keys import DeviceKeyLog
from services.identity.domain.organizations import KeyEntry
from services.identity.domain.patients import (
    ENROLLMENT_CODE_LIFETIME,
    Challenge,
    Device,
    Patient,
    PatientDirectory,
    Practitioner,
    PractitionerDirectory,
    Recovery,
    Registered,
    Registration,
    login_message,
)
from services.identity.domain.recovery import RecoveryDesk
from services.identity.domain.request_signatures import RequestSignature
from services.platform.tokens import TokenIssuer, TokenVerifier
from swiftchain.chain.v1 import entry_pb2
from swiftchain.events.v1 import events_pb2

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
TOKEN_KEY = Ed25519PrivateKey.generate()


class FakeStore:
    def __init__(self) -> None:
        self.registrations: dict[str, Registration] = {}
        self.patients: dict[str, Patient] = {}
        self.challenges: dict[str, tuple[Challenge, bool]] = {}
        self.practitioners: dict[tuple[str, str], Practitioner] = {}
        self.events: list[events_pb2.EventEnvelope] = []
        #: The KEY entries written with the patients' changes, in order.
        self.entries: list[KeyEntry] = []
        #: code digest -> (subject id, expire time)
        self.enrollment_codes: dict[bytes, tuple[str, datetime]] = {}

    def claim_registration(self, registration: Registration) -> Registration:
        return self.registrations.setdefault(registration.key, registration)

    def get(self, subject_id: str) -> Patient | None:
        patient = self.patients.get(subject_id)
        return copy.deepcopy(patient) if patient else None

    def create(self, patient: Patient, events: Sequence[events_pb2.EventEnvelope]) -> bool:
        if patient.subject_id in self.patients:
            return False
        self.patients[patient.subject_id] = copy.deepcopy(patient)
        self.events.extend(events)
        return True

    def update(
        self,
        patient: Patient,
        events: Sequence[events_pb2.EventEnvelope],
        entries: Sequence[KeyEntry] = (),
    ) -> None:
        if self.patients[patient.subject_id].version != patient.version:
            raise ConflictError("changed meanwhile")
        patient.version += 1
        self.patients[patient.subject_id] = copy.deepcopy(patient)
        self.events.extend(events)
        self.entries.extend(entries)

    def add_challenge(self, challenge: Challenge) -> None:
        self.challenges[challenge.challenge_id] = (challenge, False)

    def consume_challenge(self, challenge_id: str) -> Challenge | None:
        found = self.challenges.get(challenge_id)
        if found is None or found[1]:
            return None
        self.challenges[challenge_id] = (found[0], True)
        return found[0]

    def add_enrollment_code(
        self, code_digest: bytes, subject_id: str, expire_time: datetime
    ) -> None:
        assert code_digest not in self.enrollment_codes
        self.enrollment_codes[code_digest] = (subject_id, expire_time)

    def enrollment_subject(self, code_digest: bytes) -> str | None:
        found = self.enrollment_codes.get(code_digest)
        return found[0] if found else None

    def insert_or_get(
        self, practitioner: Practitioner, events: Sequence[events_pb2.EventEnvelope]
    ) -> Practitioner:
        key = (practitioner.organization_id, practitioner.display_ref)
        if key not in self.practitioners:
            self.practitioners[key] = practitioner
            self.events.extend(events)
        return self.practitioners[key]


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def directory(store: FakeStore) -> PatientDirectory:
    issuer = TokenIssuer(TOKEN_KEY, issuer="swiftchain-identity", audience="swiftchain")
    return PatientDirectory(store, issuer)


def registration(
    directory: PatientDirectory, reference: str = "mrn-7", by: str = "hospital-a"
) -> Registered:
    """A new patient, registered by ``by``, with no device yet: the code its device enrolls
    with."""
    registered = directory.register(by, reference, str(uuid.uuid4()), NOW)
    assert registered.created
    return registered


def enroll(
    directory: PatientDirectory,
    code: EnrollmentCode | str,
    device: Ed25519PrivateKey,
    *,
    label: str = "phone",
    at: datetime = NOW,
) -> tuple[str, Device]:
    """Enroll ``device`` with ``code``, as the patient's device does."""
    text = str(code)
    digest = code.digest if isinstance(code, EnrollmentCode) else b""
    proof = device.sign(enrollment_message(digest, raw(device)))
    return directory.enroll(text, raw(device), proof, label, at)


def register(
    directory: PatientDirectory, reference: str = "mrn-7", by: str = "hospital-a"
) -> tuple[Patient, Ed25519PrivateKey]:
    """A patient registered by ``by`` whose phone enrolled with its code; the phone's key."""
    registered = registration(directory, reference, by)
    device = Ed25519PrivateKey.generate()
    _, enrolled = enroll(directory, registered.code, device)
    return dataclasses.replace(registered.patient, devices=[enrolled]), device


def signed(
    key: Ed25519PrivateKey,
    key_id: str,
    message: Callable[[str, datetime, bytes], bytes],
    *,
    at: datetime = NOW,
    nonce: bytes | None = None,
) -> RequestSignature:
    """A request signature by ``key`` (as ``key_id``) over ``message(key_id, at, nonce)``."""
    nonce = nonce or secrets.token_bytes(32)
    return RequestSignature(key_id, at, nonce, key.sign(message(key_id, at, nonce)))


def add_signed(
    patient: Patient,
    signer: Ed25519PrivateKey,
    public_key: bytes,
    label: str,
    *,
    signer_id: str = "",
    at: datetime = NOW,
) -> RequestSignature:
    """The signature by ``signer`` (the patient's first device unless told) to add a key."""
    return signed(
        signer,
        signer_id or patient.devices[0].key_id,
        lambda kid, time, nonce: device_add_message(public_key, kid, time, nonce),
        at=at,
    )


def revoke_signed(
    patient: Patient, signer: Ed25519PrivateKey, key_id: str, *, signer_id: str = ""
) -> RequestSignature:
    """The signature by ``signer`` (the patient's first device unless told) to revoke a key."""
    return signed(
        signer,
        signer_id or patient.devices[0].key_id,
        lambda kid, time, nonce: device_revoke_message(key_id, kid, time, nonce),
    )


def add_second_device(
    directory: PatientDirectory, patient: Patient, first: Ed25519PrivateKey
) -> tuple[Ed25519PrivateKey, str]:
    """Add a second device to ``patient``, signed by its first; the new key and its id."""
    second = Ed25519PrivateKey.generate()
    added = directory.add_device(
        patient.subject_id,
        raw(second),
        second.sign(possession_message(patient.subject_id, raw(second))),
        "tablet",
        add_signed(patient, first, raw(second), "tablet"),
        NOW,
    )
    return second, added.key_id


def login(directory: PatientDirectory, patient: Patient, device: Ed25519PrivateKey) -> str:
    challenge = directory.begin_login(patient.subject_id, patient.devices[0].key_id, NOW)
    signature = device.sign(login_message(challenge.challenge_id, challenge.nonce))
    return directory.complete_login(challenge.challenge_id, signature, NOW).token


def test_a_patient_is_a_random_id_with_only_the_callers_reference_and_a_code_not_a_key(
    directory: PatientDirectory, store: FakeStore
) -> None:
    registered = registration(directory)
    patient = registered.patient
    assert patient.subject_id.startswith("pt-") and len(patient.subject_id) == 25
    assert patient.references == {"hospital-a": "mrn-7"}
    # The registrar is given a code and no key: the patient has no device until one enrolls.
    assert patient.devices == [] and store.patients[patient.subject_id].devices == []
    assert len(str(registered.code)) == 34 and str(registered.code).count("-") == 6
    assert registered.code_expire_time == NOW + ENROLLMENT_CODE_LIFETIME == NOW + timedelta(hours=1)
    # The service keeps the code's digest only, never the code.
    stored = store.patients[patient.subject_id]
    assert stored.enrollment is not None and stored.enrollment.code_digest == registered.code.digest
    assert store.enrollment_codes == {
        registered.code.digest: (patient.subject_id, registered.code_expire_time)
    }
    assert registered.code.secret not in repr(store.__dict__).encode()
    assert [e.type.rsplit(".", 1)[-1] for e in store.events] == ["PatientRegistered"]


def test_the_device_enrolls_its_own_key_with_the_code_and_logs_in(
    directory: PatientDirectory, store: FakeStore
) -> None:
    registered = registration(directory)
    phone = Ed25519PrivateKey.generate()
    subject_id, device = enroll(directory, registered.code, phone, label="my phone")
    assert subject_id == registered.patient.subject_id
    assert (device.public_key, device.label, device.active) == (raw(phone), "my phone", True)
    stored = store.patients[subject_id]
    assert stored.devices == [device] and stored.enrollment is None
    added = events_pb2.PatientDeviceAdded()
    store.events[-1].payload.Unpack(added)
    assert (added.subject_id, added.key_id, added.public_key) == (
        subject_id,
        device.key_id,
        raw(phone),
    )
    patient = dataclasses.replace(registered.patient, devices=[device])
    assert login(directory, patient, phone)


def test_a_code_enrolls_one_device_once(directory: PatientDirectory, store: FakeStore) -> None:
    registered = registration(directory)
    phone = Ed25519PrivateKey.generate()
    _, device = enroll(directory, registered.code, phone)
    events = len(store.events)
    # Whoever else holds the code (the registrar too) comes too late, and is told so.
    with pytest.raises(UnauthenticatedError, match="used already: if not by this device"):
        enroll(directory, registered.code, Ed25519PrivateKey.generate())
    # The phone repeating its own enrollment (its answer lost) gets its device back.
    assert enroll(directory, registered.code, phone)[1] == device
    assert store.patients[registered.patient.subject_id].devices == [device]
    assert len(store.events) == events


def test_an_expired_code_is_refused_and_the_lifetime_is_configurable(store: FakeStore) -> None:
    issuer = TokenIssuer(TOKEN_KEY, issuer="swiftchain-identity", audience="swiftchain")
    directory = PatientDirectory(store, issuer, enrollment_code_lifetime=timedelta(minutes=10))
    registered = registration(directory)
    assert registered.code_expire_time == NOW + timedelta(minutes=10)
    late = NOW + timedelta(minutes=10)
    with pytest.raises(UnauthenticatedError, match="expired at 2026-11-24T12:10:00"):
        enroll(directory, registered.code, Ed25519PrivateKey.generate(), at=late)
    assert store.patients[registered.patient.subject_id].devices == []
    phone = Ed25519PrivateKey.generate()
    just_in_time = late - timedelta(microseconds=1)
    assert enroll(directory, registered.code, phone, at=just_in_time)[1].public_key == raw(phone)


def test_an_unknown_or_malformed_code_is_refused(directory: PatientDirectory) -> None:
    registration(directory)
    with pytest.raises(UnauthenticatedError, match="enrollment code is unknown or expired"):
        enroll(directory, new_enrollment_code(), Ed25519PrivateKey.generate())
    for text, message in (
        ("", "expected an enrollment code, got none"),
        ("ABCD-EFGH", "expected an enrollment code of 28 letters and digits"),
    ):
        with pytest.raises(InvalidInputError, match=message):
            enroll(directory, text, Ed25519PrivateKey.generate())


def test_the_proof_must_be_by_the_enrolled_key_over_this_code(
    directory: PatientDirectory, store: FakeStore
) -> None:
    registered = registration(directory)
    phone, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    code = str(registered.code)
    wrong = {
        "a proof by another key": other.sign(
            enrollment_message(registered.code.digest, raw(phone))
        ),
        "a proof over another code": phone.sign(
            enrollment_message(new_enrollment_code().digest, raw(phone))
        ),
        "a proof for another owner": phone.sign(possession_message("pt-x", raw(phone))),
    }
    for what, proof in wrong.items():
        with pytest.raises(InvalidInputError, match="signature that does not verify"):
            directory.enroll(code, raw(phone), proof, "phone", NOW)
        assert store.patients[registered.patient.subject_id].devices == [], what
    with pytest.raises(InvalidInputError, match="expected a 64-byte Ed25519 proof"):
        directory.enroll(code, raw(phone), b"", "phone", NOW)
    with pytest.raises(InvalidInputError, match="expected a device label of at most 64"):
        enroll(directory, registered.code, phone, label="l" * 65)
    # None of that used the code up.
    assert enroll(directory, registered.code, phone)[1].public_key == raw(phone)


def test_registering_again_before_enrollment_gives_a_new_code_and_voids_the_old(
    directory: PatientDirectory,
) -> None:
    first = registration(directory)
    again = directory.register("hospital-a", "mrn-7", str(uuid.uuid4()), NOW)
    assert not again.created and again.patient.subject_id == first.patient.subject_id
    assert again.code != first.code
    with pytest.raises(UnauthenticatedError, match="replaced by a newer one"):
        enroll(directory, first.code, Ed25519PrivateKey.generate())
    subject_id, _ = enroll(directory, again.code, Ed25519PrivateKey.generate())
    assert subject_id == first.patient.subject_id
    # Another hospital's same reference is another patient.
    elsewhere = registration(directory, by="hospital-b")
    assert elsewhere.patient.subject_id != first.patient.subject_id


def test_no_second_code_once_a_device_enrolled_or_for_a_patient_whose_devices_are_revoked(
    directory: PatientDirectory, store: FakeStore
) -> None:
    patient, phone = register(directory)
    with pytest.raises(
        PreconditionError,
        match="has enrolled a device already: an enrollment code is for a patient's first "
        "device only; another device is added by a request signed by one of the patient's "
        "active devices",
    ):
        directory.register("hospital-a", "mrn-7", str(uuid.uuid4()), NOW)
    phone_id = patient.devices[0].key_id
    directory.revoke_device(
        patient.subject_id, phone_id, revoke_signed(patient, phone, phone_id), NOW
    )
    with pytest.raises(PreconditionError, match="recovers with a recovery code and a"):
        directory.register("hospital-a", "mrn-7", str(uuid.uuid4()), NOW)
    assert store.patients[patient.subject_id].enrollment is None


@pytest.mark.parametrize(
    ("reference", "request_id", "message"),
    [
        ("mrn", "not-a-uuid", "expected a request id as a lower-case UUID"),
        ("x" * 129, None, "expected a hospital reference of 1-128 characters"),
    ],
)
def test_bad_registrations_say_what_is_wrong_and_write_nothing(
    directory: PatientDirectory,
    store: FakeStore,
    reference: str,
    request_id: str | None,
    message: str,
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        directory.register("hospital-a", reference, request_id or str(uuid.uuid4()), NOW)
    assert store.patients == {} and store.registrations == {} and store.enrollment_codes == {}


def test_login_gives_a_token_for_the_subject_and_device(directory: PatientDirectory) -> None:
    patient, device = register(directory)
    token = login(directory, patient, device)
    verifier = TokenVerifier(
        TOKEN_KEY.public_key(), issuer="swiftchain-identity", audience="swiftchain"
    )
    claims = verifier.verify(token, NOW)
    assert (claims.subject_id, claims.device_key_id) == (
        patient.subject_id,
        patient.devices[0].key_id,
    )


def test_a_replayed_login_answer_is_refused(directory: PatientDirectory) -> None:
    patient, device = register(directory)
    challenge = directory.begin_login(patient.subject_id, patient.devices[0].key_id, NOW)
    signature = device.sign(login_message(challenge.challenge_id, challenge.nonce))
    directory.complete_login(challenge.challenge_id, signature, NOW)
    with pytest.raises(UnauthenticatedError, match="unknown or was used already"):
        directory.complete_login(challenge.challenge_id, signature, NOW)


def test_a_wrong_signature_burns_the_challenge(directory: PatientDirectory) -> None:
    patient, device = register(directory)
    challenge = directory.begin_login(patient.subject_id, patient.devices[0].key_id, NOW)
    intruder = Ed25519PrivateKey.generate()
    forged = intruder.sign(login_message(challenge.challenge_id, challenge.nonce))
    with pytest.raises(UnauthenticatedError, match="does not verify with the device key"):
        directory.complete_login(challenge.challenge_id, forged, NOW)
    good = device.sign(login_message(challenge.challenge_id, challenge.nonce))
    with pytest.raises(UnauthenticatedError, match="used already"):
        directory.complete_login(challenge.challenge_id, good, NOW)


def test_an_expired_challenge_is_refused(directory: PatientDirectory) -> None:
    patient, device = register(directory)
    challenge = directory.begin_login(patient.subject_id, patient.devices[0].key_id, NOW)
    signature = device.sign(login_message(challenge.challenge_id, challenge.nonce))
    with pytest.raises(UnauthenticatedError, match="expired"):
        directory.complete_login(challenge.challenge_id, signature, NOW + timedelta(minutes=2))


def test_a_revoked_device_cannot_log_in_and_others_still_can(
    directory: PatientDirectory, store: FakeStore
) -> None:
    patient, first = register(directory)
    second, second_id = add_second_device(directory, patient, first)
    first_id = patient.devices[0].key_id
    revoked = directory.revoke_device(
        patient.subject_id,
        first_id,
        revoke_signed(patient, second, first_id, signer_id=second_id),
        NOW,
    )
    assert not revoked.active
    assert store.events[-1].type == "swiftchain.events.v1.PatientDeviceRevoked"
    with pytest.raises(UnauthenticatedError, match="was revoked"):
        directory.begin_login(patient.subject_id, first_id, NOW)
    challenge = directory.begin_login(patient.subject_id, second_id, NOW)
    signature = second.sign(login_message(challenge.challenge_id, challenge.nonce))
    assert directory.complete_login(challenge.challenge_id, signature, NOW).token
    events = len(store.events)
    later = NOW + timedelta(minutes=1)
    again = directory.revoke_device(
        patient.subject_id,
        first_id,
        revoke_signed(patient, second, first_id, signer_id=second_id),
        later,
    )
    assert again.revoke_time == NOW and len(store.events) == events  # twice changes nothing


def test_unknown_subjects_and_devices_are_not_found(directory: PatientDirectory) -> None:
    with pytest.raises(NotFoundError, match="no patient pt-"):
        directory.begin_login("pt-" + "A" * 22, "dev-1", NOW)
    patient, _ = register(directory)
    with pytest.raises(NotFoundError, match="has no device key 'dev-x'"):
        directory.begin_login(patient.subject_id, "dev-x", NOW)
    with pytest.raises(InvalidInputError, match="expected a subject id"):
        directory.begin_login("alice", "dev-1", NOW)


def test_a_device_key_cannot_be_added_twice(directory: PatientDirectory) -> None:
    patient, device = register(directory)
    proof = device.sign(possession_message(patient.subject_id, raw(device)))
    with pytest.raises(AlreadyExistsError, match="registered for the patient already"):
        directory.add_device(
            patient.subject_id,
            raw(device),
            proof,
            "phone",
            add_signed(patient, device, raw(device), "phone"),
            NOW,
        )


# --- adding and revoking devices takes a signature by an active device (issue #25) ---------

NO_DEVICE_SIGNATURE = (
    "expected a signature by one of the patient's active devices over the request, got none"
)


def new_device(subject_id: str) -> tuple[Ed25519PrivateKey, bytes, bytes]:
    """A thief's (or a new) device: key, public key, proof of possession for ``subject_id``."""
    key = Ed25519PrivateKey.generate()
    return key, raw(key), key.sign(possession_message(subject_id, raw(key)))


def test_a_bearer_token_alone_neither_adds_nor_revokes_a_device(
    directory: PatientDirectory, store: FakeStore
) -> None:
    patient, _ = register(directory)
    _, public, proof = new_device(patient.subject_id)
    before = copy.deepcopy(store.patients)
    with pytest.raises(PermissionDeniedError, match=NO_DEVICE_SIGNATURE):
        directory.add_device(patient.subject_id, public, proof, "thief", None, NOW)
    empty = RequestSignature(patient.devices[0].key_id, NOW, secrets.token_bytes(32), b"")
    with pytest.raises(PermissionDeniedError, match=NO_DEVICE_SIGNATURE):
        directory.add_device(patient.subject_id, public, proof, "thief", empty, NOW)
    with pytest.raises(PermissionDeniedError, match=NO_DEVICE_SIGNATURE):
        directory.revoke_device(patient.subject_id, patient.devices[0].key_id, None, NOW)
    assert store.patients == before


def test_a_malformed_request_is_invalid_before_its_missing_signature_is_refused(
    directory: PatientDirectory,
) -> None:
    # The authorization matrix tells an admitted caller from a refused one by the status: an
    # empty request from the patient itself must not look like a refusal.
    patient, _ = register(directory)
    with pytest.raises(InvalidInputError, match="expected a 32-byte Ed25519 public key"):
        directory.add_device(patient.subject_id, b"", b"", "", None, NOW)
    with pytest.raises(InvalidInputError, match="expected the id of the device key to revoke"):
        directory.revoke_device(patient.subject_id, "", None, NOW)


def test_a_device_of_someone_else_or_a_key_the_patient_lacks_cannot_sign(
    directory: PatientDirectory, store: FakeStore
) -> None:
    patient, _ = register(directory)
    other, other_device = register(directory, reference="mrn-8")
    thief, public, proof = new_device(patient.subject_id)
    by_other = add_signed(patient, other_device, public, "thief", signer_id=other.devices[0].key_id)
    with pytest.raises(PermissionDeniedError, match="which is not a device of patient"):
        directory.add_device(patient.subject_id, public, proof, "thief", by_other, NOW)
    # The patient's device id, but the thief's own key behind the signature.
    impostor = add_signed(patient, thief, public, "thief")
    with pytest.raises(PermissionDeniedError, match="does not verify with device key"):
        directory.add_device(patient.subject_id, public, proof, "thief", impostor, NOW)
    assert len(store.patients[patient.subject_id].devices) == 1


def test_a_revoked_device_cannot_add_or_revoke_devices(directory: PatientDirectory) -> None:
    patient, first = register(directory)
    second, second_id = add_second_device(directory, patient, first)
    first_id = patient.devices[0].key_id
    directory.revoke_device(
        patient.subject_id,
        first_id,
        revoke_signed(patient, second, first_id, signer_id=second_id),
        NOW,
    )
    _, public, proof = new_device(patient.subject_id)
    with pytest.raises(PermissionDeniedError, match=f"device '{first_id}', which was revoked"):
        directory.add_device(
            patient.subject_id, public, proof, "x", add_signed(patient, first, public, "x"), NOW
        )
    with pytest.raises(PermissionDeniedError, match="which was revoked"):
        directory.revoke_device(
            patient.subject_id, second_id, revoke_signed(patient, first, second_id), NOW
        )
    assert directory.begin_login(patient.subject_id, second_id, NOW)  # still active


def test_a_signature_over_another_request_does_not_verify(
    directory: PatientDirectory, store: FakeStore
) -> None:
    patient, first = register(directory)
    _, second_id = add_second_device(directory, patient, first)
    _, public, proof = new_device(patient.subject_id)
    _, other_public, _ = new_device(patient.subject_id)
    # Signed to add another key. (The label is no part of the signed request: it names the
    # device for the patient and stays off the log, where the signature is checked again.)
    wrong = add_signed(patient, first, other_public, "tablet")
    with pytest.raises(PermissionDeniedError, match="over another request"):
        directory.add_device(patient.subject_id, public, proof, "tablet", wrong, NOW)
    # Signed to revoke the second device, sent to revoke the first.
    first_id = patient.devices[0].key_id
    for_second = revoke_signed(patient, first, second_id)
    with pytest.raises(PermissionDeniedError, match="over another request"):
        directory.revoke_device(patient.subject_id, first_id, for_second, NOW)
    # A revocation's signature is no addition's: the context line differs.
    as_revoke = signed(
        first,
        first_id,
        lambda kid, time, nonce: device_revoke_message(second_id, kid, time, nonce),
    )
    with pytest.raises(PermissionDeniedError, match="over another request"):
        directory.add_device(patient.subject_id, public, proof, "tablet", as_revoke, NOW)
    assert all(d.active for d in store.patients[patient.subject_id].devices)


def test_a_replayed_or_stale_signed_request_is_refused(
    directory: PatientDirectory, store: FakeStore
) -> None:
    patient, first = register(directory)
    _, second_id = add_second_device(directory, patient, first)
    request = revoke_signed(patient, first, second_id)
    directory.revoke_device(patient.subject_id, second_id, request, NOW)
    with pytest.raises(PermissionDeniedError, match="used already"):
        directory.revoke_device(patient.subject_id, second_id, request, NOW + timedelta(seconds=5))
    _, public, proof = new_device(patient.subject_id)
    stale = add_signed(patient, first, public, "x", at=NOW - timedelta(minutes=6))
    with pytest.raises(PermissionDeniedError, match="signed within the last 5 minutes"):
        directory.add_device(patient.subject_id, public, proof, "x", stale, NOW)
    ahead = add_signed(patient, first, public, "x", at=NOW + timedelta(minutes=2))
    with pytest.raises(PermissionDeniedError, match="ahead of the service's clock"):
        directory.add_device(patient.subject_id, public, proof, "x", ahead, NOW)
    # Nonces are kept only as long as their requests could be accepted.
    directory.add_device(
        patient.subject_id,
        public,
        proof,
        "x",
        add_signed(patient, first, public, "x", at=NOW + timedelta(minutes=10)),
        NOW + timedelta(minutes=10),
    )
    assert len(store.patients[patient.subject_id].request_nonces) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"signature": b"\x01" * 63}, "expected a 64-byte Ed25519 request signature, got 63"),
        ({"nonce": b"\x01" * 8}, "expected a request nonce of 16 to 64 random bytes, got 8"),
        ({"request_time": None}, "expected the request time the signature covers"),
        ({"key_id": ""}, "expected the id of the key that signed the request"),
    ],
)
def test_a_malformed_request_signature_says_what_is_wrong(
    directory: PatientDirectory, change: dict[str, Any], message: str
) -> None:
    patient, first = register(directory)
    _, public, proof = new_device(patient.subject_id)
    good = add_signed(patient, first, public, "x")
    bad = dataclasses.replace(good, **change)
    with pytest.raises(InvalidInputError, match=message):
        directory.add_device(patient.subject_id, public, proof, "x", bad, NOW)


def test_practitioners_are_idempotent_on_their_reference(store: FakeStore) -> None:
    practitioners = PractitionerDirectory(store)
    first = practitioners.register("hospital-a", "staff-12", "nurse", NOW)
    assert first.practitioner_id.startswith("pr-")
    assert practitioners.register("hospital-a", "staff-12", "nurse", NOW) == first
    with pytest.raises(AlreadyExistsError, match="with role 'nurse', not 'doctor'"):
        practitioners.register("hospital-a", "staff-12", "doctor", NOW)
    with pytest.raises(InvalidInputError, match="expected a role code of 1-64 characters"):
        practitioners.register("hospital-a", "staff-13", "", NOW)


def test_device_keys_go_to_the_log_with_the_devices_own_signatures(store: FakeStore) -> None:
    # With the tag key, enrollment, addition and revocation are KEY entries under the patient's
    # tag that a real validator accepts in order, each with the device's own proof or signature;
    # the same entries stripped of it (all a registrar alone could sign) are rejected, and a
    # directive signed by the added device verifies against the log alone.
    registrar_key = Ed25519PrivateKey.generate()
    registrar = EntrySigner("registrar", registrar_key)
    tag_key = bytes(range(32))
    issuer = TokenIssuer(TOKEN_KEY, issuer="swiftchain-identity", audience="swiftchain")
    directory = PatientDirectory(store, issuer, device_keys=DeviceKeyLog(registrar, tag_key))
    patient, phone = register(directory)
    tablet, tablet_id = add_second_device(directory, patient, phone)
    phone_id = patient.devices[0].key_id
    directory.revoke_device(
        patient.subject_id,
        phone_id,
        revoke_signed(patient, tablet, phone_id, signer_id=tablet_id),
        NOW,
    )
    registry = KeyRegistry([GenesisKey("registrar", "identity", ("KEY",), raw(registrar_key))])
    validator = EntryValidator(registry)
    on_log: set[str] = set()
    enrolled, added, revoked = store.entries
    for entry in (enrolled, added, revoked):
        body = parse_entry(entry.entry).body
        assert body.subject_tag == subject_tag(tag_key, patient.subject_id)
        body.key.ClearField("holder_signature")
        with pytest.raises(EntryRejectedError, match="registrar alone cannot change"):
            validator.validate(registrar.sign_entry(body.SerializeToString()), on_log.__contains__)
        validator.validate(entry.entry, on_log.__contains__)
        on_log.add(entry.entry_id)
    # The subject id and the label stay off the log, in the salted record the commitment covers.
    assert patient.subject_id.encode() not in b"".join(e.entry for e in store.entries)
    assert json.loads(added.record)["subject_id"] == patient.subject_id
    directive = b"a directive the tablet signed"
    consent = entry_pb2.EntryBody(
        subject_tag=subject_tag(tag_key, patient.subject_id),
        consent=entry_pb2.ConsentDetail(
            directive_type=entry_pb2.DIRECTIVE_TYPE_CONSENT,
            signer_key_tag=device_key_tag(tag_key, tablet_id),
            signer_signature=tablet.sign(DIRECTIVE_PREFIX + directive),
        ),
    )
    assert check_consent_signature(registry, tag_key, consent, directive).key_id == tablet_id


# --- recovery of a patient that lost its devices ---------------------------------------------


def recovery_desk(store: FakeStore, **options: Any) -> RecoveryDesk:
    return RecoveryDesk(store, **options)


def begin_recovery(
    desk: RecoveryDesk, code: EnrollmentCode, key: Ed25519PrivateKey, at: datetime = NOW
) -> tuple[str, Recovery]:
    """Begin a recovery with ``code`` for ``key``, as the patient's new device does."""
    proof = key.sign(recovery_message(code.digest, raw(key), at))
    return desk.begin(str(code), raw(key), proof, "new phone", at, at)


def test_a_patient_that_lost_its_devices_recovers_after_the_wait_and_the_log_takes_it(
    store: FakeStore,
) -> None:
    registrar_key = Ed25519PrivateKey.generate()
    device_keys = DeviceKeyLog(EntrySigner("registrar", registrar_key), bytes(range(32)))
    issuer = TokenIssuer(TOKEN_KEY, issuer="swiftchain-identity", audience="swiftchain")
    directory = PatientDirectory(store, issuer, device_keys=device_keys)
    desk = recovery_desk(store, device_keys=device_keys)
    patient, _lost_phone = register(directory)
    with pytest.raises(PermissionDeniedError, match="registered patient"):
        desk.issue_code(patient.subject_id, "hospital-b", NOW)  # a hospital that never met her
    code, _ = desk.issue_code(patient.subject_id, "hospital-a", NOW)
    new_phone = Ed25519PrivateKey.generate()
    subject_id, recovery = begin_recovery(desk, code, new_phone)
    assert subject_id == patient.subject_id
    assert recovery.complete_after == NOW + timedelta(hours=24)
    # The patient's devices see it pending; it does not complete before the wait is over.
    assert [(r.recovery_id, r.status) for r in desk.recoveries(subject_id)] == [
        (recovery.recovery_id, "PENDING")
    ]
    with pytest.raises(PreconditionError, match="waits until"):
        desk.complete(subject_id, recovery.recovery_id, NOW + timedelta(hours=23))
    device = desk.complete(subject_id, recovery.recovery_id, NOW + timedelta(hours=24))
    assert device.key_id == recovery.key_id and device.active
    assert store.patients[subject_id].device(device.key_id).public_key == raw(new_phone)
    # A real validator takes the enrollment, then the recovery, from the log.
    genesis = GenesisKey("registrar", "identity", ("KEY",), raw(registrar_key))
    validator = EntryValidator(KeyRegistry([genesis]))
    for entry in store.entries:
        validator.validate(entry.entry, lambda _entry_id: False)
    recovered = parse_entry(store.entries[-1].entry).body.key
    assert (recovered.key_id, recovered.holder_signature.key_id) == (device.key_id, device.key_id)


def test_an_active_device_cancels_a_recovery_it_did_not_ask_for(store: FakeStore) -> None:
    issuer = TokenIssuer(TOKEN_KEY, issuer="swiftchain-identity", audience="swiftchain")
    directory = PatientDirectory(store, issuer)
    desk = recovery_desk(store)
    patient, phone = register(directory)
    code, _ = desk.issue_code(patient.subject_id, "hospital-a", NOW)
    impostor = Ed25519PrivateKey.generate()
    _, recovery = begin_recovery(desk, code, impostor)
    phone_id = patient.devices[0].key_id

    def cancel_signed(key: Ed25519PrivateKey, key_id: str) -> RequestSignature:
        return signed(
            key,
            key_id,
            lambda kid, time, nonce: recovery_cancel_message(
                recovery.recovery_id, kid, time, nonce
            ),
        )

    with pytest.raises(PermissionDeniedError, match="expected a signature by"):
        desk.cancel(patient.subject_id, recovery.recovery_id, None, NOW)  # a token alone
    with pytest.raises(PermissionDeniedError, match="not a device of patient"):
        desk.cancel(
            patient.subject_id, recovery.recovery_id, cancel_signed(impostor, recovery.key_id), NOW
        )
    cancelled = desk.cancel(
        patient.subject_id, recovery.recovery_id, cancel_signed(phone, phone_id), NOW
    )
    assert (cancelled.status, cancelled.cancelled_by) == ("CANCELLED", phone_id)
    with pytest.raises(PermissionDeniedError, match="was cancelled"):
        desk.complete(patient.subject_id, recovery.recovery_id, NOW + timedelta(days=2))
    assert [d.key_id for d in store.patients[patient.subject_id].devices] == [phone_id]


def test_recovery_codes_and_requests_are_checked(store: FakeStore) -> None:
    with pytest.raises(InvalidInputError, match="at least 1:00:00"):
        recovery_desk(store, waiting_period=timedelta(minutes=30))
    issuer = TokenIssuer(TOKEN_KEY, issuer="swiftchain-identity", audience="swiftchain")
    directory = PatientDirectory(store, issuer)
    desk = recovery_desk(store, waiting_period=timedelta(hours=2))
    fresh = registration(directory)
    with pytest.raises(PreconditionError, match="never had a device"):
        desk.issue_code(fresh.patient.subject_id, "hospital-a", NOW)
    patient, _ = register(directory, reference="mrn-8")
    code, _ = desk.issue_code(patient.subject_id, "hospital-a", NOW)
    key = Ed25519PrivateKey.generate()
    stale = key.sign(recovery_message(code.digest, raw(key), NOW - timedelta(minutes=6)))
    with pytest.raises(PermissionDeniedError, match="within 0:05:00"):
        desk.begin(str(code), raw(key), stale, "x", NOW - timedelta(minutes=6), NOW)
    with pytest.raises(InvalidInputError, match="does not verify"):
        desk.begin(str(code), raw(key), stale, "x", NOW, NOW)
    _, recovery = begin_recovery(desk, code, key)
    assert recovery.complete_after == NOW + timedelta(hours=2)
    assert begin_recovery(desk, code, key)[1] == recovery  # a retry gets it back
    with pytest.raises(UnauthenticatedError, match="used already"):
        begin_recovery(desk, code, Ed25519PrivateKey.generate())
    with pytest.raises(PreconditionError, match="pending already"):
        desk.issue_code(patient.subject_id, "hospital-a", NOW)
