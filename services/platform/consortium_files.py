"""A consortium's files: the public config (the genesis every founder signed) and the private
keys of the members and services that a folder holds.

``make up``, ``k8s/make_material.py`` and tests create one with :func:`create_consortium`, which
runs the genesis ceremony (:mod:`services.platform.genesis_ceremony`) with one process playing
every founder and service: each key is made by the same code its holder would run on its own
machine, and only the public cards go into the genesis. A real consortium runs those steps on
the members' own machines (``swiftchain consortium keygen`` and ``genesis``) and each folder
then holds its own holder's keys only.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chain.consortium import ConsortiumConfig
from chain.errors import InvalidInputError, VerificationError
from chain.genesis import parse_genesis
from services.platform.genesis_ceremony import (
    CONSENT,
    REGISTRAR,
    TAG_KEY_FILE,
    generate_tag_key,
    local_ceremony,
)

#: The identity service registers keys with this genesis key.
REGISTRAR_KEY_ID = REGISTRAR.key_id
REGISTRAR_OWNER = REGISTRAR.owner_id
#: The consent service signs CONSENT and ACCESS entries with this genesis key.
CONSENT_KEY_ID = CONSENT.key_id
CONSENT_OWNER = CONSENT.owner_id


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
        return self.folder / TAG_KEY_FILE

    def load_tag_key(self) -> bytes:
        """The consortium tag key."""
        return self.tag_key_path.read_bytes()

    @property
    def registrar_key_path(self) -> Path:
        """The registrar's Ed25519 private key (PEM), used by the identity service."""
        return self.folder / REGISTRAR.private_key_file

    @property
    def consent_key_path(self) -> Path:
        """The consent service's Ed25519 private key (PEM)."""
        return self.folder / CONSENT.private_key_file

    def load(self) -> ConsortiumConfig:
        """The config, checked to be a genesis every founder signed
        (:class:`~chain.errors.VerificationError` if not)."""
        return parse_genesis(self.config_path.read_bytes())


def create_consortium(
    folder: Path,
    members: list[str],
    *,
    quorum: int,
    origin: str,
    batch_max: int = 500,
    batch_timeout_ms: int = 50,
) -> ConsortiumFiles:
    """Run the genesis ceremony in ``folder`` unless a config is there already (then keep it,
    after checking that every founder signed it)."""
    files = ConsortiumFiles(folder)
    if files.config_path.exists():
        _load_existing(files)
        # The tag key is secret to members and regulators, never in the config: a folder that
        # lacks it gets one, so every process of the stack finds the same key.
        if not files.tag_key_path.exists():
            generate_tag_key(folder)
        return files
    if folder.exists() and any(folder.iterdir()):
        raise InvalidInputError(
            f"expected {folder} to hold a consortium.json or nothing, got other files (a "
            "genesis ceremony that stopped half-way?): remove the folder to run it again"
        )
    # The ceremony runs in a folder of its own, renamed into place once the genesis is signed,
    # so that a ceremony cut short leaves no half-made consortium behind.
    staging = folder.with_name(folder.name + ".ceremony")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700, parents=True)
    genesis = local_ceremony(
        staging,
        members,
        quorum=quorum,
        origin=origin,
        batch_max=batch_max,
        batch_timeout_ms=batch_timeout_ms,
    )
    (staging / files.config_path.name).write_text(genesis.to_json())
    if folder.exists():
        folder.rmdir()
    staging.rename(folder)
    return files


def _load_existing(files: ConsortiumFiles) -> ConsortiumConfig:
    try:
        return files.load()
    except VerificationError as error:
        raise VerificationError(
            f"{files.config_path}: {error}. A consortium folder made before founders signed "
            f"the genesis cannot be used: remove {files.folder} to run the genesis ceremony "
            "again (every key in it is replaced)"
        ) from None


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
