"""chain.genesis: the consortium file as a genesis every founder signs.

A genesis is complete only when every member it lists signed its canonical bytes with the key
it lists for itself; a missing signature, one by another key, one over another genesis (a
member list or quorum changed after signing) or one by someone who is not a founder is named
in an ``expected ..., got ...`` message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chain.consortium import ConsortiumConfig, FounderSignature, Member, parse_consortium
from chain.errors import InvalidInputError, PermissionDeniedError, VerificationError
from chain.genesis import (
    genesis_hash,
    genesis_message,
    genesis_problems,
    parse_genesis,
    sign_genesis,
    verify_genesis,
)
from chain.note import Signer
from chain.signed_messages import GENESIS_CONTEXT

NAMES = ("hospital-a", "hospital-b", "hospital-c")
SIGNERS = {
    name: Signer(name, Ed25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32))
    for i, name in enumerate(NAMES)
}


def unsigned(names: tuple[str, ...] = NAMES, quorum: int = 2) -> ConsortiumConfig:
    return ConsortiumConfig(
        origin="test.swiftchain/genesis",
        quorum=quorum,
        members=tuple(Member(n, SIGNERS[n].verifier().vkey) for n in names),
        genesis_keys=(),
    )


def signed_by(config: ConsortiumConfig, *names: str) -> ConsortiumConfig:
    for name in names:
        config = sign_genesis(config, SIGNERS[name])
    return config


def key(name: str) -> str:
    return f"{name}+{SIGNERS[name].key_hash:08x}"


def test_a_genesis_every_founder_signed_verifies_and_round_trips() -> None:
    genesis = signed_by(unsigned(), "hospital-c", "hospital-a", "hospital-b")
    verify_genesis(genesis)
    assert genesis_problems(genesis) == []
    # signatures in the order of the members, whatever order they came in
    assert [s.name for s in genesis.founder_signatures] == list(NAMES)
    assert parse_genesis(genesis.to_json()) == genesis


def test_what_the_founders_sign_excludes_their_signatures() -> None:
    genesis = signed_by(unsigned(), *NAMES)
    body = unsigned().genesis_body()
    assert genesis.genesis_body() == body
    assert b"founder_signatures" not in body
    assert json.loads(body) == {
        k: v for k, v in json.loads(genesis.to_json()).items() if k != "founder_signatures"
    }
    assert genesis_message(genesis) == GENESIS_CONTEXT + body
    assert genesis_hash(genesis) == hashlib.sha256(GENESIS_CONTEXT + body).digest()
    # compact, sorted, ASCII: the same bytes from the parsed file
    assert parse_consortium(genesis.to_json()).genesis_body() == body
    assert b"\n" not in body and b": " not in body


def test_a_missing_founder_signature_fails_naming_the_founder() -> None:
    genesis = signed_by(unsigned(), "hospital-a", "hospital-c")
    assert genesis_problems(genesis) == [
        f"expected a signature by founder 'hospital-b' (key {key('hospital-b')}), got none"
    ]
    with pytest.raises(VerificationError, match="is not signed by every founder: expected a "):
        verify_genesis(genesis)
    with pytest.raises(VerificationError):
        parse_genesis(genesis.to_json())


def test_an_unsigned_genesis_names_every_founder() -> None:
    problems = genesis_problems(unsigned())
    assert problems == [
        f"expected a signature by founder {n!r} (key {key(n)}), got none" for n in NAMES
    ]


def test_a_signature_by_another_key_fails() -> None:
    genesis = signed_by(unsigned(), *NAMES)
    mallory = Signer("hospital-b", Ed25519PrivateKey.from_private_bytes(bytes([9]) * 32))
    forged = FounderSignature("hospital-b", mallory.sign(genesis_message(genesis)))
    tampered = dataclasses.replace(
        genesis,
        founder_signatures=tuple(
            forged if s.name == "hospital-b" else s for s in genesis.founder_signatures
        ),
    )
    assert genesis_problems(tampered) == [
        f"expected a signature by founder 'hospital-b' with key {key('hospital-b')} over this "
        "genesis, got one that does not verify (made by another key, or over another genesis)"
    ]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda g: dataclasses.replace(g, quorum=1), id="quorum"),
        pytest.param(lambda g: dataclasses.replace(g, members=g.members[::-1]), id="member order"),
        pytest.param(lambda g: dataclasses.replace(g, batch_max=1), id="block size"),
    ],
)
def test_a_genesis_changed_after_signing_fails_every_signature(
    change: Callable[[ConsortiumConfig], ConsortiumConfig],
) -> None:
    genesis = signed_by(unsigned(), *NAMES)
    tampered = change(genesis)
    problems = genesis_problems(tampered)
    assert len(problems) == len(NAMES)
    assert all("got one that does not verify" in p for p in problems)


def test_a_member_added_after_signing_fails() -> None:
    genesis = signed_by(unsigned(NAMES[:2]), *NAMES[:2])
    with_c = dataclasses.replace(genesis, members=unsigned().members)
    problems = genesis_problems(with_c)
    assert (
        f"expected a signature by founder 'hospital-c' (key {key('hospital-c')}), got none"
        in problems
    )
    assert sum("does not verify" in p for p in problems) == 2


def test_a_member_removed_after_signing_leaves_a_signature_by_a_stranger() -> None:
    genesis = signed_by(unsigned(), *NAMES)
    without_c = dataclasses.replace(genesis, members=genesis.members[:2])
    problems = genesis_problems(without_c)
    assert (
        "expected signatures by the founders ['hospital-a', 'hospital-b'] only, got one by "
        "'hospital-c', who is not a member of this genesis"
    ) in problems


def test_a_founder_signs_only_with_the_key_listed_for_it() -> None:
    impostor = Signer("hospital-a", Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32))
    with pytest.raises(PermissionDeniedError) as refused:
        sign_genesis(unsigned(), impostor)
    assert str(refused.value) == (
        f"expected the key of founder 'hospital-a' listed in the genesis ({key('hospital-a')}), "
        f"got hospital-a+{impostor.key_hash:08x}"
    )
    stranger = Signer("hospital-z", Ed25519PrivateKey.from_private_bytes(bytes([8]) * 32))
    with pytest.raises(PermissionDeniedError, match="whose name is not among them"):
        sign_genesis(unsigned(), stranger)


def test_signing_again_replaces_the_founders_signature() -> None:
    genesis = signed_by(unsigned(), *NAMES)
    assert sign_genesis(genesis, SIGNERS["hospital-a"]) == genesis  # Ed25519 is deterministic


@pytest.mark.parametrize(
    ("signatures", "message"),
    [
        ([{"name": "hospital-a"}], "expected field 'signature', got none"),
        (
            [{"name": "hospital-a", "signature": "AAAA"}],
            "founder signature by 'hospital-a': expected 64 bytes, got 3",
        ),
        ([{"name": "hospital-a", "signature": "!"}], "expected base64 signature"),
        (
            [{"name": "hospital-a", "signature": "A" * 86 + "==", "by": "x"}],
            "got unknown ['by']",
        ),
        ("nope", "expected 'founder_signatures' to be list"),
    ],
)
def test_founder_signatures_are_parsed_strictly(signatures: object, message: str) -> None:
    document = json.loads(unsigned().to_json())
    document["founder_signatures"] = signatures
    with pytest.raises(InvalidInputError) as error:
        parse_consortium(json.dumps(document))
    assert message in str(error.value)


def test_one_signature_per_founder() -> None:
    genesis = signed_by(unsigned(), "hospital-a")
    document = json.loads(genesis.to_json())
    document["founder_signatures"] *= 2
    with pytest.raises(InvalidInputError, match="expected one founder signature per founder"):
        parse_consortium(json.dumps(document))


def test_a_file_without_the_field_parses_as_an_unsigned_genesis() -> None:
    document = json.loads(unsigned().to_json())
    del document["founder_signatures"]
    parsed = parse_consortium(json.dumps(document))
    assert parsed.founder_signatures == ()
    with pytest.raises(VerificationError):
        parse_genesis(json.dumps(document))
