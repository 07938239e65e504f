"""What the consent domain keeps: accepted directive and delegation versions and access
decisions, what it needs from storage, and the checks on the signed documents' bytes that every
part of the domain shares."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from google.protobuf.message import DecodeError, Message

from chain.entry_rules import unknown_field_numbers
from chain.errors import InvalidInputError
from services.consent.domain.directory import Directory
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2
from swiftchain.consent.v1 import directive_pb2

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
ACTIVE = entry_pb2.DIRECTIVE_STATUS_ACTIVE
REVOKED = entry_pb2.DIRECTIVE_STATUS_REVOKED
CONSENT = entry_pb2.DIRECTIVE_TYPE_CONSENT
DELEGATION = entry_pb2.DIRECTIVE_TYPE_DELEGATION
MANAGE = directive_pb2.DELEGATION_SCOPE_MANAGE_CONSENT
VIEW = directive_pb2.DELEGATION_SCOPE_VIEW


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
    def state(self) -> common_pb2.EntryState.ValueType:
        """Where its CONSENT entry stands: the log writer records the leaf index from a sealed
        checkpoint, so a version with one is SEALED; before that it is PENDING."""
        return (
            common_pb2.ENTRY_STATE_SEALED
            if self.leaf_index is not None
            else common_pb2.ENTRY_STATE_PENDING
        )

    @property
    def directive(self) -> directive_pb2.ConsentDirective:
        """The directive (for a CONSENT version)."""
        return parse(directive_pb2.ConsentDirective, signed_directive(self.signed).directive)

    @property
    def delegation(self) -> directive_pb2.Delegation:
        """The delegation (for a DELEGATION version)."""
        return parse(directive_pb2.Delegation, signed_delegation(self.signed).delegation)

    @property
    def status(self) -> entry_pb2.DirectiveStatus.ValueType:
        """ACTIVE or REVOKED."""
        if self.directive_type == CONSENT:
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


def parse(message_type: type[_M], raw: bytes) -> _M:
    """``raw`` as a ``message_type``; InvalidInputError for bytes that do not decode or that
    carry fields this service does not know."""
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


def signed_directive(raw: bytes) -> directive_pb2.SignedDirective:
    """``raw`` as a SignedDirective (see :func:`parse`)."""
    return parse(directive_pb2.SignedDirective, raw)


def signed_delegation(raw: bytes) -> directive_pb2.SignedDelegation:
    """``raw`` as a SignedDelegation (see :func:`parse`)."""
    return parse(directive_pb2.SignedDelegation, raw)


def check_uuid(value: str, what: str) -> None:
    """InvalidInputError unless ``value`` is a lower-case UUID v4."""
    if not _UUID.fullmatch(value):
        raise InvalidInputError(f"expected {what} as a lower-case UUID v4, got {value!r}")


def grantee_organization(directory: Directory, grantee: directive_pb2.Grantee) -> str:
    """The organization a grantee is or belongs to ('' for a practitioner nobody knows)."""
    if grantee.WhichOneof("grantee") == "practitioner_id":
        return directory.practitioner_organization(grantee.practitioner_id) or ""
    return grantee.organization_id
