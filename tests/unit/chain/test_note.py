"""Tests of chain.note: C2SP signed notes, byte-compatible with golang.org/x/mod/sumdb/note.

Test vectors (copied verbatim, never regenerated):

* golang/mod ``sumdb/note/note_test.go`` and the package doc in ``sumdb/note/note.go``:
  the PeterNeumann signer/verifier keys, the two-line text, its exact signature line, the
  EnochRoot verifier key and its signature of the same text, the doubly signed message, the
  mangled keys and the malformed messages.
* google/trillian-examples ``formats/log/checkpoint_test.go``: a real sum.golang.org signed
  tree head with the sum.golang.org verifier key, three cosignatures of that tree head
  (monkeys, bananas, witness) with their verifier keys, and four signer/verifier key pairs.
* C2SP/C2SP ``signed-note.md`` and ``tlog-checkpoint.md``: the example notes (their public
  keys are not published, so they are only parsed).
"""

from __future__ import annotations

import base64
import re

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from chain import note as note_mod
from chain.errors import InvalidInputError, SwiftchainError, VerificationError
from chain.note import (
    MAX_SIGNATURES,
    Note,
    Signature,
    Signer,
    Verifier,
    add_signatures,
    compute_key_hash,
    count_distinct_signers,
    generate_key,
    is_valid_key_name,
    new_signer,
    new_verifier,
    open_note,
    parse_note,
    parse_signature_line,
    sign,
    signature_line,
    signer_key,
    verifier_key,
    verify_note,
    verify_signature_line,
)

# --- golang/mod sumdb/note/note_test.go ----------------------------------------------------

PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_B64 = (
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)
ENOCH_B64 = (
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ="
)
PETER_SIG = f"— PeterNeumann {PETER_B64}\n"
ENOCH_SIG = f"— EnochRoot {ENOCH_B64}\n"
PETER_NOTE = (TEXT + "\n" + PETER_SIG).encode()
# The doubly-signed message printed in the sumdb/note package documentation.
PETER_ENOCH_NOTE = (TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode()

# --- google/trillian-examples formats/log/checkpoint_test.go --------------------------------

SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_NOTE = (
    "go.sum database tree\n"
    "6476701\n"
    "mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n"
    "\n"
    "— sum.golang.org Az3grsLX85Gz+s1SiTbgkuqxgItqFq7gsMUEyVnrsa9LM7Us9S+1xbFIGu95949rj4nPRYfvim"
    "WEPWL+o3GeoWwOoAw=\n"
).encode()
COSIGNER_VKEYS = [
    "monkeys+db4d9f7e+AULaJMvTtDLHPUcUrjdDad9vDlh/PTfC2VV60JUtCfWT",
    "bananas+cf639f13+AaPjhFnPCQnid/Ql32KWhmh+uk72FVRfK+2DLmO3BI3M",
    "witness+f13a86db+AdYV1Ztajd9BvyjP2HgpwrqYL6TjOwIjGMOq8Bu42xbN",
]
COSIGNATURES = [
    "— monkeys 202ffh9ve46Mqbhuyb4wnC2Pwdan5EsXQym/tF1ggXJqhjGosU4T5intH4iKMRgDLxrnXuIjRaU2NbvAn"
    "aepM6Y+8ww=",
    "— bananas z2OfE+2bbsBZ7NLgfuslc0v7NFW2QyexJ7fhePpoL2N/P7N/COd5S+JNHbQEAlYzz2C5sg0E+x/MggS1mD"
    "R6t3/9rQw=",
    "— witness 8TqG25yWGFLdT7WPf/WoyeG3LwqtkXP+8S3yykOVm6EMh4hPgCke6eSVPU4BdtXNMPJBXKF+UpDbGgCdcp"
    "R8SVSoqAU=",
]
KEY_PAIRS = [
    (
        "PRIVATE+KEY+Log+2271c621+AdEIq9FLRQni54Wg68T96VJO+iayOaulswav2DUMKgvQ",
        "Log+2271c621+AemuH5ooBpEPcr+W8onrjA1NfuzBVHdezakU81Ekarvs",
    ),
    (
        "PRIVATE+KEY+Known+451c786d+AQPRoE2+Z+Ed1HaHBA9F/FfracvcZ2rDU39kCecMEoci",
        "Known+451c786d+AXAQ0T7lbwuY4ABJ9/MYY9bWV3hmSyOGVt2x42NkmdUH",
    ),
    (
        "PRIVATE+KEY+KnownAgain+4893b26c+ARhZda/l25zjGZswYLDZsLNRzNpmv5wYTN9IoTr1OJ2+",
        "KnownAgain+4893b26c+AQ+LR7BFF/F/dkpIBjBpSvT0crkteizuUkavAoGeaYMj",
    ),
    (
        "PRIVATE+KEY+Unknown+fdbb2e08+Aav2knTC6orbhXX8pMWuNiWgO+Wwk2DB+h1eU2Q1W1nU",
        "Unknown+fdbb2e08+AWgRIYZ+8x1Vl+1Q+sR8zciNHiYI1SdlBjNw+RV0rots",
    ),
]

# --- C2SP/C2SP signed-note.md ---------------------------------------------------------------

C2SP_NOTE = (
    "Ognuno sta solo sul cuor della terra\n"
    "trafitto da un raggio di sole:\n"
    "\n"
    "ed è subito sera.\n"
    "\n"
    "— quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouF"
    "SQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n"
).encode()


def _key(seed_byte: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed_byte]) * 32)


