"""Patients' device keys on the log (issue #25, item 1): a real EntryValidator takes a device
key only with its holder's consent (the first device's own enrollment proof, then a signature by
a device of the same patient valid there), never on the registrar's word alone, and a consent
directive's signature verifies against the log with no call to the identity service."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.timestamp_pb2 import Timestamp

from chain.consortium import GenesisKey
from chain.device_keys import check_consent_signature
from chain.entry import EntrySigner
from chain.errors import InvalidInputError, SwiftchainError, VerificationError
from chain.holder_signatures import sign_as_holder, sign_enrollment, sign_recovery
from chain.signed_messages import DIRECTIVE_PREFIX
from chain.tags import device_key_tag, patient_key_owner, subject_tag
from chain.validation import EntryRejectedError, EntryValidator, KeyRegistry
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2

TAG_KEY = bytes(range(32))
ALICE = subject_tag(TAG_KEY, "pt-" + "A" * 22)
BOB = subject_tag(TAG_KEY, "pt-" + "B" * 22)
REQUEST_TIME = datetime(2026, 1, 1, tzinfo=UTC)


def private_key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


REGISTRAR_KEY = private_key(1)
REGISTRAR = EntrySigner("registrar", REGISTRAR_KEY)
GENESIS = (GenesisKey("registrar", "identity", ("KEY",), raw_public(REGISTRAR_KEY)),)
PHONE, TABLET, THIEF, BOBS_PHONE = private_key(2), private_key(3), private_key(4), private_key(5)
CODE_DIGEST = hashlib.sha256(b"a one-time enrollment code").digest()


class Log:
    """A real validator over a log in memory."""

    def __init__(self) -> None:
        self.registry = KeyRegistry(GENESIS)
        self.validator = EntryValidator(self.registry)
        self.ids: set[str] = set()
        self.count = 0

    def entry_id(self) -> str:
        self.count += 1
        return f"{self.count:08x}-0000-4000-8000-{self.count:012x}"

    def append(self, body: entry_pb2.EntryBody) -> None:
        """Validate the registrar-signed ``body`` at the next position (raises if rejected)."""
        parsed = self.validator.validate(
            REGISTRAR.sign_entry(body.SerializeToString()), self.ids.__contains__
        )
        self.ids.add(parsed.entry_id)

    def reject(self, body: entry_pb2.EntryBody, fragment: str) -> None:
        with pytest.raises(EntryRejectedError) as refused:
            self.append(body)
        assert refused.value.reason == "KEY_STATE_CONFLICT", str(refused.value)
        assert fragment in str(refused.value), str(refused.value)

    def device(
        self, action: int, key_id: str, key: Ed25519PrivateKey | None = None, tag: bytes = ALICE
    ) -> entry_pb2.EntryBody:
        """A KEY entry body about a device key of the patient with ``tag``, no holder yet."""
        return entry_pb2.EntryBody(
            entry_id=self.entry_id(),
            kind=common_pb2.ENTRY_KIND_KEY,
            submitter_id="identity",
            time=Timestamp(seconds=1_767_225_600),
            commitment=bytes(32),
            subject_tag=tag,
            key=entry_pb2.KeyDetail(
                action=action,  # type: ignore[arg-type]
                owner_id=patient_key_owner(tag),
                owner_kind=entry_pb2.KEY_OWNER_KIND_PATIENT,
                key_id=key_id,
                public_key=raw_public(key) if key else b"",
                reason=entry_pb2.KEY_REASON_NEW_KEY,
            ),
        )

    def enroll(self, key_id: str, key: Ed25519PrivateKey, tag: bytes = ALICE) -> None:
        body = self.device(entry_pb2.KEY_ACTION_REGISTER, key_id, key, tag)
        sign_enrollment(body.key, key, CODE_DIGEST)
        self.append(body)

    def add(self, key_id: str, key: Ed25519PrivateKey, by: tuple[str, Ed25519PrivateKey]) -> None:
        body = self.device(entry_pb2.KEY_ACTION_REGISTER, key_id, key)
        sign_as_holder(body.key, by[0], by[1], REQUEST_TIME, key_id.encode().ljust(16, b"."))
        self.append(body)

    def revoke(self, key_id: str, by: tuple[str, Ed25519PrivateKey]) -> None:
        body = self.device(entry_pb2.KEY_ACTION_REVOKE, key_id)
        sign_as_holder(body.key, by[0], by[1], REQUEST_TIME, b"revoke:" + key_id.encode())
        self.append(body)


@pytest.fixture
def log() -> Log:
    log = Log()
    log.enroll("dev-phone", PHONE)
    return log


def test_the_first_device_enrolls_with_its_own_proof_and_only_once(log: Log) -> None:
    # The first device's proof is over the code's digest and its own key: made on the device.
    body = log.device(entry_pb2.KEY_ACTION_REGISTER, "dev-bob", BOBS_PHONE, BOB)
    sign_enrollment(body.key, BOBS_PHONE, CODE_DIGEST)
    body.key.holder_signature.key_id = "dev-phone"
    log.reject(
        body,
        "expected the first device key of " + repr(patient_key_owner(BOB)) + " to sign its own "
        "enrollment (holder key 'dev-bob'), got a signature by 'dev-phone'",
    )
    forged = log.device(entry_pb2.KEY_ACTION_REGISTER, "dev-bob", BOBS_PHONE, BOB)
    sign_enrollment(forged.key, REGISTRAR_KEY, CODE_DIGEST)
    forged.key.public_key = raw_public(BOBS_PHONE)
    log.reject(forged, "over the enrollment proof for this change, got one that does not")
    log.reject(
        log.device(entry_pb2.KEY_ACTION_REGISTER, "dev-bob", BOBS_PHONE, BOB),
        "to carry a signature by a key of",
    )
    # Once Alice has a device, an enrollment proof (say, by a key the registrar made) adds none:
    # a key signing for itself there is a recovery, and this is no recovery request.
    body = log.device(entry_pb2.KEY_ACTION_REGISTER, "dev-thief", THIEF)
    sign_enrollment(body.key, THIEF, CODE_DIGEST)
    log.reject(
        body,
        "expected the holder signature to verify with key 'dev-thief' over the recovery "
        "request for this change, got one that does not",
    )


def test_the_registrar_alone_cannot_add_or_revoke_a_patients_device(log: Log) -> None:
    message = "the registrar alone cannot change a holder's key"
    log.reject(log.device(entry_pb2.KEY_ACTION_REGISTER, "dev-thief", THIEF), message)
    log.reject(log.device(entry_pb2.KEY_ACTION_REVOKE, "dev-phone"), message)
    # Another patient's device cannot sign for Alice, nor the registrar's own key.
    log.enroll("dev-bob", BOBS_PHONE, BOB)
    body = log.device(entry_pb2.KEY_ACTION_REGISTER, "dev-thief", THIEF)
    sign_as_holder(body.key, "dev-bob", BOBS_PHONE, REQUEST_TIME, bytes(16))
    log.reject(body, f"got one by 'dev-bob', a key of {patient_key_owner(BOB)!r}")
    sign_as_holder(body.key, "dev-phone", REGISTRAR_KEY, REQUEST_TIME, bytes(16))
    log.reject(body, "expected the holder signature to verify with key 'dev-phone'")


def test_devices_add_and_revoke_each_other_and_a_revoked_one_signs_nothing(log: Log) -> None:
    log.add("dev-tablet", TABLET, by=("dev-phone", PHONE))
    log.revoke("dev-phone", by=("dev-tablet", TABLET))
    body = log.device(entry_pb2.KEY_ACTION_REGISTER, "dev-thief", THIEF)
    sign_as_holder(body.key, "dev-phone", PHONE, REQUEST_TIME, bytes(16))
    log.reject(body, "got one by 'dev-phone', a revoked or rotated key")
    # A device may revoke itself; then nobody, the registrar included, adds a device.
    log.revoke("dev-tablet", by=("dev-tablet", TABLET))
    sign_as_holder(body.key, "dev-tablet", TABLET, REQUEST_TIME, bytes(16))
    log.reject(body, "a patient whose devices are all revoked cannot be given a device")


def test_a_device_key_is_the_patients_by_its_tag_signs_nothing_and_never_rotates() -> None:
    log = Log()
    body = log.device(entry_pb2.KEY_ACTION_REGISTER, "dev-phone", PHONE)
    body.key.owner_id = patient_key_owner(BOB)
    with pytest.raises(InvalidInputError, match="expected the owner id of a patient's key"):
        log.append(body)
    body = log.device(entry_pb2.KEY_ACTION_REGISTER, "dev-phone", PHONE)
    body.key.allowed_kinds.append(common_pb2.ENTRY_KIND_CONSENT)
    with pytest.raises(InvalidInputError, match="expected no allowed entry kinds"):
        log.append(body)
    body = log.device(entry_pb2.KEY_ACTION_ROTATE, "dev-phone", PHONE)
    body.key.replaces_key_id = "dev-old"
    with pytest.raises(InvalidInputError, match="got ROTATE"):
        log.append(body)
    body = log.device(entry_pb2.KEY_ACTION_REGISTER, "dev-phone", PHONE)
    body.subject_tag = b""
    with pytest.raises(InvalidInputError, match="subject tag"):
        log.append(body)


def consent_entry(tag: bytes, signer_key_id: str, signature: bytes) -> entry_pb2.EntryBody:
    return entry_pb2.EntryBody(
        entry_id="ffffffff-0000-4000-8000-000000000001",
        kind=common_pb2.ENTRY_KIND_CONSENT,
        submitter_id="consent",
        time=Timestamp(seconds=1_767_225_600),
        commitment=bytes(32),
        subject_tag=tag,
        consent=entry_pb2.ConsentDetail(
            directive_type=entry_pb2.DIRECTIVE_TYPE_CONSENT,
            directive_id="eeeeeeee-0000-4000-8000-000000000001",
            version=1,
            status=entry_pb2.DIRECTIVE_STATUS_ACTIVE,
            signer_key_tag=device_key_tag(TAG_KEY, signer_key_id),
            signer_signature=signature,
        ),
    )


def test_a_consent_signature_verifies_against_the_log_alone(log: Log) -> None:
    directive = b"a ConsentDirective's bytes"
    log.add("dev-tablet", TABLET, by=("dev-phone", PHONE))
    signed = consent_entry(ALICE, "dev-tablet", TABLET.sign(DIRECTIVE_PREFIX + directive))
    # The registry replayed from the log's KEY entries is all a verifier needs.
    assert check_consent_signature(log.registry, TAG_KEY, signed, directive).key_id == (
        "dev-tablet"
    )
    with pytest.raises(VerificationError, match="does not verify"):
        check_consent_signature(log.registry, TAG_KEY, signed, b"another directive")
    # A key the log does not give Alice (the thief's, or Bob's) is no signer of hers.
    stolen = consent_entry(ALICE, "dev-thief", THIEF.sign(DIRECTIVE_PREFIX + directive))
    with pytest.raises(VerificationError, match="matching none of the 2 device keys"):
        check_consent_signature(log.registry, TAG_KEY, stolen, directive)
    # From the tablet's revocation on, its signature no longer counts.
    log.revoke("dev-tablet", by=("dev-phone", PHONE))
    with pytest.raises(VerificationError, match="a key revoked before it"):
        check_consent_signature(log.registry, TAG_KEY, signed, directive)


def test_rejected_device_entries_change_nothing(log: Log) -> None:
    with pytest.raises(SwiftchainError):
        log.append(log.device(entry_pb2.KEY_ACTION_REVOKE, "dev-phone"))
    owned = log.registry.owned_by(patient_key_owner(ALICE))
    assert [(k.key_id, k.valid) for k in owned] == [("dev-phone", True)]


def recovery(
    log: Log, key_id: str, key: Ed25519PrivateKey, asked: datetime, logged: datetime
) -> entry_pb2.EntryBody:
    """A registration of ``key`` as a recovered device of Alice, asked for at ``asked`` (the
    device's own signed request) and logged at ``logged``."""
    body = log.device(entry_pb2.KEY_ACTION_REGISTER, key_id, key)
    body.time.FromDatetime(logged)
    sign_recovery(body.key, key, CODE_DIGEST, asked)
    return body


def test_a_patient_that_lost_its_devices_recovers_only_after_the_wait(log: Log) -> None:
    # Alice's phone is lost (not revoked: she cannot sign anything with it any more).
    asked = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    early = recovery(log, "dev-new", TABLET, asked, asked + timedelta(minutes=30))
    log.reject(early, "expected a recovered device's KEY entry at least 1:00:00 after its")
    # A recovery request is signed by the new key over the code's digest and its time: the
    # registrar's own key, or a request moved to an earlier time, does not verify.
    forged = recovery(log, "dev-new", TABLET, asked, asked + timedelta(hours=25))
    forged.key.holder_signature.request_time_micros -= 1
    log.reject(forged, "over the recovery request for this change, got one that does not")
    log.append(recovery(log, "dev-new", TABLET, asked, asked + timedelta(hours=25)))
    # The recovered device is Alice's: it revokes the lost phone and adds a device.
    log.revoke("dev-phone", by=("dev-new", TABLET))
    log.add("dev-other", THIEF, by=("dev-new", TABLET))
    owned = {k.key_id: k.valid for k in log.registry.owned_by(patient_key_owner(ALICE))}
    assert owned == {"dev-phone": False, "dev-new": True, "dev-other": True}
