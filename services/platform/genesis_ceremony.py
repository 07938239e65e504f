"""The genesis ceremony: each key made by its holder, the genesis assembled from public key cards
and signed by every founder (``swiftchain consortium ...``; see :mod:`chain.genesis`).

1. Each founding member runs :func:`member_keygen` on its own machine: its node key stays in its
   folder (mode 0600) and only a key card (:class:`KeyCard`: the public key, signed by itself)
   leaves it. The identity service and the consent service make their genesis keys the same way
   (:func:`service_keygen`, roles ``registrar`` and ``consent``).
2. Whoever collects the cards runs :func:`propose`: it reads public cards only and writes the
   unsigned genesis.
3. Each founder checks the genesis and signs it with its node key (:func:`sign_with_key`); the
   genesis is complete when every founder has (:func:`chain.genesis.verify_genesis`).

The consortium tag key is a shared secret, not a key pair: :func:`generate_tag_key` makes it on
the machine of whoever is trusted to hand it to the members and regulators (docs/security.md).

``make up`` and ``k8s/make_material.py`` run the same steps in one process that plays every
founder and service (:func:`local_ceremony`).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from chain.consortium import ConsortiumConfig, GenesisKey, Member
from chain.errors import AlreadyExistsError, InvalidInputError, VerificationError
from chain.genesis import sign_genesis, verify_genesis
from chain.note import Signer, new_signer, signer_key, verifier_key
from chain.signed_messages import key_card_message
from chain.tags import TAG_KEY_SIZE

CARD_FORMAT: Final = "swiftchain-consortium-key-card/v1"
#: The role of a founding member's node (cosigning) key.
ROLE_MEMBER: Final = "member"
TAG_KEY_FILE: Final = "tag.key"
_CARD_SUFFIX: Final = ".card.json"


@dataclass(frozen=True)
class ServiceRole:
    """A genesis key a service holds: valid from log position 0, before any KEY entry."""

    role: str
    #: The genesis key's id, which the service signs its entries with.
    key_id: str
    #: The service that holds it.
    owner_id: str
    allowed_kinds: tuple[str, ...]

    @property
    def private_key_file(self) -> str:
        """The name of the PEM file its private key is kept in."""
        return f"{self.key_id}.pem"


#: The identity service registers keys (KEY entries) with this one.
REGISTRAR: Final = ServiceRole("registrar", "registrar", "identity", ("KEY",))
#: The consent service signs CONSENT and ACCESS entries with this one.
CONSENT: Final = ServiceRole("consent", "consent", "consent", ("CONSENT", "ACCESS"))
SERVICE_ROLES: Final = {r.role: r for r in (REGISTRAR, CONSENT)}
ROLES: Final = (ROLE_MEMBER, *SERVICE_ROLES)


def _raw_public(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _member_key_id(name: str, public_key: bytes) -> str:
    """``name+hash``: how signature lines and errors name a member's node key (a name has no
    '+' and the hash is hex, so they are the verifier key's first two fields)."""
    return "+".join(verifier_key(name, public_key).split("+")[:2])


@dataclass(frozen=True)
class KeyCard:
    """A key's public card: whose key it is, for what, and a signature by the key itself over
    those facts (so the card's holder holds the key). Holds nothing secret."""

    role: str
    #: The member's name, or the service that holds the key.
    name: str
    #: ``name+hash`` for a member's node key (as its signature lines name it); the genesis key
    #: id for a service's key.
    key_id: str
    public_key: bytes
    #: The key's Ed25519 signature of :func:`chain.signed_messages.key_card_message`.
    proof: bytes

    def __post_init__(self) -> None:
        expected_id = self.expected_key_id()
        if self.key_id != expected_id:
            raise InvalidInputError(
                f"key card of {self.name!r}: expected key id {expected_id!r}, got {self.key_id!r}"
            )
        message = key_card_message(self.role, self.name, self.key_id, self.public_key)
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(self.proof, message)
        except (InvalidSignature, ValueError):
            raise VerificationError(
                f"key card of {self.name!r} ({self.role}): expected a signature by key "
                f"{self.key_id} over the card, got one that does not verify"
            ) from None

    def expected_key_id(self) -> str:
        """The key id the card's role, name and key call for."""
        if self.role == ROLE_MEMBER:
            return _member_key_id(self.name, self.public_key)
        service = SERVICE_ROLES.get(self.role)
        if service is None:
            raise InvalidInputError(f"key card: expected a role among {ROLES}, got {self.role!r}")
        if self.name != service.owner_id:
            raise InvalidInputError(
                f"key card of role {self.role!r}: expected it held by {service.owner_id!r}, "
                f"got {self.name!r}"
            )
        return service.key_id

    @classmethod
    def signed_by(cls, role: str, name: str, key: Ed25519PrivateKey) -> KeyCard:
        """The card of ``key`` for ``role`` and ``name``, signed by ``key``."""
        public_key = _raw_public(key)
        if role == ROLE_MEMBER:
            key_id = _member_key_id(name, public_key)
        elif role in SERVICE_ROLES:
            key_id = SERVICE_ROLES[role].key_id
        else:
            raise InvalidInputError(f"key card: expected a role among {ROLES}, got {role!r}")
        proof = key.sign(key_card_message(role, name, key_id, public_key))
        return cls(role, name, key_id, public_key, proof)

    @property
    def verifier_key(self) -> str:
        """The key as a signed-note verifier key ``name+hash+base64`` (a member's)."""
        return verifier_key(self.name, self.public_key)

    def to_json(self) -> str:
        """The card as pretty JSON, keys sorted."""
        document: dict[str, Any] = {
            "format": CARD_FORMAT,
            "role": self.role,
            "name": self.name,
            "key_id": self.key_id,
            "public_key": base64.b64encode(self.public_key).decode(),
            "proof": base64.b64encode(self.proof).decode(),
        }
        if self.role == ROLE_MEMBER:
            document["verifier_key"] = self.verifier_key
        else:
            document["allowed_kinds"] = list(SERVICE_ROLES[self.role].allowed_kinds)
        return json.dumps(document, indent=2, sort_keys=True) + "\n"