@pytest.fixture
def peter() -> Signer:
    return new_signer(PETER_SKEY)


# --------------------------------------------------------------------------------------------
# Keys


def test_error_family() -> None:
    assert issubclass(InvalidInputError, SwiftchainError)
    assert issubclass(VerificationError, SwiftchainError)


def test_peter_verifier_key_parses() -> None:
    v = new_verifier(PETER_VKEY)
    assert v.name == "PeterNeumann"
    assert v.key_hash == 0xC74F20A3
    assert len(v.public_key) == 32
    assert v.vkey == PETER_VKEY
    assert verifier_key(v.name, v.public_key) == PETER_VKEY
    assert Verifier.from_public_key("PeterNeumann", v.public_key) == v


def test_peter_signer_key_matches_verifier_key(peter: Signer) -> None:
    assert peter.name == "PeterNeumann"
    assert peter.key_hash == 0xC74F20A3
    assert peter.verifier() == new_verifier(PETER_VKEY)
    assert signer_key(peter.name, peter.private_key) == PETER_SKEY
    assert "AYEK" not in repr(peter)


@pytest.mark.parametrize(("skey", "vkey"), KEY_PAIRS)
def test_published_key_pairs(skey: str, vkey: str) -> None:
    signer = new_signer(skey)
    assert signer.verifier().vkey == vkey
    assert signer.verifier() == new_verifier(vkey)
    assert signer_key(signer.name, signer.private_key) == skey


def test_key_hash_is_sha256_of_name_newline_alg_pubkey() -> None:
    v = new_verifier(PETER_VKEY)
    import hashlib

    digest = hashlib.sha256(b"PeterNeumann\n\x01" + v.public_key).digest()
    assert compute_key_hash("PeterNeumann", v.public_key) == int.from_bytes(digest[:4], "big")
    assert compute_key_hash("PeterNeumann", v.public_key) == 0xC74F20A3


def test_generate_key_round_trip() -> None:
    skey, vkey = generate_key("EnochRoot")
    assert skey.startswith("PRIVATE+KEY+EnochRoot+")
    signer = new_signer(skey)
    verifier = new_verifier(vkey)
    assert signer.verifier() == verifier
    assert signer.key_hash == verifier.key_hash
    sig = signer.sign(b"hi")
    assert verifier.verify(b"hi", sig)
    assert not verifier.verify(b"hj", sig)
    assert not verifier.verify(b"hi", bytes([sig[0] ^ 1]) + sig[1:])
    assert not verifier.verify(b"hi", sig[:-1])


def test_every_mangled_verifier_key_is_refused() -> None:
    """As TestNewVerifier: every proper substring and every one-character increment fails."""
    for i in range(len(PETER_VKEY) + 1):
        for j in range(i + 1, len(PETER_VKEY) + 1):
            if i == 0 and j == len(PETER_VKEY):
                continue
            with pytest.raises(InvalidInputError):
                new_verifier(PETER_VKEY[i:j])
    for i in range(len(PETER_VKEY)):
        mangled = PETER_VKEY[:i] + chr(ord(PETER_VKEY[i]) + 1) + PETER_VKEY[i + 1 :]
        with pytest.raises(InvalidInputError):
            new_verifier(mangled)


