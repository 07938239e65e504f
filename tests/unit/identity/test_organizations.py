"""Organizations and their keys (services/identity/domain/organizations.py), on a fake store."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import UTC, datetime

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
    PreconditionError,
)
from chain.signed_messages import possession_message
from chain.validation import EntryValidator, KeyRegistry
from services.identity.domain.organizations import (
    KeyEntry,
    Organization,
    OrganizationRegistry,
)
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
    _, organization, register_id = register_hospital(registry)
    key_id = organization.keys[0].key_id
    with pytest.raises(PreconditionError, match="KEY_STATUS_PENDING"):
        registry.revoke_key("hospital-a", key_id, entry_pb2.KEY_REASON_KEY_COMPROMISE, NOW)
    assert registry.record_sequenced(register_id, 4)
    key, revoke_id = registry.revoke_key(
        "hospital-a", key_id, entry_pb2.KEY_REASON_KEY_COMPROMISE, NOW
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
    with pytest.raises(PreconditionError, match="expected key 'hospital-a#1' to be ACTIVE"):
        registry.revoke_key("hospital-a", key_id, entry_pb2.KEY_REASON_KEY_COMPROMISE, NOW)


def test_rotation_hands_over_at_one_position(registry: OrganizationRegistry) -> None:
    _, _organization, register_id = register_hospital(registry)
    registry.record_sequenced(register_id, 0)
    new = Ed25519PrivateKey.generate()
    proof = new.sign(possession_message("hospital-a", raw(new)))
    key, rotate_id = registry.rotate_key(
        "hospital-a", "hospital-a#1", raw(new), proof, entry_pb2.KEY_REASON_ROUTINE_ROTATION, NOW
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
    with pytest.raises(InvalidInputError, match="registered before"):
        registry.rotate_key(
            "hospital-a", "hospital-a#1", raw(key), proof, entry_pb2.KEY_REASON_SUPERSEDED, NOW
        )
    with pytest.raises(InvalidInputError, match="expected a rotation reason"):
        registry.rotate_key(
            "hospital-a", "hospital-a#1", raw(key), proof, entry_pb2.KEY_REASON_NEW_KEY, NOW
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
