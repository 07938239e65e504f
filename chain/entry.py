"""Log entries (DESIGN §3.1): signing, batch signing and strict parsing.

An entry is the exact bytes of a serialized ``ChainEntry``. Everything here works on those
bytes as received: the leaf hash and every signature are over bytes, never over a message
serialized again. Parsing checks that an entry is *well formed*; whether its key was valid at
its log position is :mod:`chain.validation`'s business.
"""

from __future__ import annotations

import re
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from chain.errors import InvalidInputError
from chain.hashing import HASH_SIZE, leaf_hash
from chain.proof_build import inclusion_proof, tree_root
from chain.tiles import MemoryHashStore
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2

ENTRY_SIGNATURE_CONTEXT = b"swiftchain/entry/v1\n"
BATCH_SIGNATURE_CONTEXT = b"swiftchain/batch/v1\n"
SIGNATURE_SIZE = 64
PUBLIC_KEY_SIZE = 32

KIND_NAMES: dict[int, str] = {
    common_pb2.ENTRY_KIND_KEY: "KEY",
    common_pb2.ENTRY_KIND_RECORD: "RECORD",
    common_pb2.ENTRY_KIND_CONSENT: "CONSENT",
    common_pb2.ENTRY_KIND_ACCESS: "ACCESS",
}
KINDS_BY_NAME: dict[str, int] = {name: kind for kind, name in KIND_NAMES.items()}
_DETAIL_FOR_KIND = {
    common_pb2.ENTRY_KIND_KEY: "key",
    common_pb2.ENTRY_KIND_RECORD: "record",
    common_pb2.ENTRY_KIND_CONSENT: "consent",
    common_pb2.ENTRY_KIND_ACCESS: "access",
}
_KEY_ID = re.compile(r"[A-Za-z0-9._:#/-]{1,128}")
_REASON_CODE = re.compile(r"[a-z0-9-]{1,32}")
_UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def entry_signing_input(body: bytes) -> bytes:
    """The bytes a single-entry signature covers."""
    return ENTRY_SIGNATURE_CONTEXT + body


def batch_signing_input(size: int, root: bytes) -> bytes:
    """The bytes a batch root signature covers."""
    return BATCH_SIGNATURE_CONTEXT + struct.pack(">Q", size) + root


def new_entry_id() -> str:
    """A fresh entry id: a random UUID (version 4) as lower-case text."""
    return str(uuid.uuid4())


class EntrySigner:
    """Signs entry bodies with one Ed25519 key registered on the log as ``key_id``."""

    def __init__(self, key_id: str, private_key: Ed25519PrivateKey) -> None:
        if not _KEY_ID.fullmatch(key_id):
            raise InvalidInputError(
                f"expected a key id of 1-128 characters [A-Za-z0-9._:#/-], got {key_id!r}"
            )
        self.key_id = key_id
        self._private_key = private_key

    def __repr__(self) -> str:  # never shows the private key
        return f"EntrySigner(key_id={self.key_id!r})"

    def sign_entry(self, body: bytes) -> bytes:
        """One ``ChainEntry`` (serialized) with a single-entry signature over ``body``."""
        signature = self._private_key.sign(entry_signing_input(body))
        return entry_pb2.ChainEntry(
            body=body, key_id=self.key_id, signature=signature
        ).SerializeToString()

    def sign_batch(self, bodies: Sequence[bytes]) -> list[bytes]:
        """One ``ChainEntry`` per body, all covered by one signature over their batch root."""
        if not bodies:
            raise InvalidInputError("expected at least one entry body in a batch, got none")
        tree = MemoryHashStore()
        tree.extend(leaf_hash(body) for body in bodies)
        size = len(bodies)
        root = tree_root(size, tree)
        root_signature = self._private_key.sign(batch_signing_input(size, root))
        entries = []
        for index, body in enumerate(bodies):
            auth = entry_pb2.BatchAuth(
                index=index,
                size=size,
                path=inclusion_proof(index, size, tree),
                root_signature=root_signature,
            )
            entries.append(
                entry_pb2.ChainEntry(body=body, key_id=self.key_id, batch=auth).SerializeToString()
            )
        return entries


