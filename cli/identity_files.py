"""The files an organization or a patient device keeps, and how the CLI makes them.

An organization's keys are made on its own machine (``swiftchain identity org-keygen``), which
writes them and a registration request holding only public parts (the signing key with its
proof of possession and a CSR); the admin registers the request (``register-org --request``)
and hands back ``cert.pem``, ``ca.pem`` and ``organization.json``, which go next to the keys.

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

import base64
import binascii
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
#: The format name of an organization's registration request (``org-keygen``).
ORG_REQUEST_FORMAT = "swiftchain-org-request/v1"


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


@dataclass(frozen=True)
class OrganizationRequest:
    """What an organization sends to be registered: public parts only."""

    organization_id: str
    public_key: bytes
    proof_of_possession: bytes
    csr_pem: str

    def to_json(self) -> dict[str, Any]:
        """The request as written by ``org-keygen``."""
        return {
            "format": ORG_REQUEST_FORMAT,
            "organization_id": self.organization_id,
            "public_key": base64.b64encode(self.public_key).decode(),
            "proof_of_possession": base64.b64encode(self.proof_of_possession).decode(),
            "csr_pem": self.csr_pem,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> OrganizationRequest:
        """Read a request; ValueError naming what is wrong ("expected X, got Y")."""
        if document.get("format") != ORG_REQUEST_FORMAT:
            raise ValueError(
                f"expected format {ORG_REQUEST_FORMAT!r}, got {document.get('format')!r}"
            )
        fields = {}
        for name in ("organization_id", "public_key", "proof_of_possession", "csr_pem"):
            value = document.get(name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"expected a non-empty string {name!r}, got {value!r}")
            fields[name] = value
        try:
            public_key = base64.b64decode(fields["public_key"], validate=True)
            proof = base64.b64decode(fields["proof_of_possession"], validate=True)
        except binascii.Error:
            raise ValueError("expected base64 public_key and proof_of_possession") from None
        return cls(fields["organization_id"], public_key, proof, fields["csr_pem"])
