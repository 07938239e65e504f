"""The platform CA: X.509 certificates for mTLS, with pyca/cryptography.

One self-signed ECDSA P-256 root signs every certificate of the platform: the services' and the
chain nodes' (server and client), and the organizations' client certificates. ECDSA rather than
Ed25519 because gRPC's TLS stack does not negotiate Ed25519 certificates. The subject of a
certificate is always set here — common name = the organization, service or node id,
organizational unit = the role it grants (services/platform/caller.py) — never taken from a CSR,
which only contributes its public key and proves possession of the private key by its
signature. Time is passed in.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from chain.errors import InvalidInputError

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
ROOT_LIFETIME = timedelta(days=3650)
#: Backdating absorbs small clock differences between the CA and the peers that check.
_BACKDATE = timedelta(minutes=5)
_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384"}
_RSA_BITS = (2048, 4096)
_SUPPORTED = "an ECDSA P-256 or P-384 key, or an RSA key of 2048 to 4096 bits"


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate the CA signed."""

    pem: str
    #: The issuing chain, issuer first, up to and including the root (here: the root).
    chain_pem: str
    serial_hex: str
    not_before: datetime
    not_after: datetime


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _describe_key(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"an ECDSA {key.curve.name} key"
    if isinstance(key, rsa.RSAPublicKey):
        return f"an RSA {key.key_size}-bit key"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "an Ed25519 key"
    if isinstance(key, ed448.Ed448PublicKey):
        return "an Ed448 key"
    return f"a {type(key).__name__}"


def check_tls_public_key(key: object) -> None:
    """InvalidInputError unless ``key`` is one gRPC's TLS can use and that is strong enough."""
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _CURVES:
        return
    if isinstance(key, rsa.RSAPublicKey) and _RSA_BITS[0] <= key.key_size <= _RSA_BITS[1]:
        return
    raise InvalidInputError(f"expected {_SUPPORTED} in the CSR, got {_describe_key(key)}")


def parse_csr(csr_pem: str) -> x509.CertificateSigningRequest:
    """A PEM CSR whose self-signature verifies and whose key is supported; else
    InvalidInputError saying what is wrong."""
    text = csr_pem.strip()
    if "-----BEGIN CERTIFICATE REQUEST-----" not in text:
        raise InvalidInputError(
            "expected a PEM certificate signing request ('-----BEGIN CERTIFICATE REQUEST-----'), "
            f"got {text[:40]!r}"
        )
    try:
        csr = x509.load_pem_x509_csr(text.encode())
    except ValueError as error:
        raise InvalidInputError(
            f"expected a well-formed PEM CSR, got one that is not: {error}"
        ) from None
    try:
        key = csr.public_key()
    except (ValueError, x509.UnsupportedGeneralNameType) as error:
        raise InvalidInputError(f"expected {_SUPPORTED} in the CSR, got: {error}") from None
    check_tls_public_key(key)
    try:
        valid = csr.is_signature_valid
    except (ValueError, InvalidSignature):
        valid = False
    if not valid:
        raise InvalidInputError(
            "expected a CSR signed by its own key (proof of possession), got a signature that "
            "does not verify"
        )
    return csr


def _name(common_name: str, unit: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Swiftchain Health"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def create_platform_ca(name: str, now: datetime) -> tuple[bytes, bytes]:
    """A new self-signed root: (key PEM, certificate PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Swiftchain Health"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + ROOT_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), certificate.public_bytes(serialization.Encoding.PEM)


class PlatformCA:
    """Signs certificates with the platform root."""

    def __init__(self, key_pem: bytes, certificate_pem: bytes) -> None:
        key = serialization.load_pem_private_key(key_pem, None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise InvalidInputError("expected an ECDSA CA key")
        self._key = key
        self._certificate = x509.load_pem_x509_certificate(certificate_pem)
        self.certificate_pem = certificate_pem.decode()

    @classmethod
    def load(cls, folder: Path) -> PlatformCA:
        """The CA kept in ``folder`` (``ca-key.pem``, ``ca.pem``)."""
        try:
            return cls((folder / CA_KEY_FILE).read_bytes(), (folder / CA_CERT_FILE).read_bytes())
        except OSError as error:
            raise InvalidInputError(
                f"expected the platform CA in {folder} ({CA_KEY_FILE}, {CA_CERT_FILE}), "
                f"got: {error.strerror}"
            ) from None

    def issue_for_csr(
        self,
        csr_pem: str,
        *,
        common_name: str,
        unit: str,
        now: datetime,
        lifetime: timedelta,
    ) -> IssuedCertificate:
        """A client certificate for the CSR's key, with the subject given here."""
        csr = parse_csr(csr_pem)
        return self._issue(csr.public_key(), common_name, unit, now, lifetime, hosts=())

    def issue_with_new_key(
        self,
        *,
        common_name: str,
        unit: str,
        now: datetime,
        lifetime: timedelta,
        hosts: Sequence[str] = (),
    ) -> tuple[bytes, IssuedCertificate]:
        """A fresh ECDSA P-256 key and a certificate for it, good for client and (with
        ``hosts``) server use: (key PEM, certificate)."""
        key = ec.generate_private_key(ec.SECP256R1())
        issued = self._issue(key.public_key(), common_name, unit, now, lifetime, hosts)
        return _key_pem(key), issued

    def _issue(
        self,
        public_key: object,
        common_name: str,
        unit: str,
        now: datetime,
        lifetime: timedelta,
        hosts: Sequence[str],
    ) -> IssuedCertificate:
        assert isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if hosts:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        # 159 random bits: positive, unpredictable, within RFC 5280's 20 octets.
        serial = secrets.randbits(159) | 1
        not_before, not_after = now - _BACKDATE, now + lifetime
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, unit))
            .issuer_name(self._certificate.subject)
            .public_key(public_key)
            .serial_number(serial)
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if hosts:
            builder = builder.add_extension(_san(hosts), critical=False)
        certificate = builder.sign(self._key, hashes.SHA256())
        return IssuedCertificate(
            pem=_pem(certificate),
            chain_pem=self.certificate_pem,
            serial_hex=format(serial, "x"),
            not_before=not_before,
            not_after=not_after,
        )
