"""What a patient's or an organization's signature is over, outside the log's own entries.

Clients (the SDK, the CLI, the patient app) build these bytes and the services check them, so
both sides take them from here. Every message starts with a context line naming what it is, so
a signature made for one purpose can never be replayed as another.

A request that changes keys (adding or revoking a patient's device, rotating or revoking an
organization's signing key) is signed by a key its owner already holds, over its context line
and then each field of the request as a 4-byte big-endian length and the field's bytes: strings
in UTF-8, integers fixed-width big-endian (a reason is its enum number as a signed 32-bit
integer, the request time whole microseconds since the Unix epoch as a signed 64-bit one). The
request time and a random nonce are among the fields, so that the service can refuse an old or
a repeated request. A device's requests name no patient: the device that signs belongs to one
patient (on the log too, where its KEY entry names the patient's tag), so the signature is good
for that patient only, and the log can check it from its own fields.

The consortium's genesis is signed by every founding member's node key over its context line
and then the genesis's canonical bytes (:func:`chain.consortium.ConsortiumConfig.genesis_body`);
a key card (a member's or a genesis service key's public key, shared for the genesis) is signed
by the key it shows, over its context line and its fields encoded as a request's are, so that
whoever assembles the genesis knows each card's key is held by the card's holder.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from typing import Final

__all__ = [
    "DELEGATION_PREFIX",
    "DEVICE_ADD_CONTEXT",
    "DEVICE_ENROLL_CONTEXT",
    "DEVICE_RECOVER_CONTEXT",
    "DEVICE_REVOKE_CONTEXT",
    "DIRECTIVE_PREFIX",
    "GENESIS_CONTEXT",
    "KEY_CARD_CONTEXT",
    "ORGANIZATION_KEY_REVOKE_CONTEXT",
    "ORGANIZATION_KEY_ROTATE_CONTEXT",
    "POSSESSION_CONTEXT",
    "RECOVERY_CANCEL_CONTEXT",
    "device_add_message",
    "device_revoke_message",
    "enrollment_message",
    "genesis_message",
    "key_card_message",
    "organization_key_revoke_message",
    "organization_key_rotate_message",
    "possession_message",
    "recovery_cancel_message",
    "recovery_message",
    "request_time_micros",
]

#: A patient signs ``DIRECTIVE_PREFIX || ConsentDirective bytes``.
DIRECTIVE_PREFIX: Final = b"swiftchain/directive/v1\n"
#: A patient signs ``DELEGATION_PREFIX || Delegation bytes``.
DELEGATION_PREFIX: Final = b"swiftchain/delegation/v1\n"
#: A key holder proves possession by signing ``POSSESSION_CONTEXT || owner || 0x00 || key``.
POSSESSION_CONTEXT: Final = b"swiftchain/key-possession/v1\n"
#: A patient's first device signs this, then the enrollment code's digest and its own public
#: key, to enroll with a one-time code (chain/enrollment_codes.py).
DEVICE_ENROLL_CONTEXT: Final = b"swiftchain/patient-device-enroll/v1\n"
#: An active device of a patient signs this, then the fields, to add another device.
DEVICE_ADD_CONTEXT: Final = b"swiftchain/patient-device-add/v2\n"
#: An active device of a patient signs this, then the fields, to revoke a device.
DEVICE_REVOKE_CONTEXT: Final = b"swiftchain/patient-device-revoke/v2\n"
#: A patient's new device signs this, then the recovery code's digest, its public key and the
#: time it asks (the start of the waiting period), to recover a patient that lost its devices.
DEVICE_RECOVER_CONTEXT: Final = b"swiftchain/patient-device-recover/v1\n"
#: An active device of a patient signs this, then the fields, to cancel a pending recovery.
RECOVERY_CANCEL_CONTEXT: Final = b"swiftchain/patient-recovery-cancel/v1\n"
#: An organization's active signing key signs this, then the fields, to rotate a key.
ORGANIZATION_KEY_ROTATE_CONTEXT: Final = b"swiftchain/organization-key-rotate/v1\n"
#: An organization's active signing key signs this, then the fields, to revoke a key.
ORGANIZATION_KEY_REVOKE_CONTEXT: Final = b"swiftchain/organization-key-revoke/v1\n"

#: Each founding member's node key signs this, then the genesis's canonical bytes.
GENESIS_CONTEXT: Final = b"swiftchain/consortium-genesis/v1\n"
#: A key card's key signs this, then the card's fields, to show its holder holds it.
KEY_CARD_CONTEXT: Final = b"swiftchain/consortium-key-card/v1\n"

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def possession_message(owner: str, public_key: bytes) -> bytes:
    """The bytes a key holder signs to prove it holds ``public_key`` for ``owner``."""
    return POSSESSION_CONTEXT + owner.encode() + b"\x00" + public_key


def enrollment_message(code_digest: bytes, public_key: bytes) -> bytes:
    """The bytes a patient's new device signs with its key ``public_key`` to enroll with the
    one-time code whose digest is ``code_digest``: its proof of possession, bound to that code
    (the subject id is not known to the device before it enrolls)."""
    return _fields(DEVICE_ENROLL_CONTEXT, code_digest, public_key)


def recovery_message(code_digest: bytes, public_key: bytes, request_time: datetime) -> bytes:
    """The bytes a patient's new device signs with its key ``public_key`` to start a recovery
    with the one-time recovery code whose digest is ``code_digest``, at ``request_time``: the
    waiting period runs from then, and the log checks it from these very bytes."""
    return _fields(
        DEVICE_RECOVER_CONTEXT,
        code_digest,
        public_key,
        struct.pack(">q", request_time_micros(request_time)),
    )


def recovery_cancel_message(
    recovery_id: str, signer_key_id: str, request_time: datetime, nonce: bytes
) -> bytes:
    """The bytes an active device ``signer_key_id`` signs to cancel its own patient's pending
    recovery ``recovery_id``."""
    return _signed_request(
        RECOVERY_CANCEL_CONTEXT, (recovery_id.encode(),), signer_key_id, request_time, nonce
    )


def request_time_micros(request_time: datetime) -> int:
    """``request_time`` (timezone-aware) as whole microseconds since the Unix epoch: the form
    a signed request's time takes in its signed bytes."""
    if request_time.tzinfo is None:
        raise ValueError("expected a timezone-aware request time, got a naive one")
    return (request_time - _EPOCH) // timedelta(microseconds=1)


