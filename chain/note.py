"""C2SP signed notes (https://c2sp.org/signed-note), byte-compatible with Go's
``golang.org/x/mod/sumdb/note``.

A signed note is a text ending in a newline, a blank line, then one or more signature lines::

    <text, ending in "\\n">
    \\n
    — <key name> <base64(4-byte big-endian key hash || Ed25519 signature)>\\n
    ...

Only Ed25519 keys (signature type ``0x01``) are supported. Key strings have the sumdb/note form:

* verifier key: ``<name>+<8 hex digits key hash>+<base64(0x01 || 32-byte public key)>``
* signer key:   ``PRIVATE+KEY+<name>+<8 hex digits key hash>+<base64(0x01 || 32-byte seed)>``

with ``key hash = SHA-256(name || "\\n" || 0x01 || public key)[:4]`` read as a big-endian uint32.

Parsing (:func:`parse_note`, :func:`parse_signature_line`) only checks syntax; verification
(:func:`verify_note`, :func:`verify_signature_line`) only checks signatures; :func:`open_note`
does both and, as the spec requires, rejects a note that no known key signed.

Deliberate differences from the Go package, all of them stricter or tidier, none affecting
what is produced:

* base64 must be canonical (Go tolerates non-zero padding bits); nothing Go writes is refused;
* every distinct signature line by a known key is verified (the C2SP spec: "verifiers MUST
  verify the signature"); Go verifies only the first line per key and skips the others;
* :func:`sign` writes one line per key even if a signer is passed twice;
* key names may not contain ASCII control characters (they could never appear in a note).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from chain.errors import InvalidInputError, VerificationError

__all__ = [
    "ALG_ED25519",
    "MAX_SIGNATURES",
    "Note",
    "ParsedNote",
    "Signature",
    "Signer",
    "Verifier",
    "VerifierSource",
    "add_signatures",
    "b64decode_strict",
    "compute_key_hash",
    "count_distinct_signers",
    "generate_key",
    "is_valid_key_name",
    "new_signer",
    "new_verifier",
    "open_note",
    "parse_note",
    "parse_signature_line",
    "sign",
    "signature_line",
    "signer_key",
    "verifier_key",
    "verify_note",
    "verify_signature_line",
]

ALG_ED25519 = 0x01
"""Signature type identifier byte for Ed25519 (the only one supported)."""

MAX_SIGNATURES = 100
"""Most signature lines a note may have (as sumdb/note; the spec asks for at least 16)."""

_SIG_PREFIX = "\u2014 "  # em dash, space
_SIG_SPLIT = b"\n\n"
_PRIVATE_PREFIX = "PRIVATE+KEY+"
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")

# Go's unicode.IsSpace: the Unicode White_Space property.
_SPACES = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)

VerifierSource = Mapping[Any, "Verifier"] | Iterable["Verifier | str"]
"""Known keys: a mapping whose values are :class:`Verifier` (keys ignored), or an iterable of
:class:`Verifier` or verifier-key strings."""


# --------------------------------------------------------------------------------------------
# Small helpers


def _show(value: str, limit: int = 80) -> str:
    """``repr`` of a value for an error message, shortened if long."""
    if len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value)} characters)"
    return repr(value)


def b64decode_strict(value: str) -> bytes | None:
    """Decode standard base64 with padding, canonical only (as every encoder writes it);
    ``None`` if ``value`` is anything else."""
    if _B64.fullmatch(value) is None:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error:
        return None
    if base64.b64encode(raw).decode("ascii") != value:
        return None
    return raw


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _first_control(text: str) -> int:
    """Index of the first ASCII control character other than newline, or -1."""
    for i, ch in enumerate(text):
        if ch < " " and ch != "\n":
            return i
    return -1


def is_valid_key_name(name: str) -> bool:
    """Whether ``name`` is a valid key name: non-empty, no Unicode space, no '+', no control
    character, encodable as UTF-8."""
    if not name or "+" in name:
        return False
    if any(ch in _SPACES or ch < " " for ch in name):
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_name(name: str, what: str = "key name") -> None:
    if not isinstance(name, str):
        raise InvalidInputError(f"expected the {what} as str, got {type(name).__name__}")
    if not is_valid_key_name(name):
        raise InvalidInputError(
            f"expected a {what} that is non-empty, with no spaces, '+' or control characters, "
            f"got {_show(name)}"
        )


def compute_key_hash(name: str, public_key: bytes) -> int:
    """The key hash of an Ed25519 key: ``SHA-256(name || "\\n" || 0x01 || public_key)[:4]``,
    big-endian. ``public_key`` is the raw 32-byte key, without the algorithm byte."""
    digest = hashlib.sha256(
        name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + public_key
    ).digest()
    return int.from_bytes(digest[:4], "big")


def _raw_public_key(public_key: bytes | Ed25519PublicKey) -> bytes:
    if isinstance(public_key, Ed25519PublicKey):
        return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    if not isinstance(public_key, bytes):
        raise InvalidInputError(
            f"expected an Ed25519 public key as bytes or Ed25519PublicKey, "
            f"got {type(public_key).__name__}"
        )
    if len(public_key) != 32:
        raise InvalidInputError(
            f"expected a 32-byte Ed25519 public key, got {len(public_key)} bytes"
        )
    return public_key


# --------------------------------------------------------------------------------------------
# Keys


@dataclass(frozen=True)
class Verifier:
    """A known Ed25519 public key: its name, key hash and raw 32-byte public key.

    The key hash must be the one computed from the name and key (checked on construction).
    """

    name: str
    key_hash: int
    public_key: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        _raw_public_key(self.public_key)
        if isinstance(self.key_hash, bool) or not isinstance(self.key_hash, int):
            raise InvalidInputError(
                f"expected the key hash as int, got {type(self.key_hash).__name__}"
            )
        want = compute_key_hash(self.name, self.public_key)
        if self.key_hash != want:
            raise InvalidInputError(
                f"expected key hash {want:08x} for name {self.name!r} and this key, "
                f"got {self.key_hash:08x}"
            )

    @classmethod
    def from_public_key(cls, name: str, public_key: bytes | Ed25519PublicKey) -> Verifier:
        """The verifier for ``public_key`` under ``name``, with its key hash computed."""
        _check_name(name)
        raw = _raw_public_key(public_key)
        return cls(name, compute_key_hash(name, raw), raw)

    @property
    def vkey(self) -> str:
        """The verifier key string ``name+hash+base64(0x01||pubkey)``."""
        return verifier_key(self.name, self.public_key)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (raw 64 bytes, without key hash) is this key's signature of
        ``message``."""
        if len(signature) != 64:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


