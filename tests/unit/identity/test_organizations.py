"""Organizations and their keys (services/identity/domain/organizations.py), on a fake store."""

from __future__ import annotations

import base64
import copy
import json
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chain.consortium import GenesisKey
from chain.entry import EntrySigner, parse_entry
from chain.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from chain.signed_messages import (
    organization_key_revoke_message,
    organization_key_rotate_message,
    possession_message,
)
from chain.validation import EntryRejectedError, EntryValidator, KeyRegistry
from services.identity.domain.organizations import (
    KeyEntry,
    Organization,
    OrganizationRegistry,
)
from services.identity.domain.request_signatures import RequestSignature
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2
from swiftchain.events.v1 import events_pb2
from swiftchain.identity.v1 import identity_pb2

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
HOSPITAL = common_pb2.ORGANIZATION_ROLE_HOSPITAL
REGULATOR = common_pb2.ORGANIZATION_ROLE_REGULATOR


class FakeStore:
    """In-memory OrganizationStore with the same version check as the real one."""

    def __init__(self) -> None:
        self.organizations: dict[str, Organization] = {}
        self.entries: list[KeyEntry] = []
        self.events: list[events_pb2.EventEnvelope] = []

    def get(self, organization_id: str) -> Organization | None:
        stored = self.organizations.get(organization_id)
        return copy.deepcopy(stored) if stored else None

    def create(
        self,
        organization: Organization,
        entries: Sequence[KeyEntry],
        events: Sequence[events_pb2.EventEnvelope],
    ) -> bool:
        if organization.organization_id in self.organizations:
            return False
        self.organizations[organization.organization_id] = copy.deepcopy(organization)
        self.entries.extend(entries)
        self.events.extend(events)
        return True

    def update(
        self,
        organization: Organization,
        entries: Sequence[KeyEntry],
        events: Sequence[events_pb2.EventEnvelope],
    ) -> None:
        if self.organizations[organization.organization_id].version != organization.version:
            raise ConflictError("changed meanwhile")
        organization.version += 1
        self.organizations[organization.organization_id] = copy.deepcopy(organization)
        self.entries.extend(entries)
        self.events.extend(events)

    def list_page(self, role: int, after_id: str, limit: int) -> list[Organization]:
        chosen = sorted(
            (o for o in self.organizations.values() if not role or o.role == role),
            key=lambda o: o.organization_id,
        )
        return [o for o in chosen if o.organization_id > after_id][:limit]

    def find_by_entry(self, entry_id: str) -> Organization | None:
        for organization in self.organizations.values():
            for key in organization.keys:
                if entry_id in (key.register_entry_id, key.end_entry_id):
                    return copy.deepcopy(organization)
        return None


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@pytest.fixture
def registrar() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def registry(store: FakeStore, registrar: Ed25519PrivateKey) -> OrganizationRegistry:
    genesis = GenesisKey("registrar", "identity", ("KEY",), raw(registrar))
    return OrganizationRegistry(store, EntrySigner("registrar", registrar), [genesis])


def register_hospital(
    registry: OrganizationRegistry, name: str = "hospital-a"
) -> tuple[Ed25519PrivateKey, Organization, str]:
    key = Ed25519PrivateKey.generate()
    proof = key.sign(possession_message(name, raw(key)))
    organization, entry_id = registry.register(name, "Hospital A", HOSPITAL, raw(key), proof, NOW)
    return key, organization, entry_id


ROUTINE = entry_pb2.KEY_REASON_ROUTINE_ROTATION
COMPROMISE = entry_pb2.KEY_REASON_KEY_COMPROMISE


def rotate_signed(
    signer: Ed25519PrivateKey,
    signer_id: str,
    replaces: str,
    new_public: bytes,
    reason: int = ROUTINE,
    *,
    organization_id: str = "hospital-a",
    at: datetime = NOW,
) -> RequestSignature:
    """A signature by ``signer`` (as ``signer_id``) over a rotation request."""
    nonce = secrets.token_bytes(32)
    message = organization_key_rotate_message(
        organization_id, replaces, new_public, reason, signer_id, at, nonce
    )
    return RequestSignature(signer_id, at, nonce, signer.sign(message))


