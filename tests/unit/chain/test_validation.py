"""Tests of chain.validation: the key registry at log positions and the entry validator.

The validator caches verified batches (one root signature check per batch, and only the hashes
below the lowest common ancestor with the previous entry of the batch). The cache must never
change a verdict or a message: the property tests compare it with validating every entry
without any cache (a fresh validator each time).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.consortium import GenesisKey
from chain.entry import EntrySigner, parse_entry
from chain.errors import InvalidInputError, SwiftchainError
from chain.holder_signatures import sign_as_holder
from chain.validation import EntryValidator, KeyRegistry
from swiftchain.chain.v1 import entry_pb2
from swiftchain.common.v1 import common_pb2

HOSPITAL = "hospital-a"


def private_key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


REGISTRAR_KEY = private_key(1)
REGISTRAR = EntrySigner("registrar", REGISTRAR_KEY)
GENESIS = (GenesisKey("registrar", "identity", ("KEY",), raw_public(REGISTRAR_KEY)),)
H1_KEY, H2_KEY, OTHER_KEY = private_key(2), private_key(3), private_key(4)
H1 = EntrySigner("hospital-a/1", H1_KEY)
H2 = EntrySigner("hospital-a/2", H2_KEY)
FORGER = EntrySigner("hospital-a/1", OTHER_KEY)  # the right key id, the wrong private key
#: The private keys of the hospital's key ids, for the holder's signature on its key changes.
HOLDER_KEYS = {H1.key_id: H1_KEY, H2.key_id: H2_KEY}
REQUEST_TIME = datetime(2026, 1, 1, tzinfo=UTC)


class Ids:
    """Distinct lower-case UUID v4 texts."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"{self.n:08x}-0000-4000-8000-{self.n:012x}"


def record_body(entry_id: str, submitter: str = HOSPITAL, tag: int = 0) -> bytes:
    return entry_pb2.EntryBody(
        entry_id=entry_id,
        kind=common_pb2.ENTRY_KIND_RECORD,
        submitter_id=submitter,
        time=Timestamp(seconds=1_767_225_600),
        commitment=bytes([tag % 256]) * 32,
        subject_tag=bytes(32),
        record=entry_pb2.RecordDetail(
            record_tag=bytes([7]) * 32, version=1, action=common_pb2.RECORD_ACTION_CREATE
        ),
    ).SerializeToString()


def key_entry(
    entry_id: str,
    action: int,
    key_id: str,
    *,
    public: bytes = b"",
    owner: str = HOSPITAL,
    replaces: str = "",
    kinds: tuple[int, ...] = (common_pb2.ENTRY_KIND_RECORD,),
    signer: EntrySigner = REGISTRAR,
    holder: str | None = None,
) -> bytes:
    """A KEY entry signed by ``signer`` (the registrar). A ROTATE or REVOKE carries the
    signature of ``holder`` (a key id of HOLDER_KEYS; by default the rotated or revoked key,
    when its private key is known), as the holder's consent; ``holder=""`` leaves it out."""
    revoke = action == entry_pb2.KEY_ACTION_REVOKE
    body = entry_pb2.EntryBody(
        entry_id=entry_id,
        kind=common_pb2.ENTRY_KIND_KEY,
        submitter_id="identity",
        time=Timestamp(seconds=1_767_225_600),
        commitment=bytes(32),
        key=entry_pb2.KeyDetail(
            action=action,  # type: ignore[arg-type]
            owner_id=owner,
            owner_kind=entry_pb2.KEY_OWNER_KIND_ORGANIZATION,
            owner_role=common_pb2.ORGANIZATION_ROLE_HOSPITAL,
            key_id=key_id,
            public_key=b"" if revoke else public,
            replaces_key_id=replaces,
            reason=entry_pb2.KEY_REASON_NEW_KEY,
            allowed_kinds=() if revoke else kinds,  # type: ignore[arg-type]
        ),
    )
    if action != entry_pb2.KEY_ACTION_REGISTER:
        holder = (replaces or key_id) if holder is None else holder
        if holder in HOLDER_KEYS:
            nonce = hashlib.sha256(entry_id.encode()).digest()[:16]
            sign_as_holder(body.key, holder, HOLDER_KEYS[holder], REQUEST_TIME, nonce)
    return signer.sign_entry(body.SerializeToString())


