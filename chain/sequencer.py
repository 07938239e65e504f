"""From the Kafka order to blocks: the deterministic heart of a chain node (DESIGN §3.2).

:class:`Sequencer` reads ordered records (an entry, a batch of entries, or a time-to-cut) one by
one, validates each entry at its position, and cuts a block when ``batch_max`` valid entries are
pending at the end of a record or when a ``TTC(height)`` for the current height is read. Blocks
end only at record boundaries, so a node resumes at the offset after its last block; a batch
record can therefore make a block longer than ``batch_max``. A block ends in a checkpoint whose
every byte follows from the order and the consortium config (its cut time is the Kafka timestamp
of the record that cut it), so every node that applies the same records computes the same
blocks. It does no I/O and reads no clock: the node feeds it records and persists what it
returns.

Any bytes may arrive, since anyone who can write to the topic can send them: a record that is
not an ordering record (a null value, no bytes, junk, another message, an unknown kind), or an
entry that is not a ChainEntry, is a rejection at its offset (:attr:`Rejection.undecodable`),
decided from its bytes alone, so every node rejects it alike and still cuts the same blocks;
nothing a record holds raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from google.protobuf.message import DecodeError

from chain.checkpoint import GENESIS_PREVIOUS_HASH, Checkpoint
from chain.consortium import ConsortiumConfig
from chain.entry import ParsedEntry, parse_entry, read_body
from chain.errors import InvalidInputError, SwiftchainError
from chain.tiles import MemoryHashStore
from chain.validation import EntryValidator, rejection_reason
from swiftchain.chain.v1 import ordering_pb2


@dataclass(frozen=True)
class OrderedRecord:
    """One record of ``chain.ordering.v1``: its offset, LogAppendTime and value bytes (``None``
    for a record with a null value: anyone who can write to the topic can send one)."""

    offset: int
    timestamp_ms: int
    value: bytes | None


class SequencedEntry(NamedTuple):
    """A valid entry with its place in the log (a named tuple: one is made per entry)."""

    leaf_index: int
    offset: int
    timestamp_ms: int
    parsed: ParsedEntry


@dataclass(frozen=True)
class Rejection:
    """An entry left out of the log, and why (kept for the submitter)."""

    offset: int
    entry_id: str
    reason: str
    #: The ``RejectionReason`` name without its prefix, e.g. ``"BAD_SIGNATURE"``.
    code: str = "MALFORMED"
    #: True when the record was not an ordering record (a null value, no bytes, junk, a message
    #: of another kind) or an entry in it is not even a ChainEntry: a poison record, which the
    #: node sets aside, rather than a submitter's entry that failed validation.
    undecodable: bool = False


@dataclass(frozen=True)
class Block:
    """A cut block: its entries and the checkpoint that ends it."""

    checkpoint: Checkpoint
    entries: tuple[SequencedEntry, ...]
    cut_offset: int

    @property
    def text(self) -> str:
        """The checkpoint text every node signs."""
        return self.checkpoint.to_text()


@dataclass
class SequencerOutput:
    """What one :meth:`Sequencer.apply` call produced, in order."""

    blocks: list[Block] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


def _malformed(offset: int, raw: bytes, reason: str, code: str = "MALFORMED") -> Rejection:
    """The rejection of an entry that did not parse, named by its entry id when its bytes hold
    one; entry bytes that are not even a ChainEntry with an EntryBody are undecodable."""
    try:
        entry_id = read_body(raw).entry_id[:64]
    except MemoryError:
        raise
    except Exception:  # any bytes may come: the rejection then goes by its offset
        return Rejection(offset, "", reason, undecodable=True)
    return Rejection(offset, entry_id, reason, code)


def _undecodable(record: OrderedRecord, what: str | None) -> Rejection:
    """The rejection of a record that is not a usable ordering record. Its reason depends only
    on the record's bytes, so that every node stores the same one."""
    if record.value is None:
        reason = "expected an OrderingRecord, got a record with no value"
    elif not record.value:
        reason = "expected an OrderingRecord, got an empty record"
    elif what == "batch":
        reason = "expected a batch of entries, got an empty batch"
    else:
        reason = "expected an OrderingRecord, got other bytes"
    return Rejection(record.offset, "", reason, undecodable=True)