@dataclass(frozen=True, eq=False)
class ParsedEntry:
    """A well-formed entry: its exact bytes and the parsed messages."""

    raw: bytes
    entry: entry_pb2.ChainEntry
    body: entry_pb2.EntryBody

    @cached_property
    def leaf_hash(self) -> bytes:
        """RFC 9162 leaf hash of the exact entry bytes."""
        return leaf_hash(self.raw)

    @property
    def entry_id(self) -> str:
        """The body's entry id."""
        return self.body.entry_id

    @property
    def kind_name(self) -> str:
        """KEY, RECORD, CONSENT or ACCESS."""
        return KIND_NAMES[self.body.kind]


def _no_unknown_fields(message: Message, what: str) -> None:
    unknown = UnknownFieldSet(message)
    if len(unknown):
        numbers = sorted({unknown[i].field_number for i in range(len(unknown))})
        raise InvalidInputError(
            f"{what}: expected only fields of swiftchain.chain.v1, got unknown field numbers "
            f"{numbers}"
        )


def _exact(value: bytes, size: int, what: str) -> None:
    if len(value) != size:
        raise InvalidInputError(f"expected {what} of {size} bytes, got {len(value)}")


def _check_auth(entry: entry_pb2.ChainEntry) -> None:
    if not _KEY_ID.fullmatch(entry.key_id):
        raise InvalidInputError(
            f"expected a key id of 1-128 characters [A-Za-z0-9._:#/-], got {entry.key_id!r}"
        )
    auth = entry.WhichOneof("auth")
    if auth == "signature":
        _exact(entry.signature, SIGNATURE_SIZE, "an Ed25519 signature")
        return
    if auth != "batch":
        raise InvalidInputError("expected a signature or batch authentication, got neither")
    batch = entry.batch
    _no_unknown_fields(batch, "batch auth")
    if batch.size < 1 or batch.index >= batch.size:
        raise InvalidInputError(
            f"expected batch index < size and size >= 1, got index {batch.index}, size {batch.size}"
        )
    for node in batch.path:
        _exact(node, HASH_SIZE, "a batch path hash")
    _exact(batch.root_signature, SIGNATURE_SIZE, "an Ed25519 batch root signature")


def _check_key_detail(body: entry_pb2.EntryBody) -> None:
    detail = body.key
    if detail.action not in (
        entry_pb2.KEY_ACTION_REGISTER,
        entry_pb2.KEY_ACTION_ROTATE,
        entry_pb2.KEY_ACTION_REVOKE,
    ):
        raise InvalidInputError(f"expected a KEY action, got {detail.action}")
    if not detail.owner_id:
        raise InvalidInputError("expected a key owner id, got an empty one")
    if detail.owner_kind == entry_pb2.KEY_OWNER_KIND_UNSPECIFIED:
        raise InvalidInputError("expected a key owner kind, got KEY_OWNER_KIND_UNSPECIFIED")
    if not _KEY_ID.fullmatch(detail.key_id):
        raise InvalidInputError(
            f"expected a key id of 1-128 characters [A-Za-z0-9._:#/-], got {detail.key_id!r}"
        )
    if detail.action == entry_pb2.KEY_ACTION_REVOKE:
        if detail.public_key:
            raise InvalidInputError("expected no public key on a REVOKE, got one")
        return
    _exact(detail.public_key, PUBLIC_KEY_SIZE, "an Ed25519 public key")
    if not detail.allowed_kinds:
        raise InvalidInputError("expected at least one allowed entry kind for a key, got none")
    for kind in detail.allowed_kinds:
        if kind not in KIND_NAMES:
            raise InvalidInputError(f"expected known allowed entry kinds, got {kind}")
    if (detail.action == entry_pb2.KEY_ACTION_ROTATE) != bool(detail.replaces_key_id):
        raise InvalidInputError("expected replaces_key_id on ROTATE and only on ROTATE")


def _check_record_detail(body: entry_pb2.EntryBody) -> None:
    detail = body.record
    _exact(detail.record_tag, HASH_SIZE, "a record tag")
    if detail.version < 1:
        raise InvalidInputError(f"expected a record version >= 1, got {detail.version}")
    if detail.action == common_pb2.RECORD_ACTION_UNSPECIFIED:
        raise InvalidInputError("expected a record action, got RECORD_ACTION_UNSPECIFIED")
    if detail.reason_code and not _REASON_CODE.fullmatch(detail.reason_code):
        raise InvalidInputError(
            f"expected a reason code of 1-32 characters [a-z0-9-], got {detail.reason_code!r}"
        )