def register(
    entry_id: str,
    new: EntrySigner,
    key: Ed25519PrivateKey,
    *,
    owner: str = HOSPITAL,
    signer: EntrySigner = REGISTRAR,
) -> bytes:
    """A KEY entry registering ``new`` (key id) with ``key`` (public part) for RECORD."""
    return key_entry(
        entry_id,
        entry_pb2.KEY_ACTION_REGISTER,
        new.key_id,
        public=raw_public(key),
        owner=owner,
        signer=signer,
    )


@dataclass
class Log:
    """A validator over a log held in memory: accepted ids and the verdict of each entry."""

    validator: EntryValidator = field(default_factory=lambda: EntryValidator(KeyRegistry(GENESIS)))
    ids: set[str] = field(default_factory=set)

    def append(self, raw: bytes) -> str | None:
        """Validate at the next position: None if accepted, else the rejection message."""
        try:
            parsed = self.validator.validate(raw, self.ids.__contains__)
        except SwiftchainError as error:
            return str(error)
        self.ids.add(parsed.entry_id)
        return None

    def accept(self, *raws: bytes) -> None:
        for raw in raws:
            assert self.append(raw) is None, self.append(raw)

    def reject(self, raw: bytes, fragment: str) -> None:
        reason = self.append(raw)
        assert reason is not None, "accepted, expected a rejection"
        assert fragment in reason, reason


@pytest.fixture
def ids() -> Ids:
    return Ids()


@pytest.fixture
def log(ids: Ids) -> Log:
    log = Log()
    log.accept(register(ids(), H1, H1_KEY))
    return log


# ------------------------------------------------------------------------------ keys


def test_unknown_key(log: Log, ids: Ids) -> None:
    stranger = EntrySigner("nobody", OTHER_KEY)
    log.reject(
        stranger.sign_entry(record_body(ids())),
        "expected a key registered on the log, got 'nobody'",
    )
    # A key registered later is unknown before it.
    fresh = Log()
    fresh.reject(H2.sign_entry(record_body(ids())), "got 'hospital-a/2'")


def test_genesis_key_signs_key_entries_only(log: Log, ids: Ids) -> None:
    log.reject(
        REGISTRAR.sign_entry(record_body(ids(), submitter="identity")),
        "key 'registrar' may sign ['KEY'] entries, got a RECORD entry",
    )


def test_revoked_key(log: Log, ids: Ids) -> None:
    before = H1.sign_entry(record_body(ids()))
    signed_before_ordered_after = H1.sign_entry(record_body(ids()))
    log.accept(before)  # ordered before the revocation: valid
    log.accept(key_entry(ids(), entry_pb2.KEY_ACTION_REVOKE, H1.key_id))
    message = "key 'hospital-a/1' was revoked or rotated away before this position"
    log.reject(H1.sign_entry(record_body(ids())), message)
    # Validity is a matter of log position, not of when the entry was signed.
    log.reject(signed_before_ordered_after, message)
    # Revoked for ever: not again, and the id is never reused.
    log.reject(
        key_entry(ids(), entry_pb2.KEY_ACTION_REVOKE, H1.key_id),
        "expected the revoked key 'hospital-a/1' to be valid here, got a key revoked or rotated",
    )
    log.reject(register(ids(), H1, H2_KEY), "expected a new key id, got 'hospital-a/1' again")


