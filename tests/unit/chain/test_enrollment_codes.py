"""One-time enrollment codes (chain/enrollment_codes.py): 128 random bits written for people,
with check bits that catch a mistyped code before it is sent."""

from __future__ import annotations

import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chain.enrollment_codes import (
    CODE_SYMBOLS,
    EnrollmentCode,
    new_enrollment_code,
    parse_enrollment_code,
)
from chain.errors import InvalidInputError
from chain.signed_messages import DEVICE_ENROLL_CONTEXT, enrollment_message

FIXED = EnrollmentCode(bytes(range(16)))
_WRITTEN = re.compile(r"[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){6}")


def test_a_code_is_128_random_bits_in_seven_groups_of_four_symbols() -> None:
    codes = {new_enrollment_code() for _ in range(200)}
    assert len(codes) == 200
    for code in codes:
        assert len(code.secret) == 16
        assert _WRITTEN.fullmatch(str(code)), str(code)
        assert parse_enrollment_code(str(code)) == code
    assert CODE_SYMBOLS == 28


def test_the_written_form_is_read_leniently() -> None:
    written = str(FIXED)
    assert parse_enrollment_code(written.lower()) == FIXED
    assert parse_enrollment_code(written.replace("-", " ")) == FIXED
    assert parse_enrollment_code(written.replace("-", "")) == FIXED
    if "0" in written or "1" in written:
        confusable = written.replace("0", "o").replace("1", "l")
        assert parse_enrollment_code(confusable) == FIXED


def test_every_single_mistyped_symbol_of_a_code_is_caught() -> None:
    written = str(FIXED).replace("-", "")
    caught = 0
    tried = 0
    for position, symbol in enumerate(written):
        for other in "0123456789ABCDEFGHJKMNPQRSTVWXYZ":
            if other == symbol:
                continue
            tried += 1
            typo = written[:position] + other + written[position + 1 :]
            try:
                parse_enrollment_code(typo)
            except InvalidInputError as error:
                assert "it was mistyped" in str(error)
                caught += 1
    # 12 check bits: about one typo in 4,096 would slip through; here none of 868 does.
    assert (caught, tried) == (868, 868)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected an enrollment code, got none"),
        ("--", "expected an enrollment code, got none"),
        ("ABCD", "of 28 letters and digits (dashes aside), got 4"),
        ("U" * 28, "got 'U' in it"),
        ("#" * 28, "got '#' in it"),
    ],
)
def test_what_is_not_a_code_says_why(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        parse_enrollment_code(text)


def test_the_digest_and_the_proof_bind_the_code_and_the_key() -> None:
    other = new_enrollment_code()
    assert len(FIXED.digest) == 32 and FIXED.digest != other.digest
    assert FIXED.secret not in FIXED.digest
    assert "secret" not in repr(FIXED) and str(FIXED) not in repr(FIXED)
    key = Ed25519PrivateKey.generate().public_key()
    public = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    message = enrollment_message(FIXED.digest, public)
    assert message.startswith(DEVICE_ENROLL_CONTEXT)
    assert message == DEVICE_ENROLL_CONTEXT + b"\x00\x00\x00\x20" + FIXED.digest + (
        b"\x00\x00\x00\x20" + public
    )
    assert message != enrollment_message(other.digest, public)


def test_a_code_has_sixteen_bytes() -> None:
    with pytest.raises(InvalidInputError, match="expected 16 random bytes"):
        EnrollmentCode(b"short")