class Signer:
    """A named Ed25519 private key that signs notes."""

    __slots__ = ("_key_hash", "_name", "_private_key", "_public_key")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        _check_name(name)
        if not isinstance(private_key, Ed25519PrivateKey):
            raise InvalidInputError(
                f"expected an Ed25519PrivateKey, got {type(private_key).__name__}"
            )
        self._name = name
        self._private_key = private_key
        self._public_key = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self._key_hash = compute_key_hash(name, self._public_key)

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_hash(self) -> int:
        return self._key_hash

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key."""
        return self._public_key

    @property
    def private_key(self) -> Ed25519PrivateKey:
        return self._private_key

    def verifier(self) -> Verifier:
        """The matching verifier."""
        return Verifier(self._name, self._key_hash, self._public_key)

    def sign(self, message: bytes) -> bytes:
        """The raw 64-byte Ed25519 signature of ``message`` (deterministic)."""
        return self._private_key.sign(message)

    def __repr__(self) -> str:  # never shows the private key
        return f"Signer(name={self._name!r}, key_hash={self._key_hash:08x})"


def verifier_key(name: str, public_key: bytes | Ed25519PublicKey) -> str:
    """The verifier key string ``name+hash+base64(0x01||pubkey)`` (Go: NewEd25519VerifierKey)."""
    _check_name(name)
    raw = _raw_public_key(public_key)
    kh = compute_key_hash(name, raw)
    return f"{name}+{kh:08x}+{_b64encode(bytes([ALG_ED25519]) + raw)}"


def signer_key(name: str, private_key: Ed25519PrivateKey) -> str:
    """The private signer key string ``PRIVATE+KEY+name+hash+base64(0x01||seed)``. Secret."""
    signer = Signer(name, private_key)
    seed = private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return (
        f"{_PRIVATE_PREFIX}{name}+{signer.key_hash:08x}+{_b64encode(bytes([ALG_ED25519]) + seed)}"
    )


def generate_key(name: str) -> tuple[str, str]:
    """A new key pair for ``name``: ``(signer key, verifier key)``, as Go's note.GenerateKey."""
    _check_name(name)
    private_key = Ed25519PrivateKey.generate()
    return signer_key(name, private_key), verifier_key(name, private_key.public_key())


