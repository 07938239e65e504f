"""The local platform's PKI: the CA, each process's certificate, the admin's, the token keys.

``ensure_pki(folder, processes)`` creates on first use, and keeps afterwards:

* ``ca/ca.pem`` and ``ca/ca-key.pem`` — the platform root (the identity service issues
  organizations' client certificates with it; ``SWIFTCHAIN_CA_DIR``);
* ``<process>/`` for every process — ``ca.pem``, ``cert.pem``, ``key.pem`` (server and client
  certificate, CN = process name, OU = its role unit, for localhost and 127.0.0.1) and
  ``token-verify.pem``; the identity service's folder also gets ``token-signing.pem``;
* ``consortium-admin/`` — the consortium admin's client certificate (OU ``admin``), for the CLI
  and tests, and the Kafka super user of the local broker (topics, ACLs).

The Kafka broker's folder is one of ``processes`` (:data:`KAFKA_BROKER`); every Kafka client
presents its process's certificate, and :func:`kafka_principal` is who the broker takes it for.

Certificates with less than a day left are re-issued. Private keys are mode 0600. A real
deployment keeps the CA key offline and each process's key on its own machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cli.defaults import ADMIN as ADMIN
from devstack.paths import file_lock
from services.platform.ca import CA_KEY_FILE, PlatformCA, create_platform_ca
from services.platform.tls import (
    CA_FILE,
    CERT_FILE,
    KEY_FILE,
    TOKEN_SIGNING_FILE,
    TOKEN_VERIFY_FILE,
)

IDENTITY = "identity"
#: The local Kafka broker's TLS folder (its server certificate, and its own principal).
KAFKA_BROKER = "kafka"
#: The broker certificate's unit: a role no gRPC server grants anything to.
KAFKA_BROKER_UNIT = "kafka-broker"
PROCESS_LIFETIME = timedelta(days=30)
_RENEW_BEFORE = timedelta(days=1)
_HOSTS = ("localhost", "127.0.0.1")


def _write_secret(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)


@dataclass(frozen=True)
class Pki:
    """Where the local PKI's files are."""

    folder: Path

    @property
    def ca_dir(self) -> Path:
        """The CA's own folder (with its private key)."""
        return self.folder / "ca"

    def tls_dir(self, name: str) -> Path:
        """The TLS folder of a process, or of :data:`ADMIN`."""
        return self.folder / name

    @property
    def ca_pem(self) -> bytes:
        """The platform root certificate."""
        return (self.ca_dir / CA_FILE).read_bytes()


def kafka_principal(cert_pem: bytes) -> str:
    """The Kafka principal a client with this certificate is: ``User:`` and the certificate's
    subject as RFC 4514 (= Java's RFC 2253) writes it, most specific part first, as Kafka's
    default principal builder does on a TLS listener (``User:CN=anchoring,OU=service,O=...``)."""
    subject = x509.load_pem_x509_certificate(cert_pem).subject
    return "User:" + subject.rfc4514_string()


def _needs_certificate(folder: Path, now: datetime) -> bool:
    cert_path = folder / CERT_FILE
    if not cert_path.exists() or not (folder / KEY_FILE).exists():
        return True
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return certificate.not_valid_after_utc - now < _RENEW_BEFORE


def ensure_pki(
    folder: Path, processes: Sequence[tuple[str, str]], now: datetime | None = None
) -> Pki:
    """Create what is missing for ``processes`` ((name, role unit) pairs) and the admin."""
    now = now or datetime.now(UTC)
    pki = Pki(folder)
    with file_lock(folder / ".lock"):
        if not (pki.ca_dir / CA_KEY_FILE).exists():
            key_pem, cert_pem = create_platform_ca("Swiftchain Health local platform CA", now)
            _write_secret(pki.ca_dir / CA_KEY_FILE, key_pem)
            (pki.ca_dir / CA_FILE).write_bytes(cert_pem)
        ca = PlatformCA.load(pki.ca_dir)
        signing_path = pki.tls_dir(IDENTITY) / TOKEN_SIGNING_FILE
        if not signing_path.exists():
            token_key = Ed25519PrivateKey.generate()
            _write_secret(
                signing_path,
                token_key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
            )
        signing_key = serialization.load_pem_private_key(signing_path.read_bytes(), None)
        verify_pem = signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        for name, unit in [*processes, (ADMIN, "admin")]:
            target = pki.tls_dir(name)
            target.mkdir(parents=True, exist_ok=True)
            (target / CA_FILE).write_bytes(pki.ca_pem)
            (target / TOKEN_VERIFY_FILE).write_bytes(verify_pem)
            if _needs_certificate(target, now):
                key_pem, issued = ca.issue_with_new_key(
                    common_name=name,
                    unit=unit,
                    now=now,
                    lifetime=PROCESS_LIFETIME,
                    hosts=_HOSTS if name != ADMIN else (),
                )
                _write_secret(target / KEY_FILE, key_pem)
                (target / CERT_FILE).write_text(issued.pem)
    return pki
