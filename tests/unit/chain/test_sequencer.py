"""Tests of chain.sequencer: block cutting, checkpoints, and determinism.

Every node applies the same ordered records and must cut the same blocks, byte for byte,
whatever the batches the Kafka consumer happened to hand it (the record stream is split into
``apply`` calls at random) and whether it ran from offset 0 or restarted from its persisted
state at the last cut.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain.checkpoint import GENESIS_PREVIOUS_HASH, checkpoint_hash, parse_checkpoint
from chain.consortium import ConsortiumConfig, GenesisKey, Member
from chain.entry import EntrySigner, parse_entry
from chain.errors import InvalidInputError
from chain.holder_signatures import sign_as_holder
from chain.note import generate_key
from chain.reference import mth
from chain.sequencer import (
    BATCH_RECORD_BYTES,
    Block,
    OrderedRecord,
    Rejection,
    Sequencer,
    entry_record,
    ordering_records,
    ttc_record,
)
from chain.tiles import MemoryHashStore
from chain.validation import EntryValidator, KeyRegistry
from swiftchain.chain.v1 import entry_pb2, ordering_pb2
from swiftchain.common.v1 import common_pb2

ORIGIN = "swiftchain.test/log"
T0_MS = 1_767_225_600_000


def private_key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


REGISTRAR_KEY, H1_KEY, H2_KEY = private_key(1), private_key(2), private_key(3)
REGISTRAR = EntrySigner("registrar", REGISTRAR_KEY)
H1 = EntrySigner("hospital-a/1", H1_KEY)
H2 = EntrySigner("hospital-a/2", H2_KEY)
FORGER = EntrySigner("hospital-a/1", private_key(9))
GENESIS = (
    GenesisKey("registrar", "identity", ("KEY",), raw_public(REGISTRAR_KEY)),
    GenesisKey(H1.key_id, "hospital-a", ("RECORD",), raw_public(H1_KEY)),
)
_, VERIFIER = generate_key("node-a")


def config(batch_max: int) -> ConsortiumConfig:
    return ConsortiumConfig(
        origin=ORIGIN,
        quorum=1,
        members=(Member("node-a", VERIFIER),),
        genesis_keys=GENESIS,
        batch_max=batch_max,
    )


class Ids:
    def __init__(self, start: int = 0) -> None:
        self.n = start

    def __call__(self) -> str:
        self.n += 1
        return f"{self.n:08x}-0000-4000-8000-{self.n:012x}"


IDS = Ids()


def record_body(entry_id: str | None = None, tag: int = 0) -> bytes:
    return entry_pb2.EntryBody(
        entry_id=entry_id or IDS(),
        kind=common_pb2.ENTRY_KIND_RECORD,
        submitter_id="hospital-a",
        time=Timestamp(seconds=1_767_225_600),
        commitment=bytes([tag % 256]) * 32,
        subject_tag=bytes(32),
        record=entry_pb2.RecordDetail(
            record_tag=bytes(32), version=1, action=common_pb2.RECORD_ACTION_CREATE
        ),
    ).SerializeToString()


def key_entry(action: int, key_id: str, public: bytes = b"") -> bytes:
    """A KEY entry by the registrar; a REVOKE carries the revoked key's own signature (its
    holder's consent), since the log takes none on the registrar's word alone."""
    revoke = action == entry_pb2.KEY_ACTION_REVOKE
    entry_id = IDS()
    body = entry_pb2.EntryBody(
        entry_id=entry_id,
        kind=common_pb2.ENTRY_KIND_KEY,
        submitter_id="identity",
        time=Timestamp(seconds=1_767_225_600),
        commitment=bytes(32),
        key=entry_pb2.KeyDetail(
            action=action,  # type: ignore[arg-type]
            owner_id="hospital-a",
            owner_kind=entry_pb2.KEY_OWNER_KIND_ORGANIZATION,
            owner_role=common_pb2.ORGANIZATION_ROLE_HOSPITAL,
            key_id=key_id,
            public_key=public,
            reason=entry_pb2.KEY_REASON_NEW_KEY,
            allowed_kinds=[] if revoke else [common_pb2.ENTRY_KIND_RECORD],
        ),
    )
    if revoke:
        holder_key = {H1.key_id: H1_KEY, H2.key_id: H2_KEY}[key_id]
        nonce = hashlib.sha256(entry_id.encode()).digest()[:16]
        sign_as_holder(body.key, key_id, holder_key, datetime(2026, 1, 1, tzinfo=UTC), nonce)
    return REGISTRAR.sign_entry(body.SerializeToString())


def single() -> bytes:
    return entry_record(H1.sign_entry(record_body()))


def records(values: Iterable[bytes], first_offset: int = 0) -> list[OrderedRecord]:
    """Ordered records at consecutive offsets, LogAppendTime 7 ms apart."""
    return [
        OrderedRecord(offset, T0_MS + 7 * offset, value)
        for offset, value in enumerate(values, first_offset)
    ]


@dataclass
class Node:
    """A sequencer and what its node would have persisted (block entry ids)."""

    sequencer: Sequencer
    stored: set[str] = field(default_factory=set)
    blocks: list[Block] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    calls: list[list[str]] = field(default_factory=list)

    @classmethod
    def fresh(cls, batch_max: int = 4) -> Node:
        cfg = config(batch_max)
        return cls(Sequencer(cfg, MemoryHashStore(), EntryValidator(KeyRegistry(cfg.genesis_keys))))

    def stored_ids(self, ids: Iterable[str]) -> set[str]:
        ids = list(ids)
        self.calls.append(ids)
        return {i for i in ids if i in self.stored}

    def apply(self, batch: Sequence[OrderedRecord]) -> list[Block]:
        output = self.sequencer.apply(batch, self.stored_ids)
        for block in output.blocks:  # persisted before the next call, as the node does
            self.stored.update(e.parsed.entry_id for e in block.entries)
        self.blocks.extend(output.blocks)
        self.rejections.extend(output.rejections)
        return output.blocks

    @property
    def texts(self) -> list[str]:
        return [b.text for b in self.blocks]


# ------------------------------------------------------------------------------ cutting


def test_cuts_at_batch_max_exactly() -> None:
    node = Node.fresh(batch_max=4)
    stream = records([single() for _ in range(11)])
    assert node.apply(stream[:3]) == []
    assert node.sequencer.pending_count == 3
    (block,) = node.apply(stream[3:4])
    assert len(block.entries) == 4
    assert block.cut_offset == 3
    assert block.checkpoint.size == 4
    assert node.sequencer.pending_count == 0
    blocks = node.apply(stream[4:])
    assert [len(b.entries) for b in blocks] == [4]
    assert blocks[0].cut_offset == 7
    assert node.sequencer.pending_count == 3
    assert [e.leaf_index for b in node.blocks for e in b.entries] == list(range(8))
    assert [e.offset for e in node.sequencer.pending] == [8, 9, 10]


def test_batch_max_of_one_cuts_every_entry() -> None:
    node = Node.fresh(batch_max=1)
    node.apply(records([single() for _ in range(3)]))
    assert [b.checkpoint.height for b in node.blocks] == [1, 2, 3]
    assert [b.checkpoint.size for b in node.blocks] == [1, 2, 3]


def test_ttc_for_the_current_height_cuts_a_partial_block() -> None:
    node = Node.fresh(batch_max=4)
    stream = records([single(), single(), ttc_record(1, "node-b"), single()])
    (block,) = node.apply(stream)
    assert len(block.entries) == 2
    assert block.cut_offset == 2
    assert block.checkpoint.cut_time_ms == T0_MS + 14  # the TTC record's timestamp
    assert block.checkpoint.height == 1
    assert node.sequencer.next_height == 2
    assert node.sequencer.pending_count == 1


def test_ttc_for_another_height_or_nothing_pending_is_ignored() -> None:
    node = Node.fresh(batch_max=4)
    stream = records(
        [
            ttc_record(1, "a"),  # nothing pending
            single(),
            ttc_record(2, "a"),  # a future height
            ordering_pb2.OrderingRecord(ttc=ordering_pb2.TimeToCut(height=0)).SerializeToString(),
            single(),
            single(),
            single(),  # batch_max: block 1 cut here
            ttc_record(1, "b"),  # late TTC for the height just cut, with nothing pending
            single(),
            ttc_record(1, "c"),  # late TTC for a cut height, with an entry pending
            ttc_record(3, "c"),
        ]
    )
    blocks = node.apply(stream)
    assert [b.cut_offset for b in blocks] == [6]
    assert node.sequencer.pending_count == 1
    assert node.rejections == []
    (block,) = node.apply(records([ttc_record(2, "a")], 11))
    assert block.checkpoint.height == 2
    assert block.cut_offset == 11


def test_rejected_records_do_not_count() -> None:
    node = Node.fresh(batch_max=3)
    duplicate_body = record_body()
    first = H1.sign_entry(duplicate_body)
    malformed = bytearray(H1.sign_entry(record_body()))
    malformed[-70] ^= 0xFF  # breaks the protobuf framing of the signature field
    stream = records(
        [
            entry_record(first),
            entry_record(FORGER.sign_entry(record_body())),  # bad signature
            entry_record(first),  # the same entry again
            b"\xff\xff\xff",  # not an OrderingRecord
            entry_record(bytes(malformed)),
            entry_record(b"\x0a\x03abc"),  # a ChainEntry whose body is not an EntryBody
            single(),
            entry_record(H1.sign_entry(record_body(parse_entry(first).entry_id, tag=1))),
            single(),
        ]
    )
    (block,) = node.apply(stream)
    assert [e.offset for e in block.entries] == [0, 6, 8]
    reasons = {r.offset: r for r in node.rejections}
    assert sorted(reasons) == [1, 2, 3, 4, 5, 7]
    assert "entry signature does not verify" in reasons[1].reason
    assert reasons[2].reason == f"entry id {parse_entry(first).entry_id} is on the log already"
    assert reasons[2].entry_id == parse_entry(first).entry_id
    assert reasons[3] == Rejection(
        3, "", "expected an OrderingRecord, got other bytes", undecodable=True
    )
    assert reasons[5].entry_id == ""
    assert "expected" in reasons[5].reason
    assert "is on the log already" in reasons[7].reason
    assert [r.offset for r in node.rejections] == [1, 2, 3, 4, 5, 7]  # in record order


def test_malformed_entry_rejection_names_its_entry_id_when_it_can() -> None:
    node = Node.fresh()
    body = entry_pb2.EntryBody.FromString(record_body())
    entry_id = body.entry_id
    body.ClearField("time")
    node.apply(records([entry_record(H1.sign_entry(body.SerializeToString()))]))
    (rejection,) = node.rejections
    assert rejection == Rejection(0, entry_id, "expected a time, got none")


def test_stored_ids_called_once_per_call_with_every_entry_id() -> None:
    node = Node.fresh(batch_max=2)
    entries = [H1.sign_entry(record_body()) for _ in range(3)]
    ids = [parse_entry(e).entry_id for e in entries]
    node.apply(records([entry_record(e) for e in entries] + [ttc_record(1, "a"), b"junk"]))
    assert node.calls == [ids]
    node.apply(records([ttc_record(2, "a")], 5))
    assert node.calls == [ids]  # no entries: no call


def test_ids_on_the_log_are_rejected() -> None:
    node = Node.fresh(batch_max=2)
    entries = [entry_record(H1.sign_entry(record_body())) for _ in range(2)]
    node.apply(records(entries))
    node.apply(records(entries, 2))  # resubmitted after they were persisted
    assert [r.offset for r in node.rejections] == [2, 3]
    assert all("is on the log already" in r.reason for r in node.rejections)


def test_duplicate_of_an_entry_cut_in_the_same_call() -> None:
    """An entry pending from an earlier call, cut by a TTC in this call, then resubmitted in
    this call: it is not in the store yet, and must still be a duplicate (the lead's version
    forgot the ids of the blocks it cut itself until the next call)."""
    node = Node.fresh(batch_max=10)
    entry = entry_record(H1.sign_entry(record_body()))
    node.apply(records([entry]))
    node.apply(records([ttc_record(1, "a"), entry], 1))
    assert [len(b.entries) for b in node.blocks] == [1]
    assert [r.offset for r in node.rejections] == [2]
    # The same within one call, cut by batch_max.
    node = Node.fresh(batch_max=2)
    first = entry_record(H1.sign_entry(record_body()))
    node.apply(records([first, single(), first]))
    assert [r.offset for r in node.rejections] == [2]


def test_checkpoints_chain() -> None:
    node = Node.fresh(batch_max=3)
    values = [single() for _ in range(7)] + [ttc_record(3, "a")]
    node.apply(records(values))
    raw_entries = [e.parsed.raw for b in node.blocks for e in b.entries]
    previous = GENESIS_PREVIOUS_HASH
    size = 0
    for height, block in enumerate(node.blocks, 1):
        checkpoint = block.checkpoint
        size += len(block.entries)
        assert checkpoint.origin == ORIGIN
        assert checkpoint.height == height
        assert checkpoint.size == size
        assert checkpoint.previous_hash == previous
        assert checkpoint.root_hash == mth(raw_entries[:size])
        assert checkpoint.cut_time_ms == T0_MS + 7 * block.cut_offset
        assert parse_checkpoint(block.text) == checkpoint
        previous = checkpoint_hash(block.text)
    assert [b.cut_offset for b in node.blocks] == [2, 5, 7]
    assert node.sequencer.previous_hash == previous
    assert node.sequencer.next_height == 4


def test_ttc_record_and_entry_record() -> None:
    message = ordering_pb2.OrderingRecord.FromString(ttc_record(7, "hospital-b"))
    assert (message.ttc.height, message.ttc.node) == (7, "hospital-b")
    with pytest.raises(InvalidInputError, match="expected a block height >= 1, got 0"):
        ttc_record(0, "a")
    assert ordering_pb2.OrderingRecord.FromString(entry_record(b"xyz")).entry == b"xyz"


def test_key_entries_take_effect_at_their_position() -> None:
    node = Node.fresh(batch_max=100)
    stream = records(
        [
            entry_record(H2.sign_entry(record_body())),  # not registered yet
            entry_record(key_entry(entry_pb2.KEY_ACTION_REGISTER, H2.key_id, raw_public(H2_KEY))),
            entry_record(H2.sign_entry(record_body())),
            entry_record(key_entry(entry_pb2.KEY_ACTION_REVOKE, H2.key_id)),
            entry_record(H2.sign_entry(record_body())),
            ttc_record(1, "a"),
        ]
    )
    (block,) = node.apply(stream)
    assert [e.offset for e in block.entries] == [1, 2, 3]
    assert [r.offset for r in node.rejections] == [0, 4]


# ------------------------------------------------------------------------------ determinism


def _pool() -> list[bytes]:
    """Ordering-record values to draw streams from: valid and invalid entries of every sort."""
    pool: list[bytes] = []
    pool += [single() for _ in range(12)]
    pool += [entry_record(e) for e in H1.sign_batch([record_body() for _ in range(9)])]
    pool += [entry_record(e) for e in H1.sign_batch([record_body() for _ in range(5)])]
    pool += [entry_record(H2.sign_entry(record_body())) for _ in range(4)]
    pool += [entry_record(e) for e in H2.sign_batch([record_body() for _ in range(6)])]
    pool += [entry_record(FORGER.sign_entry(record_body())) for _ in range(2)]
    pool += [entry_record(e) for e in FORGER.sign_batch([record_body() for _ in range(3)])]
    same_id = record_body()
    pool += [entry_record(H1.sign_entry(same_id))]
    pool += [
        entry_record(
            H1.sign_entry(record_body(parse_entry(H1.sign_entry(same_id)).entry_id, tag=3))
        )
    ]
    pool += [entry_record(key_entry(entry_pb2.KEY_ACTION_REGISTER, H2.key_id, raw_public(H2_KEY)))]
    pool += [entry_record(key_entry(entry_pb2.KEY_ACTION_REVOKE, H1.key_id))]
    pool += [b"\x00garbage", entry_record(b"\x12\x01")]
    return pool


POOL = _pool()


def _batch_of(indexes: list[int]) -> bytes:
    """A batch record of the entries that pool items ``indexes`` carry (garbage as it is)."""
    raws = []
    for i in indexes:
        ordering = ordering_pb2.OrderingRecord()
        try:
            ordering.ParseFromString(POOL[i])
            raws.append(ordering.entry)
        except DecodeError:
            raws.append(POOL[i])
    return ordering_pb2.OrderingRecord(
        batch=ordering_pb2.EntryBatch(entries=raws)
    ).SerializeToString()


@st.composite
def streams(draw: st.DrawFn) -> list[bytes]:
    """A record stream: pool items in any order with repeats, batch records of them, and TTCs
    for heights 0..5."""
    return draw(
        st.lists(
            st.one_of(
                st.integers(0, len(POOL) - 1).map(lambda i: POOL[i]),
                st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=6).map(_batch_of),
                st.integers(0, 5).map(
                    lambda h: ordering_pb2.OrderingRecord(
                        ttc=ordering_pb2.TimeToCut(height=h, node="n")
                    ).SerializeToString()
                ),
            ),
            max_size=120,
        )
    )


#: Records anyone who can write to the topic can send, none of them an ordering record.
POISON: list[bytes | None] = [
    None,  # a null value
    b"",  # no bytes
    b"\xff\xff\xff",  # junk
    b"\x7a\x03abc",  # a well-formed protobuf whose only field (15) is no kind we know
    ordering_pb2.Cosignature(node="x", tree_size=3, checkpoint="c").SerializeToString(),
    ordering_pb2.OrderingRecord(batch=ordering_pb2.EntryBatch()).SerializeToString(),
]


@st.composite
def hostile_streams(draw: st.DrawFn) -> list[bytes | None]:
    """Valid streams with any bytes, or nothing, inserted at any offsets."""
    stream: list[bytes | None] = list(draw(streams()))
    hostile = st.one_of(st.none(), st.binary(max_size=64), st.sampled_from(POISON))
    for _ in range(draw(st.integers(0, 12))):
        stream.insert(draw(st.integers(0, len(stream))), draw(hostile))
    return stream


def split(stream: list[OrderedRecord], cuts: list[int]) -> list[list[OrderedRecord]]:
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    return [stream[a:b] for a, b in itertools.pairwise(points)]


def run(stream: list[OrderedRecord], cuts: list[int], batch_max: int) -> Node:
    node = Node.fresh(batch_max)
    for part in split(stream, cuts):
        node.apply(part)
    return node


def summary(node: Node) -> tuple[list[str], list[tuple[bytes, ...]], list[Rejection], int]:
    return (
        node.texts,
        [tuple(e.parsed.raw for e in b.entries) for b in node.blocks],
        node.rejections,
        node.sequencer.pending_count,
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    hostile_streams(),
    st.lists(st.integers(0, 1000), max_size=12),
    st.lists(st.integers(0, 1000), max_size=12),
    st.integers(1, 6),
)
def test_same_records_same_checkpoints_whatever_the_apply_calls_and_whatever_the_bytes(
    values: list[bytes | None], cuts_a: list[int], cuts_b: list[int], batch_max: int
) -> None:
    """Three sequencers fed the same records in different apply calls agree on every block,
    rejection and pending entry, whatever bytes (or null values) sit at whatever offsets."""
    stream = [OrderedRecord(o, T0_MS + 7 * o, v) for o, v in enumerate(values)]
    a = run(stream, cuts_a, batch_max)
    b = run(stream, cuts_b, batch_max)
    one_by_one = run(stream, list(range(len(stream))), batch_max)
    assert summary(a) == summary(b) == summary(one_by_one)
    # A record with no bytes is rejected at its offset, never in the log.
    placed = {e.offset for blk in a.blocks for e in blk.entries}
    rejected = {r.offset for r in a.rejections}
    for record in stream:
        if not record.value:
            assert record.offset in rejected and record.offset not in placed
    assert all(r.entry_id == "" for r in a.rejections if r.undecodable)
    # And the blocks are what they claim: no id twice, sizes and roots of the entries.
    raws = [e.parsed.raw for blk in a.blocks for e in blk.entries]
    ids = [parse_entry(r).entry_id for r in raws]
    assert len(ids) == len(set(ids))
    if a.blocks:
        assert a.blocks[-1].checkpoint.root_hash == mth(raws)


def contents(blocks: list[Block]) -> list[list[tuple[int, int, int, bytes]]]:
    return [
        [(e.leaf_index, e.offset, e.timestamp_ms, e.parsed.raw) for e in b.entries] for b in blocks
    ]


def restarted(reference: Node, k: int, batch_max: int) -> Node:
    """A node rebuilt from what the reference persisted up to block ``k`` (1-based; 0: none)."""
    cfg = config(batch_max)
    done = reference.blocks[:k]
    tree = MemoryHashStore()
    registry = KeyRegistry(cfg.genesis_keys)
    stored: set[str] = set()
    for block in done:
        for e in block.entries:
            tree.append_leaf(e.parsed.leaf_hash)
            stored.add(e.parsed.entry_id)
            if e.parsed.kind == common_pb2.ENTRY_KIND_KEY:
                registry.apply(parse_entry(e.parsed.raw).body.key)
    sequencer = Sequencer(
        cfg,
        tree,
        EntryValidator(registry),
        next_height=k + 1,
        previous_hash=done[-1].checkpoint.hash() if done else GENESIS_PREVIOUS_HASH,
    )
    return Node(sequencer, stored=stored)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.lists(st.integers(0, 1000), max_size=8), st.integers(1, 6), st.data())
def test_restart_from_the_last_cut_gives_the_same_blocks(
    values: list[bytes], cuts: list[int], batch_max: int, data: st.DataObject
) -> None:
    stream = records(values)
    reference = run(stream, [], batch_max)
    k = data.draw(st.integers(0, len(reference.blocks)))
    offset = reference.blocks[k - 1].cut_offset if k else -1
    node = restarted(reference, k, batch_max)
    for part in split([r for r in stream if r.offset > offset], cuts):
        node.apply(part)
    assert node.texts == reference.texts[k:]
    assert contents(node.blocks) == contents(reference.blocks[k:])
    assert node.rejections == [r for r in reference.rejections if r.offset > offset]
    assert node.sequencer.pending_count == reference.sequencer.pending_count


# ------------------------------------------------------------------------------ batch records


def batch(entries: Sequence[bytes]) -> bytes:
    return ordering_pb2.OrderingRecord(
        batch=ordering_pb2.EntryBatch(entries=list(entries))
    ).SerializeToString()


def test_a_batch_record_is_applied_in_order_at_its_offset() -> None:
    node = Node.fresh(batch_max=100)
    entries = [H1.sign_entry(record_body()) for _ in range(5)]
    node.apply(records([single(), batch(entries), ttc_record(1, "node-b")]))
    (block,) = node.blocks
    assert [e.parsed.raw for e in block.entries[1:]] == entries
    assert [e.leaf_index for e in block.entries] == list(range(6))
    assert [e.offset for e in block.entries] == [0, 1, 1, 1, 1, 1]
    assert block.cut_offset == 2


def test_a_block_ends_only_at_the_end_of_a_record() -> None:
    node = Node.fresh(batch_max=4)
    first = [H1.sign_entry(record_body()) for _ in range(3)]
    second = [H1.sign_entry(record_body()) for _ in range(6)]
    node.apply(records([batch(first), batch(second), single()]))
    # 3 pending after the first record; the second brings 9: one block of 9, cut at offset 1.
    assert [len(b.entries) for b in node.blocks] == [9]
    assert node.blocks[0].cut_offset == 1
    assert node.sequencer.pending_count == 1


def test_entries_batched_or_not_give_the_same_log() -> None:
    entries = [H1.sign_entry(record_body()) for _ in range(10)]
    one_by_one = Node.fresh(batch_max=3)
    one_by_one.apply(records([entry_record(e) for e in entries] + [ttc_record(4, "n")]))
    batched = Node.fresh(batch_max=3)
    batched.apply(records([batch(entries[:7]), batch(entries[7:]), ttc_record(2, "n")]))
    assert one_by_one.blocks[-1].checkpoint.root_hash == batched.blocks[-1].checkpoint.root_hash
    assert one_by_one.blocks[-1].checkpoint.size == batched.blocks[-1].checkpoint.size == 10
    assert [len(b.entries) for b in batched.blocks] == [7, 3]


def test_a_bad_entry_in_a_batch_is_rejected_alone() -> None:
    node = Node.fresh(batch_max=100)
    good = [H1.sign_entry(record_body()) for _ in range(2)]
    forged = FORGER.sign_entry(record_body("00000000-0000-4000-8000-00000000abcd"))
    node.apply(records([batch([good[0], b"\x12\x01", forged, good[1], good[0]])]))
    assert [e.parsed.raw for e in node.sequencer.pending] == good
    assert [(r.offset, r.entry_id, r.code) for r in node.rejections] == [
        (0, "", "MALFORMED"),
        (0, "00000000-0000-4000-8000-00000000abcd", "BAD_SIGNATURE"),
        (0, parse_entry(good[0]).entry_id, "DUPLICATE_ENTRY_ID"),
    ]


def test_an_empty_batch_is_rejected() -> None:
    node = Node.fresh()
    node.apply(records([batch([])]))
    assert [r.reason for r in node.rejections] == [
        "expected a batch of entries, got an empty batch"
    ]


def test_ordering_records_pack_entries_in_order_within_the_size_limit() -> None:
    assert ordering_records([b"one"]) == [(entry_record(b"one"), 1)]
    entries = [bytes([i % 256]) * 100_000 for i in range(25)]
    packed = ordering_records(entries)
    unpacked: list[bytes] = []
    for value, count in packed:
        ordering = ordering_pb2.OrderingRecord()
        ordering.ParseFromString(value)
        carried = (
            [ordering.entry]
            if ordering.WhichOneof("record") == "entry"
            else list(ordering.batch.entries)
        )
        assert len(carried) == count
        assert sum(len(e) for e in carried) <= BATCH_RECORD_BYTES or count == 1
        assert len(value) < 1_000_000  # Kafka's default limit is 1 MiB a message
        unpacked.extend(carried)
    assert unpacked == entries
    assert [count for _, count in packed] == [9, 9, 7]  # 9 of 100 kB fit in 900 KiB
    huge = b"x" * (BATCH_RECORD_BYTES + 1)
    assert [count for _, count in ordering_records([huge, b"a", b"b"])] == [1, 2]


# ------------------------------------------------------------------------------ poison records


def test_records_that_are_not_ordering_records_are_rejected_at_their_offset() -> None:
    node = Node.fresh(batch_max=2)
    values: list[bytes | None] = [single(), *POISON, single()]
    stream = [OrderedRecord(o, T0_MS + o, v) for o, v in enumerate(values)]
    (block,) = node.apply(stream)
    assert [e.offset for e in block.entries] == [0, 7]
    assert [(r.offset, r.entry_id, r.undecodable) for r in node.rejections] == [
        (offset, "", True) for offset in range(1, 7)
    ]
    reasons = [r.reason for r in node.rejections]
    assert reasons[:4] == [
        "expected an OrderingRecord, got a record with no value",
        "expected an OrderingRecord, got an empty record",
        *["expected an OrderingRecord, got other bytes"] * 2,
    ]
    # The cosignature's first field reads as an entry record's entry: not a ChainEntry.
    assert reasons[4].startswith("expected a ChainEntry protobuf, got undecodable bytes")
    assert reasons[5] == "expected a batch of entries, got an empty batch"


def test_an_entry_that_fails_validation_is_not_an_undecodable_record() -> None:
    node = Node.fresh(batch_max=1)
    empty_body = entry_pb2.ChainEntry(body=b"", key_id=H1.key_id).SerializeToString()
    node.apply(records([entry_record(FORGER.sign_entry(record_body())), entry_record(empty_body)]))
    assert [r.undecodable for r in node.rejections] == [False, False]
    node.apply(records([entry_record(b"\x12")], 2))  # truncated: not a ChainEntry
    assert [r.undecodable for r in node.rejections] == [False, False, True]


def _record_by(author: str) -> bytes:
    body = entry_pb2.EntryBody.FromString(record_body())
    body.record.author_ref = author
    return H1.sign_entry(body.SerializeToString())


def test_free_text_as_a_records_author_is_rejected_by_every_node() -> None:
    """2 MB of free text (a name, a diagnosis), signed by a valid key, never reaches the log:
    it is over the entry size limit; a short name is not a practitioner id."""
    node = Node.fresh(batch_max=1)
    two_megabytes = _record_by("Jane Doe, diagnosis: influenza. " * 65_000)
    name = _record_by("Dr. Jane Doe")
    practitioner = _record_by("pr-" + "A" * 22)
    node.apply(records([entry_record(e) for e in (two_megabytes, name, practitioner)]))
    assert [r.offset for r in node.rejections] == [0, 1]
    assert node.rejections[0].reason.startswith("expected an entry of at most 65,535 bytes")
    assert "expected author_ref to be empty or a practitioner id" in node.rejections[1].reason
    assert [e.offset for b in node.blocks for e in b.entries] == [2]


def test_an_oversized_entry_is_rejected_as_too_large() -> None:
    node = Node.fresh()
    body = entry_pb2.EntryBody.FromString(record_body())
    body.commitment = b"\x00" * 70_000  # over the 64 KiB an entry may take
    node.apply(records([entry_record(H1.sign_entry(body.SerializeToString()))]))
    (rejection,) = node.rejections
    assert (rejection.entry_id, rejection.code) == (body.entry_id, "TOO_LARGE")
