"""A key holder's consent on the log: what ``KeyDetail.holder_signature`` is a signature over.

The registrar signs every KEY entry, so its signature alone shows only that the registrar wanted
the change. A change of a key that has a holder other than the registrar (an organization's
signing key, a patient's device key) therefore also carries the holder's own signature, and
every node checks it from the log alone. The signed bytes are the request the holder made to the
identity service (:mod:`chain.signed_messages`), rebuilt from the detail's fields, so the service
forwards the very signature it checked and the holder signs once:

- an organization signs the rotation or revocation of its key with a key of its own;
- a patient's first device signs its own enrollment (its proof of possession over the one-time
  code's digest, which the registrar cannot make without the device's key);
- a patient's further devices are added, and any device revoked, by a signature of one of the
  patient's devices valid at that position;
- a patient that lost every device recovers with a one-time recovery code a hospital issued:
  the new device signs its own recovery request over the code's digest and the time it asked,
  and the log takes the new key only if the entry's time is at least
  :data:`RECOVERY_WAIT_FLOOR` later (the identity service waits 24 hours by default, during
  which the patient's devices see the pending recovery and can cancel it).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chain.errors import VerificationError
from chain.signed_messages import (
    device_add_message,
    device_revoke_message,
    enrollment_message,
    organization_key_revoke_message,
    organization_key_rotate_message,
    recovery_message,
    request_time_micros,
)
from swiftchain.chain.v1 import entry_pb2

#: A holder's request nonce: 16 to 64 random bytes (as the identity service takes them).
MIN_NONCE_SIZE = 16
MAX_NONCE_SIZE = 64
#: An enrollment code's digest, which stands in the nonce of a first device's proof.
CODE_DIGEST_SIZE = 32
#: The least time between a recovery's request (signed by the new device) and the KEY entry
#: that registers the recovered device: the log refuses a recovery that claims to have waited
#: less. The identity service waits longer (24 hours by default, an hour at least).
RECOVERY_WAIT_FLOOR: Final = timedelta(hours=1)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ACTION_NAMES: dict[int, str] = {
    entry_pb2.KEY_ACTION_REGISTER: "REGISTER",
    entry_pb2.KEY_ACTION_ROTATE: "ROTATE",
    entry_pb2.KEY_ACTION_REVOKE: "REVOKE",
}


def needs_holder_signature(owner_kind: int, action: int) -> bool:
    """True if a KEY entry with ``action`` on a key whose owner is of ``owner_kind`` must carry
    its holder's signature: ROTATE and REVOKE of an organization's key, and every change of a
    patient's device keys."""
    if owner_kind == entry_pb2.KEY_OWNER_KIND_PATIENT:
        return True
    return owner_kind == entry_pb2.KEY_OWNER_KIND_ORGANIZATION and action in (
        entry_pb2.KEY_ACTION_ROTATE,
        entry_pb2.KEY_ACTION_REVOKE,
    )


def action_name(action: int) -> str:
    """REGISTER, ROTATE or REVOKE (the number for anything else)."""
    return _ACTION_NAMES.get(action, str(action))


def request_time(micros: int) -> datetime:
    """The holder's request time from its microseconds since the Unix epoch."""
    try:
        return _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        raise VerificationError(
            f"expected a holder request time between years 1 and 9999, got {micros} µs"
        ) from None


