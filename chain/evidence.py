"""Evidence bundles (DESIGN §3.5): the ``swiftchain-evidence/v1`` JSON document and its offline
verifier.

A bundle carries everything a regulator needs to check, without talking to any node, that some
entries are in the consortium log::

    {
      "format": "swiftchain-evidence/v1",
      "origin": "<log origin>",
      "verifiers": ["<signed-note verifier key>", ...],
      "quorum": 2,
      "checkpoint": "<the whole signed note>",
      "entries": [{"leaf_index": 12, "entry": "<base64>", "inclusion_proof": ["<base64>", ...]}],
      "consistency": [{"from_checkpoint": "<an older signed note>", "proof": ["<base64>", ...]}]
    }

Base64 is standard with padding, and must be canonical (as every encoder writes it).

Three layers, each with its own kind of failure:

* :func:`parse_bundle` reads the JSON layer strictly: the fields above with their JSON types,
  base64 that decodes, 32-byte proof hashes, parseable verifier keys. Anything else is an
  :class:`InvalidInputError` "<json path>: expected X, got Y" (``swiftchain verify`` exits 2).
  Fields it does not know are ignored (a bundle may add e.g. decoded entries for display);
  a field given twice in one object is refused (two readers could see different values).
* The signed notes are the evidence itself, so their content is *verified*, not parsed: a note
  with a garbled signature line is a failed check, like a note with a wrong signature.
* :func:`verify_bundle` runs every check and returns a :class:`VerificationReport`, never
  raising for anything the bundle says (only for bad arguments, such as a 31-byte salt).

Pure: standard library, ``cryptography`` (through :mod:`chain.note`) and the generated
messages; no I/O, no clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from google.protobuf.message import DecodeError

from chain.checkpoint import MAX_NUMBER, Checkpoint, parse_checkpoint
from chain.errors import InvalidInputError, SwiftchainError
from chain.hashing import HASH_SIZE, leaf_hash
from chain.note import (
    Note,
    Verifier,
    b64decode_strict,
    count_distinct_signers,
    new_verifier,
    parse_note,
    verify_note,
)
from chain.proof_verify import verify_consistency, verify_inclusion
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2

__all__ = [
    "FORMAT",
    "MAX_PROOF_HASHES",
    "SALT_SIZE",
    "Check",
    "ConsistencyEvidence",
    "EntrySummary",
    "EvidenceBundle",
    "EvidenceEntry",
    "VerificationReport",
    "build_bundle",
    "bundle_to_json",
    "commitment",
    "parse_bundle",
    "verify_bundle",
]

FORMAT: Final = "swiftchain-evidence/v1"
"""The value of the bundle's ``format`` field."""

SALT_SIZE: Final = 32
"""Size in bytes of a commitment salt (DESIGN §3.1)."""

MAX_PROOF_HASHES: Final = 64
"""Most hashes a proof may have: an RFC 9162 proof in a tree of at most 2**63 - 1 leaves has
fewer."""

KeySource = Literal["trusted", "bundle"]

_B64 = "standard base64 with padding"


# --------------------------------------------------------------------------------------------
# Small helpers


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _show(value: str, limit: int = 60) -> str:
    if len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value)} characters)"
    return repr(value)


def _short(raw: bytes) -> str:
    return raw.hex()[:16] + "…"


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for "got ..." messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction or exponent"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def _check_utf8(value: str, where: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"{where}: expected text encodable as UTF-8, got a lone surrogate at character "
            f"{exc.start}"
        ) from None


