"""The platform CA (services/platform/ca.py): what it signs, and each CSR it refuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from chain.errors import InvalidInputError
from devstack.pki import ADMIN, ensure_pki
from services.platform.auth import certificate_caller
from services.platform.ca import PlatformCA, create_platform_ca
from services.platform.caller import Role
from services.platform.tls import CERT_FILE, KEY_FILE, TOKEN_SIGNING_FILE, TOKEN_VERIFY_FILE

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def ca() -> PlatformCA:
    key_pem, cert_pem = create_platform_ca("test CA", NOW)
    return PlatformCA(key_pem, cert_pem)


def csr_for(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, name: str = "whatever") -> str:
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM).decode()


def test_the_ca_sets_the_subject_and_the_csr_only_gives_its_key(ca: PlatformCA) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    issued = ca.issue_for_csr(
        csr_for(key, "admin"),  # a CSR asking to be someone else changes nothing
        common_name="hospital-a",
        unit="hospital",
        now=NOW,
        lifetime=timedelta(days=30),
    )
    certificate = x509.load_pem_x509_certificate(issued.pem.encode())
    root = x509.load_pem_x509_certificate(issued.chain_pem.encode())
    certificate.verify_directly_issued_by(root)
    assert certificate.public_key() == key.public_key()
    assert certificate_caller(issued.pem.encode()).role is Role.HOSPITAL
    assert certificate_caller(issued.pem.encode()).id == "hospital-a"
    usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert issued.serial_hex == format(certificate.serial_number, "x")
    assert issued.not_after == NOW + timedelta(days=30)
    assert certificate.not_valid_after_utc == issued.not_after


def test_rsa_csrs_of_2048_bits_are_accepted(ca: PlatformCA) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issued = ca.issue_for_csr(
        csr_for(key), common_name="app-1", unit="app", now=NOW, lifetime=timedelta(days=1)
    )
    assert issued.serial_hex


def _tampered_csr() -> str:
    pem = csr_for(ec.generate_private_key(ec.SECP256R1()))
    der = bytearray(x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature
    request = x509.load_der_x509_csr(bytes(der))
    return request.public_bytes(serialization.Encoding.PEM).decode()


def _ed25519_csr() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(key, None)
    )
    return request.public_bytes(serialization.Encoding.PEM).decode()


def _small_rsa_csr() -> str:
    return csr_for(rsa.generate_private_key(public_exponent=65537, key_size=1024))


def _p521_csr() -> str:
    return csr_for(ec.generate_private_key(ec.SECP521R1()))


@pytest.mark.parametrize(
    ("csr", "message"),
    [
        ("hello", "expected a PEM certificate signing request"),
        (
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            "expected a well-formed PEM CSR",
        ),
        (_tampered_csr(), "signature that does not verify"),
        (_ed25519_csr(), "got an Ed25519 key"),
        (_small_rsa_csr(), "got an RSA 1024-bit key"),
        (_p521_csr(), "got an ECDSA secp521r1 key"),
    ],
    ids=["not-pem", "malformed", "bad-self-signature", "ed25519", "rsa-1024", "p521"],
)
def test_each_bad_csr_is_refused_with_what_was_expected(
    ca: PlatformCA, csr: str, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        ca.issue_for_csr(csr, common_name="h", unit="hospital", now=NOW, lifetime=timedelta(1))


def test_server_certificates_name_their_hosts(ca: PlatformCA) -> None:
    _, issued = ca.issue_with_new_key(
        common_name="identity",
        unit="service",
        now=NOW,
        lifetime=timedelta(days=30),
        hosts=("localhost", "127.0.0.1"),
    )
    certificate = x509.load_pem_x509_certificate(issued.pem.encode())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_ensure_pki_creates_once_and_keeps(tmp_path: Path) -> None:
    processes = [("identity", "service"), ("hospital-a", "chain-node")]
    pki = ensure_pki(tmp_path, processes, now=NOW)
    first = {p: (pki.tls_dir(p) / CERT_FILE).read_bytes() for p in ("identity", ADMIN)}
    assert (pki.tls_dir("identity") / TOKEN_SIGNING_FILE).stat().st_mode & 0o777 == 0o600
    assert (pki.tls_dir("hospital-a") / KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert (pki.tls_dir("hospital-a") / TOKEN_VERIFY_FILE).exists()
    again = ensure_pki(tmp_path, processes, now=NOW + timedelta(days=1))
    assert {p: (again.tls_dir(p) / CERT_FILE).read_bytes() for p in first} == first
    renewed = ensure_pki(tmp_path, processes, now=NOW + timedelta(days=29, hours=12))
    assert (renewed.tls_dir("identity") / CERT_FILE).read_bytes() != first["identity"]
    role = certificate_caller((pki.tls_dir("hospital-a") / CERT_FILE).read_bytes()).role
    assert role is Role.CHAIN_NODE
