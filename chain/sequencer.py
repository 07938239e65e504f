"""From the Kafka order to blocks: the deterministic heart of a chain node (DESIGN §3.2).

:class:`Sequencer` reads ordered records (entries and time-to-cut messages) one by one, validates
each entry at its position, and cuts a block when ``batch_max`` valid entries are pending or when
a ``TTC(height)`` for the current height is read. A block ends in a checkpoint whose every byte
follows from the order and the consortium config (its cut time is the Kafka timestamp of the
record that cut it), so every node that applies the same records computes the same blocks. It
does no I/O and reads no clock: the node feeds it records and persists what it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from chain.checkpoint import GENESIS_PREVIOUS_HASH, Checkpoint
from chain.consortium import ConsortiumConfig
from chain.entry import ParsedEntry, parse_entry
from chain.errors import InvalidInputError, SwiftchainError
from chain.tiles import MemoryHashStore
from chain.validation import EntryValidator
from swiftchain.chain.v1 import entry_pb2, ordering_pb2


@dataclass(frozen=True)
class OrderedRecord:
    """One record of ``chain.ordering.v1``: its offset, LogAppendTime and value bytes."""

    offset: int
    timestamp_ms: int
    value: bytes


@dataclass(frozen=True)
class SequencedEntry:
    """A valid entry with its place in the log."""

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


def _peek_entry_id(raw: bytes) -> str:
    """Best-effort entry id of a malformed entry, for the rejection record."""
    entry = entry_pb2.ChainEntry()
    body = entry_pb2.EntryBody()
    try:
        entry.ParseFromString(raw)
        body.ParseFromString(entry.body)
    except DecodeError:
        return ""
    return body.entry_id[:64]


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
        self._pending_ids: set[str] = set()

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
        output = SequencerOutput()
        decoded: list[tuple[OrderedRecord, ordering_pb2.OrderingRecord | None]] = []
        parsed: dict[int, ParsedEntry | SwiftchainError] = {}
        for record in records:
            ordering = ordering_pb2.OrderingRecord()
            try:
                ordering.ParseFromString(record.value)
            except DecodeError:
                decoded.append((record, None))
                continue
            decoded.append((record, ordering))
            if ordering.WhichOneof("record") == "entry":
                try:
                    parsed[record.offset] = parse_entry(ordering.entry)
                except SwiftchainError as error:
                    parsed[record.offset] = error
        ids = [p.entry_id for p in parsed.values() if isinstance(p, ParsedEntry)]
        on_log = stored_ids(ids) if ids else set()
        accepted_now: set[str] = set()

        def seen(entry_id: str) -> bool:
            return entry_id in on_log or entry_id in self._pending_ids or entry_id in accepted_now

        for record, message in decoded:
            kind = message.WhichOneof("record") if message is not None else None
            if kind == "entry":
                assert message is not None
                accepted = self._apply_entry(
                    record, message.entry, parsed[record.offset], seen, output
                )
                if accepted:
                    accepted_now.add(accepted)
                if len(self.pending) >= self._config.batch_max:
                    output.blocks.append(self._cut(record))
            elif kind == "ttc":
                assert message is not None
                if message.ttc.height == self.next_height and self.pending:
                    output.blocks.append(self._cut(record))
            else:
                output.rejections.append(
                    Rejection(record.offset, "", "expected an OrderingRecord, got other bytes")
                )
        return output

    def _apply_entry(
        self,
        record: OrderedRecord,
        raw: bytes,
        parsed: ParsedEntry | SwiftchainError,
        seen: Callable[[str], bool],
        output: SequencerOutput,
    ) -> str | None:
        """Validate one entry; pending it and return its id, or record why not."""
        if isinstance(parsed, SwiftchainError):
            output.rejections.append(Rejection(record.offset, _peek_entry_id(raw), str(parsed)))
            return None
        try:
            self.validator.validate_parsed(parsed, seen)
        except SwiftchainError as error:
            output.rejections.append(Rejection(record.offset, parsed.entry_id, str(error)))
            return None
        leaf_index = self.tree.size + len(self.pending)
        self.pending.append(SequencedEntry(leaf_index, record.offset, record.timestamp_ms, parsed))
        self._pending_ids.add(parsed.entry_id)
        return parsed.entry_id

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
        self._pending_ids = set()
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