class Sequencer:
    """Validates ordered records and cuts blocks; see the module docstring."""

    def __init__(
        self,
        config: ConsortiumConfig,
        tree: MemoryHashStore,
        validator: EntryValidator,
        *,
        next_height: int = 1,
        previous_hash: bytes = GENESIS_PREVIOUS_HASH,
    ) -> None:
        self._config = config
        self.tree = tree
        self.validator = validator
        self.next_height = next_height
        self.previous_hash = previous_hash
        self.pending: list[SequencedEntry] = []
        # Entry ids accepted but maybe not persisted yet: the pending entries' and, until the
        # next apply() call, those of the blocks cut (the caller persists them in between).
        self._recent_ids: set[str] = set()
        self._blocks_cut = False

    @property
    def pending_count(self) -> int:
        """Valid entries waiting for the next cut."""
        return len(self.pending)

    def apply(
        self,
        records: Sequence[OrderedRecord],
        stored_ids: Callable[[Iterable[str]], set[str]],
    ) -> SequencerOutput:
        """Apply ``records`` in order.

        ``stored_ids(ids)`` returns which of ``ids`` are already in persisted blocks; it is
        called once per call with every entry id the records carry. The caller must persist the
        returned blocks before the next call.
        """
        # First pass, stateless: decode every record, so that one stored_ids call covers them.
        # Each item carries whether it is the last of its record: blocks end only there.
        decoded: list[tuple[OrderedRecord, ParsedEntry | Rejection | int, bool]] = []
        ids: list[str] = []
        for record in records:
            ordering = ordering_pb2.OrderingRecord()
            what: str | None = None
            if record.value is not None:
                try:
                    ordering.ParseFromString(record.value)
                    what = ordering.WhichOneof("record")
                except DecodeError:
                    what = None
            if what == "entry":
                raws: Sequence[bytes] = (ordering.entry,)
            elif what == "batch" and ordering.batch.entries:
                raws = ordering.batch.entries
            elif what == "ttc":
                decoded.append((record, ordering.ttc.height, True))
                continue
            else:
                decoded.append((record, _undecodable(record, what), True))
                continue
            last = len(raws) - 1
            for position, raw in enumerate(raws):
                try:
                    parsed = parse_entry(raw)
                except SwiftchainError as error:
                    rejection = _malformed(record.offset, raw, str(error), rejection_reason(error))
                    decoded.append((record, rejection, position == last))
                    continue
                except MemoryError:
                    raise
                except Exception as error:  # a parser bug must not stop the log on every node
                    reason = f"expected a ChainEntry, got bytes it fails on: {type(error).__name__}"
                    rejection = _malformed(record.offset, raw, reason)
                    decoded.append((record, rejection, position == last))
                    continue
                decoded.append((record, parsed, position == last))
                ids.append(parsed.entry_id)
        on_log = stored_ids(ids) if ids else set()
        if self._blocks_cut:
            # The blocks cut by the previous call are persisted now (and so in on_log).
            self._recent_ids = {e.parsed.entry_id for e in self.pending}
            self._blocks_cut = False
        # Ids valid but not persisted: pending, or in a block this call cuts.
        recent = self._recent_ids

        def seen(entry_id: str) -> bool:
            return entry_id in on_log or entry_id in recent

        output = SequencerOutput()
        validate = self.validator.validate_parsed
        batch_max = self._config.batch_max
        for record, item, ends_record in decoded:
            if isinstance(item, ParsedEntry):
                try:
                    validate(item, seen)
                except SwiftchainError as error:
                    output.rejections.append(
                        Rejection(record.offset, item.entry_id, str(error), rejection_reason(error))
                    )
                except MemoryError:
                    raise
                except Exception as error:  # as above: same bytes, same outcome on every node
                    reason = f"the entry could not be validated: {type(error).__name__}"
                    output.rejections.append(Rejection(record.offset, item.entry_id, reason))
                else:
                    pending = self.pending
                    pending.append(
                        SequencedEntry(
                            self.tree.size + len(pending), record.offset, record.timestamp_ms, item
                        )
                    )
                    recent.add(item.entry_id)
            elif isinstance(item, Rejection):
                output.rejections.append(item)
            elif item == self.next_height and self.pending:  # TTC for the current height
                output.blocks.append(self._cut(record))
                continue
            if ends_record and len(self.pending) >= batch_max:
                output.blocks.append(self._cut(record))
        return output

    def _cut(self, record: OrderedRecord) -> Block:
        entries = tuple(self.pending)
        self.tree.extend(e.parsed.leaf_hash for e in entries)
        checkpoint = Checkpoint(
            origin=self._config.origin,
            size=self.tree.size,
            root_hash=self.tree.root(),
            height=self.next_height,
            previous_hash=self.previous_hash,
            cut_time_ms=record.timestamp_ms,
        )
        self.pending = []
        self._blocks_cut = True
        self.next_height += 1
        self.previous_hash = checkpoint.hash()
        return Block(checkpoint=checkpoint, entries=entries, cut_offset=record.offset)


def ttc_record(height: int, node: str) -> bytes:
    """The bytes of a time-to-cut message for ``height``, sent by ``node``."""
    if height < 1:
        raise InvalidInputError(f"expected a block height >= 1, got {height}")
    return ordering_pb2.OrderingRecord(
        ttc=ordering_pb2.TimeToCut(height=height, node=node)
    ).SerializeToString()


def entry_record(entry: bytes) -> bytes:
    """The bytes of an ordering record carrying ``entry`` (exact ChainEntry bytes)."""
    return ordering_pb2.OrderingRecord(entry=entry).SerializeToString()


#: The most entry bytes one batch record carries: under the 1 MiB that Kafka takes in one
#: message by default (``message.max.bytes``, and kafka-python's ``max_request_size``), with
#: room for the record's own framing.
BATCH_RECORD_BYTES = 900 * 1024


def ordering_records(entries: Sequence[bytes]) -> list[tuple[bytes, int]]:
    """Ordering records carrying ``entries`` in order, as few as fit: each record's bytes and
    how many entries it carries. One entry travels as an entry record; several as batch
    records of at most :data:`BATCH_RECORD_BYTES` entry bytes (an entry larger than that
    travels alone)."""
    records: list[tuple[bytes, int]] = []
    group: list[bytes] = []
    size = 0
    for entry in entries:
        if group and size + len(entry) > BATCH_RECORD_BYTES:
            records.append(_batch_record(group))
            group, size = [], 0
        group.append(entry)
        size += len(entry) + 4  # the field's tag and length
    if group:
        records.append(_batch_record(group))
    return records


def _batch_record(entries: list[bytes]) -> tuple[bytes, int]:
    if len(entries) == 1:
        return entry_record(entries[0]), 1
    message = ordering_pb2.OrderingRecord(batch=ordering_pb2.EntryBatch(entries=entries))
    return message.SerializeToString(), len(entries)