def _split_key(parts_text: str, what: str, shape: str) -> tuple[str, str, str]:
    name, sep1, rest = parts_text.partition("+")
    hash16, sep2, key64 = rest.partition("+")
    if not sep1 or not sep2:
        raise InvalidInputError(f"expected a {what} of the form {shape}, got too few '+' fields")
    return name, hash16, key64


def _check_hash16(hash16: str) -> int:
    if _HEX8.fullmatch(hash16) is None:
        raise InvalidInputError(f"expected 8 hex digits for the key hash, got {_show(hash16)}")
    return int(hash16, 16)


def _check_key_data(raw: bytes | None, what: str, shown: str, noun: str) -> bytes:
    if raw is None:
        raise InvalidInputError(f"expected the {what} as standard base64 with padding, got {shown}")
    if not raw:
        raise InvalidInputError(f"expected the {what} to be non-empty, got nothing")
    if raw[0] != ALG_ED25519:
        raise InvalidInputError(
            f"expected algorithm byte 0x{ALG_ED25519:02x} (Ed25519), got 0x{raw[0]:02x}"
        )
    if len(raw) != 33:
        raise InvalidInputError(
            f"expected a 32-byte Ed25519 {noun} after the algorithm byte, got {len(raw) - 1} bytes"
        )
    return raw[1:]


def new_verifier(vkey: str) -> Verifier:
    """Parse a verifier key ``name+hash+base64(0x01||pubkey)`` (Go: note.NewVerifier)."""
    if not isinstance(vkey, str):
        raise InvalidInputError(f"expected the verifier key as str, got {type(vkey).__name__}")
    name, hash16, key64 = _split_key(vkey, "verifier key", "<name>+<8 hex digits>+<base64 key>")
    _check_name(name)
    kh = _check_hash16(hash16)
    public_key = _check_key_data(b64decode_strict(key64), "public key", _show(key64), "public key")
    want = compute_key_hash(name, public_key)
    if kh != want:
        raise InvalidInputError(
            f"expected key hash {want:08x} for name {name!r} and this key, got {hash16}"
        )
    return Verifier(name, kh, public_key)


def new_signer(skey: str) -> Signer:
    """Parse a signer key ``PRIVATE+KEY+name+hash+base64(0x01||seed)`` (Go: note.NewSigner).

    Error messages never echo the key material.
    """
    if not isinstance(skey, str):
        raise InvalidInputError(f"expected the signer key as str, got {type(skey).__name__}")
    if not skey.startswith(_PRIVATE_PREFIX):
        raise InvalidInputError(
            "expected a signer key starting with 'PRIVATE+KEY+', got a string that does not"
        )
    name, hash16, key64 = _split_key(
        skey[len(_PRIVATE_PREFIX) :],
        "signer key",
        "PRIVATE+KEY+<name>+<8 hex digits>+<base64 seed>",
    )
    _check_name(name)
    kh = _check_hash16(hash16)
    seed = _check_key_data(
        b64decode_strict(key64), "private key", "something else (not shown)", "seed"
    )
    signer = Signer(name, Ed25519PrivateKey.from_private_bytes(seed))
    if kh != signer.key_hash:
        raise InvalidInputError(
            f"expected key hash {signer.key_hash:08x} for name {name!r} and this key, got {hash16}"
        )
    return signer


