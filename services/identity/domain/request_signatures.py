"""Requests that change keys carry a signature by a key their owner already holds.

A bearer token (15 minutes) or a client certificate says who is calling, but either can be
stolen or, for a certificate, issued anew by the admin. Adding or revoking a patient's device
and rotating or revoking an organization's signing key therefore also need a signature over the
request (:mod:`chain.signed_messages`) by one of the patient's active devices, or by the
organization's active signing key. The signature carries the request time and a random nonce:
a request older than :data:`MAX_REQUEST_AGE` (or further ahead than :data:`MAX_CLOCK_AHEAD`) is
refused, and so is a nonce the owner used within that window (the owner's record keeps the
nonces it has seen until they are too old to matter, and is written with the change, so a replay
and the change it repeats cannot both succeed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidSignature

from chain.entry_rules import SIGNATURE_SIZE
from chain.errors import InvalidInputError, PermissionDeniedError
from chain.signed_messages import request_time_micros
from services.identity.domain.keys import check_public_key
from swiftchain.chain.v1 import entry_pb2

#: A signed request older than this (by its request time) is refused.
MAX_REQUEST_AGE = timedelta(minutes=5)
#: A request time further than this after the service's clock is refused (clock skew).
MAX_CLOCK_AHEAD = timedelta(minutes=1)
MIN_NONCE_SIZE = 16
MAX_NONCE_SIZE = 64


@dataclass(frozen=True)
class RequestSignature:
    """A signature over one request, as the client sent it."""

    #: The id of the key that signed: a device key id or an organization key id.
    key_id: str
    #: When the client made the request; None when the request had no time.
    request_time: datetime | None
    nonce: bytes
    signature: bytes

    def holder_signature(self) -> entry_pb2.HolderSignature:
        """This signature as a KEY entry carries it (``KeyDetail.holder_signature``); only for
        a request that had a time (its shape is checked first)."""
        assert self.request_time is not None
        return entry_pb2.HolderSignature(
            key_id=self.key_id,
            request_time_micros=request_time_micros(self.request_time),
            nonce=self.nonce,
            signature=self.signature,
        )


def require_signature(signed: RequestSignature | None, by: str, then: str = "") -> RequestSignature:
    """``signed`` if it holds a signature; else PermissionDeniedError naming ``by`` (who
    should have signed) and ``then`` (what else to say), since a token or a certificate alone
    changes no keys."""
    if signed is None or not signed.signature:
        raise PermissionDeniedError(
            f"expected a signature by {by} over the request, got none"
            + (f"; {then}" if then else "")
        )
    return signed


def check_shape(signed: RequestSignature) -> datetime:
    """InvalidInputError unless the signature, nonce, key id and time are all there and of the
    right size; returns the request time."""
    if len(signed.signature) != SIGNATURE_SIZE:
        raise InvalidInputError(
            f"expected a {SIGNATURE_SIZE}-byte Ed25519 request signature, "
            f"got {len(signed.signature)} bytes"
        )
    if not MIN_NONCE_SIZE <= len(signed.nonce) <= MAX_NONCE_SIZE:
        raise InvalidInputError(
            f"expected a request nonce of {MIN_NONCE_SIZE} to {MAX_NONCE_SIZE} random bytes, "
            f"got {len(signed.nonce)} bytes"
        )
    if not signed.key_id:
        raise InvalidInputError("expected the id of the key that signed the request, got none")
    if signed.request_time is None:
        raise InvalidInputError("expected the request time the signature covers, got none")
    return signed.request_time


def check_fresh(
    signed: RequestSignature, seen_nonces: Mapping[bytes, datetime], now: datetime
) -> None:
    """PermissionDeniedError if the request is too old, too far ahead, or repeats a nonce."""
    request_time = check_shape(signed)
    if request_time < now - MAX_REQUEST_AGE:
        raise PermissionDeniedError(
            f"expected a request signed within the last {_minutes(MAX_REQUEST_AGE)}, got one "
            f"signed at {request_time.isoformat()} (now {now.isoformat()}); sign it again"
        )
    if request_time > now + MAX_CLOCK_AHEAD:
        raise PermissionDeniedError(
            f"expected a request time at most {_minutes(MAX_CLOCK_AHEAD)} ahead of the "
            f"service's clock ({now.isoformat()}), got {request_time.isoformat()}; check the "
            "client's clock"
        )
    if signed.nonce in seen_nonces:
        raise PermissionDeniedError(
            "this signed request was used already (its nonce was seen); sign a new request "
            "with a fresh nonce"
        )


def check_signature(public_key: bytes, signed: RequestSignature, message: bytes, by: str) -> None:
    """PermissionDeniedError unless ``signed.signature`` is ``public_key``'s over ``message``."""
    try:
        check_public_key(public_key).verify(signed.signature, message)
    except InvalidSignature:
        raise PermissionDeniedError(
            f"the request signature does not verify with {by} {signed.key_id!r}: it was made "
            "by another key or over another request"
        ) from None


def remember_nonce(
    seen_nonces: Mapping[bytes, datetime], signed: RequestSignature, now: datetime
) -> dict[bytes, datetime]:
    """The nonces to keep after accepting ``signed``: its own, and those of requests that are
    not yet too old to be accepted (older ones are refused by their time anyway)."""
    oldest = now - MAX_REQUEST_AGE
    kept = {nonce: time for nonce, time in seen_nonces.items() if time >= oldest}
    assert signed.request_time is not None  # check_fresh ran first
    kept[signed.nonce] = signed.request_time
    return kept


def _minutes(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    return f"{minutes} minute" + ("" if minutes == 1 else "s")