def test_revoked_key_rejects_the_rest_of_a_verified_batch(log: Log, ids: Ids) -> None:
    batch = H1.sign_batch([record_body(ids()) for _ in range(6)])
    log.accept(*batch[:3])
    log.accept(key_entry(ids(), entry_pb2.KEY_ACTION_REVOKE, H1.key_id))
    for raw in batch[3:]:  # the root signature is cached, the key is still checked
        log.reject(raw, "was revoked or rotated away before this position")


def test_rotate(log: Log, ids: Ids) -> None:
    log.accept(H1.sign_entry(record_body(ids())))
    rotate = key_entry(
        ids(),
        entry_pb2.KEY_ACTION_ROTATE,
        H2.key_id,
        public=raw_public(H2_KEY),
        replaces=H1.key_id,
    )
    log.accept(rotate)
    log.reject(H1.sign_entry(record_body(ids())), "rotated away before this position")
    log.accept(H2.sign_entry(record_body(ids())))
    # The old key can be neither rotated again nor revoked.
    log.reject(
        key_entry(
            ids(),
            entry_pb2.KEY_ACTION_ROTATE,
            "hospital-a/3",
            public=raw_public(OTHER_KEY),
            replaces=H1.key_id,
        ),
        "expected the rotated key 'hospital-a/1' to be valid here, got a revoked or rotated key",
    )


def test_key_state_conflicts(log: Log, ids: Ids) -> None:
    log.reject(register(ids(), H1, H1_KEY), "expected a new key id, got 'hospital-a/1' again")
    log.reject(
        register(ids(), REGISTRAR, H2_KEY), "expected a new key id, got 'registrar' again"
    )  # genesis ids count
    log.reject(
        key_entry(ids(), entry_pb2.KEY_ACTION_REVOKE, "never-registered"),
        "expected the revoked key 'never-registered' to be valid here, got an unknown key",
    )
    log.reject(
        key_entry(ids(), entry_pb2.KEY_ACTION_REVOKE, H1.key_id, owner="hospital-b"),
        "expected the revoked key to belong to 'hospital-b', got owner 'hospital-a'",
    )
    public = raw_public(H2_KEY)
    log.reject(
        key_entry(ids(), entry_pb2.KEY_ACTION_ROTATE, H2.key_id, replaces="nope", public=public),
        "expected the rotated key 'nope' to be valid here, got an unknown key",
    )
    log.reject(
        key_entry(
            ids(),
            entry_pb2.KEY_ACTION_ROTATE,
            H2.key_id,
            replaces=H1.key_id,
            owner="hospital-b",
            public=public,
        ),
        "expected the rotated key to belong to 'hospital-b', got owner 'hospital-a'",
    )
    log.reject(
        key_entry(
            ids(),
            entry_pb2.KEY_ACTION_ROTATE,
            H1.key_id,
            public=raw_public(H2_KEY),
            replaces=H1.key_id,
        ),
        "expected a new key id, got 'hospital-a/1' again",
    )
    # None of the rejected KEY entries changed the registry.
    log.accept(H1.sign_entry(record_body(ids())))
    log.reject(H2.sign_entry(record_body(ids())), "expected a key registered on the log")


def test_key_not_allowed_for_the_kind(log: Log, ids: Ids) -> None:
    # A hospital RECORD key may not sign KEY entries.
    log.reject(
        register(ids(), H2, H2_KEY, signer=H1, owner=HOSPITAL),
        "key 'hospital-a/1' may sign ['RECORD'] entries, got a KEY entry",
    )


def test_a_key_with_no_allowed_kinds_is_registered_but_signs_nothing(log: Log, ids: Ids) -> None:
    # A regulator's key: provably valid from its KEY entry on, yet no entry of any kind may be
    # signed with it.
    log.accept(
        key_entry(
            ids(),
            entry_pb2.KEY_ACTION_REGISTER,
            H2.key_id,
            public=raw_public(H2_KEY),
            owner="hospital-b",
            kinds=(),
        )
    )
    log.reject(
        H2.sign_entry(record_body(ids(), submitter="hospital-b")),
        "key 'hospital-a/2' may sign [] entries, got a RECORD entry",
    )


