"""Patients' bearer tokens (services/platform/tokens.py): every way a token can be wrong."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chain.errors import UnauthenticatedError
from services.platform.tokens import TokenIssuer, TokenVerifier

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
KEY = Ed25519PrivateKey.generate()
ISSUER = TokenIssuer(KEY, issuer="swiftchain-identity", audience="swiftchain")
VERIFIER = TokenVerifier(KEY.public_key(), issuer="swiftchain-identity", audience="swiftchain")


def token() -> str:
    return ISSUER.issue("pt-1", "dev-1", NOW).token


def test_a_token_round_trips_and_names_subject_device_and_expiry() -> None:
    issued = ISSUER.issue("pt-1", "dev-1", NOW)
    claims = VERIFIER.verify(issued.token, NOW + timedelta(minutes=5))
    assert (claims.subject_id, claims.device_key_id) == ("pt-1", "dev-1")
    assert claims.expire_time == issued.expire_time == NOW + timedelta(minutes=15)
    assert jwt.get_unverified_header(issued.token)["alg"] == "EdDSA"


def test_an_expired_token_is_refused() -> None:
    with pytest.raises(UnauthenticatedError, match="token expired at 2026-11-24T12:15:00"):
        VERIFIER.verify(token(), NOW + timedelta(minutes=16))


def test_a_token_from_the_future_is_refused() -> None:
    with pytest.raises(UnauthenticatedError, match="not valid before"):
        VERIFIER.verify(token(), NOW - timedelta(minutes=5))


def test_a_token_for_another_audience_is_refused() -> None:
    other = TokenIssuer(KEY, issuer="swiftchain-identity", audience="another-consortium")
    with pytest.raises(UnauthenticatedError, match="expected audience 'swiftchain', got 'another"):
        VERIFIER.verify(other.issue("pt-1", "dev-1", NOW).token, NOW)


def test_a_token_from_another_issuer_is_refused() -> None:
    other = TokenIssuer(KEY, issuer="someone-else", audience="swiftchain")
    with pytest.raises(UnauthenticatedError, match="expected issuer 'swiftchain-identity'"):
        VERIFIER.verify(other.issue("pt-1", "dev-1", NOW).token, NOW)


def test_a_token_signed_by_another_key_is_refused() -> None:
    forger = TokenIssuer(
        Ed25519PrivateKey.generate(), issuer="swiftchain-identity", audience="swiftchain"
    )
    with pytest.raises(UnauthenticatedError, match="signature does not verify"):
        VERIFIER.verify(forger.issue("pt-1", "dev-1", NOW).token, NOW)


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_alg_none_is_refused() -> None:
    claims = jwt.decode(token(), options={"verify_signature": False})
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    with pytest.raises(UnauthenticatedError, match="expected a token signed with EdDSA"):
        VERIFIER.verify(unsigned, NOW)


def test_hmac_with_the_public_key_as_secret_is_refused() -> None:
    public_pem = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = jwt.decode(token(), options={"verify_signature": False})
    header = _b64({"alg": "HS256", "typ": "JWT"})
    body = _b64(claims)
    mac = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(UnauthenticatedError, match="got alg 'HS256'"):
        VERIFIER.verify(forged, NOW)


def test_a_tampered_payload_is_refused() -> None:
    header, body, signature = token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["sub"] = "pt-2"
    with pytest.raises(UnauthenticatedError, match="signature does not verify"):
        VERIFIER.verify(f"{header}.{_b64(claims)}.{signature}", NOW)


@pytest.mark.parametrize(
    ("text", "message"),
    [("not-a-token", "expected a JWT \\(three base64url parts\\)"), ("a.b.c", "does not decode")],
)
def test_malformed_tokens_are_refused(text: str, message: str) -> None:
    with pytest.raises(UnauthenticatedError, match=message):
        VERIFIER.verify(text, NOW)


def test_a_token_without_the_device_claim_is_refused() -> None:
    claims = jwt.decode(token(), options={"verify_signature": False})
    del claims["dev"]
    incomplete = jwt.encode(claims, KEY, algorithm="EdDSA")
    with pytest.raises(UnauthenticatedError, match="expected claim 'dev'"):
        VERIFIER.verify(incomplete, NOW)


def test_a_token_checked_once_still_expires_on_a_later_call() -> None:
    verifier = TokenVerifier(KEY.public_key(), issuer="swiftchain-identity", audience="swiftchain")
    issued = token()
    assert verifier.verify(issued, NOW).subject_id == "pt-1"
    with pytest.raises(UnauthenticatedError, match="token expired"):
        verifier.verify(issued, NOW + timedelta(hours=1))
