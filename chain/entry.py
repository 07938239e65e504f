"""Log entries (DESIGN §3.1): signing, batch signing and strict parsing.

An entry is the exact bytes of a serialized ``ChainEntry``. Everything here works on those
bytes as received: the leaf hash and every signature are over bytes, never over a message
serialized again. Parsing checks that an entry is *well formed* (every rule of
``protos/swiftchain/chain/v1/entry.proto`` that needs no log state); whether its key was valid
at its log position is :mod:`chain.validation`'s business.

:func:`parse_entry` runs for every entry on every node, so it reads each protobuf field once and
keeps the checks inline; the field formats and each kind's detail rules are in
:mod:`chain.entry_rules`, and the rules and their messages are pinned by ``tests/unit/chain``.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from chain.entry_rules import (
    _DETAIL_CHECKS,
    _REFERENCE_KINDS,
    KIND_NAMES,
    SIGNATURE_SIZE,
    _bad_key_id,
    _bad_party_id,
    _exact,
    _is_key_id,
    _is_party_id,
    _is_uuid,
    _unknown_fields_error,
)
from chain.errors import InvalidInputError
from chain.hashing import HASH_SIZE, leaf_hash
from chain.limits import (
    MAX_BATCH_PATH,
    MAX_ENTRY_BYTES,
    MAX_REFERENCES,
    TIME_RANGE_TEXT,
    shown,
    time_in_range,
)
from chain.proof_build import inclusion_proof, tree_root
from chain.tiles import MemoryHashStore
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2

ENTRY_SIGNATURE_CONTEXT = b"swiftchain/entry/v1\n"
BATCH_SIGNATURE_CONTEXT = b"swiftchain/batch/v1\n"

_DETAIL_FOR_KIND: dict[int, str] = {
    common_pb2.ENTRY_KIND_KEY: "key",
    common_pb2.ENTRY_KIND_RECORD: "record",
    common_pb2.ENTRY_KIND_CONSENT: "consent",
    common_pb2.ENTRY_KIND_ACCESS: "access",
    common_pb2.ENTRY_KIND_MEMBERSHIP: "membership",
}
# Entries about parties of the consortium rather than a patient: no subject tag.
_NO_SUBJECT_KINDS = frozenset((common_pb2.ENTRY_KIND_KEY, common_pb2.ENTRY_KIND_MEMBERSHIP))


class EntryTooLargeError(InvalidInputError):
    """An entry over :data:`chain.limits.MAX_ENTRY_BYTES` (rejection reason TOO_LARGE)."""


def is_key_id(text: str) -> bool:
    """True if ``text`` is a well-formed key id: 1-128 characters of ``[A-Za-z0-9._:#/-]``."""
    return _is_key_id(text)


def entry_signing_input(body: bytes) -> bytes:
    """The bytes a single-entry signature covers."""
    return ENTRY_SIGNATURE_CONTEXT + body


def batch_signing_input(size: int, root: bytes) -> bytes:
    """The bytes a batch root signature covers."""
    return BATCH_SIGNATURE_CONTEXT + struct.pack(">Q", size) + root


def read_body(raw: bytes) -> entry_pb2.EntryBody:
    """The ``EntryBody`` inside entry bytes, without checking anything (for entries validated
    already, or to name a rejected one). Raises ``DecodeError`` for undecodable bytes."""
    entry = entry_pb2.ChainEntry()
    entry.ParseFromString(raw)
    body = entry_pb2.EntryBody()
    body.ParseFromString(entry.body)
    return body


def new_entry_id() -> str:
    """A fresh entry id: a random UUID (version 4) as lower-case text."""
    return str(uuid.uuid4())


class EntrySigner:
    """Signs entry bodies with one Ed25519 key registered on the log as ``key_id``."""

    def __init__(self, key_id: str, private_key: Ed25519PrivateKey) -> None:
        if not _is_key_id(key_id):
            raise _bad_key_id(key_id)
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


class ParsedEntry:
    """A well-formed entry, made by :func:`parse_entry`: its exact bytes and what validation reads.

    Read-only by convention. ``entry`` and ``body`` are the parsed ``ChainEntry`` and
    ``EntryBody``; they are parsed again from the bytes on first use (and then kept), because a
    node holds thousands of entries between two cuts and rarely needs the messages once the
    checks are done: the plain fields below are what validation reads.
    """

    __slots__ = (
        "_body",
        "_entry",
        "_leaf_hash",
        "batch_index",
        "batch_path",
        "batch_size",
        "body_bytes",
        "entry_id",
        "key_id",
        "kind",
        "raw",
        "root_signature",
        "signature",
        "submitter_id",
    )

    def __init__(
        self,
        raw: bytes,
        body_bytes: bytes,
        entry_id: str,
        kind: int,
        submitter_id: str,
        key_id: str,
        signature: bytes,
        batch_index: int,
        batch_size: int,
        root_signature: bytes,
        batch_path: tuple[bytes, ...],
    ) -> None:
        #: The entry's exact bytes (a serialized ``ChainEntry``).
        self.raw = raw
        #: ``entry.body``: the exact ``EntryBody`` bytes that were signed.
        self.body_bytes = body_bytes
        self.entry_id = entry_id
        #: ``body.kind`` (a ``common_pb2.EntryKind`` value).
        self.kind = kind
        self.submitter_id = submitter_id
        self.key_id = key_id
        #: The single-entry signature; empty for batch authentication.
        self.signature = signature
        #: ``entry.batch`` fields; ``batch_size`` is 0 for a single-signed entry.
        self.batch_index = batch_index
        self.batch_size = batch_size
        self.root_signature = root_signature
        self.batch_path = batch_path
        self._entry: entry_pb2.ChainEntry | None = None
        self._body: entry_pb2.EntryBody | None = None
        self._leaf_hash: bytes | None = None

    def __repr__(self) -> str:
        return f"ParsedEntry(entry_id={self.entry_id!r}, kind={self.kind_name}, {len(self.raw)} B)"

    @property
    def entry(self) -> entry_pb2.ChainEntry:
        """The parsed ``ChainEntry`` (do not modify it)."""
        entry = self._entry
        if entry is None:
            entry = self._entry = entry_pb2.ChainEntry.FromString(self.raw)
        return entry

    @property
    def body(self) -> entry_pb2.EntryBody:
        """The parsed ``EntryBody`` (do not modify it)."""
        body = self._body
        if body is None:
            body = self._body = entry_pb2.EntryBody.FromString(self.body_bytes)
        return body

    @property
    def is_batch(self) -> bool:
        """True for batch authentication, False for a single-entry signature."""
        return self.batch_size > 0

    @property
    def leaf_hash(self) -> bytes:
        """RFC 9162 leaf hash of the exact entry bytes (computed once)."""
        h = self._leaf_hash
        if h is None:
            h = self._leaf_hash = leaf_hash(self.raw)
        return h

    @property
    def kind_name(self) -> str:
        """KEY, RECORD, CONSENT, ACCESS or MEMBERSHIP."""
        return KIND_NAMES[self.kind]


_Auth = tuple[str, bytes, int, int, bytes, tuple[bytes, ...]]


def _check_auth(entry: entry_pb2.ChainEntry) -> _Auth:
    """Check the authentication part; return (key id, signature, batch index, batch size,
    root signature, batch path), with size 0 for a single-entry signature."""
    key_id = entry.key_id
    if not _is_key_id(key_id):
        raise _bad_key_id(key_id)
    auth = entry.WhichOneof("auth")
    if auth == "signature":
        signature = entry.signature
        _exact(signature, SIGNATURE_SIZE, "an Ed25519 signature")
        return key_id, signature, 0, 0, b"", ()
    if auth != "batch":
        raise InvalidInputError("expected a signature or batch authentication, got neither")
    batch = entry.batch
    if len(UnknownFieldSet(batch)):
        raise _unknown_fields_error(batch, "batch auth")
    index, size = batch.index, batch.size
    if size < 1 or index >= size:
        raise InvalidInputError(
            f"expected batch index < size and size >= 1, got index {index}, size {size}"
        )
    path = tuple(batch.path)
    if len(path) > MAX_BATCH_PATH:
        raise InvalidInputError(
            f"expected a batch path of at most {MAX_BATCH_PATH} hashes, got {len(path)}"
        )
    if path and {*map(len, path)} != {HASH_SIZE}:
        for node in path:
            _exact(node, HASH_SIZE, "a batch path hash")
    root_signature = batch.root_signature
    _exact(root_signature, SIGNATURE_SIZE, "an Ed25519 batch root signature")
    return key_id, b"", index, size, root_signature, path


def _check_body(body: entry_pb2.EntryBody) -> tuple[str, int, str]:
    """Check the body; return (entry id, kind, submitter id)."""
    entry_id = body.entry_id
    if not _is_uuid(entry_id):
        raise InvalidInputError(
            f"expected an entry id as a lower-case UUID v4, got {shown(entry_id)}"
        )
    kind = body.kind
    expected_detail: str | None = _DETAIL_FOR_KIND.get(kind)
    if expected_detail is None:
        raise InvalidInputError(f"expected a known entry kind, got {kind}")
    detail_name = body.WhichOneof("detail")
    if detail_name != expected_detail:
        raise InvalidInputError(
            f"expected the {expected_detail!r} detail for a {KIND_NAMES[kind]} entry, "
            f"got {detail_name!r}"
        )
    submitter_id = body.submitter_id
    if not _is_party_id(submitter_id):
        raise _bad_party_id("a submitter id", submitter_id)
    if not body.HasField("time"):
        raise InvalidInputError("expected a time, got none")
    time = body.time
    if len(UnknownFieldSet(time)):
        raise _unknown_fields_error(time, "time")
    seconds, nanos = time.seconds, time.nanos
    if not time_in_range(seconds, nanos):
        raise InvalidInputError(f"expected {TIME_RANGE_TEXT}, got seconds {seconds}, nanos {nanos}")
    _exact(body.commitment, HASH_SIZE, "a commitment")
    subject_tag = body.subject_tag
    if kind in _NO_SUBJECT_KINDS and not (
        kind == common_pb2.ENTRY_KIND_KEY
        and body.key.owner_kind == entry_pb2.KEY_OWNER_KIND_PATIENT
    ):
        if subject_tag:
            raise InvalidInputError(
                f"expected no subject tag on a {KIND_NAMES[kind]} entry, got one"
            )
    else:
        _exact(subject_tag, HASH_SIZE, "a subject tag")
    references = body.references
    if references:
        if len(references) > MAX_REFERENCES:
            raise InvalidInputError(
                f"expected at most {MAX_REFERENCES} references, got {len(references)}"
            )
        for reference in references:
            if len(UnknownFieldSet(reference)):
                raise _unknown_fields_error(reference, "reference")
            reference_kind = reference.kind
            if reference_kind not in _REFERENCE_KINDS:
                raise InvalidInputError(
                    "expected a reference kind, got REFERENCE_KIND_UNSPECIFIED"
                    if reference_kind == entry_pb2.REFERENCE_KIND_UNSPECIFIED
                    else f"expected a known reference kind, got {reference_kind}"
                )
            if reference.commitment:
                _exact(reference.commitment, HASH_SIZE, "a referenced commitment")
            referenced = reference.entry_id
            if referenced and not _is_uuid(referenced):
                raise InvalidInputError(
                    "expected a referenced entry id as a lower-case UUID v4 or none, "
                    f"got {shown(referenced)}"
                )
    detail = _DETAIL_CHECKS[detail_name](body)
    if len(UnknownFieldSet(detail)):
        raise _unknown_fields_error(detail, f"{expected_detail} detail")
    return entry_id, kind, submitter_id


def _check_membership_auth(key_id: str, batch_size: int, submitter_id: str) -> None:
    """A member signs its votes one by one, under its own name (see ``MembershipDetail``)."""
    if batch_size:
        raise InvalidInputError(
            "expected a single-entry signature on a MEMBERSHIP entry, got batch authentication"
        )
    if key_id != submitter_id:
        raise InvalidInputError(
            f"expected a MEMBERSHIP entry's key id to be its submitter {shown(submitter_id)}, "
            f"got {shown(key_id)}"
        )


def parse_entry(raw: bytes) -> ParsedEntry:
    """Parse and check an entry's bytes; raise :class:`InvalidInputError` saying what is wrong
    (:class:`EntryTooLargeError` for more than :data:`chain.limits.MAX_ENTRY_BYTES`)."""
    if len(raw) > MAX_ENTRY_BYTES:
        raise EntryTooLargeError(
            f"expected an entry of at most {MAX_ENTRY_BYTES:,} bytes, got {len(raw):,}"
        )
    entry = entry_pb2.ChainEntry()
    try:
        entry.ParseFromString(raw)
    except DecodeError as error:
        raise InvalidInputError(
            f"expected a ChainEntry protobuf, got undecodable bytes: {error}"
        ) from None
    if len(UnknownFieldSet(entry)):
        raise _unknown_fields_error(entry, "entry")
    key_id, signature, index, size, root_signature, path = _check_auth(entry)
    body_bytes = entry.body
    body = entry_pb2.EntryBody()
    try:
        body.ParseFromString(body_bytes)
    except DecodeError as error:
        raise InvalidInputError(
            f"expected an EntryBody protobuf, got undecodable bytes: {error}"
        ) from None
    if len(UnknownFieldSet(body)):
        raise _unknown_fields_error(body, "entry body")
    entry_id, kind, submitter_id = _check_body(body)
    if kind == common_pb2.ENTRY_KIND_MEMBERSHIP:
        _check_membership_auth(key_id, size, submitter_id)
    return ParsedEntry(
        bytes(raw),
        body_bytes,
        entry_id,
        kind,
        submitter_id,
        key_id,
        signature,
        index,
        size,
        root_signature,
        path,
    )
