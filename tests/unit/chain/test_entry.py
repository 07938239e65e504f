"""Tests of chain.entry: signing, batch signing and the strict well-formedness checks of
``parse_entry`` (every rule of protos/swiftchain/chain/v1/entry.proto that needs no log state).

The malformed-entry table pins the exact message fragment of each rule: the message is the
rejection reason a node keeps for the submitter, and every node must give the same one.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.entry import (
    BATCH_SIGNATURE_CONTEXT,
    ENTRY_SIGNATURE_CONTEXT,
    EntrySigner,
    EntryTooLargeError,
    ParsedEntry,
    batch_signing_input,
    entry_signing_input,
    is_key_id,
    new_entry_id,
    parse_entry,
)
from chain.entry_rules import KIND_NAMES, KINDS_BY_NAME, is_small_order_public_key
from chain.errors import InvalidInputError
from chain.hashing import leaf_hash
from chain.limits import MAX_ENTRY_BYTES
from chain.proof_verify import root_from_inclusion_proof
from chain.validation import rejection_reason
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC = KEY.public_key()
PUBLIC_RAW = PUBLIC.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
KEY_ID = "hospital-a/records#1"
SIGNER = EntrySigner(KEY_ID, KEY)
UUIDS = [f"{i:08x}-0000-4000-8000-{i:012x}" for i in range(1, 100)]
DIRECTIVE_ID = "0f0e0d0c-0b0a-4908-8706-050403020100"
T0 = Timestamp(seconds=1_767_225_600, nanos=5)


def h32(tag: int) -> bytes:
    return bytes([tag]) * 32


# ------------------------------------------------------------------------------ builders


def record_body(**record: object) -> entry_pb2.EntryBody:
    detail = {
        "record_tag": h32(3),
        "version": 1,
        "action": common_pb2.RECORD_ACTION_CREATE,
        "reason_code": "clinical-update",
    }
    detail.update(record)
    return entry_pb2.EntryBody(
        entry_id=UUIDS[0],
        kind=common_pb2.ENTRY_KIND_RECORD,
        submitter_id="hospital-a",
        time=T0,
        commitment=h32(1),
        subject_tag=h32(2),
        record=entry_pb2.RecordDetail(**detail),  # type: ignore[arg-type]
    )


def key_body(**key: object) -> entry_pb2.EntryBody:
    detail = {
        "action": entry_pb2.KEY_ACTION_REGISTER,
        "owner_id": "hospital-a",
        "owner_kind": entry_pb2.KEY_OWNER_KIND_ORGANIZATION,
        "owner_role": common_pb2.ORGANIZATION_ROLE_HOSPITAL,
        "key_id": "hospital-a/records#2",
        "public_key": PUBLIC_RAW,
        "reason": entry_pb2.KEY_REASON_NEW_KEY,
        "allowed_kinds": [common_pb2.ENTRY_KIND_RECORD],
    }
    detail.update(key)
    return entry_pb2.EntryBody(
        entry_id=UUIDS[1],
        kind=common_pb2.ENTRY_KIND_KEY,
        submitter_id="identity",
        time=T0,
        commitment=h32(1),
        key=entry_pb2.KeyDetail(**detail),  # type: ignore[arg-type]
    )


def consent_body(**consent: object) -> entry_pb2.EntryBody:
    detail = {
        "directive_type": entry_pb2.DIRECTIVE_TYPE_CONSENT,
        "directive_id": DIRECTIVE_ID,
        "version": 1,
        "status": entry_pb2.DIRECTIVE_STATUS_ACTIVE,
        "signer_key_tag": h32(4),
        "signer_signature": bytes(64),
    }
    detail.update(consent)
    return entry_pb2.EntryBody(
        entry_id=UUIDS[2],
        kind=common_pb2.ENTRY_KIND_CONSENT,
        submitter_id="consent",
        time=T0,
        commitment=h32(1),
        subject_tag=h32(2),
        consent=entry_pb2.ConsentDetail(**detail),  # type: ignore[arg-type]
    )


def access_body(**access: object) -> entry_pb2.EntryBody:
    detail = {
        "decision": common_pb2.ACCESS_DECISION_PERMIT,
        "requester_id": "hospital-b",
        "deciding_directive_id": DIRECTIVE_ID,
        "deciding_directive_version": 2,
        "reason": common_pb2.ACCESS_REASON_PERMITTED,
    }
    detail.update(access)
    return entry_pb2.EntryBody(
        entry_id=UUIDS[3],
        kind=common_pb2.ENTRY_KIND_ACCESS,
        submitter_id="consent",
        time=T0,
        commitment=h32(1),
        subject_tag=h32(2),
        access=entry_pb2.AccessDetail(**detail),  # type: ignore[arg-type]
    )


BUILDERS: dict[str, Callable[..., entry_pb2.EntryBody]] = {
    "record": record_body,
    "key": key_body,
    "consent": consent_body,
    "access": access_body,
}


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    """The wire bytes of field ``number`` (wire type 2) holding ``payload``."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


UNKNOWN = varint(99 << 3) + varint(7)  # field 99, varint 7: unknown everywhere


def signed(body: entry_pb2.EntryBody | bytes) -> bytes:
    data = body if isinstance(body, bytes) else body.SerializeToString()
    return SIGNER.sign_entry(data)


