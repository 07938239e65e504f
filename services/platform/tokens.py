"""Patients' bearer tokens: short-lived EdDSA JWTs (RFC 7519, RFC 8037) through PyJWT.

The identity service issues one after a device answers a login challenge; every server checks
it on every call (services/platform/auth.py). Claims: ``iss``, ``sub`` (the subject id), ``aud``,
``iat``, ``nbf``, ``exp``, ``jti`` and ``dev`` (the device key that logged in, so that revoking
the device ends its tokens). Only EdDSA is accepted: no ``none``, no HMAC with the public key as
secret. Time is passed in: PyJWT's own clock checks are off and :meth:`TokenVerifier.verify`
checks ``exp``, ``nbf`` and ``iat`` against the ``now`` it is given.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from chain.errors import InvalidInputError, UnauthenticatedError

ALGORITHM = "EdDSA"
DEFAULT_LIFETIME = timedelta(minutes=15)
DEFAULT_LEEWAY = timedelta(seconds=30)
_REQUIRED = ("iss", "sub", "aud", "iat", "nbf", "exp", "jti", "dev")
#: Verified tokens remembered per verifier: a token is checked cryptographically once, and its
#: times (and its device's revocation, in the interceptor) on every call.
_CACHE_SIZE = 4096


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """A short, stable id of a token key: the first 16 hex digits of SHA-256(raw key)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class IssuedToken:
    """A token and when it expires."""

    token: str
    token_id: str
    expire_time: datetime


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says."""

    subject_id: str
    device_key_id: str
    token_id: str
    issued_at: datetime
    expire_time: datetime
    not_before: datetime


class TokenIssuer:
    """Signs tokens with the identity service's Ed25519 token key."""

    def __init__(
        self,
        private_key: Ed25519PrivateKey,
        *,
        issuer: str,
        audience: str,
        lifetime: timedelta = DEFAULT_LIFETIME,
    ) -> None:
        self._key = private_key
        self._kid = key_id_of(private_key.public_key())
        self._issuer = issuer
        self._audience = audience
        self._lifetime = lifetime

    def __repr__(self) -> str:  # never shows the key
        return f"TokenIssuer(kid={self._kid!r}, audience={self._audience!r})"

    def issue(self, subject_id: str, device_key_id: str, now: datetime) -> IssuedToken:
        """A token for ``subject_id`` logged in with ``device_key_id``, valid from ``now``."""
        token_id = str(uuid.uuid4())
        seconds = int(now.timestamp())
        expires = seconds + int(self._lifetime.total_seconds())
        claims = {
            "iss": self._issuer,
            "sub": subject_id,
            "aud": self._audience,
            "iat": seconds,
            "nbf": seconds,
            "exp": expires,
            "jti": token_id,
            "dev": device_key_id,
        }
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self._kid})
        return IssuedToken(token, token_id, datetime.fromtimestamp(expires, UTC))


def _instant(claims: dict[str, Any], name: str) -> datetime:
    value = claims[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise UnauthenticatedError(f"expected claim {name!r} as seconds, got {value!r}")
    return datetime.fromtimestamp(value, UTC)


class TokenVerifier:
    """Checks tokens against the identity service's token public key."""

    def __init__(
        self,
        public_key: Ed25519PublicKey,
        *,
        issuer: str,
        audience: str,
        leeway: timedelta = DEFAULT_LEEWAY,
    ) -> None:
        self._key = public_key
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        #: token -> its checked claims (insertion order: the oldest is dropped first).
        self._checked: dict[str, TokenClaims] = {}

    def verify(self, token: str, now: datetime) -> TokenClaims:
        """The claims of a valid token; UnauthenticatedError saying why otherwise."""
        claims = self._checked.get(token)
        if claims is None:
            claims = self._decode(token)
            if len(self._checked) >= _CACHE_SIZE:
                self._checked.pop(next(iter(self._checked)))
            self._checked[token] = claims
        # Time is checked on every call: a cached token still expires.
        if now >= claims.expire_time + self._leeway:
            raise UnauthenticatedError(
                f"token expired at {claims.expire_time.isoformat()}; log in again"
            )
        if now + self._leeway < claims.not_before or now + self._leeway < claims.issued_at:
            raise UnauthenticatedError(f"token is not valid before {claims.not_before.isoformat()}")
        return claims

    def _decode(self, token: str) -> TokenClaims:
        """Signature, algorithm, issuer, audience and claim shapes: everything but time, which
        does not change while the same token is presented again (so this is cached)."""
        if token.count(".") != 2:
            raise UnauthenticatedError(
                f"expected a JWT (three base64url parts), got {token[:24]!r}"
            )
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as error:
            raise UnauthenticatedError(
                f"expected a JWT, got one that does not decode: {error}"
            ) from None
        if header.get("alg") != ALGORITHM:
            raise UnauthenticatedError(
                f"expected a token signed with {ALGORITHM}, got alg {header.get('alg')!r}"
            )
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                    "require": list(_REQUIRED),
                },
            )
        except jwt.InvalidSignatureError:
            raise UnauthenticatedError("token signature does not verify") from None
        except jwt.MissingRequiredClaimError as error:
            raise UnauthenticatedError(f"expected claim {error.claim!r} in the token") from None
        except jwt.PyJWTError as error:
            raise UnauthenticatedError(f"token is not valid: {error}") from None
        if claims["iss"] != self._issuer:
            raise UnauthenticatedError(f"expected issuer {self._issuer!r}, got {claims['iss']!r}")
        if claims["aud"] != self._audience:
            raise UnauthenticatedError(
                f"expected audience {self._audience!r}, got {claims['aud']!r}"
            )
        subject, device, token_id = claims["sub"], claims["dev"], claims["jti"]
        if not all(isinstance(v, str) and v for v in (subject, device, token_id)):
            raise UnauthenticatedError("expected non-empty sub, dev and jti claims in the token")
        return TokenClaims(
            subject,
            device,
            token_id,
            _instant(claims, "iat"),
            _instant(claims, "exp"),
            _instant(claims, "nbf"),
        )


def _load(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise InvalidInputError(
            f"expected a token key file {path}, got: {error.strerror}"
        ) from None


def load_token_issuer(path: Path, *, issuer: str, audience: str) -> TokenIssuer:
    """A TokenIssuer with the PKCS#8 PEM Ed25519 private key in ``path``."""
    key = serialization.load_pem_private_key(_load(path), None)
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInputError(f"expected an Ed25519 private key in {path}")
    return TokenIssuer(key, issuer=issuer, audience=audience)


def load_token_verifier(path: Path, *, issuer: str, audience: str) -> TokenVerifier:
    """A TokenVerifier with the PEM Ed25519 public key in ``path``."""
    key = serialization.load_pem_public_key(_load(path))
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidInputError(f"expected an Ed25519 public key in {path}")
    return TokenVerifier(key, issuer=issuer, audience=audience)
