"""Blinded tags (DESIGN §3.1): HMAC-SHA256 under the consortium tag key.

Members and regulators, who hold the tag key, can find every entry about one patient or one
record; anyone else who mirrors the log cannot link entries to people or records.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from chain.errors import InvalidInputError

TAG_KEY_SIZE = 32


def _tag(tag_key: bytes, message: bytes) -> bytes:
    if len(tag_key) != TAG_KEY_SIZE:
        raise InvalidInputError(
            f"expected a {TAG_KEY_SIZE}-byte consortium tag key, got {len(tag_key)} bytes"
        )
    return hmac.new(tag_key, message, hashlib.sha256).digest()


def subject_tag(tag_key: bytes, subject_id: str) -> bytes:
    """``HMAC-SHA256(tag key, subject id)``: the patient's tag on the log."""
    return _tag(tag_key, subject_id.encode())


def record_tag(tag_key: bytes, organization_id: str, record_id: str) -> bytes:
    """``HMAC-SHA256(tag key, organization id || 0x00 || record id)``: a record's tag."""
    return _tag(tag_key, organization_id.encode() + b"\x00" + record_id.encode())


def patient_key_owner(subject_tag: bytes) -> str:
    """The owner id of a patient's device keys on the log: "pt-" and the lower-case unpadded
    base32 of its subject tag (55 characters, an id of the same form as an organization's), so
    that the log names the patient only as its entries about consent already do."""
    if len(subject_tag) != 32:
        raise InvalidInputError(f"expected a 32-byte subject tag, got {len(subject_tag)} bytes")
    return "pt-" + base64.b32encode(subject_tag).decode().rstrip("=").lower()


def device_key_tag(tag_key: bytes, key_id: str) -> bytes:
    """``HMAC-SHA256(tag key, "device-key" || 0x00 || key id)``: the signer's key on a CONSENT
    entry, without a clear key id that would link a patient's entries together."""
    return _tag(tag_key, b"device-key\x00" + key_id.encode())


def salted_commitment(document: bytes) -> tuple[bytes, bytes]:
    """(salt, commitment): a fresh 32-byte salt and ``HMAC-SHA256(salt, document)``, the
    ``commitment`` of an entry body. The salt stays off the log with the document."""
    salt = secrets.token_bytes(32)
    return salt, hmac.new(salt, document, hashlib.sha256).digest()
