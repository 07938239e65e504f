"""Organizations and their signing keys on the log.

Every key change is a KEY entry signed by the registrar (the identity service's genesis key) and
submitted to the chain's ordering topic; the key is PENDING until a chain node reports the entry
sequenced, and from then on "was key K valid at log position p" has a provable answer: the key is
valid for entries after its REGISTER or ROTATE entry and before the entry that ended it
(:meth:`OrganizationKey.valid_at`). Entries and events are written with the organization in one
document write (the store's outbox), so an accepted change is never lost.

Only the holder of an organization's active signing key rotates or revokes its keys: the
request carries a signature by that key (:mod:`services.identity.domain.request_signatures`),
and the KEY entry carries it on to the log, where every node checks it again
(:mod:`chain.holder_signatures`); the entry's registration record keeps it too. A client
certificate does not suffice (the admin can issue the organization a fresh one), and neither
the admin nor the registrar can change a member's key alone. A member that lost its key is
to recover by a consortium vote, which does not exist yet.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeAlias

from chain.consortium import GenesisKey, genesis_key_detail
from chain.entry import EntrySigner, new_entry_id
from chain.errors import (
    AlreadyExistsError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
)
from chain.signed_messages import (
    organization_key_revoke_message,
    organization_key_rotate_message,
    request_time_micros,
)
from chain.tags import salted_commitment
from services.identity.domain.keys import check_possession
from services.identity.domain.request_signatures import (
    RequestSignature,
    check_fresh,
    check_shape,
    check_signature,
    remember_nonce,
    require_signature,
)
from services.platform import paging
from services.platform.convert import timestamp
from services.platform.events import envelope
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2
from swiftchain.events.v1 import events_pb2
from swiftchain.identity.v1 import identity_pb2

PRODUCER = "identity"

RoleValue: TypeAlias = common_pb2.OrganizationRole.ValueType
ReasonValue: TypeAlias = entry_pb2.KeyReason.ValueType
ActionValue: TypeAlias = entry_pb2.KeyAction.ValueType
KindValue: TypeAlias = common_pb2.EntryKind.ValueType
_ORGANIZATION_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_ROLES = {
    common_pb2.ORGANIZATION_ROLE_HOSPITAL,
    common_pb2.ORGANIZATION_ROLE_REGULATOR,
    common_pb2.ORGANIZATION_ROLE_APP_OPERATOR,
    common_pb2.ORGANIZATION_ROLE_CONSORTIUM_ADMIN,
}
_ROTATION_REASONS = {
    entry_pb2.KEY_REASON_ROUTINE_ROTATION,
    entry_pb2.KEY_REASON_KEY_COMPROMISE,
    entry_pb2.KEY_REASON_SUPERSEDED,
}
_REVOCATION_REASONS = {
    entry_pb2.KEY_REASON_KEY_COMPROMISE,
    entry_pb2.KEY_REASON_SUPERSEDED,
    entry_pb2.KEY_REASON_CESSATION_OF_OPERATION,
}
#: Hospitals sign RECORD entries; the other roles sign nothing on the log, but may register a
#: key all the same, so that its validity at any log position is provable.
_HOSPITAL_KINDS: tuple[common_pb2.EntryKind.ValueType, ...] = (common_pb2.ENTRY_KIND_RECORD,)


def allowed_kinds(role: common_pb2.OrganizationRole.ValueType) -> tuple[KindValue, ...]:
    """The entry kinds an organization's key may sign, by its role."""
    return _HOSPITAL_KINDS if role == common_pb2.ORGANIZATION_ROLE_HOSPITAL else ()


DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
#: What a refused key change says about a lost key.
LOST_KEY_RECOVERY = (
    "neither a client certificate nor the consortium admin can change an organization's keys "
    "without that key's signature; recovery of a lost key is by a consortium vote, which does "
    "not exist yet"
)


def check_organization_id(organization_id: str) -> None:
    """InvalidInputError unless ``organization_id`` is a slug ``[a-z0-9][a-z0-9-]{0,62}``."""
    if not _ORGANIZATION_ID.fullmatch(organization_id):
        raise InvalidInputError(
            f"expected an organization id of 1-63 characters [a-z0-9-] starting with a letter "
            f"or digit, got {organization_id!r}"
        )


def _reason_name(reason: ReasonValue) -> str:
    return (
        entry_pb2.KeyReason.Name(reason) if reason in entry_pb2.KeyReason.values() else str(reason)
    )


