"""A key holder's consent on the log: what ``KeyDetail.holder_signature`` is a signature over.

The registrar signs every KEY entry, so its signature alone shows only that the registrar wanted
the change. A change of a key that has a holder other than the registrar (an organization's
signing key) therefore also carries the holder's own signature, and every node checks it from
the log alone. The signed bytes are the request the holder made to the identity service
(:mod:`chain.signed_messages`), rebuilt from the detail's fields, so the service forwards the
very signature it checked and the holder signs once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chain.errors import VerificationError
from chain.signed_messages import (
    organization_key_revoke_message,
    organization_key_rotate_message,
    request_time_micros,
)
from swiftchain.chain.v1 import entry_pb2

#: A holder's request nonce: 16 to 64 random bytes (as the identity service takes them).
MIN_NONCE_SIZE = 16
MAX_NONCE_SIZE = 64

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ACTION_NAMES = {
    entry_pb2.KEY_ACTION_REGISTER: "REGISTER",
    entry_pb2.KEY_ACTION_ROTATE: "ROTATE",
    entry_pb2.KEY_ACTION_REVOKE: "REVOKE",
}


def needs_holder_signature(owner_kind: int, action: int) -> bool:
    """True if a KEY entry with ``action`` on a key whose owner is of ``owner_kind`` must carry
    its holder's signature: ROTATE and REVOKE of an organization's key."""
    return owner_kind == entry_pb2.KEY_OWNER_KIND_ORGANIZATION and action in (
        entry_pb2.KEY_ACTION_ROTATE,
        entry_pb2.KEY_ACTION_REVOKE,
    )


def request_time(micros: int) -> datetime:
    """The holder's request time from its microseconds since the Unix epoch."""
    try:
        return _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        raise VerificationError(
            f"expected a holder request time between years 1 and 9999, got {micros} µs"
        ) from None


def holder_message(detail: entry_pb2.KeyDetail) -> bytes:
    """The bytes ``detail.holder_signature`` must sign: the holder's request for this change.

    VerificationError if the change is one no holder signs (it carries no holder signature) or
    the signature's fields are out of range."""
    holder = detail.holder_signature
    if not MIN_NONCE_SIZE <= len(holder.nonce) <= MAX_NONCE_SIZE:
        raise VerificationError(
            f"expected a holder request nonce of {MIN_NONCE_SIZE} to {MAX_NONCE_SIZE} bytes, "
            f"got {len(holder.nonce)} bytes"
        )
    when = request_time(holder.request_time_micros)
    if detail.owner_kind == entry_pb2.KEY_OWNER_KIND_ORGANIZATION:
        if detail.action == entry_pb2.KEY_ACTION_ROTATE:
            return organization_key_rotate_message(
                detail.owner_id,
                detail.replaces_key_id,
                detail.public_key,
                detail.reason,
                holder.key_id,
                when,
                holder.nonce,
            )
        if detail.action == entry_pb2.KEY_ACTION_REVOKE:
            return organization_key_revoke_message(
                detail.owner_id, detail.key_id, detail.reason, holder.key_id, when, holder.nonce
            )
    raise VerificationError(
        "expected no holder signature on a "
        f"{_ACTION_NAMES.get(detail.action, str(detail.action))} of a "
        f"{entry_pb2.KeyOwnerKind.Name(detail.owner_kind)} key, got one"
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
