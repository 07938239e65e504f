"""Patients' signatures on directives and delegations: made by an active device key of the
person who must have signed, checked against what identity announced of that key."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from chain.errors import PermissionDeniedError
from services.consent.domain.directory import Directory


@dataclass(frozen=True)
class SignerKey:
    """The device key a signature verified with."""

    key_id: str
    public_key: bytes


def verify_signature(
    directory: Directory,
    key_id: str,
    subject: str,
    signature: bytes,
    message: bytes,
    *,
    wait_seconds: float,
) -> SignerKey:
    """The key ``key_id`` if it is an active device key of ``subject`` and ``signature`` over
    ``message`` verifies with it (waiting up to ``wait_seconds`` for a key identity announced a
    moment ago); PermissionDeniedError otherwise."""
    key = directory.device_key(key_id, wait_seconds=wait_seconds)
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
    return SignerKey(key.key_id, key.public_key)