def test_submitter_must_own_the_key(log: Log, ids: Ids) -> None:
    log.reject(
        H1.sign_entry(record_body(ids(), submitter="hospital-b")),
        "expected submitter 'hospital-a' (the owner of key 'hospital-a/1'), got 'hospital-b'",
    )


def test_registry_genesis_and_lookup() -> None:
    registry = KeyRegistry(GENESIS)
    state = registry.get("registrar")
    assert state is not None
    assert state.owner_id == "identity"
    assert state.allowed_kinds == frozenset({common_pb2.ENTRY_KIND_KEY})
    assert state.valid
    assert registry.get("nobody") is None


# ------------------------------------------------------------------------------ signatures


def test_bad_single_signature(log: Log, ids: Ids) -> None:
    raw = bytearray(H1.sign_entry(record_body(ids())))
    raw[-1] ^= 1  # the signature is the last field
    log.reject(bytes(raw), "entry signature does not verify with key 'hospital-a/1'")
    log.reject(FORGER.sign_entry(record_body(ids())), "entry signature does not verify")


def test_single_signature_covers_the_body(log: Log, ids: Ids) -> None:
    entry = entry_pb2.ChainEntry.FromString(H1.sign_entry(record_body(ids())))
    entry.body = record_body(ids())  # another body under the first one's signature
    log.reject(entry.SerializeToString(), "entry signature does not verify")


def test_bad_batch_root_signature(log: Log, ids: Ids) -> None:
    for raw in FORGER.sign_batch([record_body(ids()) for _ in range(3)]):
        log.reject(raw, "batch signature does not verify with key 'hospital-a/1'")


def tamper(raw: bytes, change: Callable[[entry_pb2.ChainEntry], None]) -> bytes:
    entry = entry_pb2.ChainEntry.FromString(raw)
    change(entry)
    return entry.SerializeToString()


def flip_path(position: int) -> Callable[[entry_pb2.ChainEntry], None]:
    def change(entry: entry_pb2.ChainEntry) -> None:
        node = bytearray(entry.batch.path[position])
        node[0] ^= 0x80
        entry.batch.path[position] = bytes(node)

    return change


def test_tampered_batch_path(log: Log, ids: Ids) -> None:
    batch = H1.sign_batch([record_body(ids()) for _ in range(8)])
    # First entry of the batch (nothing cached yet), then one after verified siblings.
    log.reject(tamper(batch[0], flip_path(2)), "batch signature does not verify")
    log.accept(*batch[:4])
    for position in range(3):
        log.reject(tamper(batch[4], flip_path(position)), "batch signature does not verify")
    log.accept(*batch[4:])


def test_wrong_path_length(log: Log, ids: Ids) -> None:
    batch = H1.sign_batch([record_body(ids()) for _ in range(5)])

    def drop_last(entry: entry_pb2.ChainEntry) -> None:
        del entry.batch.path[-1]

    log.reject(
        tamper(batch[1], drop_last),
        "expected an inclusion proof of 3 hashes for leaf 1 in a tree of 5, got 2",
    )
    log.reject(
        tamper(batch[4], lambda e: e.batch.path.append(bytes(32))),
        "expected an inclusion proof of 1 hashes for leaf 4 in a tree of 5, got 2",
    )


def test_wrong_index_or_size(log: Log, ids: Ids) -> None:
    batch = H1.sign_batch([record_body(ids()) for _ in range(8)])
    log.accept(batch[0])

    def index(entry: entry_pb2.ChainEntry) -> None:
        entry.batch.index = 2  # same path length as index 1

    def size(entry: entry_pb2.ChainEntry) -> None:
        entry.batch.size = 7  # same path shape for leaf 1 of 7 or 8

    log.reject(tamper(batch[1], index), "batch signature does not verify")
    log.reject(tamper(batch[1], size), "batch signature does not verify")
    log.accept(batch[1])