# --------------------------------------------------------------------------------------------
# Notes


@dataclass(frozen=True)
class Signature:
    """One signature line: key name, key hash and the raw signature bytes (after the hash)."""

    name: str
    key_hash: int
    signature: bytes

    @property
    def base64(self) -> str:
        """base64(4-byte big-endian key hash || signature), as on the line."""
        return _b64encode(self.key_hash.to_bytes(4, "big") + self.signature)

    @property
    def line(self) -> str:
        """The signature line, ending in a newline."""
        return f"{_SIG_PREFIX}{self.name} {self.base64}\n"

    @property
    def key_id(self) -> str:
        """``name+hash`` as in error messages and verifier keys."""
        return f"{self.name}+{self.key_hash:08x}"


@dataclass(frozen=True)
class ParsedNote:
    """A note whose syntax was checked and whose signatures were NOT verified."""

    text: str
    signatures: tuple[Signature, ...]


@dataclass(frozen=True)
class Note:
    """A note after verification.

    ``signatures`` are the verified ones, one per key (name and key hash), in note order;
    ``unverified_signatures`` are those by keys not known to the verifier set, without
    repeated identical lines.
    """

    text: str
    signatures: tuple[Signature, ...]
    unverified_signatures: tuple[Signature, ...]


def _parse_sig_line(line: str, where: str) -> Signature:
    """Parse one signature line without its newline."""
    if not line.startswith(_SIG_PREFIX):
        raise InvalidInputError(
            f"expected {where} to start with '\u2014 ' (em dash U+2014, space), got {_show(line)}"
        )
    name, sep, b64 = line[len(_SIG_PREFIX) :].partition(" ")
    if not sep or not b64:
        raise InvalidInputError(
            f"expected {where} of the form '\u2014 <name> <base64 signature>', got {_show(line)}"
        )
    if not is_valid_key_name(name):
        raise InvalidInputError(
            f"expected a key name that is non-empty, with no spaces, '+' or control characters "
            f"on {where}, got {_show(name)}"
        )
    raw = b64decode_strict(b64)
    if raw is None:
        raise InvalidInputError(
            f"expected a standard base64 signature with padding on {where}, got {_show(b64)}"
        )
    if len(raw) < 5:
        raise InvalidInputError(
            f"expected at least 5 signature bytes (4-byte key hash and signature) on {where}, "
            f"got {len(raw)}"
        )
    return Signature(name, int.from_bytes(raw[:4], "big"), raw[4:])


def parse_signature_line(line: str) -> Signature:
    """Parse a single signature line (``— name base64``, optionally ending in one newline)."""
    if not isinstance(line, str):
        raise InvalidInputError(f"expected a signature line as str, got {type(line).__name__}")
    body = line.removesuffix("\n")
    bad = _first_control(body)
    if "\n" in body or bad >= 0:
        raise InvalidInputError(
            f"expected a single signature line without control characters, got {_show(line)}"
        )
    return _parse_sig_line(body, "the signature line")