def revoke_signed(
    signer: Ed25519PrivateKey,
    signer_id: str,
    key_id: str,
    reason: int = COMPROMISE,
    *,
    organization_id: str = "hospital-a",
    at: datetime = NOW,
) -> RequestSignature:
    """A signature by ``signer`` (as ``signer_id``) over a revocation request."""
    nonce = secrets.token_bytes(32)
    message = organization_key_revoke_message(organization_id, key_id, reason, signer_id, at, nonce)
    return RequestSignature(signer_id, at, nonce, signer.sign(message))


def new_key(organization_id: str = "hospital-a") -> tuple[Ed25519PrivateKey, bytes, bytes]:
    """A fresh key: private, public, proof of possession for ``organization_id``."""
    key = Ed25519PrivateKey.generate()
    return key, raw(key), key.sign(possession_message(organization_id, raw(key)))


def test_registering_a_hospital_signs_a_key_entry_that_a_node_accepts(
    registry: OrganizationRegistry, store: FakeStore, registrar: Ed25519PrivateKey
) -> None:
    _key, organization, entry_id = register_hospital(registry)
    assert organization.keys[0].key_id == "hospital-a#1"
    assert organization.keys[0].status == identity_pb2.KEY_STATUS_PENDING
    [entry] = store.entries
    assert entry.entry_id == entry_id
    parsed = parse_entry(entry.entry)
    assert parsed.body.key.owner_id == "hospital-a"
    assert parsed.body.key.allowed_kinds == [common_pb2.ENTRY_KIND_RECORD]
    # The chain's own validator accepts it at position 0 with only the genesis key.
    genesis = GenesisKey("registrar", "identity", ("KEY",), raw(registrar))
    validator = EntryValidator(KeyRegistry([genesis]))
    validator.validate(entry.entry, seen=lambda _entry_id: False)
    assert [e.type for e in store.events] == [
        "swiftchain.events.v1.OrganizationRegistered",
        "swiftchain.events.v1.KeyRegistered",
    ]


def test_registration_is_idempotent_and_a_different_repeat_is_refused(
    registry: OrganizationRegistry, store: FakeStore
) -> None:
    key, _first, entry_id = register_hospital(registry)
    proof = key.sign(possession_message("hospital-a", raw(key)))
    again, again_id = registry.register("hospital-a", "Hospital A", HOSPITAL, raw(key), proof, NOW)
    assert (again.organization_id, again_id) == ("hospital-a", entry_id)
    assert len(store.entries) == 1
    with pytest.raises(AlreadyExistsError, match="different details"):
        registry.register("hospital-a", "Hospital B", HOSPITAL, raw(key), proof, NOW)


@pytest.mark.parametrize(
    ("organization_id", "name", "role", "with_key", "message"),
    [
        ("Hospital_A", "A", HOSPITAL, True, "expected an organization id"),
        ("hospital-a", "", HOSPITAL, True, "expected a display name of 1-200"),
        ("hospital-a", "A", 0, True, "expected a role"),
        ("hospital-a", "A", HOSPITAL, False, "expected a signing public key for a hospital"),
    ],
)
def test_bad_registrations_say_what_is_wrong(
    registry: OrganizationRegistry,
    store: FakeStore,
    organization_id: str,
    name: str,
    role: int,
    with_key: bool,
    message: str,
) -> None:
    key = Ed25519PrivateKey.generate()
    public = raw(key) if with_key else b""
    proof = key.sign(possession_message(organization_id, public)) if with_key else b""
    with pytest.raises(InvalidInputError, match=message):
        registry.register(organization_id, name, role, public, proof, NOW)  # type: ignore[arg-type]
    assert store.organizations == {} and store.entries == []


@pytest.mark.parametrize(
    ("public_key", "proof", "message"),
    [
        (b"\x01" * 31, b"\x00" * 64, "expected a 32-byte Ed25519 public key, got 31 bytes"),
        (b"\x01" + b"\x00" * 31, b"\x00" * 64, "small order"),
        (None, b"\x00" * 63, "expected a 64-byte Ed25519 proof of possession, got 63 bytes"),
        (None, b"\x00" * 64, "signature that does not verify"),
    ],
)
def test_keys_need_the_right_shape_and_a_proof_of_possession(
    registry: OrganizationRegistry, public_key: bytes | None, proof: bytes, message: str
) -> None:
    key = raw(Ed25519PrivateKey.generate()) if public_key is None else public_key
    with pytest.raises(InvalidInputError, match=message):
        registry.register("hospital-a", "A", HOSPITAL, key, proof, NOW)