def test_batch_with_one_altered_body(log: Log, ids: Ids) -> None:
    bodies = [record_body(ids()) for _ in range(6)]
    batch = H1.sign_batch(bodies)
    altered = record_body(entry_pb2.EntryBody.FromString(bodies[3]).entry_id, tag=99)

    def swap_body(entry: entry_pb2.ChainEntry) -> None:
        entry.body = altered

    log.accept(*batch[:3])
    log.reject(tamper(batch[3], swap_body), "batch signature does not verify")
    log.accept(*batch[3:])


def test_batch_above_the_maximum_size(ids: Ids) -> None:
    log = Log(EntryValidator(KeyRegistry(GENESIS), max_batch_size=2))
    log.accept(register(ids(), H1, H1_KEY))
    log.accept(*H1.sign_batch([record_body(ids()) for _ in range(2)]))
    log.reject(
        H1.sign_batch([record_body(ids()) for _ in range(3)])[0],
        "expected a batch of at most 2 entries, got 3",
    )


def test_duplicate_entry_id(log: Log, ids: Ids) -> None:
    entry_id = ids()
    log.accept(H1.sign_entry(record_body(entry_id)))
    log.reject(
        H1.sign_entry(record_body(entry_id, tag=5)),
        f"entry id {entry_id} is on the log already",
    )
    # A duplicate KEY entry is rejected and not applied.
    key_id = ids()
    log.accept(register(key_id, H2, H2_KEY))
    log.reject(key_entry(key_id, entry_pb2.KEY_ACTION_REVOKE, H2.key_id), "is on the log already")
    log.accept(H2.sign_entry(record_body(ids())))


def test_validate_reports_malformed_entries(log: Log) -> None:
    with pytest.raises(InvalidInputError, match="expected a ChainEntry protobuf"):
        log.validator.validate(b"\xff", lambda _: False)


class CountingKey:
    """Wraps an Ed25519 public key and counts verifications."""

    def __init__(self, key: Ed25519PublicKey) -> None:
        self.key = key
        self.calls = 0

    def verify(self, signature: bytes, data: bytes) -> None:
        self.calls += 1
        self.key.verify(signature, data)


def test_batch_signature_verified_once_for_1000_entries(log: Log, ids: Ids) -> None:
    state = log.validator.registry.get(H1.key_id)
    assert state is not None
    counter = CountingKey(state.public_key)
    state.public_key = counter  # type: ignore[assignment]
    before = log.validator.signatures_verified
    batch = H1.sign_batch([record_body(ids()) for _ in range(1000)])
    log.accept(*batch)
    assert counter.calls == 1
    assert log.validator.signatures_verified - before == 1
    # All 1,000 passed: the batch is forgotten, a resubmission is verified again (and rejected
    # as duplicates).
    for raw in batch[:5]:
        log.reject(raw, "is on the log already")
    assert counter.calls == 2


def test_batch_signature_verified_once_per_batch_when_interleaved(ids: Ids) -> None:
    log = Log()
    log.accept(register(ids(), H1, H1_KEY), register(ids(), H2, H2_KEY))
    a = H1.sign_batch([record_body(ids()) for _ in range(50)])
    b = H2.sign_batch([record_body(ids()) for _ in range(37)])
    c = H1.sign_batch([record_body(ids()) for _ in range(20)])
    before = log.validator.signatures_verified
    order = [x for triple in zip(a, b + [b""] * 13, c + [b""] * 30, strict=True) for x in triple]
    log.accept(*[raw for raw in order if raw])
    assert log.validator.signatures_verified - before == 3