def parse_note(msg: bytes) -> ParsedNote:
    """Check the syntax of a signed note and split it into text and signature lines.

    Nothing is verified. Signature lines are kept as they appear, duplicates included.
    """
    if not isinstance(msg, bytes | bytearray | memoryview):
        raise InvalidInputError(f"expected the note as bytes, got {type(msg).__name__}")
    data = bytes(msg)
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"expected a note in valid UTF-8, got byte 0x{data[exc.start]:02x} "
            f"at offset {exc.start} that is not"
        ) from None
    bad = _first_control(decoded)
    if bad >= 0:
        offset = len(decoded[:bad].encode("utf-8"))
        raise InvalidInputError(
            f"expected no control characters other than newline in the note, "
            f"got 0x{ord(decoded[bad]):02x} at offset {offset}"
        )
    split = data.rfind(_SIG_SPLIT)
    if split < 0:
        raise InvalidInputError(
            "expected a blank line between the note text and the signatures, got none"
        )
    text, sigs = data[: split + 1].decode("utf-8"), data[split + 2 :]
    if not sigs:
        raise InvalidInputError(
            "expected at least one signature line after the blank line, got none"
        )
    if not sigs.endswith(b"\n"):
        raise InvalidInputError(
            "expected the last signature line to end in a newline, got no final newline"
        )
    lines = sigs[:-1].decode("utf-8").split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise InvalidInputError(
            f"expected at most {MAX_SIGNATURES} signature lines, got {len(lines)}"
        )
    signatures = tuple(
        _parse_sig_line(line, f"signature line {i}") for i, line in enumerate(lines, 1)
    )
    return ParsedNote(text, signatures)


def _index_verifiers(verifiers: VerifierSource) -> dict[tuple[str, int], list[Verifier]]:
    items: Iterable[Verifier | str]
    items = verifiers.values() if isinstance(verifiers, Mapping) else verifiers
    index: dict[tuple[str, int], list[Verifier]] = {}
    for item in items:
        v = new_verifier(item) if isinstance(item, str) else item
        if not isinstance(v, Verifier):
            raise InvalidInputError(
                f"expected a Verifier or a verifier key string, got {type(v).__name__}"
            )
        same = index.setdefault((v.name, v.key_hash), [])
        if v not in same:
            same.append(v)
    return index


def verify_note(note: ParsedNote, verifiers: VerifierSource) -> Note:
    """Verify a parsed note's signatures against the known keys.

    A signature by an unknown key (name and key hash not both known) is kept as unverified.
    Every distinct line by a known key must verify, else :class:`VerificationError`. This does
    NOT require any verified signature; :func:`open_note` does.
    """
    index = _index_verifiers(verifiers)
    verified: list[Signature] = []
    verified_keys: set[tuple[str, int]] = set()
    checked: set[Signature] = set()
    unverified: list[Signature] = []
    for i, sig in enumerate(note.signatures, 1):
        key = (sig.name, sig.key_hash)
        candidates = index.get(key)
        if not candidates:
            if sig not in unverified:
                unverified.append(sig)
            continue
        if len(candidates) > 1:
            raise InvalidInputError(
                f"expected one verifier for key {sig.key_id}, got {len(candidates)} different ones"
            )
        if sig in checked:
            continue
        checked.add(sig)
        if not candidates[0].verify(note.text.encode("utf-8"), sig.signature):
            raise VerificationError(f"invalid signature by key {sig.key_id} on signature line {i}")
        if key not in verified_keys:
            verified_keys.add(key)
            verified.append(sig)
    return Note(note.text, tuple(verified), tuple(unverified))


def open_note(msg: bytes, verifiers: VerifierSource) -> Note:
    """Parse and verify a signed note (Go: note.Open).

    Raises :class:`InvalidInputError` if malformed, :class:`VerificationError` if a signature
    by a known key does not verify or if no known key signed the note.
    """
    note = verify_note(parse_note(msg), verifiers)
    if not note.signatures:
        n = len(note.unverified_signatures)
        raise VerificationError(
            f"expected a signature by a known key, got none "
            f"({n} signature{'' if n == 1 else 's'} by unknown keys)"
        )
    return note


def count_distinct_signers(note: Note) -> int:
    """How many distinct signers verified the note, by key name: a name whose line appears
    twice, or that signed with two known keys (e.g. across a key rotation), counts once."""
    return len({sig.name for sig in note.signatures})


# --------------------------------------------------------------------------------------------
# Signing


def _check_text(text: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidInputError(f"expected the note text as str, got {type(text).__name__}")
    if not text.endswith("\n"):
        raise InvalidInputError(
            f"expected the note text to end in a newline, got {_show(text[-20:])} at its end"
            if text
            else "expected the note text to end in a newline, got an empty text"
        )
    bad = _first_control(text)
    if bad >= 0:
        raise InvalidInputError(
            f"expected no control characters other than newline in the note text, "
            f"got 0x{ord(text[bad]):02x} at character {bad}"
        )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"expected a note text encodable as UTF-8, got a lone surrogate at character "
            f"{exc.start}"
        ) from None