def holder_message(detail: entry_pb2.KeyDetail, *, first_device: bool = False) -> bytes:
    """The bytes ``detail.holder_signature`` must sign: the holder's request for this change.
    ``first_device``: the detail registers a patient's first device key, which proves
    possession over its enrollment code's digest (carried as the nonce).

    VerificationError if the change is one no holder signs (it carries no holder signature) or
    the signature's fields are out of range."""
    holder = detail.holder_signature
    if first_device:
        if len(holder.nonce) != CODE_DIGEST_SIZE:
            raise VerificationError(
                f"expected the enrollment code's {CODE_DIGEST_SIZE}-byte digest as the nonce of "
                f"a first device's proof, got {len(holder.nonce)} bytes"
            )
        return enrollment_message(holder.nonce, detail.public_key)
    if not MIN_NONCE_SIZE <= len(holder.nonce) <= MAX_NONCE_SIZE:
        raise VerificationError(
            f"expected a holder request nonce of {MIN_NONCE_SIZE} to {MAX_NONCE_SIZE} bytes, "
            f"got {len(holder.nonce)} bytes"
        )
    when = request_time(holder.request_time_micros)
    owner_kind, action = detail.owner_kind, detail.action
    if owner_kind == entry_pb2.KEY_OWNER_KIND_ORGANIZATION:
        if action == entry_pb2.KEY_ACTION_ROTATE:
            return organization_key_rotate_message(
                detail.owner_id,
                detail.replaces_key_id,
                detail.public_key,
                detail.reason,
                holder.key_id,
                when,
                holder.nonce,
            )
        if action == entry_pb2.KEY_ACTION_REVOKE:
            return organization_key_revoke_message(
                detail.owner_id, detail.key_id, detail.reason, holder.key_id, when, holder.nonce
            )
    if owner_kind == entry_pb2.KEY_OWNER_KIND_PATIENT:
        if action == entry_pb2.KEY_ACTION_REGISTER:
            return device_add_message(detail.public_key, holder.key_id, when, holder.nonce)
        if action == entry_pb2.KEY_ACTION_REVOKE:
            return device_revoke_message(detail.key_id, holder.key_id, when, holder.nonce)
    raise VerificationError(
        f"expected no holder signature on a {action_name(action)} of a "
        f"{entry_pb2.KeyOwnerKind.Name(owner_kind)} key, got one"
    )


def recovery_proof_message(detail: entry_pb2.KeyDetail) -> bytes:
    """The bytes a recovered device signed to start its recovery: the recovery code's digest
    (carried as the nonce), its own public key and the request time (the waiting period's
    start). VerificationError if the fields are out of range."""
    holder = detail.holder_signature
    if len(holder.nonce) != CODE_DIGEST_SIZE:
        raise VerificationError(
            f"expected the recovery code's {CODE_DIGEST_SIZE}-byte digest as the nonce of a "
            f"recovered device's proof, got {len(holder.nonce)} bytes"
        )
    return recovery_message(
        holder.nonce, detail.public_key, request_time(holder.request_time_micros)
    )


def sign_as_holder(
    detail: entry_pb2.KeyDetail,
    key_id: str,
    private_key: Ed25519PrivateKey,
    when: datetime,
    nonce: bytes,
) -> None:
    """Set ``detail.holder_signature`` to the holder key ``key_id``'s signature over its
    request for this change, made at ``when`` with ``nonce`` (what a holder's client does)."""
    holder = detail.holder_signature
    holder.key_id = key_id
    holder.request_time_micros = request_time_micros(when)
    holder.nonce = nonce
    holder.signature = b""
    holder.signature = private_key.sign(holder_message(detail))


def sign_enrollment(
    detail: entry_pb2.KeyDetail, private_key: Ed25519PrivateKey, code_digest: bytes
) -> None:
    """Set ``detail.holder_signature`` to a patient's first device's proof of possession over
    its enrollment code's digest (what the device signed to enroll)."""
    holder = detail.holder_signature
    holder.key_id = detail.key_id
    holder.request_time_micros = 0
    holder.nonce = code_digest
    holder.signature = private_key.sign(enrollment_message(code_digest, detail.public_key))


def sign_recovery(
    detail: entry_pb2.KeyDetail, private_key: Ed25519PrivateKey, code_digest: bytes, when: datetime
) -> None:
    """Set ``detail.holder_signature`` to a recovered device's own recovery request, made at
    ``when`` with the recovery code whose digest is ``code_digest``."""
    holder = detail.holder_signature
    holder.key_id = detail.key_id
    holder.request_time_micros = request_time_micros(when)
    holder.nonce = code_digest
    holder.signature = private_key.sign(recovery_message(code_digest, detail.public_key, when))
