"""Checks on Ed25519 public keys that someone asks the identity service to register.

A key is registered only with a proof of possession: the holder signs
``"swiftchain/key-possession/v1\\n" || owner (UTF-8) || 0x00 || public_key``, binding the key to
the owner it is registered for, so nobody can register (or later disown) a key they do not hold.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from chain.entry_rules import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, SMALL_ORDER_KEY_MESSAGE
from chain.entry_rules import is_small_order_public_key as _is_small_order
from chain.errors import InvalidInputError
from chain.signed_messages import possession_message


def check_public_key(public_key: bytes, what: str = "public key") -> Ed25519PublicKey:
    """The key, if it is a usable 32-byte Ed25519 public key; else InvalidInputError."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise InvalidInputError(f"expected a 32-byte Ed25519 {what}, got {len(public_key)} bytes")
    if _is_small_order(public_key):
        raise InvalidInputError(f"{what}: {SMALL_ORDER_KEY_MESSAGE}")
    try:
        return Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError as error:
        raise InvalidInputError(f"expected an Ed25519 {what}, got: {error}") from None


def check_possession(owner: str, public_key: bytes, proof: bytes) -> None:
    """Raise InvalidInputError unless ``proof`` shows that the holder of ``public_key`` signed
    it for ``owner``."""
    key = check_public_key(public_key)
    if len(proof) != SIGNATURE_SIZE:
        raise InvalidInputError(
            f"expected a 64-byte Ed25519 proof of possession, got {len(proof)} bytes"
        )
    try:
        key.verify(proof, possession_message(owner, public_key))
    except InvalidSignature:
        raise InvalidInputError(
            "expected a proof of possession signed by the new key over "
            f"'swiftchain/key-possession/v1\\n' || {owner!r} || 0x00 || key, "
            "got a signature that does not verify"
        ) from None
