"""Block checkpoints in the C2SP tlog-checkpoint format (https://c2sp.org/tlog-checkpoint).

The checkpoint text of a block is::

    <origin>\\n
    <tree size>\\n
    <base64 root hash>\\n
    height <block height>\\n
    previous <base64 SHA-256 of the previous checkpoint text, or of 32 zero bytes>\\n
    cut-time <unix milliseconds>\\n
    [further extension lines, kept opaque]

The three extension lines are ours (DESIGN.md §3.2) and come in that order, so every node
writes the same bytes for the same block. Numbers are ASCII decimal without leading zeros and
at most 2**63 - 1; hashes are 32 bytes in standard base64 with padding. Each node signs that
text as a signed note (:mod:`chain.note`); a checkpoint is sealed once ``quorum`` distinct
members signed it (:func:`verify_sealed_checkpoint`). Nothing here reads the clock.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

from chain.errors import InvalidInputError, VerificationError
from chain.note import (
    VerifierSource,
    b64decode_strict,
    count_distinct_signers,
    parse_note,
    verify_note,
)

__all__ = [
    "GENESIS_PREVIOUS_HASH",
    "HASH_SIZE",
    "MAX_NUMBER",
    "Checkpoint",
    "checkpoint_hash",
    "parse_checkpoint",
    "verify_sealed_checkpoint",
]

HASH_SIZE = 32
MAX_NUMBER = 2**63 - 1
"""Largest tree size, height or cut time (fits a signed 64-bit integer, as Go's tlog uses)."""

GENESIS_PREVIOUS_HASH = bytes(HASH_SIZE)
"""The ``previous`` hash of the first checkpoint: 32 zero bytes."""

_HEIGHT = "height"
_PREVIOUS = "previous"
_CUT_TIME = "cut-time"
_KNOWN = (_HEIGHT, _PREVIOUS, _CUT_TIME)
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def _show(value: str, limit: int = 80) -> str:
    if len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value)} characters)"
    return repr(value)


def _first_control(text: str) -> int:
    for i, ch in enumerate(text):
        if ch < " ":
            return i
    return -1


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _parse_number(value: str, what: str) -> int:
    if _DECIMAL.fullmatch(value) is None:
        raise InvalidInputError(
            f"expected {what} as a decimal number without leading zeros, got {_show(value)}"
        )
    if len(value) > len(str(MAX_NUMBER)) or int(value) > MAX_NUMBER:
        raise InvalidInputError(f"expected {what} at most {MAX_NUMBER}, got {_show(value)}")
    return int(value)


def _parse_hash(value: str, what: str) -> bytes:
    raw = b64decode_strict(value)
    if raw is None:
        raise InvalidInputError(
            f"expected {what} as standard base64 with padding, got {_show(value)}"
        )
    if len(raw) != HASH_SIZE:
        raise InvalidInputError(f"expected {what} of {HASH_SIZE} bytes, got {len(raw)} bytes")
    return raw


def _check_number(value: object, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"expected {field} as int, got {type(value).__name__}")
    if not 0 <= value <= MAX_NUMBER:
        raise InvalidInputError(f"expected {field} between 0 and {MAX_NUMBER}, got {value}")


def _check_hash(value: object, field: str) -> None:
    if not isinstance(value, bytes):
        raise InvalidInputError(f"expected {field} as bytes, got {type(value).__name__}")
    if len(value) != HASH_SIZE:
        raise InvalidInputError(f"expected {field} of {HASH_SIZE} bytes, got {len(value)} bytes")


def _keyword(line: str) -> str:
    return line.split(" ", 1)[0]


@dataclass(frozen=True)
class Checkpoint:
    """The checkpoint that ends a block. Validated on construction.

    ``extensions`` holds extension lines after ``cut-time`` that we do not interpret (without
    their newlines); they are written back as they were.
    """

    origin: str
    size: int
    root_hash: bytes
    height: int
    previous_hash: bytes
    cut_time_ms: int
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str):
            raise InvalidInputError(f"expected origin as str, got {type(self.origin).__name__}")
        if not self.origin:
            raise InvalidInputError("expected a non-empty origin, got an empty one")
        bad = _first_control(self.origin)
        if bad >= 0:
            raise InvalidInputError(
                f"expected an origin without control characters, "
                f"got 0x{ord(self.origin[bad]):02x} at character {bad}"
            )
        _check_number(self.size, "size")
        _check_hash(self.root_hash, "root_hash")
        _check_number(self.height, "height")
        _check_hash(self.previous_hash, "previous_hash")
        _check_number(self.cut_time_ms, "cut_time_ms")
        if not isinstance(self.extensions, tuple):
            raise InvalidInputError(
                f"expected extensions as a tuple of str, got {type(self.extensions).__name__}"
            )
        for i, line in enumerate(self.extensions):
            if not isinstance(line, str):
                raise InvalidInputError(f"expected extension {i} as str, got {type(line).__name__}")
            if not line:
                raise InvalidInputError(f"expected extension {i} to be non-empty, got ''")
            bad = _first_control(line)
            if bad >= 0:
                raise InvalidInputError(
                    f"expected extension {i} without control characters, "
                    f"got 0x{ord(line[bad]):02x} at character {bad}"
                )
            if _keyword(line) in _KNOWN:
                raise InvalidInputError(
                    f"expected extension {i} not to start with a known keyword "
                    f"({', '.join(_KNOWN)}), got {_show(line)}"
                )
        try:
            self.origin.encode("utf-8")
            for line in self.extensions:
                line.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(
                "expected origin and extensions encodable as UTF-8, got a lone surrogate"
            ) from None

    def to_text(self) -> str:
        """The checkpoint text (the body of the signed note), ending in a newline."""
        lines = [
            self.origin,
            str(self.size),
            _b64encode(self.root_hash),
            f"{_HEIGHT} {self.height}",
            f"{_PREVIOUS} {_b64encode(self.previous_hash)}",
            f"{_CUT_TIME} {self.cut_time_ms}",
            *self.extensions,
        ]
        return "\n".join(lines) + "\n"

    def hash(self) -> bytes:
        """SHA-256 of :meth:`to_text`: the ``previous`` hash of the next checkpoint."""
        return checkpoint_hash(self.to_text())