def _check_consent_detail(body: entry_pb2.EntryBody) -> None:
    detail = body.consent
    if detail.directive_type == entry_pb2.DIRECTIVE_TYPE_UNSPECIFIED:
        raise InvalidInputError("expected a directive type, got DIRECTIVE_TYPE_UNSPECIFIED")
    if not _UUID_TEXT.fullmatch(detail.directive_id):
        raise InvalidInputError(
            f"expected a directive id as a lower-case UUID v4, got {detail.directive_id!r}"
        )
    if detail.version < 1:
        raise InvalidInputError(f"expected a directive version >= 1, got {detail.version}")
    if detail.status == entry_pb2.DIRECTIVE_STATUS_UNSPECIFIED:
        raise InvalidInputError("expected a directive status, got DIRECTIVE_STATUS_UNSPECIFIED")
    _exact(detail.signer_key_tag, HASH_SIZE, "a signer key tag")
    _exact(detail.signer_signature, SIGNATURE_SIZE, "the patient's Ed25519 signature")


def _check_access_detail(body: entry_pb2.EntryBody) -> None:
    detail = body.access
    if detail.decision == common_pb2.ACCESS_DECISION_UNSPECIFIED:
        raise InvalidInputError("expected an access decision, got ACCESS_DECISION_UNSPECIFIED")
    if not detail.requester_id:
        raise InvalidInputError("expected a requester id, got an empty one")
    if detail.reason == common_pb2.ACCESS_REASON_UNSPECIFIED:
        raise InvalidInputError("expected an access reason, got ACCESS_REASON_UNSPECIFIED")


_DETAIL_CHECKS = {
    "key": _check_key_detail,
    "record": _check_record_detail,
    "consent": _check_consent_detail,
    "access": _check_access_detail,
}


def _check_body(body: entry_pb2.EntryBody) -> None:
    if not _UUID_TEXT.fullmatch(body.entry_id):
        raise InvalidInputError(
            f"expected an entry id as a lower-case UUID v4, got {body.entry_id!r}"
        )
    expected_detail: str | None = _DETAIL_FOR_KIND.get(body.kind)
    if expected_detail is None:
        raise InvalidInputError(f"expected a known entry kind, got {body.kind}")
    detail: str | None = body.WhichOneof("detail")
    if detail != expected_detail:
        raise InvalidInputError(
            f"expected the {expected_detail!r} detail for a {KIND_NAMES[body.kind]} entry, "
            f"got {detail!r}"
        )
    if not body.submitter_id:
        raise InvalidInputError("expected a submitter id, got an empty one")
    if not body.HasField("time"):
        raise InvalidInputError("expected a time, got none")
    _exact(body.commitment, HASH_SIZE, "a commitment")
    if body.kind == common_pb2.ENTRY_KIND_KEY:
        if body.subject_tag:
            raise InvalidInputError("expected no subject tag on a KEY entry, got one")
    else:
        _exact(body.subject_tag, HASH_SIZE, "a subject tag")
    for reference in body.references:
        if reference.kind == entry_pb2.REFERENCE_KIND_UNSPECIFIED:
            raise InvalidInputError("expected a reference kind, got REFERENCE_KIND_UNSPECIFIED")
        if reference.commitment:
            _exact(reference.commitment, HASH_SIZE, "a referenced commitment")
    _DETAIL_CHECKS[expected_detail](body)
    _no_unknown_fields(getattr(body, expected_detail), f"{expected_detail} detail")


def parse_entry(raw: bytes) -> ParsedEntry:
    """Parse and check an entry's bytes; raise :class:`InvalidInputError` saying what is wrong."""
    entry = entry_pb2.ChainEntry()
    body = entry_pb2.EntryBody()
    try:
        entry.ParseFromString(raw)
    except DecodeError as error:
        raise InvalidInputError(
            f"expected a ChainEntry protobuf, got undecodable bytes: {error}"
        ) from None
    _no_unknown_fields(entry, "entry")
    _check_auth(entry)
    try:
        body.ParseFromString(entry.body)
    except DecodeError as error:
        raise InvalidInputError(
            f"expected an EntryBody protobuf, got undecodable bytes: {error}"
        ) from None
    _no_unknown_fields(body, "entry body")
    _check_body(body)
    return ParsedEntry(raw=bytes(raw), entry=entry, body=body)