def test_a_proof_for_another_organization_is_refused(registry: OrganizationRegistry) -> None:
    key = Ed25519PrivateKey.generate()
    proof = key.sign(possession_message("hospital-b", raw(key)))
    with pytest.raises(InvalidInputError, match="does not verify"):
        registry.register("hospital-a", "A", HOSPITAL, raw(key), proof, NOW)


def test_a_key_is_valid_between_its_entry_and_the_entry_that_ends_it(
    registry: OrganizationRegistry,
) -> None:
    signer, organization, register_id = register_hospital(registry)
    key_id = organization.keys[0].key_id
    with pytest.raises(PermissionDeniedError, match="which is PENDING"):
        registry.revoke_key(
            "hospital-a", key_id, COMPROMISE, revoke_signed(signer, key_id, key_id), NOW
        )
    assert registry.record_sequenced(register_id, 4)
    key, revoke_id = registry.revoke_key(
        "hospital-a", key_id, COMPROMISE, revoke_signed(signer, key_id, key_id), NOW
    )
    assert key.status == identity_pb2.KEY_STATUS_ACTIVE and key.end_entry_id == revoke_id
    assert registry.record_sequenced(revoke_id, 9)
    assert [registry.resolve_key(key_id, p).valid for p in (4, 5, 8, 9, 10)] == [
        False,
        True,
        True,
        False,
        False,
    ]
    assert registry.resolve_key(key_id, 3).status == identity_pb2.KEY_STATUS_PENDING
    assert registry.resolve_key(key_id, 12).status == identity_pb2.KEY_STATUS_REVOKED
    now = registry.resolve_key(key_id, None)
    assert (now.valid, now.registered_at_log_index, now.ended_at_log_index) == (False, 4, 9)
    with pytest.raises(PermissionDeniedError, match="'hospital-a#1', which is ended by"):
        registry.revoke_key(
            "hospital-a", key_id, COMPROMISE, revoke_signed(signer, key_id, key_id), NOW
        )


def test_rotation_hands_over_at_one_position(registry: OrganizationRegistry) -> None:
    signer, _organization, register_id = register_hospital(registry)
    registry.record_sequenced(register_id, 0)
    _, public, proof = new_key()
    key, rotate_id = registry.rotate_key(
        "hospital-a",
        "hospital-a#1",
        public,
        proof,
        ROUTINE,
        rotate_signed(signer, "hospital-a#1", "hospital-a#1", public),
        NOW,
    )
    assert key.key_id == "hospital-a#2" and key.status == identity_pb2.KEY_STATUS_PENDING
    registry.record_sequenced(rotate_id, 7)
    old, fresh = registry.resolve_key("hospital-a#1", 7), registry.resolve_key("hospital-a#2", 8)
    assert (old.valid, old.status) == (False, identity_pb2.KEY_STATUS_ROTATED)
    assert fresh.valid and fresh.detail.replaces_key_id == "hospital-a#1"
    assert registry.resolve_key("hospital-a#1", 6).valid


def test_rotation_refuses_a_reused_key_and_a_wrong_reason(registry: OrganizationRegistry) -> None:
    key, _, register_id = register_hospital(registry)
    registry.record_sequenced(register_id, 0)
    proof = key.sign(possession_message("hospital-a", raw(key)))
    superseded = entry_pb2.KEY_REASON_SUPERSEDED
    with pytest.raises(InvalidInputError, match="registered before"):
        registry.rotate_key(
            "hospital-a",
            "hospital-a#1",
            raw(key),
            proof,
            superseded,
            rotate_signed(key, "hospital-a#1", "hospital-a#1", raw(key), superseded),
            NOW,
        )
    new_key_reason = entry_pb2.KEY_REASON_NEW_KEY
    with pytest.raises(InvalidInputError, match="expected a rotation reason"):
        registry.rotate_key(
            "hospital-a",
            "hospital-a#1",
            raw(key),
            proof,
            new_key_reason,
            rotate_signed(key, "hospital-a#1", "hospital-a#1", raw(key), new_key_reason),
            NOW,
        )