def test_cache_bound_keeps_verdicts(ids: Ids) -> None:
    log = Log(EntryValidator(KeyRegistry(GENESIS), cache_size=1))
    log.accept(register(ids(), H1, H1_KEY))
    a = H1.sign_batch([record_body(ids()) for _ in range(4)])
    b = H1.sign_batch([record_body(ids()) for _ in range(4)])
    log.accept(a[0], b[0], a[1], b[1], a[2], b[2], a[3], b[3])
    assert log.validator.signatures_verified == 1 + 8  # the KEY entry, then every batch entry


def test_single_entry_batch_and_repeated_entry(log: Log, ids: Ids) -> None:
    (single,) = H1.sign_batch([record_body(ids())])
    log.accept(single)
    batch = H1.sign_batch([record_body(ids()) for _ in range(3)])
    log.accept(batch[0])
    log.reject(batch[0], "is on the log already")  # same index twice: cached path, then dup
    log.accept(batch[2], batch[1])


# ------------------------------------------------------------------------------ small-order key


def test_small_order_key_is_never_registered(log: Log, ids: Ids) -> None:
    identity = bytes([1]) + bytes(31)
    log.reject(
        key_entry(ids(), entry_pb2.KEY_ACTION_REGISTER, "weak", public=identity),
        "expected an Ed25519 public key of large order, got a point of small order",
    )


def test_key_that_signs_everything_gets_the_uncached_verdicts(ids: Ids) -> None:
    """A small-order public key verifies one signature for every message. The log refuses to
    register one; should one be in the registry anyway (here put there by hand), the cache must
    still give the verdicts of no cache at all: a batch entry whose path leads to another root
    under the same signature is valid under that key."""
    identity = bytes([1]) + bytes(31)
    weak_signature = identity + bytes(32)
    log = Log()
    log.accept(register(ids(), H2, H2_KEY))
    state = log.validator.registry.get(H2.key_id)
    assert state is not None
    state.public_key = Ed25519PublicKey.from_public_bytes(identity)
    entry = entry_pb2.ChainEntry(
        body=record_body(ids()),
        key_id=H2.key_id,
        batch=entry_pb2.BatchAuth(index=0, size=2, path=[bytes(32)], root_signature=weak_signature),
    )
    log.accept(entry.SerializeToString())
    entry.body = record_body(ids())  # another leaf: another root, same signature
    log.accept(entry.SerializeToString())
    entry.batch.index = 1
    entry.body = record_body(ids())
    log.accept(entry.SerializeToString())
    assert log.validator.signatures_verified == 1 + 3


# ------------------------------------------------------------------------------ cache = no cache


@dataclass(frozen=True)
class Fault:
    """How to spoil one batch entry (or not)."""

    kind: str  # "", "path", "body", "index", "signature"
    position: int = 0


def spoil(raw: bytes, fault: Fault, spare_body: bytes) -> bytes:
    if not fault.kind:
        return raw
    entry = entry_pb2.ChainEntry.FromString(raw)
    batch = entry.batch
    if fault.kind == "path" and batch.path:
        node = bytearray(batch.path[fault.position % len(batch.path)])
        node[fault.position % 32] ^= 1 << (fault.position % 8)
        batch.path[fault.position % len(batch.path)] = bytes(node)
    elif fault.kind == "body":
        entry.body = spare_body
    elif fault.kind == "index" and batch.size > 1:
        batch.index = (batch.index + 1 + fault.position % (batch.size - 1)) % batch.size
    elif fault.kind == "signature":
        signature = bytearray(batch.root_signature)
        signature[fault.position % 64] ^= 1
        batch.root_signature = bytes(signature)
    return entry.SerializeToString()


def uncached_verdicts(registry_entries: list[bytes], stream: list[bytes]) -> list[str | None]:
    """Every entry validated by a fresh validator: the BatchAuth algorithm with no cache."""
    base = Log()
    base.accept(*registry_entries)
    verdicts = []
    for raw in stream:
        fresh = replace(base, validator=EntryValidator(base.validator.registry))
        fresh.ids = base.ids
        verdict = fresh.append(raw)
        verdicts.append(verdict)
    return verdicts


