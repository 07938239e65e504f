"""One-time enrollment codes: how a patient's first device key gets registered without the
registrar ever holding it.

A hospital or app that registers a patient is given a code, not a key; it shows the code to the
patient (as text and as a QR code), and the patient's device generates its own key and enrolls
it with the code. The code is the device's only credential, so it carries 128 random bits; it is
written for people in Crockford's base32 (digits and upper-case letters without I, L, O and U;
read case-insensitively, with O as 0 and I and L as 1, dashes and spaces ignored) with 12 check
bits at the end, so that a mistyped code is told apart from an unknown one before anything is
sent. 140 bits are 28 symbols, shown in 7 groups of 4: ``7ZQ4-K9M2-XW8D-3HJT-PC5V-R1NB-6YAF``.

The identity service keeps only a code's :attr:`EnrollmentCode.digest`, and the device's proof of
possession signs that hash (:func:`chain.signed_messages.enrollment_message`), so the service,
the SDK and the CLI all take the encoding from here.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Final

from chain.errors import InvalidInputError

__all__ = [
    "CODE_BITS",
    "CODE_SYMBOLS",
    "EnrollmentCode",
    "new_enrollment_code",
    "parse_enrollment_code",
]

#: Random bits in a code.
CODE_BITS: Final = 128
#: Check bits after them: a mistyped code passes the check once in 4,096 tries.
CHECK_BITS: Final = 12
#: Symbols in a code (5 bits each), without the dashes.
CODE_SYMBOLS: Final = (CODE_BITS + CHECK_BITS) // 5
GROUP: Final = 4

_ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_VALUES: Final = {symbol: value for value, symbol in enumerate(_ALPHABET)} | {
    "O": 0,
    "I": 1,
    "L": 1,
}
_CHECK_CONTEXT: Final = b"swiftchain/enrollment-code-check/v1\n"
_HASH_CONTEXT: Final = b"swiftchain/enrollment-code/v1\n"


@dataclass(frozen=True)
class EnrollmentCode:
    """An enrollment code: its random bytes; ``str()`` gives its written form."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != CODE_BITS // 8:
            raise InvalidInputError(
                f"expected {CODE_BITS // 8} random bytes for an enrollment code, "
                f"got {len(self.secret)}"
            )

    def __str__(self) -> str:
        value = (int.from_bytes(self.secret, "big") << CHECK_BITS) | _check(self.secret)
        symbols = "".join(
            _ALPHABET[(value >> (5 * (CODE_SYMBOLS - 1 - i))) & 31] for i in range(CODE_SYMBOLS)
        )
        return "-".join(symbols[i : i + GROUP] for i in range(0, CODE_SYMBOLS, GROUP))

    @property
    def digest(self) -> bytes:
        """The 32-byte SHA-256 by which the identity service knows the code (it keeps no
        code), and which the enrolling device's proof of possession signs."""
        return hashlib.sha256(_HASH_CONTEXT + self.secret).digest()


def _check(secret: bytes) -> int:
    digest = hashlib.sha256(_CHECK_CONTEXT + secret).digest()
    return int.from_bytes(digest[:2], "big") >> (16 - CHECK_BITS)


def new_enrollment_code() -> EnrollmentCode:
    """A fresh code from the operating system's random source."""
    return EnrollmentCode(secrets.token_bytes(CODE_BITS // 8))


def parse_enrollment_code(text: str) -> EnrollmentCode:
    """The code written in ``text``; InvalidInputError if it is not one, or was mistyped."""
    symbols = text.replace("-", "").replace(" ", "").upper()
    if not symbols:
        raise InvalidInputError("expected an enrollment code, got none")
    if len(symbols) != CODE_SYMBOLS:
        raise InvalidInputError(
            f"expected an enrollment code of {CODE_SYMBOLS} letters and digits (dashes aside), "
            f"got {len(symbols)}"
        )
    value = 0
    for symbol in symbols:
        if symbol not in _VALUES:
            raise InvalidInputError(
                f"expected an enrollment code in letters and digits (no U), got {symbol!r} in it"
            )
        value = (value << 5) | _VALUES[symbol]
    secret = (value >> CHECK_BITS).to_bytes(CODE_BITS // 8, "big")
    if value & ((1 << CHECK_BITS) - 1) != _check(secret):
        raise InvalidInputError(
            "the enrollment code's last symbols do not match the rest: it was mistyped; "
            "enter it again, or scan its QR code"
        )
    return EnrollmentCode(secret)