_CARD_FIELDS: Final = frozenset(("format", "role", "name", "key_id", "public_key", "proof"))


def _string(document: dict[str, Any], name: str, where: str) -> str:
    value = document.get(name)
    if not isinstance(value, str):
        raise InvalidInputError(f"{where}: expected {name!r} as a string, got {value!r}")
    return value


def _bytes(document: dict[str, Any], name: str, where: str) -> bytes:
    value = _string(document, name, where)
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise InvalidInputError(f"{where}: expected {name!r} in base64, got {value!r}") from None


def parse_card(text: str | bytes, where: str = "key card") -> KeyCard:
    """Parse a key card strictly and check its signature; :class:`InvalidInputError` if it is
    not one, :class:`VerificationError` if its key did not sign it."""
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidInputError(f"{where}: expected JSON, got: {error}") from error
    if not isinstance(document, dict):
        raise InvalidInputError(f"{where}: expected a JSON object, got {type(document).__name__}")
    if document.get("format") != CARD_FORMAT:
        raise InvalidInputError(
            f"{where}: expected format {CARD_FORMAT!r}, got {document.get('format')!r}"
        )
    role = _string(document, "role", where)
    extra = "verifier_key" if role == ROLE_MEMBER else "allowed_kinds"
    unknown = sorted(set(document) - _CARD_FIELDS - {extra})
    if unknown:
        raise InvalidInputError(
            f"{where}: expected only the fields {sorted(_CARD_FIELDS | {extra})}, "
            f"got unknown {unknown}"
        )
    public_key = _bytes(document, "public_key", where)
    if len(public_key) != 32:
        raise InvalidInputError(
            f"{where}: expected a 32-byte Ed25519 public key, got {len(public_key)} bytes"
        )
    card = KeyCard(
        role=role,
        name=_string(document, "name", where),
        key_id=_string(document, "key_id", where),
        public_key=public_key,
        proof=_bytes(document, "proof", where),
    )
    shown = json.loads(card.to_json())
    if extra in document and document[extra] != shown[extra]:
        raise InvalidInputError(
            f"{where}: expected {extra!r} {shown[extra]!r} for this key and role, "
            f"got {document[extra]!r}"
        )
    return card


def read_card(path: Path) -> KeyCard:
    """The key card in ``path``, parsed and checked."""
    return parse_card(path.read_bytes(), f"key card {path}")


@dataclass(frozen=True)
class GeneratedKey:
    """What a keygen wrote: the private key file (secret) and the public card."""

    card: KeyCard
    key_path: Path
    card_path: Path


def write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 and write ``data``; never overwrites (a private key
    replaced is a key lost), so :class:`AlreadyExistsError` if the file exists."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AlreadyExistsError(
            f"expected no file at {path}, found one: a private key is never overwritten"
        ) from None
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def _write_card(folder: Path, file_stem: str, card: KeyCard) -> Path:
    path = folder / f"{file_stem}{_CARD_SUFFIX}"
    path.write_text(card.to_json())
    return path


