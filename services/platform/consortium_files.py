"""Creating a consortium's files: the public config and each member's private keys.

Used by ``make up`` on first start and by tests. A real consortium creates each member's key on
that member's own machine and shares only the verifier keys; this puts them side by side for a
local stack.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chain.consortium import ConsortiumConfig, GenesisKey, Member, parse_consortium
from chain.note import generate_key
from chain.tags import TAG_KEY_SIZE

REGISTRAR_KEY_ID = "registrar"
REGISTRAR_OWNER = "identity"
#: The consent service signs CONSENT and ACCESS entries with this genesis key.
CONSENT_KEY_ID = "consent"
CONSENT_OWNER = "consent"


@dataclass(frozen=True)
class ConsortiumFiles:
    """Where a consortium's files are."""

    folder: Path

    @property
    def config_path(self) -> Path:
        """The public config."""
        return self.folder / "consortium.json"

    def node_key_path(self, member: str) -> Path:
        """A member node's signed-note private key."""
        return self.folder / f"{member}.key"

    @property
    def tag_key_path(self) -> Path:
        """The consortium tag key (32 random bytes, secret to members and regulators)."""
        return self.folder / "tag.key"

    def load_tag_key(self) -> bytes:
        """The consortium tag key."""
        return self.tag_key_path.read_bytes()

    @property
    def registrar_key_path(self) -> Path:
        """The registrar's Ed25519 private key (PEM), used by the identity service."""
        return self.folder / "registrar.pem"

    @property
    def consent_key_path(self) -> Path:
        """The consent service's Ed25519 private key (PEM)."""
        return self.folder / "consent.pem"

    def load(self) -> ConsortiumConfig:
        """The config."""
        return parse_consortium(self.config_path.read_text())


def _write_secret(path: Path, data: bytes) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(data)


def create_consortium(
    folder: Path,
    members: list[str],
    *,
    quorum: int,
    origin: str,
    batch_max: int = 500,
    batch_timeout_ms: int = 50,
) -> ConsortiumFiles:
    """Create keys and config in ``folder`` unless a config is there already (then keep it)."""
    files = ConsortiumFiles(folder)
    if files.config_path.exists():
        files.load()
        # The tag key is secret to members and regulators, never in the config: a folder that
        # lacks it gets one, so every process of the stack finds the same key.
        if not files.tag_key_path.exists():
            _write_secret(files.tag_key_path, secrets.token_bytes(TAG_KEY_SIZE))
        return files
    folder.mkdir(parents=True, exist_ok=True)
    verifier_keys = []
    for name in members:
        skey, vkey = generate_key(name)
        _write_secret(files.node_key_path(name), (skey + "\n").encode())
        verifier_keys.append(Member(name, vkey))
    registrar = _new_private_key(files.registrar_key_path)
    consent = _new_private_key(files.consent_key_path)
    _write_secret(files.tag_key_path, secrets.token_bytes(TAG_KEY_SIZE))
    config = ConsortiumConfig(
        origin=origin,
        quorum=quorum,
        members=tuple(verifier_keys),
        genesis_keys=(
            GenesisKey(REGISTRAR_KEY_ID, REGISTRAR_OWNER, ("KEY",), _raw_public(registrar)),
            GenesisKey(CONSENT_KEY_ID, CONSENT_OWNER, ("CONSENT", "ACCESS"), _raw_public(consent)),
        ),
        batch_max=batch_max,
        batch_timeout_ms=batch_timeout_ms,
    )
    files.config_path.write_text(config.to_json())
    return files


def _new_private_key(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    _write_secret(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return key


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _load_private_key(path: Path, what: str) -> Ed25519PrivateKey:
    if not path.exists():
        raise FileNotFoundError(
            f"expected the {what} key at {path}, found none: this consortium folder is "
            "incomplete; create a new one (make down; rm -rf .stack/run; make up)"
        )
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    if not isinstance(key, Ed25519PrivateKey):
        raise TypeError(f"expected an Ed25519 {what} key in {path}")
    return key


def load_registrar_key(files: ConsortiumFiles) -> Ed25519PrivateKey:
    """The registrar's private key."""
    return _load_private_key(files.registrar_key_path, "registrar")


def load_consent_key(files: ConsortiumFiles) -> Ed25519PrivateKey:
    """The consent service's private key (genesis key ``consent``)."""
    return _load_private_key(files.consent_key_path, "consent")