def test_every_mangled_signer_key_is_refused_without_leaking_it() -> None:
    """As TestNewSigner; and no error message shows the secret key data."""
    secret = PETER_SKEY.rsplit("+", 1)[1][4:]
    for i in range(len(PETER_SKEY) + 1):
        for j in range(i + 1, len(PETER_SKEY) + 1):
            if i == 0 and j == len(PETER_SKEY):
                continue
            with pytest.raises(InvalidInputError) as info:
                new_signer(PETER_SKEY[i:j])
            assert secret[:12] not in str(info.value)
    for i in range(len(PETER_SKEY)):
        mangled = PETER_SKEY[:i] + chr(ord(PETER_SKEY[i]) + 1) + PETER_SKEY[i + 1 :]
        with pytest.raises(InvalidInputError):
            new_signer(mangled)


VKEY_ERRORS = [
    # From note_test.go: wrong length key, with adjusted key hash. Its base64 has non-zero
    # padding bits ("EY=="), which Go tolerates and we do not, so it fails one step earlier.
    (
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "expected the public key as standard base64 with padding, got 'ARpc2QcUPDhMQegwx",
    ),
    # From note_test.go: unknown algorithm, with adjusted key hash.
    (
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "expected algorithm byte 0x01 (Ed25519), got 0x65",
    ),
    ("PeterNeumann", "expected a verifier key of the form <name>+<8 hex digits>+<base64 key>"),
    ("PeterNeumann+c74f20a3", "got too few '+' fields"),
    ("+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "expected a key name that is"),
    ("Peter Neumann+c74f20a3+AA==", "with no spaces, '+' or control characters, got 'Peter "),
    ("PeterNeumann+c74f20a+ARpc", "expected 8 hex digits for the key hash, got 'c74f20a'"),
    ("PeterNeumann+0xc74f20+ARpc", "expected 8 hex digits for the key hash, got '0xc74f20'"),
    ("PeterNeumann+c74f20a3g+ARpc", "expected 8 hex digits for the key hash, got 'c74f20a3g'"),
    (
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",
        "expected the public key as standard base64 with padding, got",
    ),
    (
        "PeterNeumann+c74f20a3+AR==",
        "expected the public key as standard base64 with padding, got 'AR=='",  # padding bits
    ),
    ("PeterNeumann+c74f20a3+", "expected the public key to be non-empty, got nothing"),
    (
        "PeterNeumann+c74f20a3+AQ==",
        "expected a 32-byte Ed25519 public key after the algorithm byte, got 0 bytes",
    ),
    (
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWAA==",
        "expected a 32-byte Ed25519 public key after the algorithm byte, got 33 bytes",
    ),
    (
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "expected key hash c74f20a3 for name 'PeterNeumann' and this key, got c74f20a4",
    ),
    (
        "PeterNeuman+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "for name 'PeterNeuman' and this key, got c74f20a3",
    ),
    (
        "PeterNeumann+c74f20a3+AhpZ2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "expected algorithm byte 0x01 (Ed25519), got 0x02",
    ),
]


@pytest.mark.parametrize(("vkey", "message"), VKEY_ERRORS)
def test_new_verifier_errors(vkey: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        new_verifier(vkey)


def test_verifier_key_hash_accepts_uppercase_hex_like_go() -> None:
    assert new_verifier(PETER_VKEY.replace("c74f20a3", "C74F20A3")) == new_verifier(PETER_VKEY)


SKEY_ERRORS = [
    (
        "PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        "expected a signer key starting with 'PRIVATE+KEY+'",
    ),
    ("PRIVATE+KEY+PeterNeumann", "expected a signer key of the form PRIVATE+KEY+<name>+"),
    ("PRIVATE+KEY+Peter+Neumann+c74f20a3+AAAA", "expected 8 hex digits for the key hash"),
    ("PRIVATE+KEY+Peter\tNeumann+c74f20a3+AA==", "expected a key name that is non-empty"),
    (
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDF",
        "expected the private key as standard base64 with padding, got something else",
    ),
    (
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AgEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        "expected algorithm byte 0x01 (Ed25519), got 0x02",
    ),
    (
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXH",
        "expected a 32-byte Ed25519 seed after the algorithm byte, got 29 bytes",
    ),
    (
        "PRIVATE+KEY+PeterNeumann+c74f20a4+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        "expected key hash c74f20a3 for name 'PeterNeumann' and this key, got c74f20a4",
    ),
]


@pytest.mark.parametrize(("skey", "message"), SKEY_ERRORS)
def test_new_signer_errors(skey: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        new_signer(skey)


@pytest.mark.parametrize(
    "name",
    ["", "a+b", "a b", "a\tb", "a\nb", "a\u00a0b", "a\u2003b", "a\u3000b", "a\x01b", "\ud800"],
)
def test_invalid_key_names(name: str) -> None:
    assert not is_valid_key_name(name)
    with pytest.raises(InvalidInputError, match="expected a key name that is non-empty"):
        Signer(name, _key(1))
    with pytest.raises(InvalidInputError, match="expected a key name that is non-empty"):
        generate_key(name)
    with pytest.raises(InvalidInputError, match="expected a key name that is non-empty"):
        verifier_key(name, bytes(32))


@pytest.mark.parametrize("name", ["a", "sum.golang.org", "node-1.swiftchain/log", "ünïcødé", "—"])
def test_valid_key_names(name: str) -> None:
    assert is_valid_key_name(name)


def test_verifier_construction_checks() -> None:
    v = new_verifier(PETER_VKEY)
    with pytest.raises(InvalidInputError, match=r"expected key hash c74f20a3 .* got c74f20a4"):
        Verifier("PeterNeumann", 0xC74F20A4, v.public_key)
    with pytest.raises(InvalidInputError, match="expected a 32-byte Ed25519 public key, got 31"):
        Verifier("PeterNeumann", 0xC74F20A3, v.public_key[:31])
    with pytest.raises(InvalidInputError, match="expected the key hash as int, got str"):
        Verifier("PeterNeumann", "c74f20a3", v.public_key)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="expected an Ed25519PrivateKey, got bytes"):
        Signer("PeterNeumann", bytes(32))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Signing: byte-for-byte against Go


def test_sign_matches_go_byte_for_byte(peter: Signer) -> None:
    assert sign(TEXT, [peter]) == PETER_NOTE
    assert sign(TEXT, peter) == PETER_NOTE
    assert signature_line(peter, TEXT) == PETER_SIG


def test_sign_writes_one_line_per_key(peter: Signer) -> None:
    assert sign(TEXT, [peter, peter]) == PETER_NOTE


def test_adding_enoch_cosignature_gives_go_doubly_signed_message() -> None:
    assert add_signatures(PETER_NOTE, [ENOCH_SIG]) == PETER_ENOCH_NOTE


SIGN_TEXT_ERRORS = [
    ("abc", "expected the note text to end in a newline, got 'abc' at its end"),
    ("", "expected the note text to end in a newline, got an empty text"),
    ("a\x01b\n", "expected no control characters other than newline in the note text, got 0x01"),
    ("a\rb\n", "got 0x0d at character 1"),
    ("a\ud800\n", "expected a note text encodable as UTF-8, got a lone surrogate at character 1"),
]


@pytest.mark.parametrize(("text", "message"), SIGN_TEXT_ERRORS)
def test_sign_text_errors(peter: Signer, text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        sign(text, [peter])
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        signature_line(peter, text)


def test_sign_needs_a_signer() -> None:
    with pytest.raises(InvalidInputError, match="expected at least one signer, got none"):
        sign(TEXT, [])
    with pytest.raises(InvalidInputError, match="expected a Signer, got str"):
        sign(TEXT, ["PeterNeumann"])  # type: ignore[list-item]


def test_text_with_blank_lines_round_trips(peter: Signer) -> None:
    for text in ["\n", "a\n\n", "a\n\nb\n", "\n\n\n", "— x y\n\n"]:
        assert open_note(sign(text, [peter]), [peter.verifier()]).text == text


# --------------------------------------------------------------------------------------------
# Opening (TestOpen of note_test.go)


def test_open_one_verified_one_unknown() -> None:
    n = open_note(PETER_ENOCH_NOTE, [new_verifier(PETER_VKEY)])
    assert n.text == TEXT
    assert [s.line for s in n.signatures] == [PETER_SIG]
    assert [s.line for s in n.unverified_signatures] == [ENOCH_SIG]
    assert n.signatures[0].key_id == "PeterNeumann+c74f20a3"
    assert n.unverified_signatures[0] == Signature(
        "EnochRoot", 0xAF0CFE78, base64.b64decode(ENOCH_B64)[4:]
    )


def test_open_both_verified() -> None:
    n = open_note(PETER_ENOCH_NOTE, [new_verifier(PETER_VKEY), new_verifier(ENOCH_VKEY)])
    assert [s.name for s in n.signatures] == ["PeterNeumann", "EnochRoot"]
    assert n.unverified_signatures == ()
    assert count_distinct_signers(n) == 2


def test_open_with_no_known_key_fails_but_verify_note_reports() -> None:
    with pytest.raises(
        VerificationError,
        match=re.escape("expected a signature by a known key, got none (2 signatures by unknown"),
    ):
        open_note(PETER_ENOCH_NOTE, [])
    n = verify_note(parse_note(PETER_ENOCH_NOTE), [])
    assert n.signatures == ()
    assert [s.name for s in n.unverified_signatures] == ["PeterNeumann", "EnochRoot"]


def test_verifiers_may_be_strings_or_a_mapping() -> None:
    peter_v = new_verifier(PETER_VKEY)
    assert (
        open_note(PETER_NOTE, [PETER_VKEY]).signatures
        == open_note(PETER_NOTE, {"PeterNeumann": peter_v}).signatures
    )
    assert open_note(PETER_NOTE, {(peter_v.name, peter_v.key_hash): peter_v}).text == TEXT
    # The same verifier twice is not ambiguous (as Go's "unused duplicated verifier").
    assert open_note(PETER_NOTE, [peter_v, PETER_VKEY, ENOCH_VKEY, ENOCH_VKEY]).text == TEXT
    with pytest.raises(InvalidInputError, match="expected a Verifier or a verifier key string"):
        open_note(PETER_NOTE, [42])  # type: ignore[list-item]


def test_ambiguous_verifiers_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two different keys with the same name and key hash (a hash collision)."""
    monkeypatch.setattr(note_mod, "compute_key_hash", lambda name, key: 0xC74F20A3)
    a = Verifier("PeterNeumann", 0xC74F20A3, bytes(32))
    b = Verifier("PeterNeumann", 0xC74F20A3, bytes([1]) * 32)
    monkeypatch.undo()
    with pytest.raises(
        InvalidInputError,
        match=re.escape("expected one verifier for key PeterNeumann+c74f20a3, got 2 different"),
    ):
        open_note(PETER_NOTE, [a, b])
    with pytest.raises(InvalidInputError, match="expected one verifier for key"):
        verify_signature_line(TEXT, PETER_SIG, [a, b])


def test_invalid_signature_by_known_key() -> None:
    bad = TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(
        VerificationError,
        match=re.escape("invalid signature by key PeterNeumann+c74f20a3 on signature line 1"),
    ):
        open_note(bad.encode(), [new_verifier(PETER_VKEY)])


def test_duplicated_verified_and_unverified_signatures() -> None:
    enoch_abcd = ENOCH_SIG[:60] + "ABCD" + ENOCH_SIG[60:]
    msg = TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG + enoch_abcd
    n = open_note(msg.encode(), [new_verifier(PETER_VKEY)])
    assert [s.line for s in n.signatures] == [PETER_SIG]
    assert [s.line for s in n.unverified_signatures] == [ENOCH_SIG, enoch_abcd]
    assert count_distinct_signers(n) == 1
    # parse_note keeps every line.
    assert len(parse_note(msg.encode()).signatures) == 5


def test_second_bad_line_by_known_key_is_refused() -> None:
    """Stricter than Go, as C2SP says verifiers MUST verify a known key's signature."""
    bad_peter = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    msg = (TEXT + "\n" + PETER_SIG + bad_peter).encode()
    with pytest.raises(VerificationError, match="on signature line 2"):
        open_note(msg, [new_verifier(PETER_VKEY)])


def test_too_many_signatures() -> None:
    msg = (TEXT + "\n" + PETER_SIG * (MAX_SIGNATURES + 1)).encode()
    for verifiers in ([new_verifier(PETER_VKEY)], []):
        with pytest.raises(
            InvalidInputError, match="expected at most 100 signature lines, got 101"
        ):
            open_note(msg, verifiers)
    assert len(parse_note((TEXT + "\n" + PETER_SIG * 100).encode()).signatures) == 100


def test_altered_text(peter: Signer) -> None:
    msg = PETER_NOTE.replace(b"cryptography", b"Cryptography")
    with pytest.raises(VerificationError, match="invalid signature by key PeterNeumann"):
        open_note(msg, [peter.verifier()])


def test_altered_signature(peter: Signer) -> None:
    raw = bytearray(base64.b64decode(PETER_B64))
    raw[10] ^= 0x01
    msg = (TEXT + "\n— PeterNeumann " + base64.b64encode(bytes(raw)).decode() + "\n").encode()
    with pytest.raises(VerificationError, match="invalid signature by key PeterNeumann"):
        open_note(msg, [peter.verifier()])


def test_wrong_key_is_an_unknown_signature() -> None:
    """A signature by another key named PeterNeumann has another key hash: it is unknown."""
    impostor = Signer("PeterNeumann", _key(7))
    msg = sign(TEXT, [impostor])
    with pytest.raises(VerificationError, match="expected a signature by a known key"):
        open_note(msg, [new_verifier(PETER_VKEY)])
    assert not new_verifier(PETER_VKEY).verify(TEXT.encode(), impostor.sign(TEXT.encode()))


def test_signature_with_known_name_but_other_hash_is_ignored() -> None:
    """C2SP: ignore signatures from unknown keys even if they share a name or a key hash."""
    raw = bytearray(base64.b64decode(PETER_B64))
    raw[0] ^= 0xFF
    other_hash = "— PeterNeumann " + base64.b64encode(bytes(raw)).decode() + "\n"
    other_name = "— PeterNeuman " + PETER_B64 + "\n"
    msg = (TEXT + "\n" + other_hash + other_name + PETER_SIG).encode()
    n = open_note(msg, [new_verifier(PETER_VKEY)])
    assert [s.line for s in n.signatures] == [PETER_SIG]
    assert [s.line for s in n.unverified_signatures] == [other_hash, other_name]


def test_unknown_signer_is_unverified(peter: Signer) -> None:
    other = Signer("node-9", _key(9))
    n = open_note(sign(TEXT, [peter, other]), [peter.verifier()])
    assert [s.name for s in n.signatures] == ["PeterNeumann"]
    assert [s.name for s in n.unverified_signatures] == ["node-9"]


def test_one_signer_with_two_keys_counts_once() -> None:
    old, new = Signer("node-1", _key(1)), Signer("node-1", _key(2))
    n = open_note(sign(TEXT, [old, new]), [old.verifier(), new.verifier()])
    assert len(n.signatures) == 2
    assert count_distinct_signers(n) == 1


def test_real_sumdb_tree_head_and_cosignatures() -> None:
    n = open_note(SUMDB_NOTE, [SUMDB_VKEY])
    assert n.text == "go.sum database tree\n6476701\nmb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n"
    assert n.signatures[0].key_hash == 0x033DE0AE
    for line in COSIGNATURES:
        verify_signature_line(n.text, line, COSIGNER_VKEYS)
    cosigned = add_signatures(SUMDB_NOTE, COSIGNATURES)
    assert cosigned == SUMDB_NOTE + "".join(line + "\n" for line in COSIGNATURES).encode()
    n = open_note(cosigned, [SUMDB_VKEY, *COSIGNER_VKEYS])
    assert [s.name for s in n.signatures] == ["sum.golang.org", "monkeys", "bananas", "witness"]
    assert count_distinct_signers(n) == 4
    n = open_note(cosigned, [SUMDB_VKEY])
    assert count_distinct_signers(n) == 1
    assert len(n.unverified_signatures) == 3


def test_c2sp_signed_note_example_parses() -> None:
    parsed = parse_note(C2SP_NOTE)
    # The text keeps its own blank line: signatures start after the LAST blank line.
    assert parsed.text == (
        "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\n"
        "ed è subito sera.\n"
    )
    (sig,) = parsed.signatures
    assert sig.name == "quasimodo.example/salvatore"
    assert sig.key_hash == 0x367BA04B
    assert len(sig.signature) == 64
    assert (parsed.text + "\n" + sig.line).encode() == C2SP_NOTE
    with pytest.raises(VerificationError, match=re.escape("(1 signature by unknown keys)")):
        open_note(C2SP_NOTE, [PETER_VKEY])


# --------------------------------------------------------------------------------------------
# Malformed notes: every parser message


NOTE_ERRORS = [
    # The malformed messages of TestOpen in note_test.go.
    (TEXT, "expected a blank line between the note text and the signatures, got none"),
    (TEXT + "\n", "expected at least one signature line after the blank line, got none"),
    (
        TEXT + "\n" + PETER_SIG[:-1],
        "expected the last signature line to end in a newline, got no final newline",
    ),
    (
        "\x01" + TEXT + "\n" + PETER_SIG,
        "expected no control characters other than newline in the note, got 0x01 at offset 0",
    ),
    (
        b"\xff" + (TEXT + "\n" + PETER_SIG).encode(),
        "expected a note in valid UTF-8, got byte 0xff at offset 0 that is not",
    ),
    (
        TEXT + "\n— Bad Name " + PETER_B64,
        "expected the last signature line to end in a newline",
    ),
    (
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        "expected signature line 2 to start with '— ' (em dash U+2014, space), "
        "got 'Unexpected line.'",
    ),
    # And the rest.
    (TEXT + "\n— Bad Name " + PETER_B64 + "\n", "expected a standard base64 signature"),
    (
        TEXT + "\n— a+b " + PETER_B64 + "\n",
        "expected a key name that is non-empty, with no spaces, '+' or control characters "
        "on signature line 1, got 'a+b'",
    ),
    (
        TEXT + "\n—  " + PETER_B64 + "\n",
        "expected a key name that is non-empty, with no spaces, '+' or control characters "
        "on signature line 1, got ''",
    ),
    (
        TEXT + "\n— PeterNeumann\n",
        "expected signature line 1 of the form '— <name> <base64 signature>', got '— PeterNeumann'",
    ),
    (
        TEXT + "\n— PeterNeumann \n",
        "expected signature line 1 of the form '— <name> <base64 signature>'",
    ),
    (
        TEXT + "\n— PeterNeumann " + PETER_B64 + " \n",
        "expected a standard base64 signature with padding on signature line 1",
    ),
    (
        TEXT + "\n— PeterNeumann " + PETER_B64.rstrip("=") + "\n",
        "expected a standard base64 signature with padding on signature line 1",
    ),
    (
        TEXT + "\n— PeterNeumann " + PETER_B64[:-2] + "N=\n",
        "expected a standard base64 signature with padding on signature line 1",  # bad bits
    ),
    (
        TEXT + "\n— PeterNeumann AAAAAA==\n",
        "expected at least 5 signature bytes (4-byte key hash and signature) on signature "
        "line 1, got 4",
    ),
    (
        TEXT + "\n- PeterNeumann " + PETER_B64 + "\n",
        "expected signature line 1 to start with '— ' (em dash U+2014, space)",
    ),
    (
        TEXT + "\n" + PETER_SIG + "\n",
        "expected at least one signature line after the blank line, got none",
    ),
    (
        TEXT + "\r\n" + PETER_SIG,
        "expected no control characters other than newline in the note, got 0x0d at offset 99",
    ),
    (
        b"caf\xc3\xa9\x00\n\n" + PETER_SIG.encode(),
        "expected no control characters other than newline in the note, got 0x00 at offset 5",
    ),
    (
        b"\xed\xa0\x80\n\n" + PETER_SIG.encode(),  # an encoded surrogate is not UTF-8
        "expected a note in valid UTF-8, got byte 0xed at offset 0",
    ),
    ("", "expected a blank line between the note text and the signatures, got none"),
]


@pytest.mark.parametrize(("msg", "message"), NOTE_ERRORS)
def test_malformed_notes(msg: str | bytes, message: str) -> None:
    data = msg.encode() if isinstance(msg, str) else msg
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        parse_note(data)
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        open_note(data, [new_verifier(PETER_VKEY)])


def test_note_must_be_bytes() -> None:
    with pytest.raises(InvalidInputError, match="expected the note as bytes, got str"):
        parse_note(PETER_NOTE.decode())  # type: ignore[arg-type]


SIG_LINE_ERRORS = [
    (PETER_SIG + PETER_SIG, "expected a single signature line without control characters"),
    (PETER_SIG[:-1] + "\t", "expected a single signature line without control characters"),
    (PETER_SIG + "\n", "expected a single signature line without control characters"),
    ("PeterNeumann " + PETER_B64, "expected the signature line to start with '— '"),
    ("— PeterNeumann", "expected the signature line of the form '— <name> <base64 signature>'"),
    ("— PeterNeumann x08", "expected a standard base64 signature with padding on the signature"),
    ("— PeterNeumann x08=", "expected at least 5 signature bytes"),
    ("— PeterNeumann x08g", "expected at least 5 signature bytes"),
]


@pytest.mark.parametrize(("line", "message"), SIG_LINE_ERRORS)
def test_parse_signature_line_errors(line: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        parse_signature_line(line)


def test_parse_signature_line_with_or_without_newline() -> None:
    assert parse_signature_line(PETER_SIG) == parse_signature_line(PETER_SIG[:-1])
    assert parse_signature_line(PETER_SIG).line == PETER_SIG


# --------------------------------------------------------------------------------------------
# Cosigning: each node signs the same text, lines are added to one note


def test_cosigning_flow() -> None:
    nodes = [Signer(f"node-{i}.swiftchain.example", _key(i)) for i in (1, 2, 3)]
    text = "swiftchain.example/log\n3\n" + base64.b64encode(bytes(32)).decode() + "\n"
    note = sign(text, [nodes[0]])
    lines = [signature_line(node, text) for node in nodes[1:]]
    for line in lines:
        verify_signature_line(text, line, [n.verifier() for n in nodes])
    sealed = add_signatures(note, lines)
    assert sealed == sign(text, nodes)
    n = open_note(sealed, [node.verifier() for node in nodes])
    assert count_distinct_signers(n) == 3


def test_add_signatures_is_idempotent(peter: Signer) -> None:
    assert add_signatures(PETER_ENOCH_NOTE, [ENOCH_SIG]) == PETER_ENOCH_NOTE
    assert add_signatures(PETER_ENOCH_NOTE, [PETER_SIG, ENOCH_SIG[:-1]]) == PETER_ENOCH_NOTE
    assert add_signatures(PETER_NOTE, ENOCH_SIG) == PETER_ENOCH_NOTE
    assert add_signatures(PETER_NOTE, [ENOCH_SIG, ENOCH_SIG]) == PETER_ENOCH_NOTE
    assert add_signatures(PETER_NOTE, []) == PETER_NOTE


def test_add_signatures_replaces_another_line_for_the_same_key_like_go_sign() -> None:
    bad_peter = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    msg = (TEXT + "\n" + bad_peter + ENOCH_SIG).encode()
    assert add_signatures(msg, [PETER_SIG]) == (TEXT + "\n" + ENOCH_SIG + PETER_SIG).encode()


def test_add_signatures_errors() -> None:
    bad_peter = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(
        InvalidInputError,
        match=re.escape(
            "expected one signature line per key, got two different lines for key "
            "PeterNeumann+c74f20a3"
        ),
    ):
        add_signatures(PETER_NOTE, [ENOCH_SIG, PETER_SIG, bad_peter])
    with pytest.raises(InvalidInputError, match="expected a blank line"):
        add_signatures(TEXT.encode(), [PETER_SIG])
    with pytest.raises(InvalidInputError, match="expected the signature line to start"):
        add_signatures(PETER_NOTE, ["nonsense"])
    many = [signature_line(Signer(f"n{i}", _key(i)), TEXT) for i in range(1, 101)]
    with pytest.raises(InvalidInputError, match="expected at most 100 signature lines, got 101"):
        add_signatures(PETER_NOTE, many)


def test_verify_signature_line_errors(peter: Signer) -> None:
    with pytest.raises(
        VerificationError,
        match=re.escape("expected a signature by a known key, got key EnochRoot+af0cfe78"),
    ):
        verify_signature_line(TEXT, ENOCH_SIG, [peter.verifier()])
    with pytest.raises(
        VerificationError, match=re.escape("invalid signature by key PeterNeumann+c74f20a3")
    ):
        verify_signature_line("other text\n", PETER_SIG, [peter.verifier()])
    assert verify_signature_line(TEXT, PETER_SIG, [PETER_VKEY]).line == PETER_SIG


# --------------------------------------------------------------------------------------------
# Properties

_note_text = st.text(
    alphabet=st.characters(
        exclude_categories=["Cs"], exclude_characters=[chr(c) for c in range(32) if c != 10]
    ),
    max_size=200,
).map(lambda s: s + "\n")

_SIGNERS = [Signer(name, _key(i)) for i, name in enumerate(["a", "b.example/x", "ç"], 1)]


@settings(max_examples=200, deadline=None)
@given(text=_note_text, count=st.integers(min_value=1, max_value=3))
def test_sign_open_round_trip(text: str, count: int) -> None:
    signers = _SIGNERS[:count]
    msg = sign(text, signers)
    n = open_note(msg, [s.verifier() for s in _SIGNERS])
    assert n == Note(text, n.signatures, ())
    assert [s.name for s in n.signatures] == [s.name for s in signers]
    parsed = parse_note(msg)
    assert (parsed.text + "\n" + "".join(s.line for s in parsed.signatures)).encode() == msg


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_parse_never_raises_anything_but_invalid_input(data: bytes) -> None:
    try:
        parse_note(data + b"\n\n" + PETER_SIG.encode())
        parse_note(data)
    except InvalidInputError:
        pass


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", b""),
        ("QQ==", b"A"),
        ("QUI=", b"AB"),
        ("QR==", None),  # non-zero padding bits
        ("QQ", None),  # no padding
        ("QQ=", None),
        ("Q Q==", None),
        ("QQ==\n", None),
        ("-_==", None),  # base64url
        ("QQ==QQ==", None),
    ],
)
def test_b64decode_strict(value: str, expected: bytes | None) -> None:
    assert note_mod.b64decode_strict(value) == expected