def member_keygen(name: str, folder: Path) -> GeneratedKey:
    """Make founding member ``name``'s node key in ``folder`` (``<name>.key``, a signed-note
    signer key, mode 0600) and its card (``<name>.card.json``)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_key = Ed25519PrivateKey.generate()
    card = KeyCard.signed_by(ROLE_MEMBER, name, private_key)
    key_path = folder / f"{name}.key"
    write_secret(key_path, (signer_key(name, private_key) + "\n").encode())
    return GeneratedKey(card, key_path, _write_card(folder, name, card))


def service_keygen(role: str, folder: Path) -> GeneratedKey:
    """Make the genesis key of the service that holds ``role`` (``registrar``: identity,
    ``consent``: consent) in ``folder`` (``<key id>.pem``, PKCS#8, mode 0600) and its card
    (``<key id>.card.json``)."""
    service = SERVICE_ROLES.get(role)
    if service is None:
        raise InvalidInputError(
            f"expected a service role among {sorted(SERVICE_ROLES)}, got {role!r}"
        )
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_key = Ed25519PrivateKey.generate()
    card = KeyCard.signed_by(role, service.owner_id, private_key)
    key_path = folder / service.private_key_file
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_secret(key_path, pem)
    return GeneratedKey(card, key_path, _write_card(folder, service.key_id, card))


def generate_tag_key(folder: Path) -> Path:
    """Make the consortium tag key (32 random bytes) in ``folder``/tag.key, mode 0600."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / TAG_KEY_FILE
    write_secret(path, secrets.token_bytes(TAG_KEY_SIZE))
    return path


def propose(
    cards: Iterable[KeyCard],
    *,
    quorum: int,
    origin: str,
    batch_max: int = 500,
    batch_timeout_ms: int = 200,
) -> ConsortiumConfig:
    """The unsigned genesis of the members and service keys on ``cards`` (members in the
    order of their cards). Only public cards go in: nothing here holds a private key."""
    members: list[Member] = []
    genesis_keys: list[GenesisKey] = []
    for card in cards:
        if card.role == ROLE_MEMBER:
            members.append(Member(card.name, card.verifier_key))
        else:
            service = SERVICE_ROLES[card.role]
            genesis_keys.append(
                GenesisKey(service.key_id, card.name, service.allowed_kinds, card.public_key)
            )
    if not members:
        raise InvalidInputError("expected at least one member's key card, got none")
    return ConsortiumConfig(
        origin=origin,
        quorum=quorum,
        members=tuple(members),
        genesis_keys=tuple(genesis_keys),
        batch_max=batch_max,
        batch_timeout_ms=batch_timeout_ms,
    )


def load_signer(path: Path) -> Signer:
    """The node key in ``path`` (``PRIVATE+KEY+...``)."""
    try:
        text = path.read_text()
    except OSError as error:
        raise InvalidInputError(
            f"cannot read the node key {path}: {error.strerror or error}"
        ) from None
    return new_signer(text.strip())


def founder_key_path(location: Path, config: ConsortiumConfig, member: str | None = None) -> Path:
    """The node key a founder signs ``config`` with: ``location`` if it is a file, else
    ``<member>.key`` in that folder; without ``member``, the one founder's key found there."""
    if location.is_file():
        return location
    if member is not None:
        return location / f"{member}.key"
    names = [m.name for m in config.members]
    found = [name for name in names if (location / f"{name}.key").is_file()]
    if len(found) != 1:
        raise InvalidInputError(
            f"expected the node key of one founder among {names} in {location} "
            f"(<name>.key), got {len(found)}{': ' + ', '.join(found) if found else ''}; "
            "name the founder with --member"
        )
    return location / f"{found[0]}.key"


def sign_with_key(config: ConsortiumConfig, key_path: Path) -> ConsortiumConfig:
    """``config`` signed by the founder whose node key is in ``key_path``."""
    return sign_genesis(config, load_signer(key_path))


def local_ceremony(
    folder: Path,
    members: Sequence[str],
    *,
    quorum: int,
    origin: str,
    batch_max: int = 500,
    batch_timeout_ms: int = 200,
) -> ConsortiumConfig:
    """Play every founder and service in one process, through the steps each would take on its
    own machine: every member and service makes its key in ``folder`` and shares its card, the
    genesis is proposed from the cards read back from their files, every founder signs it, and
    it is checked. The tag key is made in ``folder`` too. Returns the signed genesis (the
    caller writes it)."""
    generated = [member_keygen(name, folder) for name in members]
    generated += [service_keygen(role, folder) for role in SERVICE_ROLES]
    generate_tag_key(folder)
    cards = [read_card(key.card_path) for key in generated]
    genesis = propose(
        cards,
        quorum=quorum,
        origin=origin,
        batch_max=batch_max,
        batch_timeout_ms=batch_timeout_ms,
    )
    for name in members:
        genesis = sign_with_key(genesis, founder_key_path(folder, genesis, name))
    verify_genesis(genesis)
    return genesis