Plan = tuple[tuple[int, ...], list[tuple[int, int, Fault]]]


@st.composite
def streams(draw: st.DrawFn) -> Plan:
    """(batch, entry index, fault) triples: several batches, interleaved in any order, with
    repeats and faults."""
    sizes = draw(st.lists(st.integers(1, 40), min_size=1, max_size=3))
    picks = [(b, i) for b, size in enumerate(sizes) for i in range(size)]
    order = draw(st.permutations(picks))
    ordered = draw(st.booleans())
    if ordered:
        order = sorted(order)
    repeats = draw(st.lists(st.sampled_from(picks), max_size=5))
    order = list(order) + repeats
    faults = st.builds(
        Fault,
        st.sampled_from(["", "", "", "", "path", "body", "index", "signature"]),
        st.integers(0, 1000),
    )
    return tuple(sizes), [(b, i, draw(faults)) for b, i in order]


_IDS = Ids()
_REGISTRY_ENTRIES = [register(_IDS(), H1, H1_KEY), register(_IDS(), H2, H2_KEY)]


def _batches_of(sizes: tuple[int, ...]) -> Iterator[list[bytes]]:
    for b, size in enumerate(sizes):
        signer = H1 if b % 2 == 0 else H2
        yield signer.sign_batch([record_body(_IDS()) for _ in range(size)])


@settings(max_examples=200, deadline=None)
@given(streams())
def test_cache_gives_the_uncached_verdicts(sizes_and_plan: Plan) -> None:
    sizes, plan = sizes_and_plan
    batches = list(_batches_of(sizes))
    spare = record_body(_IDS())
    stream = [spoil(batches[b][i], fault, spare) for b, i, fault in plan]
    cached = Log()
    cached.accept(*_REGISTRY_ENTRIES)
    got = [cached.append(raw) for raw in stream]
    assert got == uncached_verdicts(_REGISTRY_ENTRIES, stream)
    # And the cache saved the work: one root signature per batch on the happy path.
    distinct = len({(b, i) for b, i, _ in plan}) == len(plan)
    if distinct and all(not fault.kind for _, _, fault in plan):
        assert cached.validator.signatures_verified == len(_REGISTRY_ENTRIES) + len(batches)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 70), st.data())
def test_every_tampered_path_position_is_rejected(size: int, data: st.DataObject) -> None:
    """After any prefix of a batch was accepted, an entry whose path has any one hash changed
    (above or below the common ancestor with the previous entry) is rejected."""
    ids = Ids()
    ids.n = 10_000
    log = Log()
    log.accept(*_REGISTRY_ENTRIES)
    batch = H1.sign_batch([record_body(ids()) for _ in range(size)])
    accepted = data.draw(st.integers(0, size - 1))
    log.accept(*batch[:accepted])
    target = data.draw(st.integers(accepted, size - 1))
    length = len(entry_pb2.ChainEntry.FromString(batch[target]).batch.path)
    for position in range(length):
        log.reject(tamper(batch[target], flip_path(position)), "batch signature does not verify")
    log.accept(*batch[accepted:])


# ------------------------------------------------------------------------------ holder consent


def rotate_to_h2(ids: Ids, **holder: str) -> bytes:
    """hospital-a's key H1 rotated to H2, the holder signature as ``holder`` says."""
    return key_entry(
        ids(),
        entry_pb2.KEY_ACTION_ROTATE,
        H2.key_id,
        public=raw_public(H2_KEY),
        replaces=H1.key_id,
        **holder,  # type: ignore[arg-type]
    )


