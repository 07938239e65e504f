"""The consortium configuration: the public facts every node and verifier agrees on.

It is a JSON document (``swiftchain-consortium/v1``) holding the log's origin, the members and
their signed-note verifier keys, the quorum, the block-cutting parameters (which must be equal on
every node for the cuts to be deterministic) and the genesis keys that may sign before any KEY
entry exists (the registrar's). It holds no secret.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from chain.errors import InvalidInputError
from chain.note import Verifier, new_verifier

FORMAT = "swiftchain-consortium/v1"


@dataclass(frozen=True)
class Member:
    """A consortium member: the name its node signs with, and its verifier key."""

    name: str
    verifier_key: str

    @property
    def verifier(self) -> Verifier:
        """The parsed verifier key."""
        return new_verifier(self.verifier_key)


@dataclass(frozen=True)
class GenesisKey:
    """A key valid from log position 0, before any KEY entry (the registrar's)."""

    key_id: str
    owner_id: str
    #: Entry kinds the key may sign, by name: "KEY", "RECORD", "CONSENT", "ACCESS".
    allowed_kinds: tuple[str, ...]
    public_key: bytes


@dataclass(frozen=True)
class ConsortiumConfig:
    """Everything public that a node or an offline verifier needs to agree on."""

    origin: str
    quorum: int
    members: tuple[Member, ...]
    genesis_keys: tuple[GenesisKey, ...]
    batch_max: int = 500
    batch_timeout_ms: int = 200

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise InvalidInputError(f"expected a one-line origin, got {self.origin!r}")
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise InvalidInputError(f"expected distinct member names, got {names}")
        if not 1 <= self.quorum <= len(self.members):
            raise InvalidInputError(
                f"expected a quorum between 1 and {len(self.members)} members, got {self.quorum}"
            )
        if self.batch_max < 1 or self.batch_timeout_ms < 1:
            raise InvalidInputError(
                "expected batch_max >= 1 and batch_timeout_ms >= 1, "
                f"got {self.batch_max} and {self.batch_timeout_ms}"
            )
        for member in self.members:
            member.verifier  # noqa: B018 - parse now so a bad key fails at load time

    @property
    def verifiers(self) -> list[Verifier]:
        """The members' verifiers."""
        return [m.verifier for m in self.members]

    def member(self, name: str) -> Member:
        """The member called ``name``."""
        for member in self.members:
            if member.name == name:
                return member
        raise InvalidInputError(
            f"expected one of the members {[m.name for m in self.members]}, got {name!r}"
        )

    def to_json(self) -> str:
        """The config as pretty JSON (keys sorted, so equal configs give equal bytes)."""
        document = {
            "format": FORMAT,
            "origin": self.origin,
            "quorum": self.quorum,
            "batch_max": self.batch_max,
            "batch_timeout_ms": self.batch_timeout_ms,
            "members": [{"name": m.name, "verifier_key": m.verifier_key} for m in self.members],
            "genesis_keys": [
                {
                    "key_id": k.key_id,
                    "owner_id": k.owner_id,
                    "allowed_kinds": list(k.allowed_kinds),
                    "public_key": base64.b64encode(k.public_key).decode(),
                }
                for k in self.genesis_keys
            ],
        }
        return json.dumps(document, indent=2, sort_keys=True) + "\n"


def _field(document: dict[str, Any], name: str, kind: type, where: str) -> Any:
    if name not in document:
        raise InvalidInputError(f"{where}: expected field {name!r}, got none")
    value = document[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidInputError(
            f"{where}: expected {name!r} to be {kind.__name__}, got {type(value).__name__}"
        )
    return value


_KIND_NAMES = ("KEY", "RECORD", "CONSENT", "ACCESS")


def _allowed_kinds(value: list[Any]) -> tuple[str, ...]:
    for kind in value:
        if kind not in _KIND_NAMES:
            raise InvalidInputError(
                f"consortium config genesis key: expected allowed kinds among {_KIND_NAMES}, "
                f"got {kind!r}"
            )
    return tuple(value)


def parse_consortium(text: str | bytes) -> ConsortiumConfig:
    """Parse a ``swiftchain-consortium/v1`` JSON document, strictly."""
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidInputError(f"consortium config: expected JSON, got: {error}") from error
    if not isinstance(document, dict):
        raise InvalidInputError(
            f"consortium config: expected a JSON object, got {type(document).__name__}"
        )
    where = "consortium config"
    if document.get("format") != FORMAT:
        raise InvalidInputError(
            f"{where}: expected format {FORMAT!r}, got {document.get('format')!r}"
        )
    members = tuple(
        Member(
            name=_field(m, "name", str, f"{where} member"),
            verifier_key=_field(m, "verifier_key", str, f"{where} member"),
        )
        for m in _field(document, "members", list, where)
    )
    genesis: list[GenesisKey] = []
    for k in _field(document, "genesis_keys", list, where):
        raw = _field(k, "public_key", str, f"{where} genesis key")
        try:
            public_key = base64.b64decode(raw, validate=True)
        except binascii.Error as error:
            raise InvalidInputError(
                f"{where} genesis key: expected base64 public_key, got {raw!r}"
            ) from error
        if len(public_key) != 32:
            raise InvalidInputError(
                f"{where} genesis key: expected a 32-byte Ed25519 key, got {len(public_key)} bytes"
            )
        genesis.append(
            GenesisKey(
                key_id=_field(k, "key_id", str, f"{where} genesis key"),
                owner_id=_field(k, "owner_id", str, f"{where} genesis key"),
                allowed_kinds=_allowed_kinds(
                    _field(k, "allowed_kinds", list, f"{where} genesis key")
                ),
                public_key=public_key,
            )
        )
    return ConsortiumConfig(
        origin=_field(document, "origin", str, where),
        quorum=_field(document, "quorum", int, where),
        members=members,
        genesis_keys=tuple(genesis),
        batch_max=document.get("batch_max", 500),
        batch_timeout_ms=document.get("batch_timeout_ms", 200),
    )