def _fields(context: bytes, *parts: bytes) -> bytes:
    return context + b"".join(struct.pack(">I", len(part)) + part for part in parts)


def _signed_request(
    context: bytes,
    fields: tuple[bytes, ...],
    signer_key_id: str,
    request_time: datetime,
    nonce: bytes,
) -> bytes:
    return _fields(
        context,
        *fields,
        signer_key_id.encode(),
        struct.pack(">q", request_time_micros(request_time)),
        nonce,
    )


def device_add_message(
    public_key: bytes, signer_key_id: str, request_time: datetime, nonce: bytes
) -> bytes:
    """The bytes an active device ``signer_key_id`` signs to add the device key ``public_key``
    to its own patient."""
    return _signed_request(DEVICE_ADD_CONTEXT, (public_key,), signer_key_id, request_time, nonce)


def device_revoke_message(
    key_id: str, signer_key_id: str, request_time: datetime, nonce: bytes
) -> bytes:
    """The bytes an active device ``signer_key_id`` signs to revoke its own patient's device
    key ``key_id`` (which may be itself)."""
    return _signed_request(
        DEVICE_REVOKE_CONTEXT, (key_id.encode(),), signer_key_id, request_time, nonce
    )


def organization_key_rotate_message(
    organization_id: str,
    replaces_key_id: str,
    new_public_key: bytes,
    reason: int,
    signer_key_id: str,
    request_time: datetime,
    nonce: bytes,
) -> bytes:
    """The bytes the active signing key ``signer_key_id`` of ``organization_id`` signs to
    replace ``replaces_key_id`` with ``new_public_key`` (``reason``: a ``KeyReason`` number)."""
    return _signed_request(
        ORGANIZATION_KEY_ROTATE_CONTEXT,
        (
            organization_id.encode(),
            replaces_key_id.encode(),
            new_public_key,
            struct.pack(">i", reason),
        ),
        signer_key_id,
        request_time,
        nonce,
    )


def organization_key_revoke_message(
    organization_id: str,
    key_id: str,
    reason: int,
    signer_key_id: str,
    request_time: datetime,
    nonce: bytes,
) -> bytes:
    """The bytes the active signing key ``signer_key_id`` of ``organization_id`` signs to
    revoke its key ``key_id`` (``reason``: a ``KeyReason`` number)."""
    return _signed_request(
        ORGANIZATION_KEY_REVOKE_CONTEXT,
        (organization_id.encode(), key_id.encode(), struct.pack(">i", reason)),
        signer_key_id,
        request_time,
        nonce,
    )


def genesis_message(genesis_body: bytes) -> bytes:
    """The bytes every founder signs for a genesis whose canonical bytes are ``genesis_body``."""
    return GENESIS_CONTEXT + genesis_body


def key_card_message(role: str, holder: str, key_id: str, public_key: bytes) -> bytes:
    """The bytes the key ``public_key`` signs on a key card: its ``role`` in the genesis
    (``member``, ``registrar``, ``consent``), its ``holder`` (a member's name, or the service
    that holds it) and its ``key_id``."""
    return _fields(KEY_CARD_CONTEXT, role.encode(), holder.encode(), key_id.encode(), public_key)