@dataclass
class OrganizationKey:
    """One signing key of an organization and where it stands on the log."""

    key_id: str
    public_key: bytes
    allowed_kinds: tuple[KindValue, ...]
    register_entry_id: str
    create_time: datetime
    registered_at_log_index: int | None = None
    end_entry_id: str = ""
    end_action: ActionValue = entry_pb2.KEY_ACTION_UNSPECIFIED
    ended_at_log_index: int | None = None
    end_time: datetime | None = None

    @property
    def status(self) -> identity_pb2.KeyStatus.ValueType:
        """The key's ``identity.v1.KeyStatus`` as the log has it now."""
        if self.ended_at_log_index is not None:
            if self.end_action == entry_pb2.KEY_ACTION_ROTATE:
                return identity_pb2.KEY_STATUS_ROTATED
            return identity_pb2.KEY_STATUS_REVOKED
        if self.registered_at_log_index is None:
            return identity_pb2.KEY_STATUS_PENDING
        return identity_pb2.KEY_STATUS_ACTIVE

    def valid_at(self, log_index: int) -> bool:
        """Whether an entry at ``log_index`` may be signed by this key: after the entry that
        registered it, before the entry that ended it."""
        if self.registered_at_log_index is None or log_index <= self.registered_at_log_index:
            return False
        return self.ended_at_log_index is None or log_index < self.ended_at_log_index


@dataclass
class Organization:
    """An organization of the consortium with its keys, oldest first."""

    organization_id: str
    display_name: str
    role: RoleValue
    create_time: datetime
    update_time: datetime
    status: identity_pb2.OrganizationStatus.ValueType = identity_pb2.ORGANIZATION_STATUS_ACTIVE
    keys: list[OrganizationKey] = field(default_factory=list)
    #: Optimistic-concurrency version, bumped by every store update.
    version: int = 0
    #: Nonces of the key-signed requests accepted lately, with their request times.
    request_nonces: dict[bytes, datetime] = field(default_factory=dict)

    def key(self, key_id: str) -> OrganizationKey:
        """The key ``key_id`` of this organization; NotFoundError if it has none such."""
        for key in self.keys:
            if key.key_id == key_id:
                return key
        raise NotFoundError(f"organization {self.organization_id!r} has no key {key_id!r}")


@dataclass(frozen=True)
class KeyEntry:
    """A signed KEY entry to submit to the log, with the data its commitment covers."""

    entry_id: str
    entry: bytes
    #: The registration record (canonical JSON) and its salt: HMAC(salt, record) = commitment.
    record: bytes
    salt: bytes


@dataclass(frozen=True)
class KeyResolution:
    """A key as the log knows it at one position (ResolveKey)."""

    detail: entry_pb2.KeyDetail
    status: identity_pb2.KeyStatus.ValueType
    valid: bool
    as_of_log_index: int
    register_entry_id: str = ""
    registered_at_log_index: int | None = None
    end_entry_id: str = ""
    ended_at_log_index: int | None = None


class OrganizationStore(Protocol):
    """What the registry needs from storage (services/identity/store/organizations.py)."""

    def get(self, organization_id: str) -> Organization | None:
        """The organization, or None."""

    def create(
        self,
        organization: Organization,
        entries: Sequence[KeyEntry],
        events: Sequence[events_pb2.EventEnvelope],
    ) -> bool:
        """Insert it with its entries and events in one write; False if the id exists."""

    def update(
        self,
        organization: Organization,
        entries: Sequence[KeyEntry],
        events: Sequence[events_pb2.EventEnvelope],
    ) -> None:
        """Replace it if its stored version is still ``organization.version`` (then bump it);
        ConflictError if another write came first."""

    def list_page(self, role: RoleValue, after_id: str, limit: int) -> list[Organization]:
        """Up to ``limit`` organizations with ids after ``after_id``, by id; all roles if 0."""

    def find_by_entry(self, entry_id: str) -> Organization | None:
        """The organization one of whose keys was registered or ended by ``entry_id``."""


def key_owner(key_id: str) -> str:
    """The organization an organization key id belongs to (key ids are ``<org>#<n>``)."""
    return key_id.split("#", 1)[0]


