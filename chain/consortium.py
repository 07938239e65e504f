"""The consortium configuration: the public facts every node and verifier agrees on.

It is a JSON document (``swiftchain-consortium/v1``) holding the log's origin, the members and
their signed-note verifier keys, the quorum, the block-cutting parameters (which must be equal on
every node for the cuts to be deterministic) and the genesis keys that may sign before any KEY
entry exists (the registrar's). It holds no secret.

It is also the consortium's genesis: every founding member (every member it lists) signs its
canonical bytes (:meth:`ConsortiumConfig.genesis_body`: the document without the signatures) with
its node key, and the signatures travel in the document as ``founder_signatures``. Parsing checks
only their form; :mod:`chain.genesis` checks them.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from chain.entry import is_key_id
from chain.entry_rules import (
    KINDS_BY_NAME,
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    SMALL_ORDER_KEY_MESSAGE,
    is_small_order_public_key,
)
from chain.errors import InvalidInputError
from chain.note import Verifier, new_verifier
from swiftchain.chain.v1 import consortium_pb2, entry_pb2
from swiftchain.common.v1 import common_pb2

FORMAT = "swiftchain-consortium/v1"
_KIND_NAMES = ("KEY", "RECORD", "CONSENT", "ACCESS")


@dataclass(frozen=True)
class Member:
    """A consortium member: the name its node signs with, and its verifier key."""

    name: str
    verifier_key: str

    def __post_init__(self) -> None:
        named = self.verifier.name  # parses the key: a bad one fails at load time
        if named != self.name:
            raise InvalidInputError(
                f"expected member {self.name!r}'s verifier key to be named {self.name!r}, "
                f"got {named!r}"
            )

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

    def __post_init__(self) -> None:
        where = "consortium config genesis key"
        if not is_key_id(self.key_id):
            raise InvalidInputError(
                f"{where}: expected a key id of 1-128 characters [A-Za-z0-9._:#/-], "
                f"got {self.key_id!r}"
            )
        if not self.owner_id:
            raise InvalidInputError(f"{where} {self.key_id!r}: expected an owner id, got ''")
        if not self.allowed_kinds:
            raise InvalidInputError(
                f"{where} {self.key_id!r}: expected at least one allowed kind, got none"
            )
        for kind in self.allowed_kinds:
            if kind not in KINDS_BY_NAME:
                raise InvalidInputError(
                    f"{where}: expected allowed kinds among {_KIND_NAMES}, got {kind!r}"
                )
        if len(self.public_key) != PUBLIC_KEY_SIZE:
            raise InvalidInputError(
                f"{where}: expected a 32-byte Ed25519 key, got {len(self.public_key)} bytes"
            )
        if is_small_order_public_key(self.public_key):
            raise InvalidInputError(f"{where} {self.key_id!r}: {SMALL_ORDER_KEY_MESSAGE}")


@dataclass(frozen=True)
class FounderSignature:
    """A founding member's signature of the genesis (see :mod:`chain.genesis`)."""

    #: The founder's member name.
    name: str
    #: The raw 64-byte Ed25519 signature by the founder's node key.
    signature: bytes

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidInputError("consortium config founder signature: expected a name, got ''")
        if len(self.signature) != SIGNATURE_SIZE:
            raise InvalidInputError(
                f"consortium config founder signature by {self.name!r}: expected "
                f"{SIGNATURE_SIZE} bytes, got {len(self.signature)}"
            )


