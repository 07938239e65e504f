"""Tests of chain.evidence: swiftchain-evidence/v1 bundles (DESIGN §3.5), built in-process
against a fake consortium of three signers with quorum 2, and their verifier.

Each tampering is pinned to the check that must catch it (and, where the outcome does not
depend on the tree's shape, to the exact set of failing checks)."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chain.checkpoint import GENESIS_PREVIOUS_HASH, Checkpoint
from chain.consortium import ConsortiumConfig, Member
from chain.errors import InvalidInputError
from chain.evidence import (
    FORMAT,
    ConsistencyEvidence,
    EvidenceBundle,
    EvidenceEntry,
    VerificationReport,
    build_bundle,
    bundle_to_json,
    commitment,
    parse_bundle,
    verify_against_consortium,
    verify_bundle,
)
from chain.hashing import leaf_hash
from chain.note import Signer, sign
from chain.proof_build import consistency_proof, inclusion_proof, tree_root
from chain.tiles import MemoryHashStore
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2

ORIGIN = "test.swiftchain/evidence"
SIGNERS = [Signer(f"hospital-{c}", Ed25519PrivateKey.generate()) for c in "abc"]
VKEYS = [s.verifier().vkey for s in SIGNERS]
OUTSIDER = Signer("mallory", Ed25519PrivateKey.generate())
QUORUM = 2

DOCUMENT = b'{"resourceType":"Observation","status":"final"}'
SALT = hashlib.sha256(b"salt").digest()
OLD_SIZE = 5
SIZE = 13
PROVEN = (2, 9)  # leaf indexes in the bundle; leaf 9 commits to DOCUMENT


def _entry(i: int) -> bytes:
    body = entry_pb2.EntryBody(
        entry_id=f"00000000-0000-4000-8000-{i:012d}",
        kind=common_pb2.ENTRY_KIND_RECORD,
        submitter_id="hospital-x",
        commitment=commitment(SALT, DOCUMENT) if i == 9 else hashlib.sha256(b"%d" % i).digest(),
        subject_tag=bytes(32),
        record=entry_pb2.RecordDetail(
            record_tag=bytes(32), version=1, action=common_pb2.RECORD_ACTION_CREATE
        ),
    )
    return entry_pb2.ChainEntry(
        body=body.SerializeToString(), key_id="hospital-x/key-1", signature=bytes(64)
    ).SerializeToString()


ENTRIES = [_entry(i) for i in range(20)]
TREE = MemoryHashStore()
TREE.extend(leaf_hash(e) for e in ENTRIES)


def checkpoint_note(
    size: int,
    signers: list[Signer] | None = None,
    origin: str = ORIGIN,
    tree: MemoryHashStore = TREE,
) -> str:
    text = Checkpoint(
        origin=origin,
        size=size,
        root_hash=tree_root(size, tree),
        height=size,
        previous_hash=GENESIS_PREVIOUS_HASH,
        cut_time_ms=1_767_225_600_000 + size,
    ).to_text()
    return sign(text, SIGNERS[:2] if signers is None else signers).decode("utf-8")


def make_bundle(
    *,
    signers: list[Signer] | None = None,
    old_signers: list[Signer] | None = None,
    origin: str = ORIGIN,
    verifiers: list[str] | None = None,
) -> dict[str, Any]:
    return build_bundle(
        origin=origin,
        verifiers=VKEYS if verifiers is None else verifiers,
        quorum=QUORUM,
        checkpoint=checkpoint_note(SIZE, signers, origin),
        entries=[
            EvidenceEntry(i, ENTRIES[i], tuple(inclusion_proof(i, SIZE, TREE))) for i in PROVEN
        ],
        consistency=[
            ConsistencyEvidence(
                checkpoint_note(OLD_SIZE, old_signers, origin),
                tuple(consistency_proof(OLD_SIZE, SIZE, TREE)),
            )
        ],
    )


def verify(bundle: dict[str, Any], /, **kwargs: Any) -> VerificationReport:
    """Verify the bundle as a regulator would read it: through its JSON text."""
    return verify_bundle(parse_bundle(json.dumps(bundle)), **kwargs)


def failing(report: VerificationReport) -> set[str]:
    return {c.name for c in report.failures}


def flip_b64(value: str, byte: int = 0) -> str:
    raw = bytearray(base64.b64decode(value))
    raw[byte] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


# ------------------------------------------------------------------------------ valid bundles


def test_valid_bundle_verifies_and_reports_every_check() -> None:
    report = verify(make_bundle())
    assert report.ok, report.failures
    assert [c.name for c in report.checks] == [
        "checkpoint.signatures",
        "checkpoint.origin",
        "entries[0].inclusion",
        "entries[1].inclusion",
        "consistency[0].checkpoint",
        "consistency[0].proof",
    ]
    assert report.keys_source == "bundle"
    assert report.quorum_source == "bundle"
    assert report.tree_size == SIZE
    assert report.root_hash == tree_root(SIZE, TREE)
    assert report.signers == ("hospital-a", "hospital-b")
    assert [e.leaf_index for e in report.entries] == list(PROVEN)
    assert report.entries[1].kind == "RECORD"
    assert report.entries[1].entry_id == "00000000-0000-4000-8000-000000000009"
    signatures = report.check("checkpoint.signatures").message
    assert "signed by 2 of 3 members (hospital-a, hospital-b), quorum 2" in signatures
    assert "keys from the bundle itself (not pinned)" in signatures
    assert (
        "leads to the checkpoint root (tree size 13)"
        in report.check("entries[0].inclusion").message
    )
    assert "extends the tree of size 5" in report.check("consistency[0].proof").message


def test_trusted_keys_quorum_and_origin_are_reported_as_trusted() -> None:
    report = verify(
        make_bundle(),
        trusted_verifiers=[s.verifier() for s in SIGNERS],
        trusted_quorum=2,
        trusted_origin=ORIGIN,
    )
    assert report.ok, report.failures
    assert report.keys_source == "trusted"
    assert report.quorum_source == "trusted"
    assert "keys from the trusted consortium" in report.check("checkpoint.signatures").message
    assert "the trusted consortium's origin" in report.check("checkpoint.origin").message


def test_all_three_signatures_verify_and_count_three() -> None:
    report = verify(make_bundle(signers=SIGNERS))
    assert report.ok
    assert "signed by 3 of 3 members" in report.check("checkpoint.signatures").message


def test_bundle_with_only_a_checkpoint_verifies() -> None:
    document = make_bundle()
    document["entries"] = []
    document["consistency"] = []
    report = verify(document)
    assert report.ok
    assert [c.name for c in report.checks] == ["checkpoint.signatures", "checkpoint.origin"]


def test_consistency_between_equal_sizes_is_an_empty_proof() -> None:
    document = make_bundle()
    document["consistency"] = [{"from_checkpoint": checkpoint_note(SIZE), "proof": []}]
    assert verify(document).ok


def test_round_trip_through_json() -> None:
    document = make_bundle()
    text = bundle_to_json(document)
    assert text.endswith("\n")
    assert "\u2014 hospital-a " in text  # signature lines stay readable (UTF-8, not \\u2014)
    bundle = parse_bundle(text.encode("utf-8"))
    assert bundle.to_dict() == document
    assert parse_bundle(bundle.to_json()) == bundle
    assert list(document) == [
        "format",
        "origin",
        "verifiers",
        "quorum",
        "checkpoint",
        "entries",
        "consistency",
    ]
    assert document["format"] == FORMAT


def test_unknown_fields_are_ignored() -> None:
    document = make_bundle()
    document["exported_by"] = "audit"
    document["entries"][0]["decoded"] = {"kind": "RECORD"}
    document["consistency"][0]["note"] = "display only"
    assert verify(document).ok


def test_report_to_dict_is_json() -> None:
    report = verify(make_bundle(), document=DOCUMENT, salt=SALT)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is True
    assert data["checkpoint"]["tree_size"] == SIZE
    assert data["checks"][-1]["name"] == "commitment"
    assert data["entries"][1]["commitment"] == commitment(SALT, DOCUMENT).hex()


# ------------------------------------------------------------------------------- tampering


def test_altered_entry_byte_fails_its_inclusion_check() -> None:
    document = make_bundle()
    document["entries"][0]["entry"] = flip_b64(document["entries"][0]["entry"], byte=10)
    report = verify(document)
    assert not report.ok
    assert failing(report) == {"entries[0].inclusion"}
    assert "inclusion proof for leaf 2 in a tree of 13 leads to root" in (
        report.check("entries[0].inclusion").message
    )


def test_altered_proof_hash_fails_its_inclusion_check() -> None:
    document = make_bundle()
    proof = document["entries"][1]["inclusion_proof"]
    proof[1] = flip_b64(proof[1], byte=31)
    report = verify(document)
    assert failing(report) == {"entries[1].inclusion"}
    assert "leaf 9" in report.check("entries[1].inclusion").message


def test_removed_proof_hash_fails_on_the_proof_length() -> None:
    document = make_bundle()
    document["entries"][0]["inclusion_proof"].pop()
    report = verify(document)
    assert failing(report) == {"entries[0].inclusion"}
    assert "expected an inclusion proof of 4 hashes" in report.check("entries[0].inclusion").message


def test_leaf_index_outside_the_tree_fails() -> None:
    document = make_bundle()
    document["entries"][0]["leaf_index"] = SIZE
    report = verify(document)
    assert failing(report) == {"entries[0].inclusion"}
    assert "index=13, size=13" in report.check("entries[0].inclusion").message


def test_altered_checkpoint_size_line_fails_the_signatures() -> None:
    document = make_bundle()
    document["checkpoint"] = document["checkpoint"].replace(f"\n{SIZE}\n", f"\n{SIZE + 1}\n", 1)
    report = verify(document)
    assert not report.ok
    assert "checkpoint.signatures" in failing(report)
    assert "invalid signature by key hospital-a+" in report.check("checkpoint.signatures").message


def test_altered_checkpoint_root_line_fails_signatures_and_every_proof() -> None:
    document = make_bundle()
    lines = document["checkpoint"].split("\n")
    lines[2] = flip_b64(lines[2], byte=0)
    document["checkpoint"] = "\n".join(lines)
    report = verify(document)
    assert failing(report) == {
        "checkpoint.signatures",
        "entries[0].inclusion",
        "entries[1].inclusion",
        "consistency[0].proof",
    }


def test_altered_signature_fails_the_signatures() -> None:
    document = make_bundle()
    text, _, sigs = document["checkpoint"].rpartition("\n\n")
    first, rest = sigs.split("\n", 1)
    prefix, b64 = first.rsplit(" ", 1)
    document["checkpoint"] = f"{text}\n\n{prefix} {flip_b64(b64, byte=20)}\n{rest}"
    report = verify(document)
    assert failing(report) == {"checkpoint.signatures"}
    assert "invalid signature by key hospital-a+" in report.check("checkpoint.signatures").message
    assert "on signature line 1" in report.check("checkpoint.signatures").message


def test_garbled_signature_line_is_a_failed_check_not_a_parse_error() -> None:
    document = make_bundle()
    document["checkpoint"] = document["checkpoint"].replace("\u2014 hospital-b ", "- hospital-b ")
    report = verify(document)
    assert "checkpoint.signatures" in failing(report)
    assert "is not a signed note" in report.check("checkpoint.signatures").message


def test_unreadable_checkpoint_fails_every_check_that_needs_it() -> None:
    document = make_bundle()
    document["checkpoint"] = "not a note"
    report = verify(document)
    assert failing(report) == {
        "checkpoint.signatures",
        "checkpoint.origin",
        "entries[0].inclusion",
        "entries[1].inclusion",
        "consistency[0].proof",
    }
    assert "the checkpoint is unreadable" in report.check("entries[0].inclusion").message
    assert report.tree_size is None


def test_one_signature_of_quorum_two_fails() -> None:
    report = verify(make_bundle(signers=SIGNERS[:1]))
    assert failing(report) == {"checkpoint.signatures"}
    assert "has 1 valid member signature (hospital-a), quorum is 2" in (
        report.check("checkpoint.signatures").message
    )


def test_removed_signature_line_fails_the_quorum() -> None:
    document = make_bundle()
    note = document["checkpoint"]
    document["checkpoint"] = "\n".join(
        line for line in note.split("\n") if not line.startswith("\u2014 hospital-b ")
    )
    report = verify(document)
    assert failing(report) == {"checkpoint.signatures"}
    assert "quorum is 2" in report.check("checkpoint.signatures").message


def test_the_same_signer_twice_counts_once() -> None:
    note = checkpoint_note(SIZE, SIGNERS[:1])
    line = note.rpartition("\n\n")[2]
    document = make_bundle()
    document["checkpoint"] = note + line
    report = verify(document)
    assert failing(report) == {"checkpoint.signatures"}
    assert "has 1 valid member signature" in report.check("checkpoint.signatures").message


def test_a_signature_by_a_non_member_does_not_count() -> None:
    report = verify(make_bundle(signers=[SIGNERS[0], OUTSIDER]))
    assert failing(report) == {"checkpoint.signatures"}
    message = report.check("checkpoint.signatures").message
    assert "has 1 valid member signature (hospital-a), quorum is 2" in message
    assert "1 signature by unknown keys ignored" in message


def test_trusted_quorum_overrides_the_bundles() -> None:
    assert verify(make_bundle(signers=SIGNERS[:1]) | {"quorum": 1}).ok
    report = verify(make_bundle(signers=SIGNERS[:1]) | {"quorum": 1}, trusted_quorum=2)
    assert failing(report) == {"checkpoint.signatures"}


def test_forged_consortium_passes_only_its_own_keys_not_the_trusted_ones() -> None:
    forgers = [Signer(f"hospital-{c}", Ed25519PrivateKey.generate()) for c in "ab"]
    forged = make_bundle(
        signers=forgers,
        old_signers=forgers,
        verifiers=[s.verifier().vkey for s in forgers],
    )
    assert verify(forged).ok, "self-consistent, which is all the bundle's own keys can show"
    report = verify(forged, trusted_verifiers=VKEYS, trusted_quorum=QUORUM)
    assert failing(report) == {"checkpoint.signatures", "consistency[0].checkpoint"}
    assert "quorum is 2" in report.check("checkpoint.signatures").message
    assert "2 signatures by unknown keys ignored" in report.check("checkpoint.signatures").message


def test_pinned_to_a_consortium_a_re_signed_bundle_says_whose_keys_signed_it() -> None:
    forgers = [Signer(f"hospital-{c}", Ed25519PrivateKey.generate()) for c in "ab"]
    forged = make_bundle(
        signers=forgers, old_signers=forgers, verifiers=[s.verifier().vkey for s in forgers]
    )
    pinned = ConsortiumConfig(
        origin=ORIGIN,
        quorum=QUORUM,
        members=tuple(Member(s.name, s.verifier().vkey) for s in SIGNERS),
        genesis_keys=(),
    )
    assert verify_against_consortium(parse_bundle(json.dumps(make_bundle())), pinned).ok
    report = verify_against_consortium(parse_bundle(json.dumps(forged)), pinned)
    assert (report.keys_source, report.quorum_source) == ("trusted", "trusted")
    assert failing(report) == {"checkpoint.signatures", "consistency[0].checkpoint"}
    expected = ", ".join(f"{s.name}+{s.key_hash:08x}" for s in SIGNERS)
    got = ", ".join(f"{s.name}+{s.key_hash:08x}" for s in forgers)
    assert (
        f"(expected signatures by the pinned consortium's keys {expected}, got signatures by "
        f"{got}: keys the consortium does not hold)"
    ) in report.check("checkpoint.signatures").message
    other_log = verify_against_consortium(
        parse_bundle(json.dumps(make_bundle())), replace(pinned, origin="other.example/log")
    )
    assert failing(other_log) == {"checkpoint.origin", "consistency[0].checkpoint"}
    with pytest.raises(InvalidInputError, match="expected the pinned consortium as a Consortium"):
        verify_against_consortium(parse_bundle(json.dumps(make_bundle())), VKEYS)  # type: ignore[arg-type]


def test_bundle_origin_that_differs_from_the_checkpoint_fails() -> None:
    document = make_bundle()
    document["origin"] = "other.example/log"
    report = verify(document)
    assert failing(report) == {"checkpoint.origin", "consistency[0].checkpoint"}
    assert (
        "the checkpoint has origin 'test.swiftchain/evidence', expected the bundle's origin "
        "'other.example/log'"
    ) in report.check("checkpoint.origin").message


def test_another_logs_checkpoint_fails_the_trusted_origin() -> None:
    document = make_bundle(origin="other.example/log")
    assert verify(document).ok
    report = verify(document, trusted_origin=ORIGIN)
    assert failing(report) == {"checkpoint.origin", "consistency[0].checkpoint"}
    assert "expected the trusted consortium's origin" in report.check("checkpoint.origin").message


def test_consistency_proof_that_does_not_match_fails() -> None:
    document = make_bundle()
    proof = document["consistency"][0]["proof"]
    proof[-1] = flip_b64(proof[-1])
    report = verify(document)
    assert failing(report) == {"consistency[0].proof"}
    assert "consistency proof from size 5 to size 13 leads to" in (
        report.check("consistency[0].proof").message
    )


def test_consistency_from_a_forked_tree_fails() -> None:
    fork = MemoryHashStore()
    fork.extend(leaf_hash(e) for e in [*ENTRIES[:4], b"forked entry", *ENTRIES[5:]])
    document = make_bundle()
    document["consistency"][0]["from_checkpoint"] = checkpoint_note(OLD_SIZE, tree=fork)
    report = verify(document)
    assert failing(report) == {"consistency[0].proof"}
    assert "leads to old root" in report.check("consistency[0].proof").message


def test_consistency_from_a_larger_checkpoint_fails() -> None:
    document = make_bundle()
    document["consistency"][0]["from_checkpoint"] = checkpoint_note(SIZE + 2)
    report = verify(document)
    assert failing(report) == {"consistency[0].proof"}
    assert "(size 15) is larger than the bundle's checkpoint (size 13)" in (
        report.check("consistency[0].proof").message
    )


def test_older_checkpoint_must_itself_reach_the_quorum() -> None:
    report = verify(make_bundle(old_signers=SIGNERS[2:]))
    assert failing(report) == {"consistency[0].checkpoint"}
    assert "older checkpoint 0 has 1 valid member signature (hospital-c), quorum is 2" in (
        report.check("consistency[0].checkpoint").message
    )


# ------------------------------------------------------------------------------- commitment


def test_commitment_of_the_document_matches_an_entry() -> None:
    report = verify(make_bundle(), document=DOCUMENT, salt=SALT)
    assert report.ok
    message = report.check("commitment").message
    assert "is the commitment of entry 1 (leaf 9, RECORD 00000000-0000-4000-8000-000000000009)" in (
        message
    )


@pytest.mark.parametrize(
    ("document", "salt"),
    [(DOCUMENT + b" ", SALT), (DOCUMENT, bytes(32))],
    ids=["wrong-document", "wrong-salt"],
)
def test_commitment_mismatch_fails(document: bytes, salt: bytes) -> None:
    report = verify(make_bundle(), document=document, salt=salt)
    assert failing(report) == {"commitment"}
    assert "is the commitment of none of the bundle's 2 entries" in (
        report.check("commitment").message
    )


def test_commitment_helper_is_hmac_sha256_and_wants_32_bytes_of_salt() -> None:
    assert commitment(SALT, DOCUMENT) == hmac.new(SALT, DOCUMENT, hashlib.sha256).digest()
    with pytest.raises(InvalidInputError, match="expected a 32-byte salt, got 31 bytes"):
        commitment(SALT[:31], DOCUMENT)


def test_bad_verification_arguments_raise() -> None:
    bundle = parse_bundle(json.dumps(make_bundle()))
    with pytest.raises(InvalidInputError, match="expected a 32-byte salt, got 16 bytes"):
        verify_bundle(bundle, document=DOCUMENT, salt=bytes(16))
    with pytest.raises(InvalidInputError, match="got only the document"):
        verify_bundle(bundle, document=DOCUMENT)
    with pytest.raises(InvalidInputError, match="got only the salt"):
        verify_bundle(bundle, salt=SALT)
    with pytest.raises(InvalidInputError, match="trusted quorum: expected a positive integer"):
        verify_bundle(bundle, trusted_quorum=0)
    with pytest.raises(InvalidInputError, match="expected at least one trusted verifier key"):
        verify_bundle(bundle, trusted_verifiers=[])


# ------------------------------------------------------------------------------- building


def test_build_refuses_what_parse_would_refuse() -> None:
    with pytest.raises(InvalidInputError, match=r"inclusion_proof\[0\]: expected a 32-byte hash"):
        EvidenceEntry(0, b"x", (bytes(31),))
    with pytest.raises(InvalidInputError, match="entry: expected the entry's exact bytes"):
        EvidenceEntry(0, b"", ())
    with pytest.raises(InvalidInputError, match="quorum: expected a positive integer, got 0"):
        build_bundle(
            origin=ORIGIN, verifiers=VKEYS, quorum=0, checkpoint=checkpoint_note(SIZE), entries=[]
        )
    with pytest.raises(InvalidInputError, match=r"verifiers\[0\]: expected a verifier key"):
        EvidenceBundle(ORIGIN, ("nope",), 2, checkpoint_note(SIZE), ())


# ------------------------------------------------------------------------------- parsing

Mutation = Callable[[dict[str, Any]], Any]


def _set(path: str, value: Any) -> Mutation:
    def mutate(document: dict[str, Any]) -> Any:
        *parents, last = path.split(".")
        target: Any = document
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if last.isdigit():
            target[int(last)] = value
        else:
            target[last] = value
        return document

    return mutate


def _drop(path: str) -> Mutation:
    def mutate(document: dict[str, Any]) -> Any:
        *parents, last = path.split(".")
        target: Any = document
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        del target[last]
        return document

    return mutate


def _text(text: str | bytes) -> Mutation:
    return lambda _: text


BAD_BUNDLES: list[tuple[str, Mutation, str]] = [
    ("not-json", _text("{"), "expected a JSON document, got invalid JSON (Expecting"),
    ("empty", _text(""), "expected a JSON document, got invalid JSON"),
    ("not-utf8", _text(b"\xff{}"), "expected a JSON document in UTF-8, got byte 0xff at offset 0"),
    ("array", _text("[]"), "expected a JSON object, got an array"),
    ("nan", _text('{"quorum": NaN}'), "expected standard JSON numbers, got NaN"),
    (
        "duplicate-field",
        _text('{"format": "swiftchain-evidence/v1", "format": "x"}'),
        "expected each field once in an object, got 'format' twice",
    ),
    ("no-format", _drop("format"), "expected a field 'format', got none"),
    (
        "wrong-format",
        _set("format", "swiftchain-evidence/v2"),
        "format: expected 'swiftchain-evidence/v1', got 'swiftchain-evidence/v2'",
    ),
    (
        "format-number",
        _set("format", 1),
        "format: expected 'swiftchain-evidence/v1', got an integer",
    ),
    ("no-origin", _drop("origin"), "expected a field 'origin', got none"),
    ("empty-origin", _set("origin", ""), "origin: expected a non-empty string, got an empty one"),
    ("surrogate-origin", _set("origin", "\ud800"), "origin: expected text encodable as UTF-8"),
    ("verifiers-string", _set("verifiers", "k"), "verifiers: expected an array, got a string"),
    ("verifiers-empty", _set("verifiers", []), "verifiers: expected at least one verifier key"),
    ("verifier-number", _set("verifiers.1", 7), "verifiers[1]: expected a string, got an integer"),
    (
        "verifier-malformed",
        _set("verifiers.0", "hospital-a+zz"),
        "verifiers[0]: expected a verifier key of the form",
    ),
    ("quorum-zero", _set("quorum", 0), "quorum: expected a positive integer, got 0"),
    ("quorum-bool", _set("quorum", True), "quorum: expected a positive integer, got a boolean"),
    ("quorum-string", _set("quorum", "2"), "quorum: expected a positive integer, got a string"),
    (
        "quorum-float",
        _set("quorum", 2.0),
        "quorum: expected a positive integer, got a number with a fraction or exponent",
    ),
    ("no-checkpoint", _drop("checkpoint"), "expected a field 'checkpoint', got none"),
    ("checkpoint-null", _set("checkpoint", None), "checkpoint: expected a string, got null"),
    ("no-entries", _drop("entries"), "expected a field 'entries', got none"),
    ("entries-object", _set("entries", {}), "entries: expected an array, got an object"),
    ("entry-array", _set("entries.0", []), "entries[0]: expected an object, got an array"),
    (
        "no-leaf-index",
        _drop("entries.0.leaf_index"),
        "entries[0]: expected a field 'leaf_index', got none",
    ),
    (
        "negative-leaf-index",
        _set("entries.0.leaf_index", -1),
        "entries[0].leaf_index: expected an integer in 0..9223372036854775807, got -1",
    ),
    (
        "huge-leaf-index",
        _set("entries.1.leaf_index", 2**63),
        "entries[1].leaf_index: expected an integer in 0..9223372036854775807, "
        "got 9223372036854775808",
    ),
    (
        "leaf-index-string",
        _set("entries.0.leaf_index", "2"),
        "entries[0].leaf_index: expected an integer, got a string",
    ),
    (
        "entry-not-base64",
        _set("entries.0.entry", "!!!!"),
        "entries[0].entry: expected standard base64 with padding, got '!!!!'",
    ),
    (
        "entry-unpadded",
        _set("entries.0.entry", "AAA"),
        "entries[0].entry: expected standard base64 with padding, got 'AAA'",
    ),
    (
        "entry-urlsafe",
        _set("entries.0.entry", "-_8="),
        "entries[0].entry: expected standard base64 with padding, got '-_8='",
    ),
    (
        "entry-non-canonical",
        _set("entries.0.entry", "AB=="),
        "entries[0].entry: expected standard base64 with padding, got 'AB=='",
    ),
    ("entry-empty", _set("entries.0.entry", ""), "entries[0].entry: expected the entry's bytes"),
    (
        "proof-string",
        _set("entries.0.inclusion_proof", "AAAA"),
        "entries[0].inclusion_proof: expected an array, got a string",
    ),
    (
        "proof-short-hash",
        _set("entries.0.inclusion_proof.1", base64.b64encode(bytes(31)).decode()),
        "entries[0].inclusion_proof[1]: expected a 32-byte hash, got 31 bytes",
    ),
    (
        "proof-too-long",
        _set("entries.0.inclusion_proof", [base64.b64encode(bytes(32)).decode()] * 65),
        "entries[0].inclusion_proof: expected at most 64 hashes, got 65",
    ),
    ("no-consistency", _drop("consistency"), "expected a field 'consistency', got none"),
    (
        "from-checkpoint-number",
        _set("consistency.0.from_checkpoint", 5),
        "consistency[0].from_checkpoint: expected a string, got an integer",
    ),
    (
        "no-consistency-proof",
        _drop("consistency.0.proof"),
        "consistency[0]: expected a field 'proof', got none",
    ),
    (
        "consistency-short-hash",
        _set("consistency.0.proof.0", "AAAA"),
        "consistency[0].proof[0]: expected a 32-byte hash, got 3 bytes",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [(m, f) for _, m, f in BAD_BUNDLES],
    ids=[name for name, _, _ in BAD_BUNDLES],
)
def test_parser_errors_say_what_was_expected(mutate: Mutation, fragment: str) -> None:
    result = mutate(copy.deepcopy(make_bundle()))
    text = result if isinstance(result, str | bytes) else json.dumps(result)
    with pytest.raises(InvalidInputError) as caught:
        parse_bundle(text)
    assert fragment in str(caught.value)
    assert "expected" in str(caught.value)