def test_unknown_things_are_not_found(registry: OrganizationRegistry) -> None:
    with pytest.raises(NotFoundError, match="no organization 'nobody'"):
        registry.get("nobody")
    with pytest.raises(NotFoundError, match="no key 'nobody#1'"):
        registry.resolve_key("nobody#1", None)
    register_hospital(registry)
    with pytest.raises(NotFoundError, match="has no key 'hospital-a#5'"):
        registry.resolve_key("hospital-a#5", None)


def test_genesis_keys_resolve_as_valid_from_the_start(registry: OrganizationRegistry) -> None:
    resolution = registry.resolve_key("registrar", 0)
    assert resolution.valid and resolution.detail.owner_id == "identity"


def test_listing_pages_through_organizations_by_id(registry: OrganizationRegistry) -> None:
    for name in ("hospital-c", "hospital-a", "hospital-b"):
        register_hospital(registry, name)
    first, token = registry.list(common_pb2.ORGANIZATION_ROLE_UNSPECIFIED, 2, "")
    assert [o.organization_id for o in first] == ["hospital-a", "hospital-b"]
    second, end = registry.list(common_pb2.ORGANIZATION_ROLE_UNSPECIFIED, 2, token)
    assert [o.organization_id for o in second] == ["hospital-c"] and end == ""
    with pytest.raises(InvalidInputError, match="expected a page token"):
        registry.list(common_pb2.ORGANIZATION_ROLE_UNSPECIFIED, 2, "%%%")


def test_a_listing_token_is_bound_to_its_role_filter_and_sees_inserts_once(
    registry: OrganizationRegistry,
) -> None:
    for name in ("hospital-a", "hospital-c"):
        register_hospital(registry, name)
    first, token = registry.list(common_pb2.ORGANIZATION_ROLE_UNSPECIFIED, 1, "")
    with pytest.raises(InvalidInputError, match="with the filter it was issued for"):
        registry.list(common_pb2.ORGANIZATION_ROLE_HOSPITAL, 1, token)
    register_hospital(registry, "hospital-b")  # after the cursor: listed once, on a later page
    register_hospital(registry, "hospital-0")  # before it: not repeated
    seen = [o.organization_id for o in first]
    while token:
        page, token = registry.list(common_pb2.ORGANIZATION_ROLE_UNSPECIFIED, 1, token)
        seen.extend(o.organization_id for o in page)
    assert seen == ["hospital-a", "hospital-b", "hospital-c"]


def test_a_regulator_key_is_registered_to_sign_nothing_on_the_log(
    registry: OrganizationRegistry, store: FakeStore
) -> None:
    key = Ed25519PrivateKey.generate()
    proof = key.sign(possession_message("regulator", raw(key)))
    organization, entry_id = registry.register("regulator", "R", REGULATOR, raw(key), proof, NOW)
    assert organization.keys[0].allowed_kinds == ()
    assert parse_entry(store.entries[0].entry).body.key.allowed_kinds == []
    unkeyed, no_entry = registry.register(
        "app-1", "App", common_pb2.ORGANIZATION_ROLE_APP_OPERATOR, b"", b"", NOW
    )
    assert (unkeyed.keys, no_entry) == ([], "")
    assert entry_id


# --- only the holder of the active key changes an organization's keys (issue #25) ----------


@pytest.fixture
def active_hospital(
    registry: OrganizationRegistry,
) -> Ed25519PrivateKey:
    """hospital-a with its first key ACTIVE (its KEY entry at position 0); that key."""
    signer, _, register_id = register_hospital(registry)
    registry.record_sequenced(register_id, 0)
    return signer


def test_a_certificate_or_the_admin_alone_cannot_rotate_or_revoke_a_key(
    registry: OrganizationRegistry, store: FakeStore, active_hospital: Ed25519PrivateKey
) -> None:
    _, public, proof = new_key()
    entries = len(store.entries)
    expected = (
        "expected a signature by organization 'hospital-a''s active signing key \\(hospital-a#1\\) "
        "over the request, got none; .* recovery of a lost key is by a consortium vote, which "
        "does not exist yet"
    )
    with pytest.raises(PermissionDeniedError, match=expected):
        registry.rotate_key("hospital-a", "hospital-a#1", public, proof, ROUTINE, None, NOW)
    with pytest.raises(PermissionDeniedError, match=expected):
        registry.revoke_key("hospital-a", "hospital-a#1", COMPROMISE, None, NOW)
    assert len(store.entries) == entries
    assert registry.get("hospital-a").keys[0].end_entry_id == ""