def _make_signature(signer: Signer, message: bytes) -> Signature:
    if not isinstance(signer, Signer):
        raise InvalidInputError(f"expected a Signer, got {type(signer).__name__}")
    return Signature(signer.name, signer.key_hash, signer.sign(message))


def signature_line(signer: Signer, text: str) -> str:
    """The signature line (ending in a newline) of ``signer`` over the note ``text``."""
    return _make_signature(signer, _check_text(text)).line


def sign(text: str, signers: Signer | Iterable[Signer]) -> bytes:
    """The signed note: ``text``, a blank line, one signature line per distinct signer key.

    ``text`` must end in a newline and have no control characters other than newline (it
    may contain blank lines: the signatures start after the last one).
    """
    message = _check_text(text)
    signer_list = [signers] if isinstance(signers, Signer) else list(signers)
    if not signer_list:
        raise InvalidInputError("expected at least one signer, got none")
    lines: list[str] = []
    seen: set[tuple[str, int]] = set()
    for signer in signer_list:
        sig = _make_signature(signer, message)
        if (sig.name, sig.key_hash) in seen:
            continue
        seen.add((sig.name, sig.key_hash))
        lines.append(sig.line)
    if len(lines) > MAX_SIGNATURES:
        raise InvalidInputError(
            f"expected at most {MAX_SIGNATURES} signature lines, got {len(lines)}"
        )
    return message + b"\n" + "".join(lines).encode("utf-8")


def add_signatures(note_bytes: bytes, lines: Iterable[str]) -> bytes:
    """Add signature lines (e.g. cosignatures) to a signed note. Nothing is verified.

    A line identical to one already in the note is skipped, so adding is idempotent. A line
    for a key (name and hash) that already has a different line replaces it, and goes last,
    as Go's note.Sign does when re-signing. Two different new lines for one key are refused.
    """
    parsed = parse_note(note_bytes)
    if isinstance(lines, str):
        lines = [lines]
    new: list[Signature] = []
    for line in lines:
        sig = parse_signature_line(line)
        clash = next((s for s in new if (s.name, s.key_hash) == (sig.name, sig.key_hash)), None)
        if clash is None:
            new.append(sig)
        elif clash != sig:
            raise InvalidInputError(
                f"expected one signature line per key, got two different lines for key {sig.key_id}"
            )
    existing = list(parsed.signatures)
    appended: list[Signature] = []
    for sig in new:
        if sig in existing:
            continue
        existing = [s for s in existing if (s.name, s.key_hash) != (sig.name, sig.key_hash)]
        appended.append(sig)
    result = existing + appended
    if len(result) > MAX_SIGNATURES:
        raise InvalidInputError(
            f"expected at most {MAX_SIGNATURES} signature lines, got {len(result)}"
        )
    return (parsed.text + "\n" + "".join(s.line for s in result)).encode("utf-8")


def verify_signature_line(text: str, line: str, verifiers: VerifierSource) -> Signature:
    """Check one signature line over ``text`` (e.g. a peer's cosignature before adding it).

    Raises :class:`InvalidInputError` if the line is malformed and :class:`VerificationError`
    if its key is unknown or the signature does not verify.
    """
    message = _check_text(text)
    sig = parse_signature_line(line)
    candidates = _index_verifiers(verifiers).get((sig.name, sig.key_hash))
    if not candidates:
        raise VerificationError(f"expected a signature by a known key, got key {sig.key_id}")
    if len(candidates) > 1:
        raise InvalidInputError(
            f"expected one verifier for key {sig.key_id}, got {len(candidates)} different ones"
        )
    if not candidates[0].verify(message, sig.signature):
        raise VerificationError(f"invalid signature by key {sig.key_id}")
    return sig
