"""The format rules of an entry's fields and of each kind's detail (DESIGN §3.1): sizes, id
and text formats, enum values, and the checks :func:`chain.entry.parse_entry` runs on a KEY,
RECORD, CONSENT, ACCESS or MEMBERSHIP detail. Everything here needs no log state.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from chain.errors import InvalidInputError
from chain.hashing import HASH_SIZE
from chain.limits import (
    FORMAT_TEXT,
    KEY_ID,
    ORGANIZATION_ID,
    PRACTITIONER_ID,
    REASON_CODE,
    UUID_V4,
    shown,
)
from chain.note import new_verifier
from chain.tags import patient_key_owner
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2

KIND_NAMES: dict[int, str] = {
    common_pb2.ENTRY_KIND_KEY: "KEY",
    common_pb2.ENTRY_KIND_RECORD: "RECORD",
    common_pb2.ENTRY_KIND_CONSENT: "CONSENT",
    common_pb2.ENTRY_KIND_ACCESS: "ACCESS",
    common_pb2.ENTRY_KIND_MEMBERSHIP: "MEMBERSHIP",
}
KINDS_BY_NAME: dict[str, int] = {name: kind for kind, name in KIND_NAMES.items()}


SIGNATURE_SIZE = 64


PUBLIC_KEY_SIZE = 32


SMALL_ORDER_KEY_MESSAGE = (
    "expected an Ed25519 public key of large order, got a point of small order "
    "(signatures under it can be forged)"
)


# What a key registered on the log may sign: members sign MEMBERSHIP entries with their own
# member keys, never with a KEY-registered key.
_KEY_SIGNABLE_KINDS = frozenset(KIND_NAMES) - {common_pb2.ENTRY_KIND_MEMBERSHIP}


# The y-coordinates of the 8 points of small order on edwards25519 (little-endian, sign bit
# cleared), with the non-canonical encodings y + p of 0 and 1 (libsodium's blocklist). Under
# such a public key a signature can be forged for any message in a few tries (Ed25519 as
# OpenSSL verifies it is cofactorless), so the log never accepts one.
_SMALL_ORDER_Y = frozenset(
    bytes.fromhex(y)
    for y in (
        "0000000000000000000000000000000000000000000000000000000000000000",  # y = 0
        "0100000000000000000000000000000000000000000000000000000000000000",  # y = 1
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p - 1
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p (0)
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p + 1 (1)
    )
)


def is_small_order_public_key(public_key: bytes) -> bool:
    """True if the 32 bytes encode an Ed25519 point of small order (a forgeable key)."""
    return public_key[:31] + bytes((public_key[31] & 0x7F,)) in _SMALL_ORDER_Y


def _memo_matcher(pattern: re.Pattern[str], limit: int = 4096) -> Callable[[str], bool]:
    """``pattern.fullmatch`` as a bool, remembering up to ``limit`` strings that matched.

    For the few values that recur in almost every entry (key ids, reason codes): a set lookup
    instead of a regex run. A pure function of the string, so it changes no verdict.
    """
    good: set[str] = set()
    fullmatch = pattern.fullmatch

    def matches(text: str) -> bool:
        if text in good:
            return True
        if fullmatch(text) is None:
            return False
        if len(good) >= limit:
            good.clear()
        good.add(text)
        return True

    return matches


_is_key_id = _memo_matcher(KEY_ID)


_is_reason_code = _memo_matcher(REASON_CODE)


# Submitters, key owners and requesters are the few organizations and services of the consortium.
_is_party_id = _memo_matcher(ORGANIZATION_ID)


_is_uuid = UUID_V4.fullmatch


_is_practitioner_id = PRACTITIONER_ID.fullmatch


def _bad_key_id(key_id: str) -> InvalidInputError:
    return InvalidInputError(f"expected {FORMAT_TEXT[KEY_ID]}, got {shown(key_id)}")


def _bad_party_id(what: str, value: str) -> InvalidInputError:
    if not value:
        return InvalidInputError(f"expected {what}, got an empty one")
    return InvalidInputError(
        f"expected {what} as {FORMAT_TEXT[ORGANIZATION_ID]}, got {shown(value)}"
    )


def unknown_field_numbers(message: Message) -> list[int]:
    """The numbers of the fields of ``message`` (top level) that its schema does not know."""
    unknown = UnknownFieldSet(message)
    return sorted({unknown[i].field_number for i in range(len(unknown))})


def _unknown_fields_error(message: Message, what: str) -> InvalidInputError:
    return InvalidInputError(
        f"{what}: expected only fields of swiftchain.chain.v1, got unknown field numbers "
        f"{unknown_field_numbers(message)}"
    )


def _wrong_size(what: str, size: int, got: int) -> InvalidInputError:
    return InvalidInputError(f"expected {what} of {size} bytes, got {got}")


def _exact(value: bytes, size: int, what: str) -> None:
    if len(value) != size:
        raise _wrong_size(what, size, len(value))


# Known values of the body's enums (proto3 enums are open: an unknown number parses as itself).
# A value added to the proto is a protocol upgrade, like a new field.
_KEY_ACTIONS = frozenset(
    (entry_pb2.KEY_ACTION_REGISTER, entry_pb2.KEY_ACTION_ROTATE, entry_pb2.KEY_ACTION_REVOKE)
)


_OWNER_KINDS = frozenset(entry_pb2.KeyOwnerKind.values()) - {0}


_ORGANIZATION_ROLES = frozenset(common_pb2.OrganizationRole.values())


_KEY_REASONS = frozenset(entry_pb2.KeyReason.values()) - {0}


_RECORD_ACTIONS = frozenset(common_pb2.RecordAction.values()) - {0}


_DIRECTIVE_TYPES = frozenset(entry_pb2.DirectiveType.values()) - {0}


_DIRECTIVE_STATUSES = frozenset(entry_pb2.DirectiveStatus.values()) - {0}


_ACCESS_DECISIONS = frozenset(common_pb2.AccessDecision.values()) - {0}


_REFERENCE_KINDS = frozenset(entry_pb2.ReferenceKind.values()) - {0}


_MEMBER_ROLES = frozenset(entry_pb2.MemberRole.values()) - {0}


#: The longest a membership proposal stays open, in log entries.
MAX_PROPOSAL_LIFETIME = 1 << 40


# Each access reason implies its decision (common.proto, AccessReason).
_DECISION_FOR_REASON = {
    common_pb2.ACCESS_REASON_PERMITTED: common_pb2.ACCESS_DECISION_PERMIT,
    common_pb2.ACCESS_REASON_NO_CONSENT: common_pb2.ACCESS_DECISION_DENY,
    common_pb2.ACCESS_REASON_EXPLICIT_DENY: common_pb2.ACCESS_DECISION_DENY,
    common_pb2.ACCESS_REASON_EXPIRED: common_pb2.ACCESS_DECISION_DENY,
    common_pb2.ACCESS_REASON_REVOKED: common_pb2.ACCESS_DECISION_DENY,
    common_pb2.ACCESS_REASON_BREAK_GLASS: common_pb2.ACCESS_DECISION_PERMIT,
}


_NO_DECIDING_DIRECTIVE = frozenset(
    (common_pb2.ACCESS_REASON_NO_CONSENT, common_pb2.ACCESS_REASON_BREAK_GLASS)
)


def _check_patient_key(body: entry_pb2.EntryBody) -> None:
    """A patient's device key: owned by the patient's tag, signing nothing, never rotated."""
    detail = body.key
    if detail.owner_role != common_pb2.ORGANIZATION_ROLE_UNSPECIFIED:
        raise InvalidInputError(
            "expected ORGANIZATION_ROLE_UNSPECIFIED for a patient's key, "
            f"got {common_pb2.OrganizationRole.Name(detail.owner_role)}"
        )
    owner = patient_key_owner(body.subject_tag)  # the tag's size was checked with the body
    if detail.owner_id != owner:
        raise InvalidInputError(
            f"expected the owner id of a patient's key to be {owner!r} (from the subject tag), "
            f"got {shown(detail.owner_id)}"
        )
    if detail.action == entry_pb2.KEY_ACTION_ROTATE:
        raise InvalidInputError(
            "expected REGISTER or REVOKE for a patient's device key, got ROTATE: a new device "
            "is registered and the old one revoked"
        )
    if detail.allowed_kinds:
        raise InvalidInputError(
            "expected no allowed entry kinds for a patient's device key (it signs nothing on "
            "the log), got some"
        )


def _check_key_detail(body: entry_pb2.EntryBody) -> Message:
    detail = body.key
    action = detail.action
    if action not in _KEY_ACTIONS:
        raise InvalidInputError(f"expected a KEY action, got {action}")
    if not _is_party_id(detail.owner_id):
        raise _bad_party_id("a key owner id", detail.owner_id)
    owner_kind = detail.owner_kind
    if owner_kind not in _OWNER_KINDS:
        raise InvalidInputError(
            "expected a key owner kind, got KEY_OWNER_KIND_UNSPECIFIED"
            if owner_kind == entry_pb2.KEY_OWNER_KIND_UNSPECIFIED
            else f"expected a known key owner kind, got {owner_kind}"
        )
    role = detail.owner_role
    if role not in _ORGANIZATION_ROLES:
        raise InvalidInputError(f"expected a known owner role, got {role}")
    if owner_kind == entry_pb2.KEY_OWNER_KIND_SERVICE:
        if role != common_pb2.ORGANIZATION_ROLE_UNSPECIFIED:
            raise InvalidInputError(
                "expected ORGANIZATION_ROLE_UNSPECIFIED for a service's key, "
                f"got {common_pb2.OrganizationRole.Name(role)}"
            )
    elif owner_kind == entry_pb2.KEY_OWNER_KIND_PATIENT:
        _check_patient_key(body)
    elif role == common_pb2.ORGANIZATION_ROLE_UNSPECIFIED:
        raise InvalidInputError(
            "expected the owner's role for an organization's key, got ORGANIZATION_ROLE_UNSPECIFIED"
        )
    if not _is_key_id(detail.key_id):
        raise _bad_key_id(detail.key_id)
    reason = detail.reason
    if reason not in _KEY_REASONS:
        raise InvalidInputError(
            "expected a key reason, got KEY_REASON_UNSPECIFIED"
            if reason == entry_pb2.KEY_REASON_UNSPECIFIED
            else f"expected a known key reason, got {reason}"
        )
    replaces = detail.replaces_key_id
    if action == entry_pb2.KEY_ACTION_REVOKE:
        if detail.public_key:
            raise InvalidInputError("expected no public key on a REVOKE, got one")
        if detail.allowed_kinds:
            raise InvalidInputError("expected no allowed entry kinds on a REVOKE, got some")
        if replaces:
            raise InvalidInputError("expected replaces_key_id on ROTATE and only on ROTATE")
        return detail
    public_key = detail.public_key
    _exact(public_key, PUBLIC_KEY_SIZE, "an Ed25519 public key")
    if is_small_order_public_key(public_key):
        raise InvalidInputError(SMALL_ORDER_KEY_MESSAGE)
    # An empty list is allowed: a key that signs nothing on the log (a regulator's, an app
    # operator's) is registered so that its validity at any position is provable all the same.
    allowed = detail.allowed_kinds
    if len(allowed) > len(_KEY_SIGNABLE_KINDS):
        raise InvalidInputError(
            f"expected at most {len(_KEY_SIGNABLE_KINDS)} allowed entry kinds, got {len(allowed)}"
        )
    for kind in allowed:
        if kind not in _KEY_SIGNABLE_KINDS:
            raise InvalidInputError(f"expected known allowed entry kinds, got {kind}")
    if (action == entry_pb2.KEY_ACTION_ROTATE) != bool(replaces):
        raise InvalidInputError("expected replaces_key_id on ROTATE and only on ROTATE")
    if replaces and not _is_key_id(replaces):
        raise _bad_key_id(replaces)
    return detail


def _check_record_detail(body: entry_pb2.EntryBody) -> Message:
    detail = body.record
    _exact(detail.record_tag, HASH_SIZE, "a record tag")
    version = detail.version
    if version < 1:
        raise InvalidInputError(f"expected a record version >= 1, got {version}")
    action = detail.action
    if action not in _RECORD_ACTIONS:
        raise InvalidInputError(
            "expected a record action, got RECORD_ACTION_UNSPECIFIED"
            if action == common_pb2.RECORD_ACTION_UNSPECIFIED
            else f"expected a known record action, got {action}"
        )
    if (action == common_pb2.RECORD_ACTION_CREATE) != (version == 1):
        raise InvalidInputError(
            "expected version 1 for CREATE and only for CREATE, got version "
            f"{version} for {common_pb2.RecordAction.Name(action)}"
        )
    reason_code = detail.reason_code
    if reason_code and not _is_reason_code(reason_code):
        raise InvalidInputError(
            f"expected a reason code of 1-32 characters [a-z0-9-], got {shown(reason_code)}"
        )
    author = detail.author_ref
    if author and not _is_practitioner_id(author):
        raise InvalidInputError(
            f"expected author_ref to be empty or {FORMAT_TEXT[PRACTITIONER_ID]}, "
            f"got {shown(author)}"
        )
    return detail


def _check_consent_detail(body: entry_pb2.EntryBody) -> Message:
    detail = body.consent
    directive_type = detail.directive_type
    if directive_type not in _DIRECTIVE_TYPES:
        raise InvalidInputError(
            "expected a directive type, got DIRECTIVE_TYPE_UNSPECIFIED"
            if directive_type == entry_pb2.DIRECTIVE_TYPE_UNSPECIFIED
            else f"expected a known directive type, got {directive_type}"
        )
    if not _is_uuid(detail.directive_id):
        raise InvalidInputError(
            f"expected a directive id as a lower-case UUID v4, got {shown(detail.directive_id)}"
        )
    if detail.version < 1:
        raise InvalidInputError(f"expected a directive version >= 1, got {detail.version}")
    status = detail.status
    if status not in _DIRECTIVE_STATUSES:
        raise InvalidInputError(
            "expected a directive status, got DIRECTIVE_STATUS_UNSPECIFIED"
            if status == entry_pb2.DIRECTIVE_STATUS_UNSPECIFIED
            else f"expected a known directive status, got {status}"
        )
    _exact(detail.signer_key_tag, HASH_SIZE, "a signer key tag")
    _exact(detail.signer_signature, SIGNATURE_SIZE, "the patient's Ed25519 signature")
    return detail


def _check_access_detail(body: entry_pb2.EntryBody) -> Message:
    detail = body.access
    decision = detail.decision
    if decision == common_pb2.ACCESS_DECISION_UNSPECIFIED:
        raise InvalidInputError("expected an access decision, got ACCESS_DECISION_UNSPECIFIED")
    if decision not in _ACCESS_DECISIONS:
        raise InvalidInputError(f"expected a known access decision, got {decision}")
    if not _is_party_id(detail.requester_id):
        raise _bad_party_id("a requester id", detail.requester_id)
    reason = detail.reason
    if reason == common_pb2.ACCESS_REASON_UNSPECIFIED:
        raise InvalidInputError("expected an access reason, got ACCESS_REASON_UNSPECIFIED")
    implied = _DECISION_FOR_REASON.get(reason)
    if implied is None:
        raise InvalidInputError(f"expected a known access reason, got {reason}")
    if decision != implied:
        raise InvalidInputError(
            f"expected decision {common_pb2.AccessDecision.Name(implied)} for reason "
            f"{common_pb2.AccessReason.Name(reason)}, "
            f"got {common_pb2.AccessDecision.Name(decision)}"
        )
    if detail.break_glass != (reason == common_pb2.ACCESS_REASON_BREAK_GLASS):
        raise InvalidInputError(
            "expected break_glass exactly when the reason is ACCESS_REASON_BREAK_GLASS, "
            f"got break_glass {detail.break_glass} for {common_pb2.AccessReason.Name(reason)}"
        )
    directive_id, version = detail.deciding_directive_id, detail.deciding_directive_version
    if directive_id:
        if reason in _NO_DECIDING_DIRECTIVE:
            raise InvalidInputError(
                f"expected no deciding directive for {common_pb2.AccessReason.Name(reason)}, "
                "got one"
            )
        if not _is_uuid(directive_id):
            raise InvalidInputError(
                "expected a deciding directive id as a lower-case UUID v4, "
                f"got {shown(directive_id)}"
            )
        if version < 1:
            raise InvalidInputError(f"expected a deciding directive version >= 1, got {version}")
    elif version:
        raise InvalidInputError(
            f"expected deciding directive version 0 without a deciding directive, got {version}"
        )
    return detail


def _no_unknown_fields(message: Message, what: str) -> None:
    if len(UnknownFieldSet(message)):
        raise _unknown_fields_error(message, what)


def _check_member_key(verifier_key: str, name: str) -> None:
    """That ``verifier_key`` is a signed-note Ed25519 verifier key named ``name``."""
    try:
        verifier = new_verifier(verifier_key)
    except InvalidInputError as error:
        raise InvalidInputError(f"expected a member's verifier key, got: {error}") from None
    if verifier.name != name:
        raise InvalidInputError(
            f"expected the verifier key to be named {shown(name)}, got {shown(verifier.name)}"
        )
    if is_small_order_public_key(verifier.public_key):
        raise InvalidInputError(SMALL_ORDER_KEY_MESSAGE)


def _check_membership_change(change: entry_pb2.MembershipChange) -> None:
    _no_unknown_fields(change, "membership change")
    which = change.WhichOneof("change")
    if which is None:
        raise InvalidInputError("expected a membership change, got none")
    inner: Message = getattr(change, which)
    _no_unknown_fields(inner, f"membership change {which}")
    if which == "change_quorum":
        if change.change_quorum.quorum < 1:
            raise InvalidInputError("expected a quorum >= 1, got 0")
        return
    if which == "admit_member":
        name = change.admit_member.name
    elif which == "remove_member":
        name = change.remove_member.name
    else:
        name = change.replace_member_key.name
    if not _is_party_id(name):
        raise _bad_party_id("a member name", name)
    if which == "admit_member":
        admit = change.admit_member
        if admit.role not in _MEMBER_ROLES:
            raise InvalidInputError(f"expected a known member role, got {admit.role}")
        _check_member_key(admit.verifier_key, name)
    elif which == "replace_member_key":
        _check_member_key(change.replace_member_key.verifier_key, name)


def _check_membership_detail(body: entry_pb2.EntryBody) -> Message:
    detail = body.membership
    action = detail.WhichOneof("action")
    if action == "proposal":
        proposal = detail.proposal
        _no_unknown_fields(proposal, "membership proposal")
        if not _is_uuid(proposal.proposal_id):
            raise InvalidInputError(
                f"expected a proposal id as a lower-case UUID v4, got {shown(proposal.proposal_id)}"
            )
        if not 1 <= proposal.lifetime_entries <= MAX_PROPOSAL_LIFETIME:
            raise InvalidInputError(
                f"expected a proposal lifetime of 1 to 2^40 entries, "
                f"got {proposal.lifetime_entries}"
            )
        _check_membership_change(proposal.change)
    elif action == "approval":
        approval = detail.approval
        _no_unknown_fields(approval, "membership approval")
        if not _is_uuid(approval.proposal_id):
            raise InvalidInputError(
                f"expected a proposal id as a lower-case UUID v4, got {shown(approval.proposal_id)}"
            )
    else:
        raise InvalidInputError("expected a membership proposal or approval, got neither")
    return detail


# Each checks its detail's own rules and returns the detail message.
_DETAIL_CHECKS: dict[str, Callable[[entry_pb2.EntryBody], Message]] = {
    "key": _check_key_detail,
    "record": _check_record_detail,
    "consent": _check_consent_detail,
    "access": _check_access_detail,
    "membership": _check_membership_detail,
}