def _check_index(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{where}: expected an integer, got {_json_type(value)}")
    if not 0 <= value <= MAX_NUMBER:
        raise InvalidInputError(f"{where}: expected an integer in 0..{MAX_NUMBER}, got {value}")
    return value


def _check_quorum(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{where}: expected a positive integer, got {_json_type(value)}")
    if value < 1:
        raise InvalidInputError(f"{where}: expected a positive integer, got {value}")
    return value


def _check_text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"{where}: expected a string, got {_json_type(value)}")
    if not value:
        raise InvalidInputError(f"{where}: expected a non-empty string, got an empty one")
    _check_utf8(value, where)
    return value


def _check_hashes(value: object, where: str) -> tuple[bytes, ...]:
    if not isinstance(value, list | tuple):
        raise InvalidInputError(f"{where}: expected an array of hashes, got {_json_type(value)}")
    if len(value) > MAX_PROOF_HASHES:
        raise InvalidInputError(
            f"{where}: expected at most {MAX_PROOF_HASHES} hashes, got {len(value)}"
        )
    for i, item in enumerate(value):
        if not isinstance(item, bytes) or len(item) != HASH_SIZE:
            got = f"{len(item)} bytes" if isinstance(item, bytes) else type(item).__name__
            raise InvalidInputError(f"{where}[{i}]: expected a {HASH_SIZE}-byte hash, got {got}")
    return tuple(value)


def _verifier_key(value: object, where: str) -> str:
    if isinstance(value, Verifier):
        return value.vkey
    text = _check_text(value, where)
    try:
        new_verifier(text)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{where}: {exc}") from None
    return text


# --------------------------------------------------------------------------------------------
# The bundle


@dataclass(frozen=True)
class EvidenceEntry:
    """One entry of a bundle: its leaf index, exact bytes and inclusion proof (leaf side first)."""

    leaf_index: int
    entry: bytes
    inclusion_proof: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_index(self.leaf_index, "leaf_index")
        if not isinstance(self.entry, bytes) or not self.entry:
            raise InvalidInputError(
                "entry: expected the entry's exact bytes (non-empty bytes), got "
                + ("empty bytes" if isinstance(self.entry, bytes) else type(self.entry).__name__)
            )
        object.__setattr__(
            self, "inclusion_proof", _check_hashes(self.inclusion_proof, "inclusion_proof")
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this entry."""
        return {
            "leaf_index": self.leaf_index,
            "entry": _b64(self.entry),
            "inclusion_proof": [_b64(h) for h in self.inclusion_proof],
        }


@dataclass(frozen=True)
class ConsistencyEvidence:
    """A consistency proof from an older signed checkpoint to the bundle's checkpoint."""

    from_checkpoint: str
    proof: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_text(self.from_checkpoint, "from_checkpoint")
        object.__setattr__(self, "proof", _check_hashes(self.proof, "proof"))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this proof."""
        return {"from_checkpoint": self.from_checkpoint, "proof": [_b64(h) for h in self.proof]}


@dataclass(frozen=True)
class EvidenceBundle:
    """A ``swiftchain-evidence/v1`` bundle. Its JSON layer is validated on construction; its
    notes and proofs are checked only by :func:`verify_bundle`."""

    origin: str
    verifiers: tuple[str, ...]
    quorum: int
    checkpoint: str
    entries: tuple[EvidenceEntry, ...]
    consistency: tuple[ConsistencyEvidence, ...] = ()

    def __post_init__(self) -> None:
        _check_text(self.origin, "origin")
        given: object = self.verifiers
        if isinstance(given, str) or not isinstance(given, Iterable):
            raise InvalidInputError(
                f"verifiers: expected an array of verifier keys, got {_json_type(given)}"
            )
        keys = tuple(_verifier_key(v, f"verifiers[{i}]") for i, v in enumerate(given))
        if not keys:
            raise InvalidInputError("verifiers: expected at least one verifier key, got none")
        object.__setattr__(self, "verifiers", keys)
        _check_quorum(self.quorum, "quorum")
        _check_text(self.checkpoint, "checkpoint")
        entries = tuple(self.entries)
        for i, item in enumerate(entries):
            if not isinstance(item, EvidenceEntry):
                raise InvalidInputError(
                    f"entries[{i}]: expected an EvidenceEntry, got {type(item).__name__}"
                )
        object.__setattr__(self, "entries", entries)
        consistency = tuple(self.consistency)
        for i, c in enumerate(consistency):
            if not isinstance(c, ConsistencyEvidence):
                raise InvalidInputError(
                    f"consistency[{i}]: expected a ConsistencyEvidence, got {type(c).__name__}"
                )
        object.__setattr__(self, "consistency", consistency)

    def to_dict(self) -> dict[str, Any]:
        """The bundle as a JSON-ready dict, fields in the order of DESIGN §3.5."""
        return {
            "format": FORMAT,
            "origin": self.origin,
            "verifiers": list(self.verifiers),
            "quorum": self.quorum,
            "checkpoint": self.checkpoint,
            "entries": [e.to_dict() for e in self.entries],
            "consistency": [c.to_dict() for c in self.consistency],
        }

    def to_json(self) -> str:
        """The bundle as pretty JSON text (UTF-8, ending in a newline)."""
        return bundle_to_json(self)


def _note_text(note: str | bytes, where: str) -> str:
    if isinstance(note, bytes | bytearray):
        try:
            return bytes(note).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(
                f"{where}: expected a signed note in UTF-8, got byte 0x{note[exc.start]:02x} "
                f"at offset {exc.start}"
            ) from None
    return note


def build_bundle(
    *,
    origin: str,
    verifiers: Iterable[str | Verifier],
    quorum: int,
    checkpoint: str | bytes,
    entries: Iterable[EvidenceEntry],
    consistency: Iterable[ConsistencyEvidence] = (),
) -> dict[str, Any]:
    """A ``swiftchain-evidence/v1`` bundle as a JSON-ready dict (see :func:`bundle_to_json`).

    ``checkpoint`` is the whole signed note whose root the inclusion proofs lead to;
    ``verifiers`` the consortium members' verifier keys. Raises :class:`InvalidInputError` for
    anything :func:`parse_bundle` would refuse, so what is built can always be read back.
    Nothing is verified: run :func:`verify_bundle` on the result for that.
    """
    bundle = EvidenceBundle(
        origin=origin,
        verifiers=tuple(_verifier_key(v, f"verifiers[{i}]") for i, v in enumerate(verifiers)),
        quorum=quorum,
        checkpoint=_note_text(checkpoint, "checkpoint"),
        entries=tuple(entries),
        consistency=tuple(consistency),
    )
    return bundle.to_dict()


def bundle_to_json(bundle: EvidenceBundle | Mapping[str, Any]) -> str:
    """Pretty JSON text of a bundle (an :class:`EvidenceBundle` or a dict from
    :func:`build_bundle`, possibly with extra fields), ending in a newline. Non-ASCII text (the
    em dash of signature lines) is written as is: write the text as UTF-8."""
    document = bundle.to_dict() if isinstance(bundle, EvidenceBundle) else dict(bundle)
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------------------------
# Parsing


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidInputError(f"expected each field once in an object, got {key!r} twice")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise InvalidInputError(f"expected standard JSON numbers, got {name}")


def _field(document: Mapping[str, Any], name: str, where: str = "") -> Any:
    if name not in document:
        place = f"{where}: " if where else ""
        raise InvalidInputError(f"{place}expected a field {name!r}, got none")
    return document[name]


def _object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInputError(f"{where}: expected an object, got {_json_type(value)}")
    return value


def _array(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidInputError(f"{where}: expected an array, got {_json_type(value)}")
    return value


def _decode_b64(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidInputError(f"{where}: expected a {_B64} string, got {_json_type(value)}")
    raw = b64decode_strict(value)
    if raw is None:
        raise InvalidInputError(f"{where}: expected {_B64}, got {_show(value)}")
    return raw


def _decode_hashes(value: object, where: str) -> tuple[bytes, ...]:
    items = _array(value, where)
    if len(items) > MAX_PROOF_HASHES:
        raise InvalidInputError(
            f"{where}: expected at most {MAX_PROOF_HASHES} hashes, got {len(items)}"
        )
    hashes = []
    for i, item in enumerate(items):
        raw = _decode_b64(item, f"{where}[{i}]")
        if len(raw) != HASH_SIZE:
            raise InvalidInputError(
                f"{where}[{i}]: expected a {HASH_SIZE}-byte hash, got {len(raw)} bytes"
            )
        hashes.append(raw)
    return tuple(hashes)


def _parse_entry(value: object, where: str) -> EvidenceEntry:
    item = _object(value, where)
    leaf_index = _check_index(_field(item, "leaf_index", where), f"{where}.leaf_index")
    entry = _decode_b64(_field(item, "entry", where), f"{where}.entry")
    if not entry:
        raise InvalidInputError(f"{where}.entry: expected the entry's bytes, got none")
    proof = _decode_hashes(_field(item, "inclusion_proof", where), f"{where}.inclusion_proof")
    return EvidenceEntry(leaf_index, entry, proof)


def _parse_consistency(value: object, where: str) -> ConsistencyEvidence:
    item = _object(value, where)
    note = _check_text(_field(item, "from_checkpoint", where), f"{where}.from_checkpoint")
    proof = _decode_hashes(_field(item, "proof", where), f"{where}.proof")
    return ConsistencyEvidence(note, proof)


def parse_bundle(text: str | bytes) -> EvidenceBundle:
    """Read a ``swiftchain-evidence/v1`` JSON document, strictly.

    Raises :class:`InvalidInputError` "<json path>: expected X, got Y" for anything that is not
    such a bundle. Unknown fields are ignored. The signed notes are only checked to be strings
    here; their content is :func:`verify_bundle`'s business.
    """
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(
                f"expected a JSON document in UTF-8, got byte 0x{text[exc.start]:02x} "
                f"at offset {exc.start}"
            ) from None
    if not isinstance(text, str):
        raise InvalidInputError(f"expected the bundle as str or bytes, got {type(text).__name__}")
    try:
        document = json.loads(
            text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants
        )
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"expected a JSON document, got invalid JSON ({exc.msg} at line {exc.lineno} "
            f"column {exc.colno})"
        ) from None
    except RecursionError:
        raise InvalidInputError("expected a JSON document, got one nested too deeply") from None
    if not isinstance(document, dict):
        raise InvalidInputError(f"expected a JSON object, got {_json_type(document)}")
    fmt = _field(document, "format")
    if fmt != FORMAT:
        got = _show(fmt) if isinstance(fmt, str) else _json_type(fmt)
        raise InvalidInputError(f"format: expected {FORMAT!r}, got {got}")
    origin = _check_text(_field(document, "origin"), "origin")
    verifiers = _array(_field(document, "verifiers"), "verifiers")
    keys = tuple(_verifier_key(v, f"verifiers[{i}]") for i, v in enumerate(verifiers))
    quorum = _check_quorum(_field(document, "quorum"), "quorum")
    checkpoint = _check_text(_field(document, "checkpoint"), "checkpoint")
    entries = tuple(
        _parse_entry(e, f"entries[{i}]")
        for i, e in enumerate(_array(_field(document, "entries"), "entries"))
    )
    consistency = tuple(
        _parse_consistency(c, f"consistency[{i}]")
        for i, c in enumerate(_array(_field(document, "consistency"), "consistency"))
    )
    return EvidenceBundle(
        origin=origin,
        verifiers=keys,
        quorum=quorum,
        checkpoint=checkpoint,
        entries=entries,
        consistency=consistency,
    )


# --------------------------------------------------------------------------------------------
# Verification


def commitment(salt: bytes, document: bytes) -> bytes:
    """``HMAC-SHA256(key = salt, msg = document)``, the commitment of DESIGN §3.1.

    ``salt`` must be 32 bytes (:class:`InvalidInputError` otherwise).
    """
    if not isinstance(salt, bytes | bytearray):
        raise InvalidInputError(f"expected the salt as bytes, got {type(salt).__name__}")
    if len(salt) != SALT_SIZE:
        raise InvalidInputError(f"expected a {SALT_SIZE}-byte salt, got {len(salt)} bytes")
    if not isinstance(document, bytes | bytearray | memoryview):
        raise InvalidInputError(f"expected the document as bytes, got {type(document).__name__}")
    return hmac.new(bytes(salt), bytes(document), hashlib.sha256).digest()


@dataclass(frozen=True)
class Check:
    """One check of a verification: a stable name (for scripts), pass or fail, and what was
    found, for people."""

    name: str
    ok: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "ok": self.ok, "message": self.message}


@dataclass(frozen=True)
class EntrySummary:
    """What a bundle entry says, decoded leniently for display (``None`` when undecodable).

    Decoded from the bytes, not verified: an entry counts only if its inclusion check passed.
    """

    position: int
    leaf_index: int
    entry_id: str | None
    kind: str | None
    submitter_id: str | None
    commitment: bytes | None

    @property
    def label(self) -> str:
        """``leaf 12, RECORD <entry id>`` (or ``leaf 12, undecodable entry``)."""
        if self.entry_id is None:
            return f"leaf {self.leaf_index}, undecodable entry"
        return f"leaf {self.leaf_index}, {self.kind or 'unknown kind'} {self.entry_id}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "leaf_index": self.leaf_index,
            "entry_id": self.entry_id,
            "kind": self.kind,
            "submitter_id": self.submitter_id,
            "commitment": None if self.commitment is None else self.commitment.hex(),
        }


@dataclass(frozen=True)
class VerificationReport:
    """The outcome of :func:`verify_bundle`: every check with its result, and what was found.

    ``ok`` holds only if there is at least one check and every check passed.
    ``keys_source`` / ``quorum_source`` say whether the member keys and quorum were the
    caller's trusted ones or the bundle's own (which prove only that the bundle is consistent).
    """

    checks: tuple[Check, ...]
    origin: str
    keys_source: KeySource
    quorum: int
    quorum_source: KeySource
    tree_size: int | None
    root_hash: bytes | None
    height: int | None
    cut_time_ms: int | None
    signers: tuple[str, ...]
    entries: tuple[EntrySummary, ...]

    @property
    def ok(self) -> bool:
        """Whether everything holds."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        """The checks that failed."""
        return tuple(c for c in self.checks if not c.ok)

    def check(self, name: str) -> Check:
        """The check called ``name`` (:class:`KeyError` if there is none)."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (hashes in hex)."""
        return {
            "ok": self.ok,
            "origin": self.origin,
            "keys_source": self.keys_source,
            "quorum": self.quorum,
            "quorum_source": self.quorum_source,
            "checkpoint": {
                "tree_size": self.tree_size,
                "root_hash": None if self.root_hash is None else self.root_hash.hex(),
                "height": self.height,
                "cut_time_ms": self.cut_time_ms,
                "signers": list(self.signers),
            },
            "entries": [e.to_dict() for e in self.entries],
            "checks": [c.to_dict() for c in self.checks],
        }


def _kind_name(kind: int) -> str | None:
    """KEY, RECORD, CONSENT or ACCESS (as ``chain.entry.KIND_NAMES``); ``None`` if unknown."""
    if kind == common_pb2.ENTRY_KIND_UNSPECIFIED or kind not in common_pb2.EntryKind.values():
        return None
    return common_pb2.EntryKind.Name(common_pb2.EntryKind.ValueType(kind)).removeprefix(
        "ENTRY_KIND_"
    )


def _summarize(position: int, item: EvidenceEntry) -> EntrySummary:
    entry = entry_pb2.ChainEntry()
    body = entry_pb2.EntryBody()
    try:
        entry.ParseFromString(item.entry)
        body.ParseFromString(entry.body)
    except DecodeError:
        return EntrySummary(position, item.leaf_index, None, None, None, None)
    return EntrySummary(
        position=position,
        leaf_index=item.leaf_index,
        entry_id=body.entry_id,
        kind=_kind_name(body.kind),
        submitter_id=body.submitter_id,
        commitment=bytes(body.commitment) if len(body.commitment) == HASH_SIZE else None,
    )


def _trusted_keys(trusted: Iterable[Verifier | str]) -> tuple[Verifier, ...]:
    if isinstance(trusted, str):
        raise InvalidInputError("expected trusted verifiers as an iterable of keys, got a str")
    keys = []
    for item in trusted:
        if isinstance(item, Verifier):
            keys.append(item)
        elif isinstance(item, str):
            keys.append(new_verifier(item))
        else:
            raise InvalidInputError(
                f"expected a Verifier or a verifier key string, got {type(item).__name__}"
            )
    if not keys:
        raise InvalidInputError("expected at least one trusted verifier key, got none")
    return tuple(keys)


def _check_note(
    name: str,
    what: str,
    note_text: str,
    keys: Sequence[Verifier],
    quorum: int,
    keys_source: KeySource,
) -> tuple[Check, tuple[str, ...]]:
    """Signatures and quorum of a signed note, and the names of its valid member signers."""
    try:
        parsed = parse_note(note_text.encode("utf-8"))
    except InvalidInputError as exc:
        return Check(name, False, f"{what} is not a signed note: {exc}"), ()
    try:
        note: Note = verify_note(parsed, keys)
    except SwiftchainError as exc:
        return Check(name, False, f"{what}: {exc}"), ()
    count = count_distinct_signers(note)
    signers = tuple(dict.fromkeys(sig.name for sig in note.signatures))
    source = (
        "keys from the trusted consortium"
        if keys_source == "trusted"
        else "keys from the bundle itself (not pinned)"
    )
    unknown = len(note.unverified_signatures)
    extra = f"; {_plural(unknown, 'signature')} by unknown keys ignored" if unknown else ""
    if count < quorum:
        return (
            Check(
                name,
                False,
                f"{what} has {_plural(count, 'valid member signature')}"
                f"{' (' + ', '.join(signers) + ')' if signers else ''}, quorum is {quorum}; "
                f"{source}{extra}",
            ),
            signers,
        )
    return (
        Check(
            name,
            True,
            f"{what} is signed by {count} of {len({k.name for k in keys})} members "
            f"({', '.join(signers)}), quorum {quorum}; {source}{extra}",
        ),
        signers,
    )


def _check_origin(
    name: str, what: str, note_text: str, origins: Sequence[tuple[str, str]]
) -> tuple[Check, Checkpoint | None]:
    """That the note's text is a checkpoint whose origin is each of ``origins`` (value, whose)."""
    try:
        text = parse_note(note_text.encode("utf-8")).text
    except InvalidInputError:
        return Check(name, False, f"cannot check: {what} is not a signed note"), None
    try:
        checkpoint = parse_checkpoint(text)
    except InvalidInputError as exc:
        return Check(name, False, f"{what} is not a checkpoint: {exc}"), None
    for value, whose in origins:
        if checkpoint.origin != value:
            return (
                Check(
                    name,
                    False,
                    f"{what} has origin {_show(checkpoint.origin)}, expected {whose} "
                    f"{_show(value)}",
                ),
                checkpoint,
            )
    whose_list = " and ".join(whose for _, whose in origins)
    return (
        Check(name, True, f"{what} has origin {_show(checkpoint.origin)}, as {whose_list}"),
        checkpoint,
    )


def _check_inclusion(
    position: int, item: EvidenceEntry, summary: EntrySummary, checkpoint: Checkpoint | None
) -> Check:
    name = f"entries[{position}].inclusion"
    if checkpoint is None:
        return Check(name, False, f"cannot check {summary.label}: the checkpoint is unreadable")
    try:
        verify_inclusion(
            leaf_hash(item.entry),
            item.leaf_index,
            checkpoint.size,
            item.inclusion_proof,
            checkpoint.root_hash,
        )
    except SwiftchainError as exc:
        return Check(name, False, f"{summary.label}: {exc}")
    hashes = _plural(len(item.inclusion_proof), "hash", "hashes")
    return Check(
        name,
        True,
        f"{summary.label}: the inclusion proof of {hashes} leads to the checkpoint root "
        f"(tree size {checkpoint.size})",
    )


def _check_consistency(
    position: int,
    item: ConsistencyEvidence,
    older: Checkpoint | None,
    newer: Checkpoint | None,
) -> Check:
    name = f"consistency[{position}].proof"
    if older is None:
        return Check(name, False, "cannot check: the older checkpoint is unreadable")
    if newer is None:
        return Check(name, False, "cannot check: the bundle's checkpoint is unreadable")
    if older.size > newer.size:
        return Check(
            name,
            False,
            f"the older checkpoint (size {older.size}) is larger than the bundle's checkpoint "
            f"(size {newer.size})",
        )
    try:
        verify_consistency(older.size, newer.size, item.proof, older.root_hash, newer.root_hash)
    except SwiftchainError as exc:
        return Check(name, False, str(exc))
    return Check(
        name,
        True,
        f"the tree of size {newer.size} extends the tree of size {older.size} "
        f"(consistency proof of {_plural(len(item.proof), 'hash', 'hashes')})",
    )


def _check_commitment(expected: bytes, summaries: Sequence[EntrySummary]) -> Check:
    matches = [
        s
        for s in summaries
        if s.commitment is not None and hmac.compare_digest(s.commitment, expected)
    ]
    if matches:
        which = "; ".join(f"entry {s.position} ({s.label})" for s in matches)
        return Check(
            "commitment", True, f"HMAC-SHA256(salt, document) is the commitment of {which}"
        )
    if not summaries:
        return Check("commitment", False, "the bundle has no entries whose commitment to check")
    entries = "entry" if len(summaries) == 1 else f"{len(summaries)} entries"
    return Check(
        "commitment",
        False,
        f"HMAC-SHA256(salt, document) = {_short(expected)} is the commitment of none of the "
        f"bundle's {entries} (wrong document bytes or wrong salt?)",
    )


def verify_bundle(
    bundle: EvidenceBundle,
    *,
    trusted_verifiers: Iterable[Verifier | str] | None = None,
    trusted_quorum: int | None = None,
    trusted_origin: str | None = None,
    document: bytes | None = None,
    salt: bytes | None = None,
) -> VerificationReport:
    """Check everything a bundle claims and report each check.

    * ``checkpoint.signatures``: the checkpoint note has at least ``quorum`` distinct valid
      member signatures, and every signature line by a member key verifies. The member keys
      are ``trusted_verifiers`` if given (a regulator should pin the consortium's), else the
      bundle's own ``verifiers``; the quorum ``trusted_quorum`` if given, else the bundle's.
    * ``checkpoint.origin``: the note's text is a checkpoint whose origin is the bundle's
      ``origin`` (and ``trusted_origin`` if given).
    * ``entries[i].inclusion``: the inclusion proof leads from the leaf hash of the exact entry
      bytes to the checkpoint's root.
    * ``consistency[i].checkpoint`` / ``consistency[i].proof``: the older note is a sealed
      checkpoint by the same rules, and the checkpoint extends it.
    * ``commitment`` (with ``document`` and ``salt``): ``HMAC-SHA256(salt, document)`` is the
      commitment of one of the entries' bodies.

    Never raises for what the bundle contains; raises :class:`InvalidInputError` for bad
    arguments (a salt that is not 32 bytes, a document without a salt, a malformed trusted key).
    """
    if not isinstance(bundle, EvidenceBundle):
        raise InvalidInputError(f"expected an EvidenceBundle, got {type(bundle).__name__}")
    if (document is None) != (salt is None):
        raise InvalidInputError(
            "expected both a document and its salt, got only the "
            + ("document" if salt is None else "salt")
        )
    expected = None if salt is None or document is None else commitment(salt, document)
    if trusted_quorum is not None:
        _check_quorum(trusted_quorum, "trusted quorum")
    if trusted_origin is not None:
        _check_text(trusted_origin, "trusted origin")

    keys_source: KeySource = "bundle" if trusted_verifiers is None else "trusted"
    quorum_source: KeySource = "bundle" if trusted_quorum is None else "trusted"
    quorum = bundle.quorum if trusted_quorum is None else trusted_quorum
    checks: list[Check] = []
    keys: tuple[Verifier, ...]
    if trusted_verifiers is not None:
        keys = _trusted_keys(trusted_verifiers)
    else:
        keys = tuple(new_verifier(k) for k in bundle.verifiers)  # parsed once already

    origins = [(bundle.origin, "the bundle's origin")]
    if trusted_origin is not None:
        origins.append((trusted_origin, "the trusted consortium's origin"))

    sig_check, signers = _check_note(
        "checkpoint.signatures", "the checkpoint", bundle.checkpoint, keys, quorum, keys_source
    )
    checks.append(sig_check)
    origin_check, checkpoint = _check_origin(
        "checkpoint.origin", "the checkpoint", bundle.checkpoint, origins
    )
    checks.append(origin_check)

    summaries = tuple(_summarize(i, e) for i, e in enumerate(bundle.entries))
    for i, (item, summary) in enumerate(zip(bundle.entries, summaries, strict=True)):
        checks.append(_check_inclusion(i, item, summary, checkpoint))

    for i, proof in enumerate(bundle.consistency):
        what = f"older checkpoint {i}"
        older_sig, _ = _check_note(
            f"consistency[{i}].checkpoint", what, proof.from_checkpoint, keys, quorum, keys_source
        )
        older_origin, older = _check_origin(
            f"consistency[{i}].checkpoint", what, proof.from_checkpoint, origins
        )
        if older_sig.ok and older_origin.ok:
            checks.append(
                Check(older_sig.name, True, f"{older_sig.message}; {older_origin.message}")
            )
        else:
            failed = [c.message for c in (older_sig, older_origin) if not c.ok]
            checks.append(Check(older_sig.name, False, "; ".join(failed)))
        checks.append(_check_consistency(i, proof, older, checkpoint))

    if expected is not None:
        checks.append(_check_commitment(expected, summaries))

    return VerificationReport(
        checks=tuple(checks),
        origin=bundle.origin,
        keys_source=keys_source,
        quorum=quorum,
        quorum_source=quorum_source,
        tree_size=None if checkpoint is None else checkpoint.size,
        root_hash=None if checkpoint is None else checkpoint.root_hash,
        height=None if checkpoint is None else checkpoint.height,
        cut_time_ms=None if checkpoint is None else checkpoint.cut_time_ms,
        signers=signers,
        entries=summaries,
    )
