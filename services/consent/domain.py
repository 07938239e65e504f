"""The consent service's domain: patient-signed directives and delegations, access decisions,
break-glass, and what each of them puts on the log. No gRPC here (see servicer.py).

Every accepted directive or delegation version is checked first — a signature by an active
device key of the patient (or of a delegate allowed to manage consents), the next version
number, a well-formed document — and becomes a CONSENT entry signed by the consent service's
genesis key, carrying the patient's signature. Every access decision becomes an ACCESS entry that
names the deciding directive version. Entries and events leave through :class:`Outgoing` items:
the store keeps them durably first, a sender hands them to Kafka afterwards, so a request never
waits for Kafka and nothing accepted is lost.

The current state (every directive and delegation version) is kept in memory and written
through to the store: decisions read memory only. One consent process owns a database.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import DecodeError, Message

from chain.entry import EntrySigner, new_entry_id, unknown_field_numbers
from chain.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    StaleVersionError,
)
from chain.signed_messages import DELEGATION_PREFIX, DIRECTIVE_PREFIX
from chain.tags import device_key_tag, salted_commitment, subject_tag
from services.consent.directory import Directory
from services.consent.policy import (
    DATA_CATEGORIES,
    PURPOSES,
    AccessQuery,
    DirectiveView,
    check_provision,
    decide,
)
from services.platform.caller import Caller, Role
from services.platform.events import envelope
from services.platform.topics import ACCESS_EVENTS_TOPIC, CONSENT_EVENTS_TOPIC
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2
from swiftchain.consent.v1 import consent_service_pb2 as pb
from swiftchain.consent.v1 import directive_pb2
from swiftchain.events.v1 import events_pb2

PRODUCER = "consent"
CONSENT_TOPIC = CONSENT_EVENTS_TOPIC
ACCESS_TOPIC = ACCESS_EVENTS_TOPIC
#: How long a change waits for a party or device key that identity announced a moment ago.
DEVICE_KEY_GRACE_SECONDS = 3.0

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_REASON_CODE = re.compile(r"[a-z0-9-]{1,32}")
_ACTIVE = entry_pb2.DIRECTIVE_STATUS_ACTIVE
_REVOKED = entry_pb2.DIRECTIVE_STATUS_REVOKED
_CONSENT = entry_pb2.DIRECTIVE_TYPE_CONSENT
_DELEGATION = entry_pb2.DIRECTIVE_TYPE_DELEGATION
_MANAGE = directive_pb2.DELEGATION_SCOPE_MANAGE_CONSENT
_VIEW = directive_pb2.DELEGATION_SCOPE_VIEW


@dataclass
class AcceptedVersion:
    """One accepted version of a directive or a delegation, with its CONSENT entry."""

    directive_type: entry_pb2.DirectiveType.ValueType
    #: The directive's or delegation's id.
    document_id: str
    version: int
    patient_subject_id: str
    #: The signed envelope exactly as received (a serialized SignedDirective or
    #: SignedDelegation).
    signed: bytes
    signer_subject_id: str
    signer_key_id: str
    signer_public_key: bytes
    entry_id: str
    #: The CONSENT entry's exact bytes.
    entry: bytes
    commitment: bytes
    #: The commitment's salt: with the document bytes it proves the commitment; kept off the log.
    salt: bytes
    accept_time: datetime
    leaf_index: int | None = None
    #: True once Kafka acknowledged the entry and the events.
    logged: bool = False

    @property
    def directive(self) -> directive_pb2.ConsentDirective:
        """The directive (for a CONSENT version)."""
        return _parse(directive_pb2.ConsentDirective, _signed_directive(self.signed).directive)

    @property
    def delegation(self) -> directive_pb2.Delegation:
        """The delegation (for a DELEGATION version)."""
        return _parse(directive_pb2.Delegation, _signed_delegation(self.signed).delegation)

    @property
    def status(self) -> entry_pb2.DirectiveStatus.ValueType:
        """ACTIVE or REVOKED."""
        if self.directive_type == _CONSENT:
            return self.directive.status
        return self.delegation.status


@dataclass
class StoredDecision:
    """One access decision (CheckAccess or BreakGlass) with its ACCESS entry."""

    #: ``<organization id>/<request id>``: a retry finds the first decision.
    key: str
    patient_subject_id: str
    organization_id: str
    practitioner_id: str
    data_category: str
    purpose: str
    decision: common_pb2.AccessDecision.ValueType
    reason: common_pb2.AccessReason.ValueType
    deciding_directive_id: str
    deciding_directive_version: int
    deciding_log_index: int | None
    break_glass: bool
    reason_code: str
    #: The break-glass justification: committed on the log, kept here, never in clear there.
    justification: str
    entry_id: str
    entry: bytes
    salt: bytes
    decide_time: datetime


@dataclass(frozen=True)
class Outgoing:
    """What one accepted change sends to Kafka: its entry and its events; and the patient's
    notification, delivered at once and kept once Kafka has the rest."""

    entry: bytes
    events: tuple[tuple[str, events_pb2.EventEnvelope], ...]
    #: The version or decision it belongs to.
    version: AcceptedVersion | None = None
    decision: StoredDecision | None = None
    notifications: tuple[pb.Notification, ...] = ()


class ConsentStore(Protocol):
    """What the domain needs from storage (services/consent/store.py)."""

    def load_versions(self) -> list[AcceptedVersion]:
        """Every accepted version, oldest first within each directive or delegation."""

    def add_version(self, version: AcceptedVersion) -> None:
        """Store a new version; :class:`StaleVersionError` when that version number of that
        document is stored already (a concurrent change won)."""

    def add_decision(self, decision: StoredDecision) -> StoredDecision:
        """Store a decision durably; return the one stored first under the same key (a retry
        of a request gets the first decision back)."""


_M = TypeVar("_M", bound=Message)


def _parse(message_type: type[_M], raw: bytes) -> _M:
    message = message_type()
    try:
        message.ParseFromString(raw)
    except DecodeError as error:
        raise InvalidInputError(
            f"expected a serialized {message_type.DESCRIPTOR.name}, got undecodable bytes: {error}"
        ) from None
    unknown = unknown_field_numbers(message)
    if unknown:
        raise InvalidInputError(
            f"expected a {message_type.DESCRIPTOR.name} with known fields only, got unknown "
            f"field numbers {unknown}"
        )
    return message


def _signed_directive(raw: bytes) -> directive_pb2.SignedDirective:
    return _parse(directive_pb2.SignedDirective, raw)


def _signed_delegation(raw: bytes) -> directive_pb2.SignedDelegation:
    return _parse(directive_pb2.SignedDelegation, raw)


def _event_id(entry_id: str, what: str) -> str:
    """Deterministic, so that a resend publishes the same event id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"swiftchain:consent:{entry_id}:{what}"))