def test_a_malformed_key_change_is_invalid_before_its_missing_signature_is_refused(
    registry: OrganizationRegistry, active_hospital: Ed25519PrivateKey
) -> None:
    with pytest.raises(InvalidInputError, match="expected a 32-byte Ed25519 public key"):
        registry.rotate_key("hospital-a", "hospital-a#1", b"", b"", ROUTINE, None, NOW)
    with pytest.raises(InvalidInputError, match="expected the id of the key to revoke"):
        registry.revoke_key("hospital-a", "", COMPROMISE, None, NOW)


def test_the_registrar_or_another_member_cannot_sign_for_a_member(
    registry: OrganizationRegistry,
    store: FakeStore,
    registrar: Ed25519PrivateKey,
    active_hospital: Ed25519PrivateKey,
) -> None:
    other, _, other_entry = register_hospital(registry, "hospital-b")
    registry.record_sequenced(other_entry, 1)
    _, public, proof = new_key()
    entries = len(store.entries)
    for signer, signer_id in ((registrar, "registrar"), (other, "hospital-b#1")):
        signed = rotate_signed(signer, signer_id, "hospital-a#1", public)
        with pytest.raises(PermissionDeniedError, match="which is not a key of 'hospital-a'"):
            registry.rotate_key("hospital-a", "hospital-a#1", public, proof, ROUTINE, signed, NOW)
    # Whoever got a fresh certificate for hospital-a still lacks its key: a key of its own
    # making, named as hospital-a's, does not verify.
    attacker, _, _ = new_key()
    forged = rotate_signed(attacker, "hospital-a#1", "hospital-a#1", public)
    with pytest.raises(PermissionDeniedError, match="does not verify with signing key"):
        registry.rotate_key("hospital-a", "hospital-a#1", public, proof, ROUTINE, forged, NOW)
    assert len(store.entries) == entries


def test_a_rotated_key_signs_no_further_change(
    registry: OrganizationRegistry, active_hospital: Ed25519PrivateKey
) -> None:
    _, public, proof = new_key()
    key, rotate_id = registry.rotate_key(
        "hospital-a",
        "hospital-a#1",
        public,
        proof,
        ROUTINE,
        rotate_signed(active_hospital, "hospital-a#1", "hospital-a#1", public),
        NOW,
    )
    registry.record_sequenced(rotate_id, 3)
    old_signs = revoke_signed(active_hospital, "hospital-a#1", key.key_id)
    with pytest.raises(PermissionDeniedError, match=f"which is ended by KEY entry {rotate_id}"):
        registry.revoke_key("hospital-a", key.key_id, COMPROMISE, old_signs, NOW)


def test_a_signature_over_another_request_does_not_verify(
    registry: OrganizationRegistry, active_hospital: Ed25519PrivateKey
) -> None:
    _, public, proof = new_key()
    _, other_public, _ = new_key()
    for wrong in (
        rotate_signed(active_hospital, "hospital-a#1", "hospital-a#1", other_public),
        rotate_signed(
            active_hospital, "hospital-a#1", "hospital-a#1", public, entry_pb2.KEY_REASON_SUPERSEDED
        ),
        revoke_signed(active_hospital, "hospital-a#1", "hospital-a#1", ROUTINE),
    ):
        with pytest.raises(PermissionDeniedError, match="over another request"):
            registry.rotate_key("hospital-a", "hospital-a#1", public, proof, ROUTINE, wrong, NOW)
    for_another_organization = revoke_signed(
        active_hospital, "hospital-a#1", "hospital-a#1", organization_id="hospital-b"
    )
    with pytest.raises(PermissionDeniedError, match="over another request"):
        registry.revoke_key("hospital-a", "hospital-a#1", COMPROMISE, for_another_organization, NOW)


