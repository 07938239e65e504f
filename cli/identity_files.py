"""The files an organization or a patient device keeps, and how the CLI makes them.

An organization folder (``swiftchain identity register-org --out DIR``) is also a TLS folder
that ``--tls-dir DIR`` accepts: ``ca.pem`` (the platform CA), ``cert.pem`` and ``key.pem`` (its
mTLS client certificate and ECDSA P-256 key), plus ``signing-key.pem`` (its Ed25519 key, registered
on the log; a hospital's signs RECORD entries) and ``organization.json`` (its id and key id).

A device folder (``enroll`` / ``add-device``, made on the patient's device, which generates the
key there) holds ``device-key.pem`` (the Ed25519 device key), ``device.json`` (subject id and
device key id) and ``ca.pem`` to check the service's TLS certificate. Private keys are written
with mode 0600.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from chain.signed_messages import possession_message
from sdk.consent import PatientDevice

SIGNING_KEY_FILE = "signing-key.pem"
ORGANIZATION_FILE = "organization.json"
DEVICE_KEY_FILE = "device-key.pem"
DEVICE_FILE = "device.json"
CA_FILE = "ca.pem"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"


def write_secret(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)


def private_pem(key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    """PKCS#8 PEM of a private key, unencrypted (the file mode protects it)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def raw_public(key: Ed25519PrivateKey) -> bytes:
    """The 32 raw bytes of an Ed25519 key's public half."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_ed25519(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file; ValueError if it is something else."""
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"expected an Ed25519 private key in {path}, got {type(key).__name__}")
    return key


@dataclass(frozen=True)
class NewSigningKey:
    """A fresh Ed25519 key with its proof of possession for ``owner``."""

    private_key: Ed25519PrivateKey
    public_key: bytes
    proof: bytes

    @classmethod
    def for_owner(cls, owner: str) -> NewSigningKey:
        """Generate a key and sign the possession statement for ``owner``."""
        key = Ed25519PrivateKey.generate()
        public = raw_public(key)
        return cls(key, public, key.sign(possession_message(owner, public)))


def write_device_folder(folder: Path, device: PatientDevice, ca_pem: bytes) -> None:
    """Write the folder of a patient's device (key, ids, the CA that checks the service), which
    ``login``, ``add-device``, ``revoke-device`` and the consent commands read."""
    write_secret(folder / DEVICE_KEY_FILE, private_pem(device.key))
    write_json(folder / DEVICE_FILE, {"subject_id": device.subject_id, "key_id": device.key_id})
    (folder / CA_FILE).write_bytes(ca_pem)


def new_csr(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, str]:
    """An ECDSA P-256 key and a PEM CSR for it (the CA sets the real subject)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def root_of(chain_pem: str) -> str:
    """The last certificate of a PEM chain (issuer first, root last)."""
    marker = "-----BEGIN CERTIFICATE-----"
    parts = [marker + p for p in chain_pem.split(marker)[1:]]
    if not parts:
        raise ValueError("expected a PEM certificate chain, got none")
    return parts[-1].strip() + "\n"


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Pretty JSON with a final newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file; ValueError if it is not one."""
    document = json.loads(path.read_text())
    if not isinstance(document, dict):
        raise ValueError(f"expected a JSON object in {path}")
    return document