@dataclass(frozen=True)
class ConsortiumConfig:
    """Everything public that a node or an offline verifier needs to agree on."""

    origin: str
    quorum: int
    members: tuple[Member, ...]
    genesis_keys: tuple[GenesisKey, ...]
    batch_max: int = 500
    batch_timeout_ms: int = 200
    #: The founders' signatures of :meth:`genesis_body`, not part of what they sign.
    founder_signatures: tuple[FounderSignature, ...] = ()

    def __post_init__(self) -> None:
        # The origin is the first line of every checkpoint, which allows no control character.
        if not self.origin or any(ch < " " for ch in self.origin):
            raise InvalidInputError(
                f"expected an origin without control characters, got {self.origin!r}"
            )
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
        key_ids = [k.key_id for k in self.genesis_keys]
        if len(set(key_ids)) != len(key_ids):
            raise InvalidInputError(f"expected distinct genesis key ids, got {key_ids}")
        signers = [s.name for s in self.founder_signatures]
        if len(set(signers)) != len(signers):
            raise InvalidInputError(f"expected one founder signature per founder, got {signers}")

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

    def _body(self) -> dict[str, Any]:
        return {
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

    def genesis_body(self) -> bytes:
        """The canonical bytes the founders sign: the document without ``founder_signatures``
        as compact JSON, keys sorted, ASCII only (every other character escaped as ``\\uXXXX``).
        Every value is a string, an integer or a list or object of them, so equal configs give
        equal bytes on any JSON encoder that sorts keys this way."""
        text = json.dumps(self._body(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return text.encode("ascii")

    def to_json(self) -> str:
        """The config as pretty JSON (keys sorted, so equal configs give equal bytes)."""
        document = self._body()
        document["founder_signatures"] = [
            {"name": s.name, "signature": base64.b64encode(s.signature).decode()}
            for s in self.founder_signatures
        ]
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


def _object(value: Any, fields: frozenset[str], where: str) -> dict[str, Any]:
    """``value`` as a JSON object holding only ``fields`` (misspelt fields are not ignored)."""
    if not isinstance(value, dict):
        raise InvalidInputError(f"{where}: expected a JSON object, got {type(value).__name__}")
    unknown = sorted(set(value) - fields)
    if unknown:
        raise InvalidInputError(
            f"{where}: expected only the fields {sorted(fields)}, got unknown {unknown}"
        )
    return value


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise InvalidInputError(
                f"consortium config: expected each field once, got {key!r} twice"
            )
        document[key] = value
    return document


_TOP_FIELDS = frozenset(
    (
        "format",
        "origin",
        "quorum",
        "batch_max",
        "batch_timeout_ms",
        "members",
        "genesis_keys",
        "founder_signatures",
    )
)
_MEMBER_FIELDS = frozenset(("name", "verifier_key"))
_GENESIS_FIELDS = frozenset(("key_id", "owner_id", "allowed_kinds", "public_key"))
_SIGNATURE_FIELDS = frozenset(("name", "signature"))


def _base64_field(document: dict[str, Any], name: str, where: str) -> bytes:
    raw = _field(document, name, str, where)
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error as error:
        raise InvalidInputError(f"{where}: expected base64 {name}, got {raw!r}") from error


def _founder_signatures(document: dict[str, Any], where: str) -> tuple[FounderSignature, ...]:
    """The ``founder_signatures`` of a document, none if the field is absent (a genesis not
    signed yet)."""
    if "founder_signatures" not in document:
        return ()
    signatures = []
    for value in _field(document, "founder_signatures", list, where):
        s = _object(value, _SIGNATURE_FIELDS, f"{where} founder signature")
        signatures.append(
            FounderSignature(
                name=_field(s, "name", str, f"{where} founder signature"),
                signature=_base64_field(s, "signature", f"{where} founder signature"),
            )
        )
    return tuple(signatures)


def parse_consortium(text: str | bytes) -> ConsortiumConfig:
    """Parse a ``swiftchain-consortium/v1`` JSON document, strictly: every field of the right
    type, no unknown or repeated field (a misspelt ``batch_max`` would silently split the
    consortium's blocks), and every rule of :class:`ConsortiumConfig`."""
    try:
        document = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidInputError(f"consortium config: expected JSON, got: {error}") from error
    where = "consortium config"
    document = _object(document, _TOP_FIELDS, where)
    if document.get("format") != FORMAT:
        raise InvalidInputError(
            f"{where}: expected format {FORMAT!r}, got {document.get('format')!r}"
        )
    members = []
    for value in _field(document, "members", list, where):
        m = _object(value, _MEMBER_FIELDS, f"{where} member")
        members.append(
            Member(
                name=_field(m, "name", str, f"{where} member"),
                verifier_key=_field(m, "verifier_key", str, f"{where} member"),
            )
        )
    genesis: list[GenesisKey] = []
    for value in _field(document, "genesis_keys", list, where):
        k = _object(value, _GENESIS_FIELDS, f"{where} genesis key")
        public_key = _base64_field(k, "public_key", f"{where} genesis key")
        kinds = _field(k, "allowed_kinds", list, f"{where} genesis key")
        for kind in kinds:
            if not isinstance(kind, str):
                raise InvalidInputError(
                    f"{where} genesis key: expected allowed kinds among {_KIND_NAMES}, got {kind!r}"
                )
        genesis.append(
            GenesisKey(
                key_id=_field(k, "key_id", str, f"{where} genesis key"),
                owner_id=_field(k, "owner_id", str, f"{where} genesis key"),
                allowed_kinds=tuple(kinds),
                public_key=public_key,
            )
        )
    optional = {
        name: _field(document, name, int, where)
        for name in ("batch_max", "batch_timeout_ms")
        if name in document
    }
    return ConsortiumConfig(
        origin=_field(document, "origin", str, where),
        quorum=_field(document, "quorum", int, where),
        members=tuple(members),
        genesis_keys=tuple(genesis),
        founder_signatures=_founder_signatures(document, where),
        **optional,
    )


def genesis_key_detail(key: GenesisKey) -> entry_pb2.KeyDetail:
    """A genesis key as the KeyDetail a KEY entry would carry (owned by a service)."""
    return entry_pb2.KeyDetail(
        action=entry_pb2.KEY_ACTION_REGISTER,
        owner_id=key.owner_id,
        owner_kind=entry_pb2.KEY_OWNER_KIND_SERVICE,
        key_id=key.key_id,
        public_key=key.public_key,
        reason=entry_pb2.KEY_REASON_NEW_KEY,
        allowed_kinds=[common_pb2.EntryKind.ValueType(KINDS_BY_NAME[n]) for n in key.allowed_kinds],
    )


def consortium_message(config: ConsortiumConfig) -> consortium_pb2.Consortium:
    """The protobuf form of the consortium config."""
    message = consortium_pb2.Consortium(
        origin=config.origin,
        quorum=config.quorum,
        batch_max=config.batch_max,
        members=[
            consortium_pb2.ConsortiumMember(name=m.name, verifier_key=m.verifier_key)
            for m in config.members
        ],
        genesis_keys=[genesis_key_detail(k) for k in config.genesis_keys],
    )
    message.batch_timeout.FromMilliseconds(config.batch_timeout_ms)
    return message
