"""Tests of chain.consortium: the swiftchain-consortium/v1 JSON document.

Every node must read the same config (its block-cutting parameters decide the blocks), so the
parser is strict: a wrong type, a misspelt or repeated field, or a rule broken is an error whose
message is pinned here.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chain.consortium import FORMAT, ConsortiumConfig, GenesisKey, Member, parse_consortium
from chain.errors import InvalidInputError
from chain.note import Signer, verifier_key

KEYS = [Ed25519PrivateKey.from_private_bytes(bytes([i]) * 32) for i in range(1, 4)]
NAMES = ["hospital-a", "hospital-b", "hospital-c"]
VKEYS = [verifier_key(name, key.public_key()) for name, key in zip(NAMES, KEYS, strict=True)]
REGISTRAR_PUBLIC = (
    Ed25519PrivateKey.from_private_bytes(bytes([9]) * 32)
    .public_key()
    .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
)


def config(**changes: Any) -> ConsortiumConfig:
    values: dict[str, Any] = {
        "origin": "swiftchain.example/log/v1",
        "quorum": 2,
        "members": tuple(Member(n, v) for n, v in zip(NAMES, VKEYS, strict=True)),
        "genesis_keys": (
            GenesisKey("registrar", "identity", ("KEY",), REGISTRAR_PUBLIC),
            GenesisKey("consent-1", "consent", ("CONSENT", "ACCESS"), bytes(range(32))),
        ),
        "batch_max": 1000,
        "batch_timeout_ms": 150,
    }
    values.update(changes)
    return ConsortiumConfig(**values)


def document() -> dict[str, Any]:
    parsed = json.loads(config().to_json())
    assert isinstance(parsed, dict)
    return parsed


def test_round_trip() -> None:
    original = config()
    text = original.to_json()
    parsed = parse_consortium(text)
    assert parsed == original
    assert parsed.to_json() == text
    assert parse_consortium(text.encode()) == original
    assert text.endswith("}\n")
    assert json.loads(text)["format"] == FORMAT
    assert list(json.loads(text)) == sorted(json.loads(text))  # keys sorted: stable bytes


def test_defaults_for_the_cutting_parameters() -> None:
    doc = document()
    del doc["batch_max"], doc["batch_timeout_ms"]
    parsed = parse_consortium(json.dumps(doc))
    assert (parsed.batch_max, parsed.batch_timeout_ms) == (500, 200)


def test_no_genesis_keys_is_allowed() -> None:
    doc = document()
    doc["genesis_keys"] = []
    assert parse_consortium(json.dumps(doc)).genesis_keys == ()


def test_member_lookup_and_verifiers() -> None:
    cfg = config()
    assert cfg.member("hospital-b").verifier_key == VKEYS[1]
    assert [v.name for v in cfg.verifiers] == NAMES
    with pytest.raises(InvalidInputError, match="expected one of the members"):
        cfg.member("hospital-z")
    # The verifiers check the members' signatures.
    signer = Signer(NAMES[0], KEYS[0])
    assert cfg.member(NAMES[0]).verifier.key_hash == signer.key_hash


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change to the document: set ``value`` at ``path`` ("members.0.name"); value DELETE
    removes the field."""

    def change(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if value is DELETE:
            del target[last]
        elif isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return change


DELETE = object()

DOCUMENT_ERRORS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "format missing",
        _set("format", DELETE),
        "expected format 'swiftchain-consortium/v1', got None",
    ),
    ("format wrong", _set("format", "consortium/v2"), "got 'consortium/v2'"),
    (
        "unknown top-level field",
        _set("batch_maxx", 10),
        "consortium config: expected only the fields ['batch_max', 'batch_timeout_ms', "
        "'format', 'founder_signatures', 'genesis_keys', 'members', 'origin', 'quorum'], "
        "got unknown ['batch_maxx']",
    ),
    (
        "origin missing",
        _set("origin", DELETE),
        "consortium config: expected field 'origin', got none",
    ),
    ("origin not a string", _set("origin", 7), "expected 'origin' to be str, got int"),
    ("origin empty", _set("origin", ""), "expected an origin without control characters, got ''"),
    (
        "origin of two lines",
        _set("origin", "a\nb"),
        "expected an origin without control characters",
    ),
    ("origin with a tab", _set("origin", "a\tb"), "expected an origin without control characters"),
    ("quorum missing", _set("quorum", DELETE), "expected field 'quorum', got none"),
    ("quorum a bool", _set("quorum", True), "expected 'quorum' to be int, got bool"),
    ("quorum a string", _set("quorum", "2"), "expected 'quorum' to be int, got str"),
    ("quorum 0", _set("quorum", 0), "expected a quorum between 1 and 3 members, got 0"),
    (
        "quorum above the members",
        _set("quorum", 4),
        "expected a quorum between 1 and 3 members, got 4",
    ),
    ("batch_max a string", _set("batch_max", "500"), "expected 'batch_max' to be int, got str"),
    ("batch_max a bool", _set("batch_max", True), "expected 'batch_max' to be int, got bool"),
    ("batch_max a float", _set("batch_max", 500.0), "expected 'batch_max' to be int, got float"),
    ("batch_max null", _set("batch_max", None), "expected 'batch_max' to be int, got NoneType"),
    (
        "batch_max 0",
        _set("batch_max", 0),
        "expected batch_max >= 1 and batch_timeout_ms >= 1, got 0 and 150",
    ),
    (
        "batch_timeout_ms a float",
        _set("batch_timeout_ms", 1.5),
        "expected 'batch_timeout_ms' to be int, got float",
    ),
    ("batch_timeout_ms negative", _set("batch_timeout_ms", -1), "got 1000 and -1"),
    ("members missing", _set("members", DELETE), "expected field 'members', got none"),
    ("members an object", _set("members", {}), "expected 'members' to be list, got dict"),
    ("no members", _set("members", []), "expected a quorum between 1 and 0 members, got 2"),
    (
        "member not an object",
        _set("members.0", "hospital-a"),
        "consortium config member: expected a JSON object, got str",
    ),
    (
        "member with an unknown field",
        _set("members.0.endpoint", "x:1"),
        "consortium config member: expected only the fields ['name', 'verifier_key'], "
        "got unknown ['endpoint']",
    ),
    (
        "member without name",
        _set("members.0.name", DELETE),
        "consortium config member: expected field 'name', got none",
    ),
    ("member name not a string", _set("members.0.name", 1), "expected 'name' to be str, got int"),
    (
        "member verifier key missing",
        _set("members.1.verifier_key", DELETE),
        "expected field 'verifier_key', got none",
    ),
    (
        "member verifier key malformed",
        _set("members.1.verifier_key", "hospital-b+00+AA"),
        "expected 8 hex digits for the key hash, got '00'",
    ),
    (
        "member named unlike its key",
        _set("members.1.name", "hospital-x"),
        "expected member 'hospital-x''s verifier key to be named 'hospital-x', got 'hospital-b'",
    ),
    (
        "members named twice",
        _set("members.1", {"name": NAMES[0], "verifier_key": VKEYS[0]}),
        "expected distinct member names, got ['hospital-a', 'hospital-a', 'hospital-c']",
    ),
    (
        "genesis keys missing",
        _set("genesis_keys", DELETE),
        "expected field 'genesis_keys', got none",
    ),
    (
        "genesis keys not a list",
        _set("genesis_keys", "registrar"),
        "expected 'genesis_keys' to be list, got str",
    ),
    (
        "genesis key not an object",
        _set("genesis_keys.0", ["registrar"]),
        "consortium config genesis key: expected a JSON object, got list",
    ),
    (
        "genesis key with an unknown field",
        _set("genesis_keys.0.action", "REGISTER"),
        "got unknown ['action']",
    ),
    (
        "genesis key without public key",
        _set("genesis_keys.0.public_key", DELETE),
        "consortium config genesis key: expected field 'public_key', got none",
    ),
    (
        "genesis public key not base64",
        _set("genesis_keys.0.public_key", "not base64!"),
        "consortium config genesis key: expected base64 public_key, got 'not base64!'",
    ),
    (
        "genesis public key of 31 bytes",
        _set("genesis_keys.0.public_key", base64.b64encode(bytes(31)).decode()),
        "expected a 32-byte Ed25519 key, got 31 bytes",
    ),
    (
        "genesis key id missing",
        _set("genesis_keys.0.key_id", DELETE),
        "expected field 'key_id', got none",
    ),
    (
        "genesis key id malformed",
        _set("genesis_keys.0.key_id", "the registrar"),
        "consortium config genesis key: expected a key id of 1-128 characters "
        "[A-Za-z0-9._:#/-], got 'the registrar'",
    ),
    (
        "genesis owner empty",
        _set("genesis_keys.0.owner_id", ""),
        "consortium config genesis key 'registrar': expected an owner id, got ''",
    ),
    (
        "genesis owner not a string",
        _set("genesis_keys.0.owner_id", None),
        "expected 'owner_id' to be str, got NoneType",
    ),
    (
        "genesis allowed kinds not a list",
        _set("genesis_keys.0.allowed_kinds", "KEY"),
        "expected 'allowed_kinds' to be list, got str",
    ),
    (
        "genesis allowed kinds empty",
        _set("genesis_keys.0.allowed_kinds", []),
        "consortium config genesis key 'registrar': expected at least one allowed kind, got none",
    ),
    (
        "genesis allowed kind unknown",
        _set("genesis_keys.0.allowed_kinds", ["KEY", "WRITE"]),
        "expected allowed kinds among ('KEY', 'RECORD', 'CONSENT', 'ACCESS'), got 'WRITE'",
    ),
    ("genesis allowed kind a number", _set("genesis_keys.0.allowed_kinds", [1]), "got 1"),
    (
        "genesis allowed kind in lower case",
        _set("genesis_keys.0.allowed_kinds", ["key"]),
        "got 'key'",
    ),
    (
        "genesis key ids twice",
        _set("genesis_keys.1.key_id", "registrar"),
        "expected distinct genesis key ids, got ['registrar', 'registrar']",
    ),
]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [pytest.param(change, fragment, id=name) for name, change, fragment in DOCUMENT_ERRORS],
)
def test_document_errors(change: Callable[[dict[str, Any]], None], fragment: str) -> None:
    doc = copy.deepcopy(document())
    change(doc)
    with pytest.raises(InvalidInputError) as caught:
        parse_consortium(json.dumps(doc))
    assert fragment in str(caught.value)


