"""The genesis ceremony (services/platform/genesis_ceremony.py): each key made by its holder in
its own folder (mode 0600, never overwritten), public cards signed by their own keys, a genesis
proposed from cards alone and signed by every founder; and create_consortium, which ``make up``
and k8s/make_material.py run, going through those same steps."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chain.errors import AlreadyExistsError, InvalidInputError, VerificationError
from chain.genesis import genesis_problems, verify_genesis
from services.platform.consortium_files import ConsortiumFiles, create_consortium
from services.platform.genesis_ceremony import (
    CONSENT,
    REGISTRAR,
    ROLE_MEMBER,
    KeyCard,
    founder_key_path,
    generate_tag_key,
    load_signer,
    local_ceremony,
    member_keygen,
    parse_card,
    propose,
    read_card,
    service_keygen,
    sign_with_key,
)

MEMBERS = ("hospital-a", "hospital-b", "hospital-c")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_member_keygen_keeps_the_key_private_and_the_card_public(tmp_path: Path) -> None:
    made = member_keygen("hospital-a", tmp_path / "a")
    assert made.key_path == tmp_path / "a" / "hospital-a.key"
    assert mode(made.key_path) == 0o600
    assert mode(tmp_path / "a") == 0o700
    signer = load_signer(made.key_path)
    assert signer.name == "hospital-a"
    card_text = made.card_path.read_text()
    card = json.loads(card_text)
    assert card == {
        "format": "swiftchain-consortium-key-card/v1",
        "role": "member",
        "name": "hospital-a",
        "key_id": f"hospital-a+{signer.key_hash:08x}",
        "public_key": base64.b64encode(signer.public_key).decode(),
        "verifier_key": signer.verifier().vkey,
        "proof": card["proof"],
    }
    # nothing of the private key is on the card
    seed = signer.private_key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    key_text = made.key_path.read_text().strip()
    assert "PRIVATE" not in card_text
    assert key_text.rsplit("+", 1)[1] not in card_text
    assert base64.b64encode(seed).decode() not in card_text
    assert seed.hex() not in card_text
    assert read_card(made.card_path) == made.card


def test_service_keygen_makes_the_key_the_service_reads(tmp_path: Path) -> None:
    registrar = service_keygen("registrar", tmp_path)
    consent = service_keygen("consent", tmp_path)
    files = ConsortiumFiles(tmp_path)
    assert (registrar.key_path, consent.key_path) == (
        files.registrar_key_path,
        files.consent_key_path,
    )
    assert mode(registrar.key_path) == mode(consent.key_path) == 0o600
    assert registrar.card.key_id == REGISTRAR.key_id and registrar.card.name == "identity"
    assert json.loads(consent.card_path.read_text())["allowed_kinds"] == ["CONSENT", "ACCESS"]
    assert "PRIVATE" not in registrar.card_path.read_text()
    with pytest.raises(InvalidInputError, match="expected a service role among"):
        service_keygen("tag", tmp_path)


def test_keygen_never_overwrites_a_private_key(tmp_path: Path) -> None:
    first = member_keygen("hospital-a", tmp_path)
    before = first.key_path.read_bytes()
    with pytest.raises(AlreadyExistsError, match="a private key is never overwritten"):
        member_keygen("hospital-a", tmp_path)
    assert first.key_path.read_bytes() == before
    assert read_card(first.card_path) == first.card  # the card still matches the key
    generate_tag_key(tmp_path)
    with pytest.raises(AlreadyExistsError):
        generate_tag_key(tmp_path)
    assert mode(tmp_path / "tag.key") == 0o600
    assert len((tmp_path / "tag.key").read_bytes()) == 32


def test_a_card_not_signed_by_its_key_is_refused(tmp_path: Path) -> None:
    card = json.loads(member_keygen("hospital-a", tmp_path).card_path.read_text())
    other = KeyCard.signed_by(ROLE_MEMBER, "hospital-a", Ed25519PrivateKey.generate())
    swapped = {**card, "public_key": base64.b64encode(other.public_key).decode()}
    with pytest.raises(InvalidInputError, match="expected key id"):
        parse_card(json.dumps(swapped))
    # the key and its id swapped consistently, but the proof is still the first key's
    swapped |= {"key_id": other.key_id, "verifier_key": other.verifier_key}
    with pytest.raises(VerificationError, match=r"expected a signature by key .* got one that"):
        parse_card(json.dumps(swapped))
    renamed = {k: v for k, v in card.items() if k != "verifier_key"} | {"role": "consent"}
    with pytest.raises(InvalidInputError, match="expected it held by 'consent', got 'hospital-a'"):
        parse_card(json.dumps(renamed))
    extra = {**card, "private_key": "x"}
    with pytest.raises(InvalidInputError, match=r"got unknown \['private_key'\]"):
        parse_card(json.dumps(extra))


def test_propose_reads_public_cards_only_and_signing_completes_the_genesis(
    tmp_path: Path,
) -> None:
    members = [member_keygen(name, tmp_path / name) for name in MEMBERS]
    services = [
        service_keygen("registrar", tmp_path / "identity"),
        service_keygen("consent", tmp_path / "consent"),
    ]
    cards = [read_card(made.card_path) for made in members + services]
    genesis = propose(cards, quorum=2, origin="test.swiftchain/ceremony")
    assert [m.name for m in genesis.members] == list(MEMBERS)
    assert [m.verifier_key for m in genesis.members] == [m.card.verifier_key for m in members]
    assert [(k.key_id, k.owner_id, k.allowed_kinds) for k in genesis.genesis_keys] == [
        (REGISTRAR.key_id, "identity", ("KEY",)),
        (CONSENT.key_id, "consent", ("CONSENT", "ACCESS")),
    ]
    assert genesis.founder_signatures == ()
    for index, name in enumerate(MEMBERS):
        assert len(genesis_problems(genesis)) == len(MEMBERS) - index
        genesis = sign_with_key(genesis, founder_key_path(tmp_path / name, genesis))
    verify_genesis(genesis)


def test_a_founder_key_is_found_by_name_in_a_folder_of_several(tmp_path: Path) -> None:
    cards = [member_keygen(name, tmp_path).card for name in MEMBERS]
    genesis = propose(cards, quorum=2, origin="o")
    with pytest.raises(InvalidInputError, match="got 3: hospital-a, hospital-b, hospital-c"):
        founder_key_path(tmp_path, genesis)
    assert founder_key_path(tmp_path, genesis, "hospital-b") == tmp_path / "hospital-b.key"


def test_propose_needs_a_member_and_distinct_names(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="expected at least one member's key card"):
        propose([service_keygen("registrar", tmp_path).card], quorum=1, origin="o")
    a = member_keygen("hospital-a", tmp_path / "1").card
    again = member_keygen("hospital-a", tmp_path / "2").card
    with pytest.raises(InvalidInputError, match="expected distinct member names"):
        propose([a, again], quorum=1, origin="o")


def test_the_local_ceremony_makes_every_key_and_a_signed_genesis(tmp_path: Path) -> None:
    genesis = local_ceremony(tmp_path, MEMBERS, quorum=2, origin="o", batch_timeout_ms=50)
    verify_genesis(genesis)
    files = ConsortiumFiles(tmp_path)
    for name in MEMBERS:
        assert mode(files.node_key_path(name)) == 0o600
        assert load_signer(files.node_key_path(name)).verifier().vkey == (
            genesis.member(name).verifier_key
        )
    for path in (files.registrar_key_path, files.consent_key_path, files.tag_key_path):
        assert mode(path) == 0o600


def test_create_consortium_writes_a_genesis_the_services_and_nodes_accept(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "consortium"
    files = create_consortium(folder, list(MEMBERS), quorum=2, origin="o")
    config = files.load()  # checks every founder's signature
    assert [s.name for s in config.founder_signatures] == list(MEMBERS)
    assert not (tmp_path / "consortium.ceremony").exists()
    again = create_consortium(folder, list(MEMBERS), quorum=2, origin="o")
    assert again.load() == config  # kept, not made again


def test_create_consortium_refuses_a_folder_whose_genesis_is_not_signed(tmp_path: Path) -> None:
    folder = tmp_path / "consortium"
    files = create_consortium(folder, list(MEMBERS), quorum=2, origin="o")
    document = json.loads(files.config_path.read_text())
    document["founder_signatures"] = document["founder_signatures"][:2]
    files.config_path.write_text(json.dumps(document))
    with pytest.raises(VerificationError) as refused:
        create_consortium(folder, list(MEMBERS), quorum=2, origin="o")
    assert "expected a signature by founder 'hospital-c'" in str(refused.value)
    assert f"remove {folder} to run the genesis ceremony again" in str(refused.value)


def test_create_consortium_refuses_a_half_made_folder(tmp_path: Path) -> None:
    folder = tmp_path / "consortium"
    member_keygen("hospital-a", folder)
    with pytest.raises(InvalidInputError, match="remove the folder to run it again"):
        create_consortium(folder, list(MEMBERS), quorum=2, origin="o")