def test_a_replayed_or_stale_key_change_is_refused(
    registry: OrganizationRegistry, store: FakeStore, active_hospital: Ed25519PrivateKey
) -> None:
    _, public, proof = new_key()
    stale = rotate_signed(
        active_hospital, "hospital-a#1", "hospital-a#1", public, at=NOW - timedelta(minutes=6)
    )
    with pytest.raises(PermissionDeniedError, match="signed within the last 5 minutes"):
        registry.rotate_key("hospital-a", "hospital-a#1", public, proof, ROUTINE, stale, NOW)
    request = rotate_signed(active_hospital, "hospital-a#1", "hospital-a#1", public)
    registry.rotate_key("hospital-a", "hospital-a#1", public, proof, ROUTINE, request, NOW)
    assert set(registry.get("hospital-a").request_nonces) == {request.nonce}
    entries = len(store.entries)
    # The replay is refused (here first because its signer is no longer active; the nonce,
    # kept with the organization, refuses it as well) and writes nothing.
    with pytest.raises(PermissionDeniedError, match="'hospital-a#1', which is ended by"):
        registry.rotate_key("hospital-a", "hospital-a#1", public, proof, ROUTINE, request, NOW)
    assert len(store.entries) == entries


def test_the_key_record_keeps_the_owners_signature_that_authorized_the_change(
    registry: OrganizationRegistry, store: FakeStore, active_hospital: Ed25519PrivateKey
) -> None:
    _, public, proof = new_key()
    request = rotate_signed(active_hospital, "hospital-a#1", "hospital-a#1", public)
    registry.rotate_key("hospital-a", "hospital-a#1", public, proof, ROUTINE, request, NOW)
    record = json.loads(store.entries[-1].record)
    authorization = record["authorization"]
    assert authorization["key_id"] == "hospital-a#1"
    nonce = base64.b64decode(authorization["nonce"])
    message = organization_key_rotate_message(
        record["owner_id"],
        record["replaces_key_id"],
        base64.b64decode(record["public_key"]),
        entry_pb2.KeyReason.Value(record["reason"]),
        authorization["key_id"],
        datetime.fromtimestamp(0, UTC)
        + timedelta(microseconds=authorization["request_time_micros"]),
        nonce,
    )
    active_hospital.public_key().verify(base64.b64decode(authorization["signature"]), message)


def test_a_node_accepts_the_owners_key_changes_and_not_the_registrars_alone(
    registry: OrganizationRegistry, store: FakeStore, registrar: Ed25519PrivateKey
) -> None:
    # The identity service forwards the owner's signature into the KEY entry, and a real
    # validator, fed the same log, accepts the rotation and the revocation; the same entries
    # with the holder signature stripped (what a registrar alone could sign) are rejected.
    genesis = GenesisKey("registrar", "identity", ("KEY",), raw(registrar))
    validator = EntryValidator(KeyRegistry([genesis]))
    seen: set[str] = set()
    signer, _, register_id = register_hospital(registry)
    registry.record_sequenced(register_id, 0)
    validator.validate(store.entries[0].entry, seen.__contains__)
    successor, public, proof = new_key()
    request = rotate_signed(signer, "hospital-a#1", "hospital-a#1", public)
    _, rotate_id = registry.rotate_key(
        "hospital-a", "hospital-a#1", public, proof, ROUTINE, request, NOW
    )
    rotation = store.entries[-1].entry
    holder = parse_entry(rotation).body.key.holder_signature
    assert (holder.key_id, holder.nonce, holder.signature) == (
        "hospital-a#1",
        request.nonce,
        request.signature,
    )
    stripped = _without_holder_signature(rotation, registrar)
    with pytest.raises(EntryRejectedError, match="the registrar alone cannot change") as refused:
        validator.validate(stripped, seen.__contains__)
    assert refused.value.reason == "KEY_STATE_CONFLICT"
    validator.validate(rotation, seen.__contains__)
    seen.add(rotate_id)
    registry.record_sequenced(rotate_id, 1)
    revoke = revoke_signed(successor, "hospital-a#2", "hospital-a#2")
    registry.revoke_key("hospital-a", "hospital-a#2", COMPROMISE, revoke, NOW)
    revocation = store.entries[-1].entry
    with pytest.raises(EntryRejectedError, match="the registrar alone cannot change"):
        validator.validate(_without_holder_signature(revocation, registrar), seen.__contains__)
    validator.validate(revocation, seen.__contains__)


def _without_holder_signature(raw_entry: bytes, registrar: Ed25519PrivateKey) -> bytes:
    """``raw_entry`` with its holder signature removed, signed again by the registrar."""
    body = parse_entry(raw_entry).body
    body.key.ClearField("holder_signature")
    return EntrySigner("registrar", registrar).sign_entry(body.SerializeToString())