TEXT_ERRORS = [
    ("not JSON", "{", "consortium config: expected JSON, got: "),
    ("not UTF-8", b"\xff\xfe{}", "consortium config: expected JSON"),
    ("a list", "[]", "consortium config: expected a JSON object, got list"),
    ("a string", '"swiftchain-consortium/v1"', "expected a JSON object, got str"),
    ("null", "null", "expected a JSON object, got NoneType"),
    (
        "a field twice",
        '{"format": "swiftchain-consortium/v1", "quorum": 1, "quorum": 2}',
        "consortium config: expected each field once, got 'quorum' twice",
    ),
    (
        "a field twice in a member",
        '{"members": [{"name": "a", "name": "b"}]}',
        "expected each field once, got 'name' twice",
    ),
]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [pytest.param(text, fragment, id=name) for name, text, fragment in TEXT_ERRORS],
)
def test_text_errors(text: str | bytes, fragment: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_consortium(text)
    assert fragment in str(caught.value)


def test_direct_construction_checks_the_same_rules() -> None:
    with pytest.raises(InvalidInputError, match="expected a key id of 1-128 characters"):
        GenesisKey("", "identity", ("KEY",), REGISTRAR_PUBLIC)
    with pytest.raises(InvalidInputError, match="expected a 32-byte Ed25519 key, got 3 bytes"):
        GenesisKey("k", "identity", ("KEY",), b"abc")
    with pytest.raises(InvalidInputError, match="got 'Key'"):
        GenesisKey("k", "identity", ("Key",), REGISTRAR_PUBLIC)
    with pytest.raises(InvalidInputError, match="to be named 'other'"):
        Member("other", VKEYS[0])
    with pytest.raises(InvalidInputError, match="expected an origin without control characters"):
        config(origin="log\x00")
    with pytest.raises(InvalidInputError, match="expected distinct genesis key ids"):
        config(genesis_keys=(GenesisKey("k", "a", ("KEY",), REGISTRAR_PUBLIC),) * 2)
    with pytest.raises(InvalidInputError, match="genesis key 'k': expected an Ed25519 public key"):
        GenesisKey("k", "a", ("KEY",), bytes(32))
    with pytest.raises(InvalidInputError, match="expected a quorum between 1 and 3 members"):
        config(quorum=0)