class OrganizationRegistry:
    """Registers organizations and changes their keys, each change a KEY entry on the log."""

    def __init__(
        self,
        store: OrganizationStore,
        registrar: EntrySigner,
        genesis_keys: Sequence[GenesisKey],
        *,
        registrar_id: str = PRODUCER,
    ) -> None:
        self._store = store
        self._registrar = registrar
        self._registrar_id = registrar_id
        self._genesis = {key.key_id: key for key in genesis_keys}

    # --- commands -------------------------------------------------------------------------

    def register(
        self,
        organization_id: str,
        display_name: str,
        role: RoleValue,
        public_key: bytes,
        proof_of_possession: bytes,
        now: datetime,
    ) -> tuple[Organization, str]:
        """Register an organization (and a hospital's first key); idempotent on identical
        requests. Returns the organization and the KEY entry id ('' without a key)."""
        check_organization_id(organization_id)
        if not 1 <= len(display_name) <= 200:
            raise InvalidInputError(
                f"expected a display name of 1-200 characters, got {len(display_name)}"
            )
        if role not in _ROLES:
            raise InvalidInputError(
                "expected a role (HOSPITAL, REGULATOR, APP_OPERATOR or CONSORTIUM_ADMIN), got "
                + _role_name(role)
            )
        hospital = role == common_pb2.ORGANIZATION_ROLE_HOSPITAL
        if hospital and not public_key:
            raise InvalidInputError(
                "expected a signing public key for a hospital (it signs RECORD entries), got none"
            )
        if public_key:
            check_possession(organization_id, public_key, proof_of_possession)
        elif proof_of_possession:
            raise InvalidInputError("expected no proof of possession without a public key")
        existing = self._store.get(organization_id)
        if existing is not None:
            return self._same_registration(existing, display_name, role, public_key)
        organization = Organization(organization_id, display_name, role, now, now)
        entries: list[KeyEntry] = []
        events = [
            envelope(
                events_pb2.OrganizationRegistered(
                    organization_id=organization_id, display_name=display_name, role=role
                ),
                producer=PRODUCER,
                subject=organization_id,
                now=now,
            )
        ]
        if public_key:
            key, entry, event = self._new_key(
                organization,
                public_key,
                entry_pb2.KEY_ACTION_REGISTER,
                "",
                entry_pb2.KEY_REASON_NEW_KEY,
                now,
            )
            organization.keys.append(key)
            entries.append(entry)
            events.append(event)
        if not self._store.create(organization, entries, events):
            stored = self._store.get(organization_id)
            assert stored is not None  # it existed a moment ago, and nothing deletes
            return self._same_registration(stored, display_name, role, public_key)
        return organization, entries[0].entry_id if entries else ""

    def rotate_key(
        self,
        organization_id: str,
        replaces_key_id: str,
        new_public_key: bytes,
        proof_of_possession: bytes,
        reason: ReasonValue,
        signed: RequestSignature | None,
        now: datetime,
    ) -> tuple[OrganizationKey, str]:
        """Replace an ACTIVE key with a new one, on a request signed by the organization's
        active signing key; returns the new (PENDING) key and the entry id."""
        if reason not in _ROTATION_REASONS:
            raise InvalidInputError(
                "expected a rotation reason (ROUTINE_ROTATION, KEY_COMPROMISE or SUPERSEDED), "
                f"got {_reason_name(reason)}"
            )
        check_possession(organization_id, new_public_key, proof_of_possession)
        organization = self.get(organization_id)
        signed = require_signature(signed, _active_signer(organization), LOST_KEY_RECOVERY)
        request_time = check_shape(signed)
        message = organization_key_rotate_message(
            organization_id,
            replaces_key_id,
            new_public_key,
            reason,
            signed.key_id,
            request_time,
            signed.nonce,
        )
        _check_key_signed(organization, signed, message, now)
        old = self._active_key(organization, replaces_key_id)
        if any(k.public_key == new_public_key for k in organization.keys):
            raise InvalidInputError(
                "expected a new public key, got one this organization has registered before"
            )
        key, entry, event = self._new_key(
            organization,
            new_public_key,
            entry_pb2.KEY_ACTION_ROTATE,
            old.key_id,
            reason,
            now,
            signed,
        )
        old.end_entry_id = entry.entry_id
        old.end_action = entry_pb2.KEY_ACTION_ROTATE
        old.end_time = now
        organization.keys.append(key)
        organization.update_time = now
        organization.request_nonces = remember_nonce(organization.request_nonces, signed, now)
        self._store.update(organization, [entry], [event])
        return key, entry.entry_id

    def revoke_key(
        self,
        organization_id: str,
        key_id: str,
        reason: ReasonValue,
        signed: RequestSignature | None,
        now: datetime,
    ) -> tuple[OrganizationKey, str]:
        """Revoke an ACTIVE key, on a request signed by the organization's active signing key
        (the key itself may sign); returns the key and the KEY entry id."""
        if reason not in _REVOCATION_REASONS:
            raise InvalidInputError(
                "expected a revocation reason (KEY_COMPROMISE, SUPERSEDED or "
                f"CESSATION_OF_OPERATION), got {_reason_name(reason)}"
            )
        if not key_id:
            raise InvalidInputError("expected the id of the key to revoke, got none")
        organization = self.get(organization_id)
        signed = require_signature(signed, _active_signer(organization), LOST_KEY_RECOVERY)
        request_time = check_shape(signed)
        message = organization_key_revoke_message(
            organization_id, key_id, reason, signed.key_id, request_time, signed.nonce
        )
        _check_key_signed(organization, signed, message, now)
        key = self._active_key(organization, key_id)
        detail = entry_pb2.KeyDetail(
            action=entry_pb2.KEY_ACTION_REVOKE,
            owner_id=organization_id,
            owner_kind=entry_pb2.KEY_OWNER_KIND_ORGANIZATION,
            owner_role=organization.role,
            key_id=key_id,
            reason=reason,
        )
        entry = self._sign(detail, now, signed)
        key.end_entry_id = entry.entry_id
        key.end_action = entry_pb2.KEY_ACTION_REVOKE
        key.end_time = now
        organization.update_time = now
        organization.request_nonces = remember_nonce(organization.request_nonces, signed, now)
        event = envelope(
            events_pb2.KeyRevoked(
                owner_id=organization_id, key_id=key_id, reason=reason, entry_id=entry.entry_id
            ),
            producer=PRODUCER,
            subject=organization_id,
            now=now,
        )
        self._store.update(organization, [entry], [event])
        return key, entry.entry_id

    def record_sequenced(self, entry_id: str, leaf_index: int) -> bool:
        """Note that KEY entry ``entry_id`` is at ``leaf_index``; False if no key waits on it."""
        organization = self._store.find_by_entry(entry_id)
        if organization is None:
            return False
        changed = False
        for key in organization.keys:
            if key.register_entry_id == entry_id and key.registered_at_log_index is None:
                key.registered_at_log_index = leaf_index
                changed = True
            if key.end_entry_id == entry_id and key.ended_at_log_index is None:
                key.ended_at_log_index = leaf_index
                changed = True
        if changed:
            self._store.update(organization, [], [])
        return changed

    # --- queries --------------------------------------------------------------------------

    def get(self, organization_id: str) -> Organization:
        """The organization; NotFoundError if unknown."""
        check_organization_id(organization_id)
        organization = self._store.get(organization_id)
        if organization is None:
            raise NotFoundError(f"no organization {organization_id!r} is registered")
        return organization

    def list(
        self, role: RoleValue, page_size: int, page_token: str
    ) -> tuple[list[Organization], str]:
        """One page of organizations by id, and the token for the next ('' at the end)."""
        if role and role not in _ROLES:
            raise InvalidInputError(f"expected a known role filter, got {role}")
        limit = paging.page_size(page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        key = paging.filter_key("organizations", role)
        after = paging.page_after(page_token, key, 1)
        after_id = str(after[0]) if after else ""
        if after and not _ORGANIZATION_ID.fullmatch(after_id):
            raise InvalidInputError(
                f"expected a page token from a previous response, got {page_token!r}"
            )
        page = self._store.list_page(role, after_id, limit + 1)
        more = len(page) > limit
        page = page[:limit]
        token = paging.page_token((page[-1].organization_id,), key) if more and page else ""
        return page, token

    def resolve_key(self, key_id: str, log_index: int | None) -> KeyResolution:
        """Key ``key_id`` and whether it was valid for an entry at ``log_index`` (or now)."""
        genesis = self._genesis.get(key_id)
        if genesis is not None:
            return KeyResolution(
                detail=genesis_key_detail(genesis),
                status=identity_pb2.KEY_STATUS_ACTIVE,
                valid=True,
                as_of_log_index=log_index or 0,
            )
        owner = key_owner(key_id)
        organization = self._store.get(owner) if _ORGANIZATION_ID.fullmatch(owner) else None
        if organization is None:
            raise NotFoundError(f"no key {key_id!r} is registered")
        key = organization.key(key_id)
        replaced = next(
            (k.key_id for k in organization.keys if k.end_entry_id == key.register_entry_id),
            "",
        )
        detail = entry_pb2.KeyDetail(
            action=entry_pb2.KEY_ACTION_ROTATE if replaced else entry_pb2.KEY_ACTION_REGISTER,
            owner_id=organization.organization_id,
            owner_kind=entry_pb2.KEY_OWNER_KIND_ORGANIZATION,
            owner_role=organization.role,
            key_id=key.key_id,
            public_key=key.public_key,
            replaces_key_id=replaced,
            allowed_kinds=list(key.allowed_kinds),
        )
        if log_index is None:
            status = key.status
            valid = status == identity_pb2.KEY_STATUS_ACTIVE
            as_of = 0
        else:
            valid = key.valid_at(log_index)
            status = _status_at(key, log_index)
            as_of = log_index
        return KeyResolution(
            detail=detail,
            status=status,
            valid=valid,
            as_of_log_index=as_of,
            register_entry_id=key.register_entry_id,
            registered_at_log_index=key.registered_at_log_index,
            end_entry_id=key.end_entry_id,
            ended_at_log_index=key.ended_at_log_index,
        )

    # --- internals ------------------------------------------------------------------------

    def _same_registration(
        self, existing: Organization, display_name: str, role: RoleValue, public_key: bytes
    ) -> tuple[Organization, str]:
        first_key = existing.keys[0] if existing.keys else None
        same = (
            existing.display_name == display_name
            and existing.role == role
            and (first_key.public_key if first_key else b"") == public_key
        )
        if not same:
            raise AlreadyExistsError(
                f"organization {existing.organization_id!r} is registered already with "
                "different details"
            )
        return existing, first_key.register_entry_id if first_key else ""

    @staticmethod
    def _active_key(organization: Organization, key_id: str) -> OrganizationKey:
        key = organization.key(key_id)
        if key.end_entry_id:
            raise PreconditionError(
                f"expected key {key_id!r} to be ACTIVE, got "
                + identity_pb2.KeyStatus.Name(key.status)
                + f" (ended by entry {key.end_entry_id})"
            )
        if key.status != identity_pb2.KEY_STATUS_ACTIVE:
            raise PreconditionError(
                f"expected key {key_id!r} to be ACTIVE, got KEY_STATUS_PENDING: its KEY entry "
                f"{key.register_entry_id} is not on the log yet; retry in a moment"
            )
        return key

    def _new_key(
        self,
        organization: Organization,
        public_key: bytes,
        action: ActionValue,
        replaces_key_id: str,
        reason: ReasonValue,
        now: datetime,
        authorization: RequestSignature | None = None,
    ) -> tuple[OrganizationKey, KeyEntry, events_pb2.EventEnvelope]:
        key_id = f"{organization.organization_id}#{len(organization.keys) + 1}"
        detail = entry_pb2.KeyDetail(
            action=action,
            owner_id=organization.organization_id,
            owner_kind=entry_pb2.KEY_OWNER_KIND_ORGANIZATION,
            owner_role=organization.role,
            key_id=key_id,
            public_key=public_key,
            replaces_key_id=replaces_key_id,
            reason=reason,
            allowed_kinds=list(allowed_kinds(organization.role)),
        )
        entry = self._sign(detail, now, authorization)
        key = OrganizationKey(
            key_id=key_id,
            public_key=public_key,
            allowed_kinds=allowed_kinds(organization.role),
            register_entry_id=entry.entry_id,
            create_time=now,
        )
        payload: events_pb2.KeyRegistered | events_pb2.KeyRotated
        if action == entry_pb2.KEY_ACTION_ROTATE:
            payload = events_pb2.KeyRotated(
                owner_id=organization.organization_id,
                old_key_id=replaces_key_id,
                new_key_id=key_id,
                new_public_key=public_key,
                reason=reason,
                entry_id=entry.entry_id,
                allowed_kinds=list(allowed_kinds(organization.role)),
            )
        else:
            payload = events_pb2.KeyRegistered(
                owner_id=organization.organization_id,
                owner_kind=entry_pb2.KEY_OWNER_KIND_ORGANIZATION,
                key_id=key_id,
                public_key=public_key,
                allowed_kinds=list(allowed_kinds(organization.role)),
                entry_id=entry.entry_id,
            )
        event = envelope(payload, producer=PRODUCER, subject=organization.organization_id, now=now)
        return key, entry, event

    def _sign(
        self,
        detail: entry_pb2.KeyDetail,
        now: datetime,
        authorization: RequestSignature | None = None,
    ) -> KeyEntry:
        """A registrar-signed KEY entry whose commitment covers a salted registration record.
        The owner's signature that authorized the change, when there was one, goes into the
        entry (``KeyDetail.holder_signature``, which every node checks, so that the registrar
        alone cannot change the owner's key) and into the record."""
        if authorization is not None and authorization.request_time is not None:
            detail.holder_signature.CopyFrom(authorization.holder_signature())
        entry_id = new_entry_id()
        fields: dict[str, object] = {
            "format": "swiftchain-key-record/v1",
            "entry_id": entry_id,
            "action": entry_pb2.KeyAction.Name(detail.action),
            "owner_id": detail.owner_id,
            "key_id": detail.key_id,
            "public_key": base64.b64encode(detail.public_key).decode(),
            "replaces_key_id": detail.replaces_key_id,
            "reason": entry_pb2.KeyReason.Name(detail.reason),
            "time": now.isoformat(),
        }
        if authorization is not None and authorization.request_time is not None:
            fields["authorization"] = {
                "key_id": authorization.key_id,
                "request_time_micros": request_time_micros(authorization.request_time),
                "nonce": base64.b64encode(authorization.nonce).decode(),
                "signature": base64.b64encode(authorization.signature).decode(),
            }
        record = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
        salt, commitment = salted_commitment(record)
        body = entry_pb2.EntryBody(
            entry_id=entry_id,
            kind=common_pb2.ENTRY_KIND_KEY,
            submitter_id=self._registrar_id,
            time=timestamp(now),
            commitment=commitment,
            key=detail,
        )
        return KeyEntry(
            entry_id, self._registrar.sign_entry(body.SerializeToString()), record, salt
        )


def _is_active(key: OrganizationKey) -> bool:
    return not key.end_entry_id and key.status == identity_pb2.KEY_STATUS_ACTIVE


def _active_signer(organization: Organization) -> str:
    """Who signs an organization's key changes, in words, naming its active keys."""
    active = [k.key_id for k in organization.keys if _is_active(k)]
    return (
        f"organization {organization.organization_id!r}'s active signing key ("
        + (", ".join(active) if active else "it has none")
        + ")"
    )


def _check_key_signed(
    organization: Organization, signed: RequestSignature, message: bytes, now: datetime
) -> None:
    """PermissionDeniedError unless an ACTIVE key of ``organization`` signed ``message``
    lately, with a nonce not seen before."""
    signer = next((k for k in organization.keys if k.key_id == signed.key_id), None)
    if signer is None:
        raise PermissionDeniedError(
            f"expected a signature by {_active_signer(organization)}, got one by "
            f"{signed.key_id!r}, which is not a key of {organization.organization_id!r}; "
            + LOST_KEY_RECOVERY
        )
    if not _is_active(signer):
        state = (
            f"ended by KEY entry {signer.end_entry_id}; {LOST_KEY_RECOVERY}"
            if signer.end_entry_id
            else f"PENDING: its KEY entry {signer.register_entry_id} is not on the log yet; "
            "sign again once it is ACTIVE"
        )
        raise PermissionDeniedError(
            f"expected a signature by {_active_signer(organization)}, got one by key "
            f"{signed.key_id!r}, which is {state}"
        )
    check_fresh(signed, organization.request_nonces, now)
    check_signature(signer.public_key, signed, message, "signing key")


def _status_at(key: OrganizationKey, log_index: int) -> identity_pb2.KeyStatus.ValueType:
    if key.registered_at_log_index is None or log_index <= key.registered_at_log_index:
        return identity_pb2.KEY_STATUS_PENDING
    if key.ended_at_log_index is None or log_index < key.ended_at_log_index:
        return identity_pb2.KEY_STATUS_ACTIVE
    if key.end_action == entry_pb2.KEY_ACTION_ROTATE:
        return identity_pb2.KEY_STATUS_ROTATED
    return identity_pb2.KEY_STATUS_REVOKED


def _role_name(role: RoleValue) -> str:
    values = common_pb2.OrganizationRole.values()
    return common_pb2.OrganizationRole.Name(role) if role in values else str(role)
