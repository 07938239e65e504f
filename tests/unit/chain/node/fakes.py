"""In-memory stand-ins for what a ChainNode does I/O with (chain/node/ports.py): a store with the
semantics of chain/node/store.py (written-once blocks, seals and alarms, upserted rejections; the
log itself in a real TileStore, files in a test's temporary folder) and a Kafka of
single-partition topics with a producer and readers. Several nodes can share one FakeKafka, as
the nodes of a consortium share the brokers."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from chain.alarms import Alarm
from chain.node.ports import NodeState, PolledRecord, Reader
from chain.node.tile_store import TileStore

#: LogAppendTime of offset 0; each later record is 5 ms later.
T0_MS = 1_767_225_600_000


@dataclass(frozen=True)
class FakeBlock:
    height: int
    tree_size: int
    checkpoint: str
    cut_offset: int


@dataclass(frozen=True)
class FakeRejection:
    offset: int
    entry_id: str
    reason: str
    code: str | None


@dataclass(frozen=True)
class FakeAlarm:
    id: str
    kind: str
    member: str | None
    tree_size: int | None
    checkpoints: list[str]
    signature_lines: list[str]
    detail: str | None
    raised_at: datetime


class MemoryStore:
    """The NodeStore protocol: small state in memory, the log in ``tiles``."""

    def __init__(self, tiles: TileStore) -> None:
        self._lock = threading.Lock()
        self.tiles = tiles
        self.block_docs: dict[int, FakeBlock] = {}
        self.seals: dict[int, tuple[str, tuple[str, ...]]] = {}
        self.rejections: dict[str, FakeRejection] = {}
        self.alarm_docs: dict[str, FakeAlarm] = {}

    @property
    def entries(self) -> list[bytes]:
        """Every stored entry."""
        return self.tiles.read_entries(0, self.tiles.size)

    # recovery
    def load_state(self) -> NodeState:
        newest = max(self.blocks(), key=lambda b: b.height, default=None)
        if newest is None:
            return NodeState(applied_offset=-1, tree_size=0, height=0)
        return NodeState(newest.cut_offset, newest.tree_size, newest.height)

    def blocks(self) -> list[FakeBlock]:
        with self._lock:
            return sorted(self.block_docs.values(), key=lambda b: b.height)

    def stored_entries(self) -> int:
        return self.tiles.stored_entries()

    def truncate(self, size: int) -> None:
        self.tiles.truncate(size)

    def iter_entries(self, size: int) -> Iterator[tuple[int, bytes]]:
        return self.tiles.iter_entries(size)

    def read_tile(self, level: int, index: int, width: int) -> bytes | None:
        return self.tiles.read_tile(level, index, width)

    def sealed_notes(self) -> dict[int, tuple[str, tuple[str, ...]]]:
        with self._lock:
            return dict(self.seals)

    # writes
    def write_log(
        self,
        first_index: int,
        entries: Sequence[bytes],
        tiles: Sequence[tuple[int, int, int, bytes]],
    ) -> None:
        self.tiles.write_log(first_index, entries, tiles)

    def write_block(self, height: int, tree_size: int, checkpoint: str, cut_offset: int) -> None:
        with self._lock:
            self.block_docs.setdefault(height, FakeBlock(height, tree_size, checkpoint, cut_offset))

    def seal_block(self, height: int, note: str, signers: Sequence[str]) -> None:
        with self._lock:
            self.seals.setdefault(height, (note, tuple(signers)))
        self.tiles.write_checkpoint(note)

    def write_rejections(self, rows: Iterable[tuple[int, str, str, str]]) -> None:
        with self._lock:
            for offset, entry_id, reason, code in rows:
                self.rejections[entry_id or f"offset:{offset}"] = FakeRejection(
                    offset, entry_id, reason, code
                )

    def raise_alarm(self, alarm: Alarm, now: datetime | None = None) -> bool:
        with self._lock:
            if alarm.alarm_id in self.alarm_docs:
                return False
            self.alarm_docs[alarm.alarm_id] = FakeAlarm(
                alarm.alarm_id,
                alarm.kind,
                alarm.member,
                alarm.tree_size,
                list(alarm.checkpoints),
                list(alarm.lines),
                alarm.detail,
                now or datetime.now(UTC),
            )
            return True

    # reads
    def read_entries(self, start: int, end: int) -> list[bytes]:
        return self.tiles.read_entries(start, end)

    def find_rejection(self, entry_id: str) -> FakeRejection | None:
        with self._lock:
            return self.rejections.get(entry_id)

    def count_rejections(self) -> int:
        with self._lock:
            return len(self.rejections)

    def alarms(self) -> list[FakeAlarm]:
        with self._lock:
            return list(self.alarm_docs.values())


@dataclass(frozen=True)
class FakeRecord:
    offset: int
    timestamp: int
    value: bytes
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes]] | None = None


class FakeKafka:
    """Single-partition topics, LogAppendTime stamped, shared by producers and readers."""

    def __init__(self) -> None:
        self._topics: dict[str, list[FakeRecord]] = {}
        self._changed = threading.Condition()

    def append(self, topic: str, value: bytes, key: bytes | None = None) -> int:
        with self._changed:
            records = self._topics.setdefault(topic, [])
            offset = len(records)
            records.append(FakeRecord(offset, T0_MS + 5 * offset, value, key))
            self._changed.notify_all()
            return offset

    def records(self, topic: str) -> list[FakeRecord]:
        with self._changed:
            return list(self._topics.get(topic, []))

    def read(self, topic: str, position: int, timeout_s: float, limit: int) -> list[FakeRecord]:
        """Records from ``position`` on, waiting up to ``timeout_s`` for the first."""
        with self._changed:
            self._changed.wait_for(
                lambda: len(self._topics.get(topic, [])) > position, timeout=timeout_s
            )
            return self._topics.get(topic, [])[position : position + limit]


class FakeProducer:
    def __init__(self, kafka: FakeKafka) -> None:
        self._kafka = kafka

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> int:
        return self._kafka.append(topic, value, key)

    def flush(self, timeout: float | None = None) -> None:
        pass


class FakeReader:
    def __init__(self, kafka: FakeKafka, topic: str, position: int, limit: int) -> None:
        self._kafka = kafka
        self._topic = topic
        self._position = position
        self._limit = limit
        self.closed = False

    def poll(self, timeout_ms: int) -> Sequence[PolledRecord]:
        # A short wait keeps stop() quick; the node polls again at once.
        records = self._kafka.read(
            self._topic, self._position, min(timeout_ms, 50) / 1000, self._limit
        )
        if records:
            self._position = records[-1].offset + 1
        return records

    def close(self) -> None:
        self.closed = True


class FakeReaders:
    def __init__(self, kafka: FakeKafka, poll_max_records: int = 5000) -> None:
        self._kafka = kafka
        self._limit = poll_max_records
        self.opened: list[FakeReader] = []

    def ordering(self, topic: str, from_offset: int) -> Reader:
        return self._open(topic, from_offset)

    def cosignatures(self, topic: str) -> Reader:
        return self._open(topic, 0)

    def _open(self, topic: str, position: int) -> FakeReader:
        reader = FakeReader(self._kafka, topic, position, self._limit)
        self.opened.append(reader)
        return reader


def alarm_kinds(store: MemoryStore) -> list[str]:
    return [a.kind for a in store.alarms()]


def by_kind(store: MemoryStore, kind: str) -> list[FakeAlarm]:
    return [a for a in store.alarms() if a.kind == kind]