def with_unknown_in(field: str, number: int) -> bytes:
    """A RECORD body whose sub-message ``field`` (field ``number``) carries an unknown field."""
    body = record_body()
    body.references.add(kind=entry_pb2.REFERENCE_KIND_PREVIOUS_VERSION, commitment=h32(9))
    sub = getattr(body, field)
    sub_bytes = (sub[0] if field == "references" else sub).SerializeToString() + UNKNOWN
    body.ClearField(field)  # type: ignore[arg-type]
    return signed(body.SerializeToString() + length_delimited(number, sub_bytes))


def chain_entry(**fields: object) -> bytes:
    values: dict[str, object] = {"body": record_body().SerializeToString(), "key_id": KEY_ID}
    values.update(fields)
    return entry_pb2.ChainEntry(**values).SerializeToString()  # type: ignore[arg-type]


def batch(**fields: object) -> entry_pb2.BatchAuth:
    values: dict[str, object] = {
        "index": 1,
        "size": 3,
        "path": [h32(5), h32(6)],
        "root_signature": bytes(64),
    }
    values.update(fields)
    return entry_pb2.BatchAuth(**values)  # type: ignore[arg-type]


def body_with(build: str, change: Callable[[entry_pb2.EntryBody], object]) -> bytes:
    body = BUILDERS[build]()
    change(body)
    return signed(body)


def detail_with(build: str, **fields: object) -> bytes:
    return signed(BUILDERS[build](**fields))


# ------------------------------------------------------------------------------ round trips


def test_sign_entry_round_trip() -> None:
    body = record_body().SerializeToString()
    raw = SIGNER.sign_entry(body)
    parsed = parse_entry(raw)
    assert isinstance(parsed, ParsedEntry)
    assert parsed.raw == raw
    assert parsed.body_bytes == body
    assert parsed.entry_id == UUIDS[0]
    assert parsed.kind == common_pb2.ENTRY_KIND_RECORD
    assert parsed.kind_name == "RECORD"
    assert parsed.submitter_id == "hospital-a"
    assert parsed.key_id == KEY_ID
    assert not parsed.is_batch
    assert (parsed.batch_index, parsed.batch_size, parsed.batch_path) == (0, 0, ())
    assert parsed.root_signature == b""
    assert parsed.leaf_hash == leaf_hash(raw)
    PUBLIC.verify(parsed.signature, ENTRY_SIGNATURE_CONTEXT + body)
    # The messages, parsed again on demand, are the ones signed.
    assert parsed.entry.body == body
    assert parsed.entry.signature == parsed.signature
    assert parsed.body == record_body()
    assert parsed.body is parsed.body  # parsed once
    assert "RECORD" in repr(parsed)
    assert "private" not in repr(SIGNER).lower()


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 8, 13])
def test_sign_batch_round_trip(size: int) -> None:
    bodies = []
    for i in range(size):
        body = record_body()
        body.entry_id = UUIDS[i]
        bodies.append(body.SerializeToString())
    entries = SIGNER.sign_batch(bodies)
    assert len(entries) == size
    signatures = set()
    for i, raw in enumerate(entries):
        parsed = parse_entry(raw)
        assert parsed.is_batch
        assert parsed.body_bytes == bodies[i]
        assert parsed.entry_id == UUIDS[i]
        assert (parsed.batch_index, parsed.batch_size) == (i, size)
        assert parsed.signature == b""
        assert parsed.batch_path == tuple(parsed.entry.batch.path)
        root = root_from_inclusion_proof(leaf_hash(bodies[i]), i, size, parsed.batch_path)
        PUBLIC.verify(parsed.root_signature, batch_signing_input(size, root))
        signatures.add(parsed.root_signature)
    assert len(signatures) == 1  # one signature for the whole batch


def test_signing_inputs() -> None:
    assert entry_signing_input(b"body") == b"swiftchain/entry/v1\nbody"
    root = h32(7)
    assert batch_signing_input(258, root) == BATCH_SIGNATURE_CONTEXT + struct.pack(">Q", 258) + root
    assert batch_signing_input(258, root)[20:28] == b"\x00\x00\x00\x00\x00\x00\x01\x02"


def test_signer_rejects_bad_key_id_and_empty_batch() -> None:
    with pytest.raises(InvalidInputError, match="expected a key id of 1-128 characters"):
        EntrySigner("has space", KEY)
    with pytest.raises(InvalidInputError, match="expected at least one entry body in a batch"):
        SIGNER.sign_batch([])


def test_new_entry_id_is_a_lower_case_uuid4() -> None:
    ids = {new_entry_id() for _ in range(50)}
    assert len(ids) == 50
    for entry_id in ids:
        assert parse_entry(_with_id(entry_id)).entry_id == entry_id


def _with_id(entry_id: str) -> bytes:
    body = record_body()
    body.entry_id = entry_id
    return signed(body)


def test_kind_tables() -> None:
    assert set(KIND_NAMES.values()) == {"KEY", "RECORD", "CONSENT", "ACCESS", "MEMBERSHIP"}
    assert {KINDS_BY_NAME[name]: name for name in KINDS_BY_NAME} == KIND_NAMES


def test_key_id_rule() -> None:
    assert is_key_id("a")
    assert is_key_id("A-z_0.9:#/" + "x" * 118)
    assert not is_key_id("x" * 129)
    assert not is_key_id("")
    assert not is_key_id("a b")
    assert not is_key_id("é")
    assert is_key_id("a")  # memoized answers stay right