def test_the_registrar_alone_cannot_rotate_or_revoke_a_members_key(log: Log, ids: Ids) -> None:
    message = (
        "expected a ROTATE of 'hospital-a''s key to carry a signature by a key of 'hospital-a' "
        "valid here (the holder's consent), got none"
    )
    log.reject(rotate_to_h2(ids, holder=""), message)
    log.reject(
        key_entry(ids(), entry_pb2.KEY_ACTION_REVOKE, H1.key_id, holder=""),
        "expected a REVOKE of 'hospital-a''s key to carry a signature",
    )
    # The registrar signing the holder's request with a key of its own does not pass either.
    forged = entry_pb2.EntryBody.FromString(parse_entry(rotate_to_h2(ids, holder="")).body_bytes)
    sign_as_holder(forged.key, H1.key_id, REGISTRAR_KEY, REQUEST_TIME, bytes(16))
    log.reject(
        REGISTRAR.sign_entry(forged.SerializeToString()),
        "expected the holder signature to verify with key 'hospital-a/1' over the ROTATE "
        "request for this change, got one that does not",
    )
    sign_as_holder(forged.key, "registrar", REGISTRAR_KEY, REQUEST_TIME, bytes(16))
    log.reject(
        REGISTRAR.sign_entry(forged.SerializeToString()),
        "expected the holder signature by a key of 'hospital-a' valid here, got one by "
        "'registrar', a key of 'identity'",
    )
    # None of it changed the key: H1 still signs, and its own consent rotates it.
    log.accept(H1.sign_entry(record_body(ids())))
    log.accept(rotate_to_h2(ids))
    log.reject(H1.sign_entry(record_body(ids())), "rotated away before this position")


def revoke_by_h1(ids: Ids, key_id: str, nonce: bytes) -> bytes:
    """A revocation of hospital-a's ``key_id`` with H1's consent, made with ``nonce``."""
    body = entry_pb2.EntryBody.FromString(
        parse_entry(key_entry(ids(), entry_pb2.KEY_ACTION_REVOKE, key_id, holder="")).body_bytes
    )
    sign_as_holder(body.key, H1.key_id, H1_KEY, REQUEST_TIME, nonce)
    return REGISTRAR.sign_entry(body.SerializeToString())


def test_a_holder_signature_covers_the_new_key_and_is_good_once(log: Log, ids: Ids) -> None:
    signed = entry_pb2.EntryBody.FromString(parse_entry(rotate_to_h2(ids)).body_bytes)
    # The registrar swapping in a key of its own under the holder's signature breaks it.
    swapped = entry_pb2.EntryBody()
    swapped.CopyFrom(signed)
    swapped.key.public_key = raw_public(OTHER_KEY)
    log.reject(
        REGISTRAR.sign_entry(swapped.SerializeToString()),
        "expected the holder signature to verify with key 'hospital-a/1'",
    )
    # Another key of the same owner may consent; a (signer, nonce) pair is good once.
    log.accept(register(ids(), H2, H2_KEY))
    log.accept(revoke_by_h1(ids, H2.key_id, bytes(16)))
    log.accept(register(ids(), EntrySigner("hospital-a/3", OTHER_KEY), OTHER_KEY))
    log.reject(
        revoke_by_h1(ids, "hospital-a/3", bytes(16)),
        "expected a holder signature with a fresh nonce, got one whose nonce key "
        "'hospital-a/1' used on the log before (a replay)",
    )
    log.accept(revoke_by_h1(ids, "hospital-a/3", bytes([1]) * 16))


def test_a_registration_carries_no_holder_signature(log: Log, ids: Ids) -> None:
    body = entry_pb2.EntryBody.FromString(parse_entry(register(ids(), H2, H2_KEY)).body_bytes)
    holder = body.key.holder_signature
    holder.key_id = H1.key_id
    holder.nonce = bytes(16)
    holder.signature = bytes(64)
    log.reject(
        REGISTRAR.sign_entry(body.SerializeToString()),
        "expected no holder signature on a REGISTER of a KEY_OWNER_KIND_ORGANIZATION key, got one",
    )
