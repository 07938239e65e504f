"""Tests of chain.checkpoint: C2SP tlog-checkpoint texts with our extension lines, and sealed
(quorum-cosigned) checkpoints.

External vectors: the example checkpoint of C2SP/C2SP ``tlog-checkpoint.md`` and a real
sum.golang.org signed tree head (google/trillian-examples ``formats/log/checkpoint_test.go``);
both lack our extension lines, so they pin the parser's messages.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.checkpoint import (
    GENESIS_PREVIOUS_HASH,
    MAX_NUMBER,
    Checkpoint,
    checkpoint_hash,
    parse_checkpoint,
    verify_sealed_checkpoint,
)
from chain.errors import InvalidInputError, VerificationError
from chain.note import Signer, add_signatures, open_note, parse_note, sign, signature_line

ORIGIN = "swiftchain.example/consortium-log"
ROOT = hashlib.sha256(b"root").digest()

GOLDEN = Checkpoint(
    origin=ORIGIN,
    size=1234,
    root_hash=ROOT,
    height=7,
    previous_hash=GENESIS_PREVIOUS_HASH,
    cut_time_ms=1767225600123,
)
GOLDEN_TEXT = (
    "swiftchain.example/consortium-log\n"
    "1234\n"
    "SBNJTRN+FjG7owHVrKtue7eqdM4RhdRWVl71HXN2d7I=\n"
    "height 7\n"
    "previous AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
    "cut-time 1767225600123\n"
)
GOLDEN_HASH_HEX = "b6ac5e306ad0e5f19e8f966aceebd3c375cb3eaaeffcf4653be91a08efd3c3e2"

# C2SP/C2SP tlog-checkpoint.md
C2SP_CHECKPOINT = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhc"
    "yv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
).encode()
# google/trillian-examples formats/log/checkpoint_test.go
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_NOTE = (
    "go.sum database tree\n"
    "6476701\n"
    "mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n"
    "\n"
    "— sum.golang.org Az3grsLX85Gz+s1SiTbgkuqxgItqFq7gsMUEyVnrsa9LM7Us9S+1xbFIGu95949rj4nPRYfvim"
    "WEPWL+o3GeoWwOoAw=\n"
).encode()

NODES = [
    Signer(f"node-{i}.swiftchain.example", Ed25519PrivateKey.from_private_bytes(bytes([i]) * 32))
    for i in (1, 2, 3)
]
MEMBERS = [node.verifier() for node in NODES]
OUTSIDER = Signer("outsider.example", Ed25519PrivateKey.from_private_bytes(bytes([9]) * 32))


# --------------------------------------------------------------------------------------------
# Text form


def test_golden_text() -> None:
    assert GOLDEN.to_text() == GOLDEN_TEXT
    assert parse_checkpoint(GOLDEN_TEXT) == GOLDEN


def test_golden_hash() -> None:
    assert checkpoint_hash(GOLDEN_TEXT).hex() == GOLDEN_HASH_HEX
    assert checkpoint_hash(GOLDEN_TEXT) == hashlib.sha256(GOLDEN_TEXT.encode()).digest()
    assert checkpoint_hash(GOLDEN_TEXT.encode()) == checkpoint_hash(GOLDEN_TEXT)
    assert GOLDEN.hash() == bytes.fromhex(GOLDEN_HASH_HEX)


def test_chain_of_checkpoints() -> None:
    second = Checkpoint(
        ORIGIN, 1300, hashlib.sha256(b"root2").digest(), 8, GOLDEN.hash(), 1767225601000
    )
    assert second.to_text() == (
        "swiftchain.example/consortium-log\n"
        "1300\n"
        "v1nWpFZPn0mWTvN385jjXH2iQT6deSyX39u8lofOirw=\n"
        "height 8\n"
        "previous tqxeMGrQ5fGej5ZqzuvTw3XLPqrv/PRlO+kaCO/Tw+I=\n"
        "cut-time 1767225601000\n"
    )
    assert parse_checkpoint(second.to_text()).previous_hash == checkpoint_hash(GOLDEN_TEXT)


def test_unknown_extension_lines_are_kept() -> None:
    text = GOLDEN_TEXT + "future-thing 1\nanother opaque line + more\n"
    cp = parse_checkpoint(text)
    assert cp.extensions == ("future-thing 1", "another opaque line + more")
    assert replace(cp, extensions=()) == GOLDEN
    assert cp.to_text() == text


def test_edge_values() -> None:
    cp = Checkpoint("o", 0, bytes(32), 0, bytes(32), 0)
    assert cp.to_text() == (
        "o\n0\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\nheight 0\n"
        "previous AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\ncut-time 0\n"
    )
    big = Checkpoint("o p+q ünï", MAX_NUMBER, bytes(32), MAX_NUMBER, bytes(32), MAX_NUMBER)
    assert parse_checkpoint(big.to_text()) == big
    assert "\n9223372036854775807\n" in big.to_text()


# Every parser error: (text, message fragment).
_B64_ZERO = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
_HEAD = f"{ORIGIN}\n1234\n{_B64_ZERO}\n"
_PREV = f"previous {_B64_ZERO}\n"
PARSE_ERRORS = [
    ("", "expected checkpoint text to end in a newline, got an empty text"),
    (
        GOLDEN_TEXT[:-1],
        "expected checkpoint text to end in a newline, got 't-time 1767225600123' at its end",
    ),
    (
        GOLDEN_TEXT.replace("height", "height\r"),
        "expected no control characters other than newline in the checkpoint, got 0x0d at "
        "character 90",
    ),
    (f"{ORIGIN}\n1234\n", "expected at least 3 lines (origin, tree size, root hash), got 2"),
    ("\n", "expected at least 3 lines (origin, tree size, root hash), got 1"),
    ("\n1\n" + _B64_ZERO + "\n", "expected a non-empty origin on line 1, got an empty line"),
    (f"{ORIGIN}\n\n{_B64_ZERO}\n", "expected line 2 to be non-empty, got an empty line"),
    (_HEAD + "height 1\n\n", "expected line 5 to be non-empty, got an empty line"),
    (
        f"{ORIGIN}\n01234\n{_B64_ZERO}\n",
        "expected the tree size on line 2 as a decimal number without leading zeros, got '01234'",
    ),
    (f"{ORIGIN}\n-1\n{_B64_ZERO}\n", "decimal number without leading zeros, got '-1'"),
    (f"{ORIGIN}\n+1\n{_B64_ZERO}\n", "decimal number without leading zeros, got '+1'"),
    (f"{ORIGIN}\n 1\n{_B64_ZERO}\n", "decimal number without leading zeros, got ' 1'"),
    (f"{ORIGIN}\n1_000\n{_B64_ZERO}\n", "decimal number without leading zeros, got '1_000'"),
    (f"{ORIGIN}\n\u0661\u0662\n{_B64_ZERO}\n", "without leading zeros, got '\u0661\u0662'"),
    (f"{ORIGIN}\n0x10\n{_B64_ZERO}\n", "decimal number without leading zeros, got '0x10'"),
    (
        f"{ORIGIN}\n9223372036854775808\n{_B64_ZERO}\n",
        "expected the tree size on line 2 at most 9223372036854775807, got '9223372036854775808'",
    ),
    (f"{ORIGIN}\n{'9' * 30}\n{_B64_ZERO}\n", "at most 9223372036854775807, got '999999"),
    (
        f"{ORIGIN}\n1\nAAAA\n",
        "expected the root hash on line 3 of 32 bytes, got 3 bytes",
    ),
    (
        f"{ORIGIN}\n1\n{base64.b64encode(bytes(33)).decode()}\n",
        "expected the root hash on line 3 of 32 bytes, got 33 bytes",
    ),
    (
        f"{ORIGIN}\n1\n{_B64_ZERO.rstrip('=')}\n",
        "expected the root hash on line 3 as standard base64 with padding, got 'AAAA",
    ),
    (
        f"{ORIGIN}\n1\n{_B64_ZERO[:-2]}B=\n",  # non-zero padding bits
        "expected the root hash on line 3 as standard base64 with padding",
    ),
    (
        f"{ORIGIN}\n1\n{_B64_ZERO.replace('A', '-', 1)}\n",  # base64url is not standard base64
        "expected the root hash on line 3 as standard base64 with padding",
    ),
    (_HEAD, "expected extension line 4 'height <n>', got end of text"),
    (_HEAD + "cut-time 5\n", "expected extension line 4 'height <n>', got 'cut-time 5'"),
    (_HEAD + "height: 5\n", "expected extension line 4 'height <n>', got 'height: 5'"),
    (_HEAD + "Height 5\n", "expected extension line 4 'height <n>', got 'Height 5'"),
    (
        _HEAD + "height 05\n",
        "expected the height on line 4 as a decimal number without leading zeros, got '05'",
    ),
    (_HEAD + "height  5\n", "without leading zeros, got ' 5'"),
    (_HEAD + "height 5 \n", "without leading zeros, got '5 '"),
    (_HEAD + "height 5\n", "expected extension line 5 'previous <base64 hash>', got end of text"),
    (
        _HEAD + "height 5\ncut-time 1\n" + _PREV,
        "expected extension line 5 'previous <base64 hash>', got 'cut-time 1'",
    ),
    (
        _HEAD + "height 5\nprevious AAAA\n",
        "expected the previous hash on line 5 of 32 bytes, got 3 bytes",
    ),
    (
        _HEAD + "height 5\nprevious *\n",
        "expected the previous hash on line 5 as standard base64 with padding, got '*'",
    ),
    (
        _HEAD + "height 5\n" + _PREV,
        "expected extension line 6 'cut-time <unix ms>', got end of text",
    ),
    (
        _HEAD + "height 5\n" + _PREV + "cut_time 5\n",
        "expected extension line 6 'cut-time <unix ms>', got 'cut_time 5'",
    ),
    (
        _HEAD + "height 5\n" + _PREV + "cut-time 1.5\n",
        "expected the cut-time on line 6 as a decimal number without leading zeros, got '1.5'",
    ),
    (
        _HEAD + "height 5\n" + _PREV + "cut-time 9223372036854775808\n",
        "expected the cut-time on line 6 at most 9223372036854775807",
    ),
    (
        GOLDEN_TEXT + "height 8\n",
        "expected each of height, previous, cut-time once, got another 'height' line on line 7",
    ),
    (
        GOLDEN_TEXT + "x\ncut-time 1\n",
        "expected each of height, previous, cut-time once, got another 'cut-time' line on line 8",
    ),
    (GOLDEN_TEXT + "x\n\n", "expected line 8 to be non-empty, got an empty line"),
]


@pytest.mark.parametrize(("text", "message"), PARSE_ERRORS)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        parse_checkpoint(text)


def test_parse_needs_str() -> None:
    with pytest.raises(InvalidInputError, match="expected checkpoint text as str, got bytes"):
        parse_checkpoint(GOLDEN_TEXT.encode())  # type: ignore[arg-type]


def test_c2sp_example_checkpoint_lacks_our_extensions() -> None:
    text = parse_note(C2SP_CHECKPOINT).text
    assert (
        text
        == "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )
    with pytest.raises(
        InvalidInputError,
        match=re.escape("expected extension line 4 'height <n>', got end of text"),
    ):
        parse_checkpoint(text)


def test_real_sumdb_checkpoint_is_verified_then_refused_as_not_ours() -> None:
    with pytest.raises(InvalidInputError, match="expected extension line 4 'height <n>'"):
        verify_sealed_checkpoint(SUMDB_NOTE, [SUMDB_VKEY], 1, "go.sum database tree")


# Every construction error: (field changes, message fragment).
CONSTRUCT_ERRORS = [
    ({"origin": ""}, "expected a non-empty origin, got an empty one"),
    ({"origin": "a\nb"}, "expected an origin without control characters, got 0x0a at character 1"),
    ({"origin": b"o"}, "expected origin as str, got bytes"),
    (
        {"origin": "\ud800"},
        "expected origin and extensions encodable as UTF-8, got a lone surrogate",
    ),
    ({"size": -1}, "expected size between 0 and 9223372036854775807, got -1"),
    ({"size": MAX_NUMBER + 1}, "expected size between 0 and 9223372036854775807, got 9223"),
    ({"size": True}, "expected size as int, got bool"),
    ({"size": 1.0}, "expected size as int, got float"),
    ({"height": -5}, "expected height between 0 and 9223372036854775807, got -5"),
    ({"cut_time_ms": "5"}, "expected cut_time_ms as int, got str"),
    ({"root_hash": bytes(31)}, "expected root_hash of 32 bytes, got 31 bytes"),
    ({"root_hash": bytearray(32)}, "expected root_hash as bytes, got bytearray"),
    ({"previous_hash": b""}, "expected previous_hash of 32 bytes, got 0 bytes"),
    ({"extensions": ["x"]}, "expected extensions as a tuple of str, got list"),
    ({"extensions": ("",)}, "expected extension 0 to be non-empty, got ''"),
    ({"extensions": ("a", 1)}, "expected extension 1 as str, got int"),
    ({"extensions": ("a\nb",)}, "expected extension 0 without control characters, got 0x0a"),
    (
        {"extensions": ("height 9",)},
        "expected extension 0 not to start with a known keyword (height, previous, cut-time), "
        "got 'height 9'",
    ),
    ({"extensions": ("previous",)}, "not to start with a known keyword"),
]


@pytest.mark.parametrize(("changes", "message"), CONSTRUCT_ERRORS)
def test_construction_errors(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        replace(GOLDEN, **changes)


# --------------------------------------------------------------------------------------------
# Properties

_line_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=40
)
_numbers = st.integers(min_value=0, max_value=MAX_NUMBER)
_hashes = st.binary(min_size=32, max_size=32)
_extensions = st.lists(
    _line_text.filter(lambda s: s.split(" ", 1)[0] not in ("height", "previous", "cut-time")),
    max_size=3,
).map(tuple)


@settings(max_examples=300, deadline=None)
@given(
    origin=_line_text,
    size=_numbers,
    root=_hashes,
    height=_numbers,
    previous=_hashes,
    cut=_numbers,
    extensions=_extensions,
)
def test_parse_to_text_round_trip(
    origin: str,
    size: int,
    root: bytes,
    height: int,
    previous: bytes,
    cut: int,
    extensions: tuple[str, ...],
) -> None:
    cp = Checkpoint(origin, size, root, height, previous, cut, extensions)
    text = cp.to_text()
    assert parse_checkpoint(text) == cp
    assert parse_checkpoint(text).to_text() == text
    assert len(text.split("\n")) == 7 + len(extensions)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_parse_raises_only_invalid_input(text: str) -> None:
    try:
        cp = parse_checkpoint(text)
    except InvalidInputError:
        return
    assert cp.to_text() == text


# --------------------------------------------------------------------------------------------
# Sealed checkpoints


def _sealed(*signers: Signer, text: str = GOLDEN_TEXT) -> bytes:
    note = sign(text, [signers[0]])
    return add_signatures(note, [signature_line(s, text) for s in signers[1:]])


def test_sealed_with_quorum() -> None:
    assert verify_sealed_checkpoint(_sealed(NODES[0], NODES[2]), MEMBERS, 2, ORIGIN) == GOLDEN
    assert verify_sealed_checkpoint(_sealed(*NODES), MEMBERS, 3, ORIGIN) == GOLDEN
    vkeys = [m.vkey for m in MEMBERS]
    assert verify_sealed_checkpoint(_sealed(NODES[1], NODES[0]), vkeys, 2, ORIGIN) == GOLDEN


def test_quorum_not_met() -> None:
    with pytest.raises(
        VerificationError, match=re.escape("checkpoint has 1 valid member signature, quorum is 2")
    ):
        verify_sealed_checkpoint(_sealed(NODES[0]), MEMBERS, 2, ORIGIN)
    with pytest.raises(
        VerificationError, match=re.escape("checkpoint has 2 valid member signatures, quorum is 3")
    ):
        verify_sealed_checkpoint(_sealed(NODES[0], NODES[1]), MEMBERS, 3, ORIGIN)


def test_duplicate_member_line_counts_once() -> None:
    line = signature_line(NODES[0], GOLDEN_TEXT)
    note = (GOLDEN_TEXT + "\n" + line + line).encode()
    with pytest.raises(VerificationError, match="checkpoint has 1 valid member signature, quorum"):
        verify_sealed_checkpoint(note, MEMBERS, 2, ORIGIN)


def test_member_with_two_keys_counts_once() -> None:
    rotated = Signer(NODES[0].name, Ed25519PrivateKey.from_private_bytes(bytes([42]) * 32))
    note = _sealed(NODES[0], rotated)
    with pytest.raises(VerificationError, match="checkpoint has 1 valid member signature, quorum"):
        verify_sealed_checkpoint(note, [*MEMBERS, rotated.verifier()], 2, ORIGIN)


def test_non_member_signatures_do_not_count() -> None:
    note = _sealed(OUTSIDER, NODES[1])
    with pytest.raises(VerificationError, match="checkpoint has 1 valid member signature, quorum"):
        verify_sealed_checkpoint(note, MEMBERS, 2, ORIGIN)
    with pytest.raises(VerificationError, match="checkpoint has 0 valid member signatures, quorum"):
        verify_sealed_checkpoint(_sealed(OUTSIDER), MEMBERS, 1, ORIGIN)
    assert verify_sealed_checkpoint(_sealed(OUTSIDER, NODES[1], NODES[2]), MEMBERS, 2, ORIGIN)


def test_bad_member_signature_fails_even_with_quorum() -> None:
    good = _sealed(*NODES)
    tampered = good.replace(b"height 7", b"height 8")
    with pytest.raises(
        VerificationError, match=re.escape("invalid signature by key node-1.swiftchain")
    ):
        verify_sealed_checkpoint(tampered, MEMBERS, 2, ORIGIN)
    other_text = GOLDEN_TEXT.replace("1234", "1235")
    forged = add_signatures(_sealed(NODES[0], NODES[1]), [signature_line(NODES[2], other_text)])
    with pytest.raises(
        VerificationError, match=re.escape("invalid signature by key node-3.swiftchain")
    ):
        verify_sealed_checkpoint(forged, MEMBERS, 2, ORIGIN)


def test_wrong_origin() -> None:
    with pytest.raises(
        VerificationError,
        match=re.escape(
            "expected checkpoint origin 'other.example/log', "
            "got 'swiftchain.example/consortium-log'"
        ),
    ):
        verify_sealed_checkpoint(_sealed(*NODES), MEMBERS, 2, "other.example/log")


def test_malformed_sealed_inputs() -> None:
    with pytest.raises(InvalidInputError, match="expected a blank line"):
        verify_sealed_checkpoint(GOLDEN_TEXT.encode(), MEMBERS, 2, ORIGIN)
    bad_text = "not a checkpoint\n"
    with pytest.raises(InvalidInputError, match="expected at least 3 lines"):
        verify_sealed_checkpoint(_sealed(*NODES, text=bad_text), MEMBERS, 2, ORIGIN)
    for quorum in (0, -1, True, "2"):
        with pytest.raises(InvalidInputError, match="expected quorum as a positive int"):
            verify_sealed_checkpoint(_sealed(*NODES), MEMBERS, quorum, ORIGIN)  # type: ignore[arg-type]


def test_sealed_note_opens_with_note_api() -> None:
    sealed = _sealed(*NODES)
    n = open_note(sealed, MEMBERS)
    assert parse_checkpoint(n.text) == GOLDEN
    assert [s.name for s in n.signatures] == [node.name for node in NODES]