# ------------------------------------------------------------------------------ well-formed


def _amend_body() -> entry_pb2.EntryBody:
    body = record_body(version=2, action=common_pb2.RECORD_ACTION_AMEND)
    body.references.add(
        kind=entry_pb2.REFERENCE_KIND_PREVIOUS_VERSION, entry_id=UUIDS[5], commitment=h32(8)
    )
    body.references.add(kind=entry_pb2.REFERENCE_KIND_MERGED_FROM, commitment=h32(9))
    return body


VALID = {
    "record": lambda: signed(record_body()),
    "record amend v2 with references": lambda: signed(_amend_body()),
    "record without reason code or author": lambda: detail_with("record", reason_code=""),
    "key register": lambda: signed(key_body()),
    "key register of a service": lambda: detail_with(
        "key",
        owner_id="consent",
        owner_kind=entry_pb2.KEY_OWNER_KIND_SERVICE,
        owner_role=common_pb2.ORGANIZATION_ROLE_UNSPECIFIED,
        allowed_kinds=[common_pb2.ENTRY_KIND_CONSENT, common_pb2.ENTRY_KIND_ACCESS],
    ),
    "key rotate": lambda: detail_with(
        "key",
        action=entry_pb2.KEY_ACTION_ROTATE,
        replaces_key_id=KEY_ID,
        reason=entry_pb2.KEY_REASON_ROUTINE_ROTATION,
    ),
    "key revoke": lambda: detail_with(
        "key",
        action=entry_pb2.KEY_ACTION_REVOKE,
        public_key=b"",
        allowed_kinds=[],
        reason=entry_pb2.KEY_REASON_KEY_COMPROMISE,
    ),
    "consent": lambda: signed(consent_body()),
    "delegation revoked": lambda: detail_with(
        "consent",
        directive_type=entry_pb2.DIRECTIVE_TYPE_DELEGATION,
        status=entry_pb2.DIRECTIVE_STATUS_REVOKED,
        version=3,
    ),
    "access permitted": lambda: signed(access_body()),
    "access break glass": lambda: detail_with(
        "access",
        reason=common_pb2.ACCESS_REASON_BREAK_GLASS,
        break_glass=True,
        deciding_directive_id="",
        deciding_directive_version=0,
    ),
    "access no consent": lambda: detail_with(
        "access",
        decision=common_pb2.ACCESS_DECISION_DENY,
        reason=common_pb2.ACCESS_REASON_NO_CONSENT,
        deciding_directive_id="",
        deciding_directive_version=0,
    ),
    "access expired, no deciding directive": lambda: detail_with(
        "access",
        decision=common_pb2.ACCESS_DECISION_DENY,
        reason=common_pb2.ACCESS_REASON_EXPIRED,
        deciding_directive_id="",
        deciding_directive_version=0,
    ),
    "time at the lower bound": lambda: body_with(
        "record", lambda b: b.time.CopyFrom(Timestamp(seconds=0))
    ),
    "time at the upper bound": lambda: body_with(
        "record",
        lambda b: b.time.CopyFrom(Timestamp(seconds=253_402_300_799, nanos=999_999_999)),
    ),
    "time zero (set, all defaults)": lambda: body_with(
        "record", lambda b: b.time.CopyFrom(Timestamp())
    ),
    "key id of 128 characters": lambda: chain_entry(key_id="k" * 128, signature=bytes(64)),
    "batch of one, empty path": lambda: chain_entry(batch=batch(index=0, size=1, path=[])),
    "batch with a path of the wrong length (a validation matter)": lambda: chain_entry(
        batch=batch(index=0, size=2, path=[])
    ),
    "fields in reverse order": lambda: (
        length_delimited(3, bytes(64))
        + length_delimited(2, KEY_ID.encode())
        + length_delimited(1, record_body().SerializeToString())
    ),
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_well_formed(name: str) -> None:
    raw = VALID[name]()
    parsed = parse_entry(raw)
    assert parsed.raw == raw  # the exact bytes, never re-serialized
    assert parsed.leaf_hash == leaf_hash(raw)


# ------------------------------------------------------------------------------ small order

# Edwards25519 arithmetic in plain Python (RFC 8032 §5.1), only to derive the small-order
# points independently of the table in chain.entry.
P25519 = 2**255 - 19
D25519 = -121665 * pow(121666, P25519 - 2, P25519) % P25519
Point = tuple[int, int]


def decode_point(data: bytes) -> Point | None:
    y = int.from_bytes(data, "little") & ((1 << 255) - 1)
    sign = data[31] >> 7
    y %= P25519
    u, v = (y * y - 1) % P25519, (D25519 * y * y + 1) % P25519
    x2 = u * pow(v, P25519 - 2, P25519) % P25519
    x = pow(x2, (P25519 + 3) // 8, P25519)
    if (x * x - x2) % P25519:
        x = x * pow(2, (P25519 - 1) // 4, P25519) % P25519
    if (x * x - x2) % P25519:
        return None
    if (x & 1) != sign:
        x = (P25519 - x) % P25519
    return x, y


def add_points(a: Point, b: Point) -> Point:
    (x1, y1), (x2, y2) = a, b
    t = D25519 * x1 * x2 * y1 * y2 % P25519
    x3 = (x1 * y2 + x2 * y1) * pow(1 + t, P25519 - 2, P25519) % P25519
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, P25519 - 2, P25519) % P25519
    return x3, y3


def encode_point(point: Point) -> bytes:
    x, y = point
    return (y | (x & 1) << 255).to_bytes(32, "little")


IDENTITY: Point = (0, 1)
SMALL_ORDER_Y = [
    bytes.fromhex(h)
    for h in (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    )
]


def test_small_order_points_are_all_refused() -> None:
    order8 = decode_point(SMALL_ORDER_Y[2])
    assert order8 is not None
    multiples = [IDENTITY]
    for _ in range(7):
        multiples.append(add_points(multiples[-1], order8))
    assert add_points(multiples[-1], order8) == IDENTITY  # order 8 exactly
    assert len(set(multiples)) == 8
    for point in multiples:  # the whole torsion subgroup, canonically encoded
        assert is_small_order_public_key(encode_point(point))
    for y in SMALL_ORDER_Y:  # every listed encoding is of small order, with either sign
        for sign in (0, 0x80):
            data = y[:31] + bytes([y[31] | sign])
            assert is_small_order_public_key(data)
            decoded = decode_point(data)
            if decoded is not None:
                eight = decoded
                for _ in range(3):
                    eight = add_points(eight, eight)
                assert eight == IDENTITY


def test_real_keys_are_of_large_order() -> None:
    for seed in range(200):
        key = Ed25519PrivateKey.from_private_bytes(seed.to_bytes(32, "little"))
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        assert not is_small_order_public_key(raw)


# ------------------------------------------------------------------------------ malformed

REVOKE = {"action": entry_pb2.KEY_ACTION_REVOKE, "public_key": b"", "allowed_kinds": []}
DENY = common_pb2.ACCESS_DECISION_DENY

MALFORMED: list[tuple[str, Callable[[], bytes], str]] = [
    # --- the ChainEntry and its authentication
    ("not a protobuf", lambda: b"\xff\xff", "expected a ChainEntry protobuf, got undecodable"),
    (
        "unknown field in the entry",
        lambda: signed(record_body()) + UNKNOWN,
        "entry: expected only fields of swiftchain.chain.v1, got unknown field numbers [99]",
    ),
    ("empty key id", lambda: chain_entry(key_id="", signature=bytes(64)), "got ''"),
    (
        "key id with a space",
        lambda: chain_entry(key_id="bad key", signature=bytes(64)),
        "expected a key id of 1-128 characters [A-Za-z0-9._:#/-], got 'bad key'",
    ),
    (
        "key id of 129 characters",
        lambda: chain_entry(key_id="k" * 129, signature=bytes(64)),
        "expected a key id of 1-128 characters",
    ),
    (
        "no authentication",
        lambda: chain_entry(),
        "expected a signature or batch authentication, got neither",
    ),
    (
        "63-byte signature",
        lambda: chain_entry(signature=bytes(63)),
        "expected an Ed25519 signature of 64 bytes, got 63",
    ),
    (
        "65-byte signature",
        lambda: chain_entry(signature=bytes(65)),
        "expected an Ed25519 signature of 64 bytes, got 65",
    ),
    (
        "batch index = size",
        lambda: chain_entry(batch=batch(index=3, size=3)),
        "expected batch index < size and size >= 1, got index 3, size 3",
    ),
    (
        "batch index > size",
        lambda: chain_entry(batch=batch(index=7, size=3)),
        "expected batch index < size and size >= 1, got index 7, size 3",
    ),
    (
        "batch size 0",
        lambda: chain_entry(batch=batch(index=0, size=0, path=[])),
        "expected batch index < size and size >= 1, got index 0, size 0",
    ),
    (
        "31-byte batch path hash",
        lambda: chain_entry(batch=batch(path=[h32(5), bytes(31)])),
        "expected a batch path hash of 32 bytes, got 31",
    ),
    (
        "33-byte batch path hash",
        lambda: chain_entry(batch=batch(path=[bytes(33), h32(5)])),
        "expected a batch path hash of 32 bytes, got 33",
    ),
    (
        "63-byte batch root signature",
        lambda: chain_entry(batch=batch(root_signature=bytes(63))),
        "expected an Ed25519 batch root signature of 64 bytes, got 63",
    ),
    (
        "unknown field in the batch auth",
        lambda: chain_entry() + length_delimited(4, batch().SerializeToString() + UNKNOWN),
        "batch auth: expected only fields of swiftchain.chain.v1, got unknown field numbers [99]",
    ),
    # --- the body
    (
        "body not a protobuf",
        lambda: signed(b"\x0a\xff"),
        "expected an EntryBody protobuf, got undecodable bytes",
    ),
    (
        "unknown field in the body",
        lambda: signed(record_body().SerializeToString() + UNKNOWN),
        "entry body: expected only fields of swiftchain.chain.v1, got unknown field numbers [99]",
    ),
    (
        "unknown field in the time",
        lambda: with_unknown_in("time", 4),
        "time: expected only fields of swiftchain.chain.v1, got unknown field numbers [99]",
    ),
    (
        "unknown field in a reference",
        lambda: with_unknown_in("references", 7),
        "reference: expected only fields of swiftchain.chain.v1, got unknown field numbers [99]",
    ),
    (
        "unknown field in the detail",
        lambda: with_unknown_in("record", 11),
        "record detail: expected only fields of swiftchain.chain.v1, got unknown field numbers",
    ),
    (
        "entry id in upper case",
        lambda: _with_id("0000000A-0000-4000-8000-000000000001"),
        "expected an entry id as a lower-case UUID v4",
    ),
    (
        "entry id a UUID v1",
        lambda: _with_id("00000001-0000-1000-8000-000000000001"),
        "expected an entry id as a lower-case UUID v4, got '00000001-0000-1000-8000-",
    ),
    (
        "entry id with a bad variant",
        lambda: _with_id("00000001-0000-4000-c000-000000000001"),
        "expected an entry id as a lower-case UUID v4",
    ),
    (
        "entry id without dashes",
        lambda: _with_id("00000001000040008000000000000001"),
        "expected an entry id as a lower-case UUID v4",
    ),
    (
        "empty entry id",
        lambda: _with_id(""),
        "expected an entry id as a lower-case UUID v4, got ''",
    ),
    (
        "entry id with a trailing newline",
        lambda: _with_id(UUIDS[0] + "\n"),
        "expected an entry id as a lower-case UUID v4",
    ),
    (
        "kind unspecified",
        lambda: body_with("record", lambda b: setattr(b, "kind", 0)),
        "expected a known entry kind, got 0",
    ),
    (
        "kind unknown",
        lambda: body_with("record", lambda b: setattr(b, "kind", 9)),
        "expected a known entry kind, got 9",
    ),
    (
        "kind RECORD with a key detail",
        lambda: body_with("key", lambda b: setattr(b, "kind", common_pb2.ENTRY_KIND_RECORD)),
        "expected the 'record' detail for a RECORD entry, got 'key'",
    ),
    (
        "kind ACCESS with a consent detail",
        lambda: body_with("consent", lambda b: setattr(b, "kind", common_pb2.ENTRY_KIND_ACCESS)),
        "expected the 'access' detail for a ACCESS entry, got 'consent'",
    ),
    (
        "no detail",
        lambda: body_with("record", lambda b: b.ClearField("record")),
        "expected the 'record' detail for a RECORD entry, got None",
    ),
    (
        "empty submitter",
        lambda: body_with("record", lambda b: setattr(b, "submitter_id", "")),
        "expected a submitter id, got an empty one",
    ),
    (
        "missing time",
        lambda: body_with("record", lambda b: b.ClearField("time")),
        "expected a time, got none",
    ),
    (
        "negative nanos",
        lambda: body_with("record", lambda b: setattr(b.time, "nanos", -1)),
        "expected a time between 1970-01-01 and 9999-12-31 with nanos in [0, 999999999], "
        "got seconds 1767225600, nanos -1",
    ),
    (
        "nanos of a whole second",
        lambda: body_with("record", lambda b: setattr(b.time, "nanos", 1_000_000_000)),
        "nanos 1000000000",
    ),
    (
        "time after 9999",
        lambda: body_with("record", lambda b: setattr(b.time, "seconds", 253_402_300_800)),
        "got seconds 253402300800",
    ),
    (
        "time before 1970",
        lambda: body_with("record", lambda b: setattr(b.time, "seconds", -1)),
        "got seconds -1,",
    ),
    (
        "commitment of 31 bytes",
        lambda: body_with("record", lambda b: setattr(b, "commitment", bytes(31))),
        "expected a commitment of 32 bytes, got 31",
    ),
    (
        "no commitment",
        lambda: body_with("record", lambda b: b.ClearField("commitment")),
        "expected a commitment of 32 bytes, got 0",
    ),
    (
        "subject tag on a KEY entry",
        lambda: body_with("key", lambda b: setattr(b, "subject_tag", h32(2))),
        "expected no subject tag on a KEY entry, got one",
    ),
    (
        "no subject tag on a RECORD entry",
        lambda: body_with("record", lambda b: b.ClearField("subject_tag")),
        "expected a subject tag of 32 bytes, got 0",
    ),
    (
        "subject tag of 33 bytes",
        lambda: body_with("consent", lambda b: setattr(b, "subject_tag", bytes(33))),
        "expected a subject tag of 32 bytes, got 33",
    ),
    (
        "reference kind unspecified",
        lambda: body_with("record", lambda b: b.references.add(entry_id=UUIDS[4])),
        "expected a reference kind, got REFERENCE_KIND_UNSPECIFIED",
    ),
    (
        "reference kind unknown",
        lambda: body_with("record", lambda b: b.references.add(kind=42, entry_id=UUIDS[4])),
        "expected a known reference kind, got 42",
    ),
    (
        "referenced commitment of 31 bytes",
        lambda: body_with(
            "record",
            lambda b: b.references.add(
                kind=entry_pb2.REFERENCE_KIND_PREVIOUS_VERSION, commitment=bytes(31)
            ),
        ),
        "expected a referenced commitment of 32 bytes, got 31",
    ),
    # --- formats and limits (chain/limits.py)
    (
        "entry over 64 KiB",
        lambda: signed(record_body(author_ref="x" * 70_000)),
        "expected an entry of at most 65,535 bytes, got 70,",
    ),
    (
        "2 MB of free text as author_ref",
        lambda: body_with("record", lambda b: setattr(b.record, "author_ref", "Jane Doe " * 1000)),
        "expected author_ref to be empty or a practitioner id as identity issues it",
    ),
    (
        "a name as author_ref",
        lambda: detail_with("record", author_ref="Dr. Jane Doe"),
        "got 'Dr. Jane Doe'",
    ),
    (
        "free text as a referenced entry id",
        lambda: body_with(
            "record",
            lambda b: b.references.add(
                kind=entry_pb2.REFERENCE_KIND_PREVIOUS_VERSION, entry_id="diagnosis: flu"
            ),
        ),
        "expected a referenced entry id as a lower-case UUID v4 or none, got 'diagnosis: flu'",
    ),
    (
        "nine references",
        lambda: body_with(
            "record",
            lambda b: [
                b.references.add(kind=entry_pb2.REFERENCE_KIND_PREVIOUS_VERSION) for _ in range(9)
            ],
        ),
        "expected at most 8 references, got 9",
    ),
    (
        "free text as the submitter",
        lambda: body_with("record", lambda b: setattr(b, "submitter_id", "Hospital A")),
        "expected a submitter id as an organization id of 1-63 characters",
    ),
    (
        "free text as the requester",
        lambda: detail_with("access", requester_id="x" * 64),
        "expected a requester id as an organization id",
    ),
    (
        "free text as a key owner",
        lambda: detail_with("key", owner_id="the registrar"),
        "expected a key owner id as an organization id",
    ),
    (
        "a batch path of 65 hashes",
        lambda: chain_entry(batch=batch(path=[h32(5)] * 65)),
        "expected a batch path of at most 64 hashes, got 65",
    ),
    (
        "five allowed kinds",
        lambda: detail_with("key", allowed_kinds=[common_pb2.ENTRY_KIND_RECORD] * 5),
        "expected at most 4 allowed entry kinds, got 5",
    ),
    (
        "a long bad key id is shown cut",
        lambda: detail_with("key", key_id="k " * 5000),
        "(10,000 characters)",
    ),
    # --- KEY detail
    (
        "key action unspecified",
        lambda: detail_with("key", action=entry_pb2.KEY_ACTION_UNSPECIFIED),
        "expected a KEY action, got 0",
    ),
    ("key action unknown", lambda: detail_with("key", action=9), "expected a KEY action, got 9"),
    (
        "key without owner",
        lambda: detail_with("key", owner_id=""),
        "expected a key owner id, got an empty one",
    ),
    (
        "key owner kind unspecified",
        lambda: detail_with("key", owner_kind=entry_pb2.KEY_OWNER_KIND_UNSPECIFIED),
        "expected a key owner kind, got KEY_OWNER_KIND_UNSPECIFIED",
    ),
    (
        "key owner kind unknown",
        lambda: detail_with("key", owner_kind=7),
        "expected a known key owner kind, got 7",
    ),
    (
        "key owner role unknown",
        lambda: detail_with("key", owner_role=42),
        "expected a known owner role, got 42",
    ),
    (
        "service key with an organization role",
        lambda: detail_with("key", owner_kind=entry_pb2.KEY_OWNER_KIND_SERVICE),
        "expected ORGANIZATION_ROLE_UNSPECIFIED for a service's key, "
        "got ORGANIZATION_ROLE_HOSPITAL",
    ),
    (
        "organization key without a role",
        lambda: detail_with("key", owner_role=common_pb2.ORGANIZATION_ROLE_UNSPECIFIED),
        "expected the owner's role for an organization's key, got ORGANIZATION_ROLE_UNSPECIFIED",
    ),
    (
        "key detail with a bad key id",
        lambda: detail_with("key", key_id="a/b c"),
        "expected a key id of 1-128 characters [A-Za-z0-9._:#/-], got 'a/b c'",
    ),
    (
        "key detail without key id",
        lambda: detail_with("key", key_id=""),
        "expected a key id of 1-128 characters [A-Za-z0-9._:#/-], got ''",
    ),
    (
        "key reason unspecified",
        lambda: detail_with("key", reason=entry_pb2.KEY_REASON_UNSPECIFIED),
        "expected a key reason, got KEY_REASON_UNSPECIFIED",
    ),
    ("key reason unknown", lambda: detail_with("key", reason=99), "expected a known key reason"),
    (
        "revoke with a public key",
        lambda: detail_with("key", **{**REVOKE, "public_key": PUBLIC_RAW}),
        "expected no public key on a REVOKE, got one",
    ),
    (
        "revoke with allowed kinds",
        lambda: detail_with("key", **{**REVOKE, "allowed_kinds": [common_pb2.ENTRY_KIND_RECORD]}),
        "expected no allowed entry kinds on a REVOKE, got some",
    ),
    (
        "revoke with replaces_key_id",
        lambda: detail_with("key", **REVOKE, replaces_key_id=KEY_ID),
        "expected replaces_key_id on ROTATE and only on ROTATE",
    ),
    (
        "register with a 31-byte public key",
        lambda: detail_with("key", public_key=bytes(31)),
        "expected an Ed25519 public key of 32 bytes, got 31",
    ),
    (
        "register without public key",
        lambda: detail_with("key", public_key=b""),
        "expected an Ed25519 public key of 32 bytes, got 0",
    ),
    *[
        (
            f"register of a small-order key {y.hex()[:8]} sign {sign}",
            (lambda key: lambda: detail_with("key", public_key=key))(
                y[:31] + bytes([y[31] | sign])
            ),
            "expected an Ed25519 public key of large order, got a point of small order",
        )
        for y in SMALL_ORDER_Y
        for sign in (0, 0x80)
    ],
    (
        "rotate to a small-order key",
        lambda: detail_with(
            "key",
            action=entry_pb2.KEY_ACTION_ROTATE,
            replaces_key_id=KEY_ID,
            public_key=bytes.fromhex(SMALL_ORDER_Y[2].hex()),
        ),
        "expected an Ed25519 public key of large order",
    ),
    (
        "allowed kind unspecified",
        lambda: detail_with("key", allowed_kinds=[common_pb2.ENTRY_KIND_RECORD, 0]),
        "expected known allowed entry kinds, got 0",
    ),
    (
        "allowed kind unknown",
        lambda: detail_with("key", allowed_kinds=[5]),
        "expected known allowed entry kinds, got 5",
    ),
    (
        "register with replaces_key_id",
        lambda: detail_with("key", replaces_key_id=KEY_ID),
        "expected replaces_key_id on ROTATE and only on ROTATE",
    ),
    (
        "rotate without replaces_key_id",
        lambda: detail_with("key", action=entry_pb2.KEY_ACTION_ROTATE),
        "expected replaces_key_id on ROTATE and only on ROTATE",
    ),
    (
        "rotate of a malformed key id",
        lambda: detail_with("key", action=entry_pb2.KEY_ACTION_ROTATE, replaces_key_id="x y"),
        "expected a key id of 1-128 characters [A-Za-z0-9._:#/-], got 'x y'",
    ),
    # --- RECORD detail
    (
        "record tag of 31 bytes",
        lambda: detail_with("record", record_tag=bytes(31)),
        "expected a record tag of 32 bytes, got 31",
    ),
    (
        "record version 0",
        lambda: detail_with("record", version=0),
        "expected a record version >= 1, got 0",
    ),
    (
        "record action unspecified",
        lambda: detail_with("record", action=common_pb2.RECORD_ACTION_UNSPECIFIED),
        "expected a record action, got RECORD_ACTION_UNSPECIFIED",
    ),
    (
        "record action unknown",
        lambda: detail_with("record", action=77),
        "expected a known record action, got 77",
    ),
    (
        "CREATE of version 2",
        lambda: detail_with("record", version=2),
        "expected version 1 for CREATE and only for CREATE, got version 2 for RECORD_ACTION_CREATE",
    ),
    (
        "AMEND of version 1",
        lambda: detail_with("record", action=common_pb2.RECORD_ACTION_AMEND),
        "expected version 1 for CREATE and only for CREATE, got version 1 for RECORD_ACTION_AMEND",
    ),
    (
        "reason code in upper case",
        lambda: detail_with("record", reason_code="Clinical"),
        "expected a reason code of 1-32 characters [a-z0-9-], got 'Clinical'",
    ),
    (
        "reason code of 33 characters",
        lambda: detail_with("record", reason_code="a" * 33),
        "expected a reason code of 1-32 characters [a-z0-9-]",
    ),
    (
        "reason code as free text",
        lambda: detail_with("record", reason_code="patient asked"),
        "got 'patient asked'",
    ),
    # --- CONSENT detail
    (
        "directive type unspecified",
        lambda: detail_with("consent", directive_type=0),
        "expected a directive type, got DIRECTIVE_TYPE_UNSPECIFIED",
    ),
    (
        "directive type unknown",
        lambda: detail_with("consent", directive_type=3),
        "expected a known directive type, got 3",
    ),
    (
        "directive id not a UUID",
        lambda: detail_with("consent", directive_id="directive-1"),
        "expected a directive id as a lower-case UUID v4, got 'directive-1'",
    ),
    (
        "directive version 0",
        lambda: detail_with("consent", version=0),
        "expected a directive version >= 1, got 0",
    ),
    (
        "directive status unspecified",
        lambda: detail_with("consent", status=0),
        "expected a directive status, got DIRECTIVE_STATUS_UNSPECIFIED",
    ),
    (
        "directive status unknown",
        lambda: detail_with("consent", status=5),
        "expected a known directive status, got 5",
    ),
    (
        "signer key tag of 31 bytes",
        lambda: detail_with("consent", signer_key_tag=bytes(31)),
        "expected a signer key tag of 32 bytes, got 31",
    ),
    (
        "patient signature of 63 bytes",
        lambda: detail_with("consent", signer_signature=bytes(63)),
        "expected the patient's Ed25519 signature of 64 bytes, got 63",
    ),
    # --- ACCESS detail
    (
        "access decision unspecified",
        lambda: detail_with("access", decision=0),
        "expected an access decision, got ACCESS_DECISION_UNSPECIFIED",
    ),
    (
        "access decision unknown",
        lambda: detail_with("access", decision=9),
        "expected a known access decision, got 9",
    ),
    (
        "access without requester",
        lambda: detail_with("access", requester_id=""),
        "expected a requester id, got an empty one",
    ),
    (
        "access reason unspecified",
        lambda: detail_with("access", reason=0),
        "expected an access reason, got ACCESS_REASON_UNSPECIFIED",
    ),
    (
        "access reason unknown",
        lambda: detail_with("access", reason=60),
        "expected a known access reason, got 60",
    ),
    (
        "PERMITTED but denied",
        lambda: detail_with("access", decision=DENY),
        "expected decision ACCESS_DECISION_PERMIT for reason ACCESS_REASON_PERMITTED, "
        "got ACCESS_DECISION_DENY",
    ),
    (
        "EXPLICIT_DENY but permitted",
        lambda: detail_with("access", reason=common_pb2.ACCESS_REASON_EXPLICIT_DENY),
        "expected decision ACCESS_DECISION_DENY for reason ACCESS_REASON_EXPLICIT_DENY, "
        "got ACCESS_DECISION_PERMIT",
    ),
    (
        "break glass flag on a PERMITTED decision",
        lambda: detail_with("access", break_glass=True),
        "expected break_glass exactly when the reason is ACCESS_REASON_BREAK_GLASS, "
        "got break_glass True for ACCESS_REASON_PERMITTED",
    ),
    (
        "BREAK_GLASS without the flag",
        lambda: detail_with(
            "access",
            reason=common_pb2.ACCESS_REASON_BREAK_GLASS,
            deciding_directive_id="",
            deciding_directive_version=0,
        ),
        "got break_glass False for ACCESS_REASON_BREAK_GLASS",
    ),
    (
        "NO_CONSENT with a deciding directive",
        lambda: detail_with("access", decision=DENY, reason=common_pb2.ACCESS_REASON_NO_CONSENT),
        "expected no deciding directive for ACCESS_REASON_NO_CONSENT, got one",
    ),
    (
        "BREAK_GLASS with a deciding directive",
        lambda: detail_with(
            "access", reason=common_pb2.ACCESS_REASON_BREAK_GLASS, break_glass=True
        ),
        "expected no deciding directive for ACCESS_REASON_BREAK_GLASS, got one",
    ),
    (
        "deciding directive id not a UUID",
        lambda: detail_with("access", deciding_directive_id="d-1"),
        "expected a deciding directive id as a lower-case UUID v4, got 'd-1'",
    ),
    (
        "deciding directive without version",
        lambda: detail_with("access", deciding_directive_version=0),
        "expected a deciding directive version >= 1, got 0",
    ),
    (
        "deciding version without directive",
        lambda: detail_with("access", deciding_directive_id=""),
        "expected deciding directive version 0 without a deciding directive, got 2",
    ),
]


def test_malformed_names_are_unique() -> None:
    names = [name for name, _, _ in MALFORMED]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("make", "fragment"),
    [pytest.param(make, fragment, id=name) for name, make, fragment in MALFORMED],
)
def test_malformed(make: Callable[[], bytes], fragment: str) -> None:
    raw = make()
    with pytest.raises(InvalidInputError) as caught:
        parse_entry(raw)
    assert fragment in str(caught.value)


def test_first_rule_broken_is_the_one_reported() -> None:
    # Bad key id AND a short signature: the key id is checked first, as on every node.
    raw = chain_entry(key_id="", signature=bytes(3))
    with pytest.raises(InvalidInputError, match="expected a key id"):
        parse_entry(raw)
    # Auth before body: a short signature over a body without time.
    body = record_body()
    body.ClearField("time")
    raw = chain_entry(body=body.SerializeToString(), signature=bytes(3))
    with pytest.raises(InvalidInputError, match="Ed25519 signature of 64 bytes"):
        parse_entry(raw)


def test_accepts_bytearray_and_keeps_bytes() -> None:
    raw = signed(record_body())
    parsed = parse_entry(bytearray(raw))  # type: ignore[arg-type]
    assert type(parsed.raw) is bytes
    assert parsed.raw == raw


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_invalid_input(data: bytes) -> None:
    with contextlib.suppress(InvalidInputError):
        parse_entry(data)


_BASE = SIGNER.sign_batch([record_body().SerializeToString(), access_body().SerializeToString()])


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from([_BASE[0], _BASE[1], signed(key_body()), signed(consent_body())]),
    st.data(),
)
def test_mutated_entries_parse_or_raise_invalid_input(raw: bytes, data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(raw) - 1))
    value = data.draw(st.integers(0, 255))
    mutated = raw[:position] + bytes([value]) + raw[position + 1 :]
    try:
        parsed = parse_entry(mutated)
    except InvalidInputError:
        return
    assert parsed.raw == mutated
    assert parsed.leaf_hash == leaf_hash(mutated)


def test_the_size_limit_is_checked_first_and_named_too_large() -> None:
    """An entry of exactly the limit (64 KiB less a byte) gets to the other checks (here: padded
    by an unknown field); one byte more is refused for its size alone, and a node names that
    TOO_LARGE."""
    base = signed(record_body())
    at_limit = base + length_delimited(99, bytes(MAX_ENTRY_BYTES - len(base) - 5))
    assert len(at_limit) == MAX_ENTRY_BYTES
    with pytest.raises(InvalidInputError, match="unknown field numbers") as within:
        parse_entry(at_limit)
    assert not isinstance(within.value, EntryTooLargeError)
    with pytest.raises(EntryTooLargeError, match="at most 65,535 bytes, got 65,536") as over:
        parse_entry(at_limit + b"\x00")
    assert rejection_reason(over.value) == "TOO_LARGE"
