"""The ``swiftchain-evidence/v1`` bundle format (DESIGN §3.5): its JSON document, built,
written and read strictly. :mod:`chain.evidence_verify` checks what a bundle claims.

A bundle carries everything a regulator needs to check, without talking to any node, that some
entries are in the consortium log::

    {
      "format": "swiftchain-evidence/v1",
      "origin": "<log origin>",
      "verifiers": ["<signed-note verifier key>", ...],
      "quorum": 2,
      "checkpoint": "<the whole signed note>",
      "entries": [{"leaf_index": 12, "entry": "<base64>", "inclusion_proof": ["<base64>", ...]}],
      "consistency": [{"from_checkpoint": "<an older signed note>", "proof": ["<base64>", ...]}],
      "membership": [{"leaf_index": 3, "entry": "<base64>", "inclusion_proof": ["<base64>", ...]}]
    }

``membership`` is optional: the MEMBERSHIP entries below the checkpoint's size, each with its
inclusion proof to the checkpoint, so that a verifier holding only the genesis can follow the
votes to the members and quorum at the checkpoint's size (:mod:`chain.membership`). A bundle
without it (every bundle made before votes existed) is checked against the genesis members.

Base64 is standard with padding, and must be canonical (as every encoder writes it).

:func:`parse_bundle` reads the JSON layer strictly: the fields above with their JSON types,
base64 that decodes, 32-byte proof hashes, parseable verifier keys. Anything else is an
:class:`InvalidInputError` "<json path>: expected X, got Y" (``swiftchain verify`` exits 2).
Fields it does not know are ignored (a bundle may add e.g. decoded entries for display); a field
given twice in one object is refused (two readers could see different values). The signed notes
are the evidence itself, so here they are only checked to be strings: their content is
*verified*, not parsed.

Pure: standard library and ``cryptography`` (through :mod:`chain.note`); no I/O, no clock.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from chain.checkpoint import MAX_NUMBER
from chain.errors import InvalidInputError
from chain.hashing import HASH_SIZE
from chain.note import Verifier, b64decode_strict, new_verifier

__all__ = [
    "FORMAT",
    "MAX_PROOF_HASHES",
    "ConsistencyEvidence",
    "EvidenceBundle",
    "EvidenceEntry",
    "build_bundle",
    "bundle_to_json",
    "parse_bundle",
]

FORMAT: Final = "swiftchain-evidence/v1"
"""The value of the bundle's ``format`` field."""

MAX_PROOF_HASHES: Final = 64
"""Most hashes a proof may have: an RFC 9162 proof in a tree of at most 2**63 - 1 leaves has
fewer."""

_B64 = "standard base64 with padding"

_T = TypeVar("_T")


# --------------------------------------------------------------------------------------------
# Small helpers


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _show(value: str, limit: int = 60) -> str:
    if len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value)} characters)"
    return repr(value)


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


def _all_of(kind: type[_T], items: Iterable[object], where: str) -> tuple[_T, ...]:
    """``items`` as a tuple, each checked to be a ``kind``."""
    checked: list[_T] = []
    for i, item in enumerate(items):
        if not isinstance(item, kind):
            article = "an" if kind.__name__[0] in "AEIOU" else "a"
            raise InvalidInputError(
                f"{where}[{i}]: expected {article} {kind.__name__}, got {type(item).__name__}"
            )
        checked.append(item)
    return tuple(checked)


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
    #: The MEMBERSHIP entries a verifier needs to go from the genesis to the checkpoint's
    #: members, in log order.
    membership: tuple[EvidenceEntry, ...] = ()

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
        object.__setattr__(self, "entries", _all_of(EvidenceEntry, self.entries, "entries"))
        object.__setattr__(
            self, "consistency", _all_of(ConsistencyEvidence, self.consistency, "consistency")
        )
        object.__setattr__(
            self, "membership", _all_of(EvidenceEntry, self.membership, "membership")
        )

    def to_dict(self) -> dict[str, Any]:
        """The bundle as a JSON-ready dict, fields in the order of DESIGN §3.5 (``membership``
        only when there are MEMBERSHIP entries, so older bundles keep their bytes)."""
        document = {
            "format": FORMAT,
            "origin": self.origin,
            "verifiers": list(self.verifiers),
            "quorum": self.quorum,
            "checkpoint": self.checkpoint,
            "entries": [e.to_dict() for e in self.entries],
            "consistency": [c.to_dict() for c in self.consistency],
        }
        if self.membership:
            document["membership"] = [e.to_dict() for e in self.membership]
        return document

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
    membership: Iterable[EvidenceEntry] = (),
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
        membership=tuple(membership),
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
    membership = tuple(
        _parse_entry(e, f"membership[{i}]")
        for i, e in enumerate(_array(document.get("membership", []), "membership"))
    )
    return EvidenceBundle(
        origin=origin,
        verifiers=keys,
        quorum=quorum,
        checkpoint=checkpoint,
        entries=entries,
        consistency=consistency,
        membership=membership,
    )