def checkpoint_hash(text: str | bytes) -> bytes:
    """SHA-256 of a checkpoint TEXT (not of the signed note: signature lines vary)."""
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return hashlib.sha256(data).digest()


def _extension(lines: list[str], index: int, keyword: str, shape: str) -> str:
    line_no = index + 1
    if index >= len(lines):
        raise InvalidInputError(
            f"expected extension line {line_no} '{keyword} {shape}', got end of text"
        )
    line = lines[index]
    prefix = keyword + " "
    if not line.startswith(prefix):
        raise InvalidInputError(
            f"expected extension line {line_no} '{keyword} {shape}', got {_show(line)}"
        )
    return line[len(prefix) :]


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint text strictly (the inverse of :meth:`Checkpoint.to_text`).

    Raises :class:`InvalidInputError` ("expected X, got Y") for anything else.
    """
    if not isinstance(text, str):
        raise InvalidInputError(f"expected checkpoint text as str, got {type(text).__name__}")
    if not text.endswith("\n"):
        raise InvalidInputError(
            f"expected checkpoint text to end in a newline, got {_show(text[-20:])} at its end"
            if text
            else "expected checkpoint text to end in a newline, got an empty text"
        )
    for i, ch in enumerate(text):
        if ch < " " and ch != "\n":
            raise InvalidInputError(
                f"expected no control characters other than newline in the checkpoint, "
                f"got 0x{ord(ch):02x} at character {i}"
            )
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise InvalidInputError(
            f"expected at least 3 lines (origin, tree size, root hash), got {len(lines)}"
        )
    if not lines[0]:
        raise InvalidInputError("expected a non-empty origin on line 1, got an empty line")
    for i, line in enumerate(lines):
        if not line:
            raise InvalidInputError(f"expected line {i + 1} to be non-empty, got an empty line")
    size = _parse_number(lines[1], "the tree size on line 2")
    root = _parse_hash(lines[2], "the root hash on line 3")
    height = _parse_number(_extension(lines, 3, _HEIGHT, "<n>"), f"the {_HEIGHT} on line 4")
    previous = _parse_hash(
        _extension(lines, 4, _PREVIOUS, "<base64 hash>"), f"the {_PREVIOUS} hash on line 5"
    )
    cut_time = _parse_number(
        _extension(lines, 5, _CUT_TIME, "<unix ms>"), f"the {_CUT_TIME} on line 6"
    )
    extensions = tuple(lines[6:])
    for i, line in enumerate(extensions, 7):
        if _keyword(line) in _KNOWN:
            raise InvalidInputError(
                f"expected each of {', '.join(_KNOWN)} once, "
                f"got another '{_keyword(line)}' line on line {i}"
            )
    return Checkpoint(
        origin=lines[0],
        size=size,
        root_hash=root,
        height=height,
        previous_hash=previous,
        cut_time_ms=cut_time,
        extensions=extensions,
    )


def verify_sealed_checkpoint(
    note_bytes: bytes, verifiers: VerifierSource, quorum: int, origin: str
) -> Checkpoint:
    """Open a sealed checkpoint: a signed note with at least ``quorum`` DISTINCT valid
    signatures by the member keys in ``verifiers``, whose text is a checkpoint of ``origin``.

    Raises :class:`InvalidInputError` if the note or checkpoint is malformed (or ``quorum``
    is not a positive int), :class:`VerificationError` if a member signature does not
    verify, the quorum is not met or the origin differs. Signatures by other keys are ignored.
    """
    if isinstance(quorum, bool) or not isinstance(quorum, int) or quorum < 1:
        raise InvalidInputError(f"expected quorum as a positive int, got {quorum!r}")
    note = verify_note(parse_note(note_bytes), verifiers)
    count = count_distinct_signers(note)
    if count < quorum:
        raise VerificationError(
            f"checkpoint has {count} valid member signature{'' if count == 1 else 's'}, "
            f"quorum is {quorum}"
        )
    checkpoint = parse_checkpoint(note.text)
    if checkpoint.origin != origin:
        raise VerificationError(
            f"expected checkpoint origin {origin!r}, got {_show(checkpoint.origin)}"
        )
    return checkpoint