def _check_uuid(value: str, what: str) -> None:
    if not _UUID.fullmatch(value):
        raise InvalidInputError(f"expected {what} as a lower-case UUID v4, got {value!r}")


class NotificationSink(Protocol):
    """Receives every notification for patients (services/consent/notifications.py)."""

    def publish(self, notification: pb.Notification) -> None:
        """Deliver ``notification`` to the patient's watchers."""


class ConsentBook:
    """Directives, delegations and decisions of all patients of one consent service."""

    def __init__(
        self,
        store: ConsentStore,
        directory: Directory,
        signer: EntrySigner,
        tag_key: bytes,
        *,
        submitter_id: str = PRODUCER,
        send: Callable[[Outgoing], None] = lambda _: None,
        notify: NotificationSink | None = None,
        key_grace_seconds: float = DEVICE_KEY_GRACE_SECONDS,
    ) -> None:
        self._store = store
        self._directory = directory
        self._signer = signer
        self._tag_key = tag_key
        self._submitter_id = submitter_id
        self._send = send
        self._notify = notify
        self._key_grace = key_grace_seconds
        self._lock = threading.Lock()
        #: document id -> its versions, oldest first.
        self._versions: dict[str, list[AcceptedVersion]] = {}
        #: patient -> ids of its directives and delegations.
        self._by_patient: dict[str, list[str]] = {}
        #: entry id -> version, to record leaf indexes.
        self._by_entry: dict[str, AcceptedVersion] = {}

    def set_sender(self, send: Callable[[Outgoing], None]) -> None:
        """Where accepted changes go to reach Kafka (the sender is made after the book)."""
        self._send = send

    # --- state -------------------------------------------------------------------------

    def load(self) -> list[AcceptedVersion]:
        """Read every stored version; return those whose entry Kafka never acknowledged."""
        unlogged: list[AcceptedVersion] = []
        with self._lock:
            for version in self._store.load_versions():
                self._remember(version)
                if not version.logged:
                    unlogged.append(version)
        return unlogged

    def _remember(self, version: AcceptedVersion) -> None:
        versions = self._versions.setdefault(version.document_id, [])
        if not versions:
            self._by_patient.setdefault(version.patient_subject_id, []).append(version.document_id)
        versions.append(version)
        self._by_entry[version.entry_id] = version

    def outgoing_for(self, version: AcceptedVersion) -> Outgoing:
        """The entry, events and notification of a stored version (the same again to resend
        after a restart)."""
        return Outgoing(
            version.entry,
            tuple(self._version_events(version)),
            version=version,
            notifications=(self._version_notification(version),),
        )

    def record_leaf_index(self, entry_id: str, leaf_index: int) -> AcceptedVersion | None:
        """Remember where a version's CONSENT entry landed; the version, if it is one of ours."""
        with self._lock:
            version = self._by_entry.get(entry_id)
            if version is not None:
                version.leaf_index = leaf_index
            return version

    def awaiting_leaf_index(self) -> list[AcceptedVersion]:
        """Versions whose entry has no known leaf index yet."""
        with self._lock:
            return [v for v in self._by_entry.values() if v.leaf_index is None]

    # --- directives and delegations ---------------------------------------------------

    def accept_directive(
        self,
        caller: Caller,
        raw_signed: directive_pb2.SignedDirective,
        *,
        revoke: bool,
        first: bool,
        now: datetime,
    ) -> AcceptedVersion:
        """Check and accept one signed directive version (grant when ``first``, else amend or,
        with ``revoke``, revoke)."""
        directive = _parse(directive_pb2.ConsentDirective, raw_signed.directive)
        _check_uuid(directive.directive_id, "a directive id")
        patient = directive.patient_subject_id
        if not self._directory.is_patient(patient, self._key_grace):
            raise NotFoundError(f"no patient {patient!r} is registered")
        signer_subject, delegation = self._signer_of(caller, directive, now)
        key = self._verify_signature(
            raw_signed.signer_key_id,
            signer_subject,
            raw_signed.signature,
            DIRECTIVE_PREFIX + raw_signed.directive,
        )
        self._check_directive(directive, revoke=revoke)
        with self._lock:
            history = self._versions.get(directive.directive_id, [])
            same = self._resent(history, raw_signed.SerializeToString(), directive.version)
            if same is not None:
                return same
            self._check_next_version(history, directive.version, first, "directive")
            if history:
                previous = history[-1]
                if previous.patient_subject_id != patient:
                    raise ConflictError(
                        f"directive {directive.directive_id} belongs to another patient"
                    )
                if previous.directive.grantee != directive.grantee:
                    raise ConflictError(
                        "expected the same grantee as the previous version (grant a new "
                        "directive to change the grantee)"
                    )
                if previous.status == _REVOKED:
                    raise PreconditionError(
                        f"directive {directive.directive_id} is revoked; grant a new directive"
                    )
            version = self._new_version(
                _CONSENT,
                directive.directive_id,
                directive.version,
                patient,
                raw_signed.SerializeToString(),
                raw_signed.directive,
                signer_subject,
                key.key_id,
                key.public_key,
                raw_signed.signature,
                history[-1] if history else None,
                delegation,
                now,
            )
            self._store.add_version(version)
            self._remember(version)
        self._announce(version)
        return version

    def accept_delegation(
        self,
        caller: Caller,
        raw_signed: directive_pb2.SignedDelegation,
        *,
        remove: bool,
        now: datetime,
    ) -> AcceptedVersion:
        """Check and accept one signed delegation version (add or change; ``remove``)."""
        delegation = _parse(directive_pb2.Delegation, raw_signed.delegation)
        _check_uuid(delegation.delegation_id, "a delegation id")
        patient = delegation.patient_subject_id
        if caller.role is not Role.PATIENT or caller.id != patient:
            raise PermissionDeniedError(
                f"only patient {patient!r} may change its delegations, not {caller.describe()}"
            )
        if not self._directory.is_patient(delegation.delegate_subject_id, self._key_grace):
            raise NotFoundError(
                f"no person {delegation.delegate_subject_id!r} is registered to act as a delegate"
            )
        if delegation.delegate_subject_id == patient:
            raise InvalidInputError("expected a delegate other than the patient")
        key = self._verify_signature(
            raw_signed.signer_key_id,
            patient,
            raw_signed.signature,
            DELEGATION_PREFIX + raw_signed.delegation,
        )
        expected_status = _REVOKED if remove else _ACTIVE
        if delegation.status != expected_status:
            raise InvalidInputError(
                f"expected status {entry_pb2.DirectiveStatus.Name(expected_status)}, "
                f"got {entry_pb2.DirectiveStatus.Name(delegation.status)}"
            )
        scopes = set(delegation.scopes)
        if not scopes or not scopes <= {_MANAGE, _VIEW}:
            raise InvalidInputError(
                "expected scopes among MANAGE_CONSENT and VIEW, got "
                + (", ".join(str(s) for s in sorted(scopes)) or "none")
            )
        if not delegation.HasField("expire_time") or not delegation.HasField("issue_time"):
            raise InvalidInputError("expected a delegation with an issue time and an expiry time")
        if not remove and delegation.expire_time.ToDatetime(tzinfo=now.tzinfo) <= now:
            raise InvalidInputError("expected an expiry time in the future")
        with self._lock:
            history = self._versions.get(delegation.delegation_id, [])
            same = self._resent(history, raw_signed.SerializeToString(), delegation.version)
            if same is not None:
                return same
            self._check_next_version(history, delegation.version, not history, "delegation")
            if history:
                previous = history[-1].delegation
                if previous.delegate_subject_id != delegation.delegate_subject_id or (
                    history[-1].patient_subject_id != patient
                ):
                    raise ConflictError("expected the same patient and delegate as before")
                if previous.status == _REVOKED:
                    raise PreconditionError(
                        f"delegation {delegation.delegation_id} was removed; create a new one"
                    )
            elif remove:
                raise NotFoundError(f"no delegation {delegation.delegation_id}")
            version = self._new_version(
                _DELEGATION,
                delegation.delegation_id,
                delegation.version,
                patient,
                raw_signed.SerializeToString(),
                raw_signed.delegation,
                patient,
                key.key_id,
                key.public_key,
                raw_signed.signature,
                history[-1] if history else None,
                None,
                now,
            )
            self._store.add_version(version)
            self._remember(version)
        self._announce(version)
        return version

    def _resent(
        self, history: Sequence[AcceptedVersion], signed: bytes, version: int
    ) -> AcceptedVersion | None:
        for accepted in history:
            if accepted.version == version and accepted.signed == signed:
                return accepted  # a retry of an accepted version: same answer, nothing new
        return None

    @staticmethod
    def _check_next_version(
        history: Sequence[AcceptedVersion], version: int, first: bool, what: str
    ) -> None:
        if first:
            if history:
                raise AlreadyExistsError(
                    f"{what} {history[0].document_id} exists already; amend it with version "
                    f"{history[-1].version + 1}"
                )
            if version != 1:
                raise InvalidInputError(f"expected version 1 for a new {what}, got {version}")
            return
        if not history:
            raise NotFoundError(f"no {what} with that id; grant it first")
        expected = history[-1].version + 1
        if version != expected:
            raise StaleVersionError(
                f"expected version {expected} of the {what} (the latest is "
                f"{history[-1].version}), got {version}; re-read it and sign the next version"
            )

    def _signer_of(
        self, caller: Caller, directive: directive_pb2.ConsentDirective, now: datetime
    ) -> tuple[str, AcceptedVersion | None]:
        """(the subject who must have signed, the delegation allowing it or None)."""
        patient = directive.patient_subject_id
        if caller.role is not Role.PATIENT:
            raise PermissionDeniedError(f"{caller.describe()} may not sign consent directives")
        if not directive.delegation_id:
            if caller.id != patient:
                raise PermissionDeniedError(
                    f"{caller.describe()} may not sign for patient {patient!r} without naming "
                    "a delegation"
                )
            return patient, None
        with self._lock:
            versions = self._versions.get(directive.delegation_id, [])
        delegation = versions[-1] if versions else None
        if delegation is None or delegation.directive_type != _DELEGATION:
            raise PermissionDeniedError(f"no delegation {directive.delegation_id} exists")
        self._check_delegation(delegation, caller.id, patient, _MANAGE, now)
        return caller.id, delegation

    @staticmethod
    def _check_delegation(
        delegation: AcceptedVersion,
        delegate: str,
        patient: str,
        scope: directive_pb2.DelegationScope.ValueType,
        now: datetime,
    ) -> None:
        document = delegation.delegation
        if document.patient_subject_id != patient or document.delegate_subject_id != delegate:
            raise PermissionDeniedError(
                f"delegation {document.delegation_id} does not let {delegate!r} act for {patient!r}"
            )
        if document.status != _ACTIVE:
            raise PermissionDeniedError(f"delegation {document.delegation_id} was removed")
        if scope not in document.scopes:
            raise PermissionDeniedError(
                f"delegation {document.delegation_id} does not grant "
                f"{directive_pb2.DelegationScope.Name(scope)}"
            )
        if document.expire_time.ToDatetime(tzinfo=now.tzinfo) <= now:
            raise PermissionDeniedError(
                f"delegation {document.delegation_id} expired at "
                f"{document.expire_time.ToDatetime().isoformat()}Z"
            )

    def _verify_signature(
        self, key_id: str, subject: str, signature: bytes, message: bytes
    ) -> _Key:
        key = self._directory.device_key(key_id, wait_seconds=self._key_grace)
        if key is None:
            raise PermissionDeniedError(f"no device key {key_id!r} is registered")
        if key.subject_id != subject:
            raise PermissionDeniedError(
                f"expected a signature by a device key of {subject!r}, got one by key {key_id!r} "
                "of another person"
            )
        if not key.active:
            raise PermissionDeniedError(f"device key {key_id!r} is revoked")
        try:
            Ed25519PublicKey.from_public_bytes(key.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            raise PermissionDeniedError(
                f"the signature does not verify with device key {key_id!r}"
            ) from None
        return _Key(key.key_id, key.public_key)

    def _check_directive(self, directive: directive_pb2.ConsentDirective, *, revoke: bool) -> None:
        expected_status = _REVOKED if revoke else _ACTIVE
        if directive.status != expected_status:
            raise InvalidInputError(
                f"expected status {entry_pb2.DirectiveStatus.Name(expected_status)}, "
                f"got {entry_pb2.DirectiveStatus.Name(directive.status)}"
            )
        which = directive.grantee.WhichOneof("grantee")
        if which is None:
            raise InvalidInputError("expected a grantee (an organization or a practitioner)")
        if which == "organization_id" and not self._directory.is_hospital(
            directive.grantee.organization_id, self._key_grace
        ):
            raise NotFoundError(f"no hospital {directive.grantee.organization_id!r} is registered")
        if which == "practitioner_id" and (
            self._directory.practitioner_organization(
                directive.grantee.practitioner_id, self._key_grace
            )
            is None
        ):
            raise NotFoundError(
                f"no practitioner {directive.grantee.practitioner_id!r} is registered"
            )
        if not directive.HasField("provision"):
            raise InvalidInputError("expected a provision")
        if not directive.HasField("issue_time"):
            raise InvalidInputError("expected an issue time")
        problems = check_provision(directive.provision)
        if problems:
            raise InvalidInputError("; ".join(problems))

    def _new_version(
        self,
        directive_type: entry_pb2.DirectiveType.ValueType,
        document_id: str,
        number: int,
        patient: str,
        signed: bytes,
        document: bytes,
        signer_subject: str,
        key_id: str,
        public_key: bytes,
        signature: bytes,
        previous: AcceptedVersion | None,
        delegation: AcceptedVersion | None,
        now: datetime,
    ) -> AcceptedVersion:
        salt, commitment = salted_commitment(document)
        entry_id = new_entry_id()
        status = (
            _parse(directive_pb2.ConsentDirective, document).status
            if directive_type == _CONSENT
            else _parse(directive_pb2.Delegation, document).status
        )
        body = entry_pb2.EntryBody(
            entry_id=entry_id,
            kind=common_pb2.ENTRY_KIND_CONSENT,
            submitter_id=self._submitter_id,
            commitment=commitment,
            subject_tag=subject_tag(self._tag_key, patient),
            consent=entry_pb2.ConsentDetail(
                directive_type=directive_type,
                directive_id=document_id,
                version=number,
                status=status,
                signer_key_tag=device_key_tag(self._tag_key, key_id),
                signer_signature=signature,
            ),
        )
        body.time.FromDatetime(now)
        if previous is not None:
            body.references.add(
                kind=entry_pb2.REFERENCE_KIND_PREVIOUS_VERSION,
                entry_id=previous.entry_id,
                commitment=previous.commitment,
            )
        if delegation is not None:
            body.references.add(
                kind=entry_pb2.REFERENCE_KIND_DELEGATION,
                entry_id=delegation.entry_id,
                commitment=delegation.commitment,
            )
        return AcceptedVersion(
            directive_type=directive_type,
            document_id=document_id,
            version=number,
            patient_subject_id=patient,
            signed=signed,
            signer_subject_id=signer_subject,
            signer_key_id=key_id,
            signer_public_key=public_key,
            entry_id=entry_id,
            entry=self._signer.sign_entry(body.SerializeToString()),
            commitment=commitment,
            salt=salt,
            accept_time=now,
        )

    def _version_events(
        self, version: AcceptedVersion
    ) -> list[tuple[str, events_pb2.EventEnvelope]]:
        payload: Message
        if version.directive_type == _CONSENT:
            directive = version.directive
            change = events_pb2.ConsentChange(
                patient_subject_id=version.patient_subject_id,
                directive_id=version.document_id,
                version=version.version,
                grantee_organization_id=self._grantee_organization(directive.grantee),
                grantee_practitioner_id=directive.grantee.practitioner_id,
                signer_subject_id=version.signer_subject_id,
                entry_id=version.entry_id,
            )
            if directive.status == _REVOKED:
                payload = events_pb2.ConsentRevoked(change=change)
            elif version.version == 1:
                payload = events_pb2.ConsentGranted(change=change)
            else:
                payload = events_pb2.ConsentAmended(change=change)
        else:
            delegation = version.delegation
            if delegation.status == _REVOKED:
                payload = events_pb2.DelegateRemoved(
                    patient_subject_id=version.patient_subject_id,
                    delegate_subject_id=delegation.delegate_subject_id,
                    delegation_id=version.document_id,
                    version=version.version,
                    entry_id=version.entry_id,
                )
            else:
                added = events_pb2.DelegateAdded(
                    patient_subject_id=version.patient_subject_id,
                    delegate_subject_id=delegation.delegate_subject_id,
                    delegation_id=version.document_id,
                    version=version.version,
                    entry_id=version.entry_id,
                )
                added.expire_time.CopyFrom(delegation.expire_time)
                payload = added
        event = envelope(
            payload,
            producer=PRODUCER,
            subject=subject_tag(self._tag_key, version.patient_subject_id).hex(),
            now=version.accept_time,
            event_id=_event_id(version.entry_id, "change"),
        )
        return [(CONSENT_TOPIC, event)]

    def _announce(self, version: AcceptedVersion) -> None:
        self.deliver(self.outgoing_for(version))

    def deliver(self, item: Outgoing) -> None:
        """Hand ``item`` to the sender and its notifications to the patients' watchers (at
        start too, for what Kafka never acknowledged before a crash)."""
        self._send(item)
        if self._notify is not None:
            for notification in item.notifications:
                self._notify.publish(notification)

    @staticmethod
    def _version_notification(version: AcceptedVersion) -> pb.Notification:
        kind = (
            pb.NOTIFICATION_KIND_CONSENT_CHANGED
            if version.directive_type == _CONSENT
            else pb.NOTIFICATION_KIND_DELEGATION_CHANGED
        )
        notification = pb.Notification(
            notification_id=_event_id(version.entry_id, "change"),
            kind=kind,
            patient_subject_id=version.patient_subject_id,
            directive_id=version.document_id,
            directive_version=version.version,
            entry_id=version.entry_id,
        )
        notification.time.FromDatetime(version.accept_time)
        return notification

    def _grantee_organization(self, grantee: directive_pb2.Grantee) -> str:
        if grantee.WhichOneof("grantee") == "practitioner_id":
            return self._directory.practitioner_organization(grantee.practitioner_id) or ""
        return grantee.organization_id

    # --- reading -------------------------------------------------------------------------

    def history(self, caller: Caller, directive_id: str, now: datetime) -> list[AcceptedVersion]:
        """Every version of a directive, oldest first, if ``caller`` may see it."""
        with self._lock:
            versions = list(self._versions.get(directive_id, []))
        if not versions or versions[0].directive_type != _CONSENT:
            raise NotFoundError(f"no directive {directive_id}")
        if not self._may_read(caller, versions[-1], now):
            # Existence is not the caller's to know.
            raise NotFoundError(f"no directive {directive_id}")
        return versions

    def _may_read(self, caller: Caller, version: AcceptedVersion, now: datetime) -> bool:
        if caller.role is Role.REGULATOR:
            return True
        if caller.role is Role.PATIENT:
            return self.may_act_for(caller, version.patient_subject_id, _VIEW, now)
        if caller.role is Role.HOSPITAL:
            return any(
                self._grantee_organization(v.directive.grantee) == caller.id
                for v in self._versions.get(version.document_id, [version])
            )
        return False

    def may_act_for(
        self,
        caller: Caller,
        patient: str,
        scope: directive_pb2.DelegationScope.ValueType,
        now: datetime,
    ) -> bool:
        """True when ``caller`` is the patient, or a delegate of it with ``scope`` (MANAGE
        implies VIEW) whose delegation is active and unexpired at ``now``."""
        if caller.role is not Role.PATIENT:
            return False
        if caller.id == patient:
            return True
        with self._lock:
            ids = list(self._by_patient.get(patient, []))
            delegations = [
                self._versions[i][-1]
                for i in ids
                if self._versions[i][-1].directive_type == _DELEGATION
            ]
        for delegation in delegations:
            for wanted in (scope, _MANAGE) if scope == _VIEW else (scope,):
                try:
                    self._check_delegation(delegation, caller.id, patient, wanted, now)
                except PermissionDeniedError:
                    continue
                return True
        return False

    def list_for(
        self,
        caller: Caller,
        patient: str,
        *,
        grantee: directive_pb2.Grantee | None,
        status: entry_pb2.DirectiveStatus.ValueType,
        now: datetime,
    ) -> tuple[list[list[AcceptedVersion]], list[AcceptedVersion]]:
        """(directives as their versions, newest first; current delegation versions) of a
        patient that ``caller`` may see."""
        if caller.role is Role.PATIENT and not self.may_act_for(caller, patient, _VIEW, now):
            raise PermissionDeniedError(
                f"{caller.describe()} may not read the consents of {patient!r}"
            )
        with self._lock:
            documents = [list(self._versions[i]) for i in self._by_patient.get(patient, [])]
        directives = [d for d in documents if d[0].directive_type == _CONSENT]
        delegations = [d[-1] for d in documents if d[0].directive_type == _DELEGATION]
        if caller.role is Role.HOSPITAL:
            directives = [
                d
                for d in directives
                if self._grantee_organization(d[-1].directive.grantee) == caller.id
            ]
            delegations = []
        if grantee is not None and grantee.WhichOneof("grantee") is not None:
            directives = [d for d in directives if d[-1].directive.grantee == grantee]
        if status != entry_pb2.DIRECTIVE_STATUS_UNSPECIFIED:
            directives = [d for d in directives if d[-1].status == status]
        directives.sort(key=lambda d: (d[-1].accept_time, d[0].document_id), reverse=True)
        return directives, delegations

    # --- access decisions ------------------------------------------------------------------

    def check_access(
        self,
        caller: Caller,
        patient: str,
        data_category: str,
        purpose: str,
        practitioner_id: str,
        request_id: str,
        now: datetime,
    ) -> StoredDecision:
        """Decide, record durably, and hand the ACCESS entry to the sender; a retry with the
        same request id returns the first decision."""
        key = self._decision_key(caller, request_id)
        self._check_request(caller, patient, data_category, purpose, practitioner_id)
        query = AccessQuery(caller.id, practitioner_id, data_category, purpose, now)
        with self._lock:
            views = [
                self._view(versions[-1])
                for i in self._by_patient.get(patient, [])
                if (versions := self._versions[i])[0].directive_type == _CONSENT
            ]
        decision = decide(views, query)
        deciding = None
        if decision.directive is not None:
            with self._lock:
                deciding = next(
                    v
                    for v in self._versions[decision.directive.directive_id]
                    if v.version == decision.directive.version
                )
        return self._record(
            key or f"{caller.id}/{uuid.uuid4()}",
            caller,
            patient,
            data_category,
            purpose,
            practitioner_id,
            decision.decision,
            decision.reason,
            deciding,
            "",
            "",
            now,
        )

    def break_glass(
        self,
        caller: Caller,
        patient: str,
        data_category: str,
        reason_code: str,
        justification: str,
        practitioner_id: str,
        purpose: str,
        request_id: str,
        now: datetime,
    ) -> StoredDecision:
        """Emergency access: always permitted, recorded, flagged and told to the patient."""
        purpose = purpose or "ETREAT"
        key = self._decision_key(caller, request_id)
        if not _REASON_CODE.fullmatch(reason_code):
            raise InvalidInputError(
                f"expected a reason code of 1-32 characters [a-z0-9-], got {reason_code!r}"
            )
        if not 10 <= len(justification) <= 2000:
            raise InvalidInputError(
                f"expected a justification of 10 to 2,000 characters, got {len(justification)}"
            )
        if not practitioner_id:
            raise InvalidInputError("expected the practitioner who breaks the glass")
        self._check_request(caller, patient, data_category, purpose, practitioner_id)
        return self._record(
            key or f"{caller.id}/{uuid.uuid4()}",
            caller,
            patient,
            data_category,
            purpose,
            practitioner_id,
            common_pb2.ACCESS_DECISION_PERMIT,
            common_pb2.ACCESS_REASON_BREAK_GLASS,
            None,
            reason_code,
            justification,
            now,
        )

    @staticmethod
    def _decision_key(caller: Caller, request_id: str) -> str | None:
        if not request_id:
            return None
        _check_uuid(request_id, "a request id")
        return f"{caller.id}/{request_id}"

    @staticmethod
    def _same_request(
        known: StoredDecision, patient: str, category: str, purpose: str, practitioner: str
    ) -> StoredDecision:
        if (
            known.patient_subject_id,
            known.data_category,
            known.purpose,
            known.practitioner_id,
        ) != (
            patient,
            category,
            purpose,
            practitioner,
        ):
            raise ConflictError(
                "request id was used already for another request; use a new request id"
            )
        return known

    def _check_request(
        self, caller: Caller, patient: str, category: str, purpose: str, practitioner: str
    ) -> None:
        if category not in DATA_CATEGORIES:
            raise InvalidInputError(
                f"expected a data category ({', '.join(sorted(DATA_CATEGORIES))}), got {category!r}"
            )
        if purpose not in PURPOSES:
            raise InvalidInputError(
                f"expected an HL7 PurposeOfUse code ({', '.join(sorted(PURPOSES))}), "
                f"got {purpose!r}"
            )
        if not self._directory.is_patient(patient):
            raise NotFoundError(f"no patient {patient!r} is registered")
        if practitioner:
            organization = self._directory.practitioner_organization(practitioner)
            if organization is None:
                raise NotFoundError(f"no practitioner {practitioner!r} is registered")
            if organization != caller.id:
                raise PermissionDeniedError(
                    f"practitioner {practitioner!r} does not belong to {caller.describe()}"
                )

    def _view(self, version: AcceptedVersion) -> DirectiveView:
        directive = version.directive
        return DirectiveView(
            directive_id=version.document_id,
            version=version.version,
            status=directive.status,
            grantee=directive.grantee,
            provision=directive.provision,
            grantee_organization_id=self._grantee_organization(directive.grantee),
            accept_time=version.accept_time,
        )

    def _record(
        self,
        key: str,
        caller: Caller,
        patient: str,
        category: str,
        purpose: str,
        practitioner: str,
        decision: common_pb2.AccessDecision.ValueType,
        reason: common_pb2.AccessReason.ValueType,
        deciding: AcceptedVersion | None,
        reason_code: str,
        justification: str,
        now: datetime,
    ) -> StoredDecision:
        entry_id = new_entry_id()
        break_glass = reason == common_pb2.ACCESS_REASON_BREAK_GLASS
        record = json.dumps(
            {
                "format": "swiftchain-access-record/v1",
                "entry_id": entry_id,
                "request": key,
                "patient": patient,
                "requester": caller.id,
                "practitioner": practitioner,
                "data_category": category,
                "purpose": purpose,
                "decision": common_pb2.AccessDecision.Name(decision),
                "reason": common_pb2.AccessReason.Name(reason),
                "reason_code": reason_code,
                "justification": justification,
                "time": now.isoformat(),
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        salt, commitment = salted_commitment(record)
        body = entry_pb2.EntryBody(
            entry_id=entry_id,
            kind=common_pb2.ENTRY_KIND_ACCESS,
            submitter_id=self._submitter_id,
            commitment=commitment,
            subject_tag=subject_tag(self._tag_key, patient),
            access=entry_pb2.AccessDetail(
                decision=decision,
                break_glass=break_glass,
                requester_id=caller.id,
                deciding_directive_id=deciding.document_id if deciding else "",
                deciding_directive_version=deciding.version if deciding else 0,
                reason=reason,
            ),
        )
        body.time.FromDatetime(now)
        if deciding is not None:
            body.references.add(
                kind=entry_pb2.REFERENCE_KIND_DECIDING_CONSENT,
                entry_id=deciding.entry_id,
                commitment=deciding.commitment,
            )
        stored = StoredDecision(
            key=key,
            patient_subject_id=patient,
            organization_id=caller.id,
            practitioner_id=practitioner,
            data_category=category,
            purpose=purpose,
            decision=decision,
            reason=reason,
            deciding_directive_id=deciding.document_id if deciding else "",
            deciding_directive_version=deciding.version if deciding else 0,
            deciding_log_index=deciding.leaf_index if deciding else None,
            break_glass=break_glass,
            reason_code=reason_code,
            justification=justification,
            entry_id=entry_id,
            entry=self._signer.sign_entry(body.SerializeToString()),
            salt=salt,
            decide_time=now,
        )
        first = self._store.add_decision(stored)
        if first.entry_id != stored.entry_id:  # a retry: the first answer stands
            return self._same_request(first, patient, category, purpose, practitioner)
        self.deliver(self.decision_outgoing(stored))
        return stored

    def decision_outgoing(self, decision: StoredDecision) -> Outgoing:
        """The entry and events of a stored decision (the same again after a restart: event
        ids and times come from the decision)."""
        return Outgoing(
            decision.entry,
            tuple(self._decision_events(decision)),
            decision=decision,
            notifications=(self._decision_notification(decision),),
        )

    def _decision_events(
        self, decision: StoredDecision
    ) -> list[tuple[str, events_pb2.EventEnvelope]]:
        subject = subject_tag(self._tag_key, decision.patient_subject_id).hex()
        decided = events_pb2.AccessDecided(
            patient_subject_id=decision.patient_subject_id,
            requester_organization_id=decision.organization_id,
            practitioner_id=decision.practitioner_id,
            data_category=decision.data_category,
            purpose=decision.purpose,
            decision=decision.decision,
            reason=decision.reason,
            break_glass=decision.break_glass,
            deciding_directive_id=decision.deciding_directive_id,
            deciding_directive_version=decision.deciding_directive_version,
            access_entry_id=decision.entry_id,
            request_id=decision.key.split("/", 1)[1],
        )
        events = [
            (
                ACCESS_TOPIC,
                envelope(
                    decided,
                    producer=PRODUCER,
                    subject=subject,
                    now=decision.decide_time,
                    event_id=_event_id(decision.entry_id, "decided"),
                ),
            )
        ]
        if decision.break_glass:
            used = events_pb2.BreakGlassUsed(
                patient_subject_id=decision.patient_subject_id,
                requester_organization_id=decision.organization_id,
                practitioner_id=decision.practitioner_id,
                data_category=decision.data_category,
                reason_code=decision.reason_code,
                access_entry_id=decision.entry_id,
            )
            events.append(
                (
                    ACCESS_TOPIC,
                    envelope(
                        used,
                        producer=PRODUCER,
                        subject=subject,
                        now=decision.decide_time,
                        event_id=_event_id(decision.entry_id, "break-glass"),
                    ),
                )
            )
        return events

    @staticmethod
    def _decision_notification(decision: StoredDecision) -> pb.Notification:
        notification = pb.Notification(
            notification_id=_event_id(decision.entry_id, "decided"),
            kind=(
                pb.NOTIFICATION_KIND_BREAK_GLASS
                if decision.break_glass
                else pb.NOTIFICATION_KIND_ACCESS_DECIDED
            ),
            patient_subject_id=decision.patient_subject_id,
            organization_id=decision.organization_id,
            practitioner_id=decision.practitioner_id,
            decision=decision.decision,
            reason=decision.reason,
            data_category=decision.data_category,
            purpose=decision.purpose,
            directive_id=decision.deciding_directive_id,
            directive_version=decision.deciding_directive_version,
            entry_id=decision.entry_id,
        )
        notification.time.FromDatetime(decision.decide_time)
        return notification


@dataclass(frozen=True)
class _Key:
    key_id: str
    public_key: bytes
