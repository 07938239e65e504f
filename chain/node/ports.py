"""What a :class:`~chain.node.node.ChainNode` needs from the world, as narrow interfaces.

The node does its I/O through these: a :class:`NodeStore` (``chain/node/store.py``: small state
in Mongo, the log as tlog-tiles files in the data directory), a :class:`Producer` (an idempotent
Kafka producer) and :class:`Readers` that open the two topics it reads
(``chain/node/kafka_readers.py``). Tests run the node on in-memory fakes of all three (the log
files of a fake store in a temporary folder).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from chain.alarms import Alarm

__all__ = [
    "IDLE_WAIT_MS",
    "NodeState",
    "NodeStore",
    "PolledRecord",
    "Producer",
    "Reader",
    "Readers",
    "StoredAlarm",
    "StoredBlock",
    "StoredRejection",
]

#: The longest a node's Kafka fetch waits at the broker, and its poll, while nothing comes. The
#: broker answers a waiting fetch as soon as a record arrives, so a long wait costs no latency;
#: what it saves is idle polling (every 10 ms before: ~0.15 core a node, and as much in Kafka).
IDLE_WAIT_MS = 500


@dataclass(frozen=True)
class NodeState:
    """The persisted position of the node."""

    applied_offset: int
    tree_size: int
    height: int


class StoredBlock(Protocol):
    """A persisted block as recovery reads it."""

    @property
    def height(self) -> int: ...
    @property
    def tree_size(self) -> int: ...
    @property
    def checkpoint(self) -> str: ...
    @property
    def cut_offset(self) -> int: ...


class StoredRejection(Protocol):
    """An entry left out of the log, as the service reports it."""

    @property
    def offset(self) -> int: ...
    @property
    def reason(self) -> str: ...
    @property
    def code(self) -> str | None: ...


class StoredAlarm(Protocol):
    """A stored alarm, as the service lists it."""

    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def member(self) -> str | None: ...
    @property
    def tree_size(self) -> int | None: ...
    @property
    def checkpoints(self) -> Sequence[str]: ...
    @property
    def signature_lines(self) -> Sequence[str]: ...
    @property
    def detail(self) -> str | None: ...
    @property
    def raised_at(self) -> datetime: ...


class NodeStore(Protocol):
    """The node's small state and its log (DESIGN §3.4); see ``chain/node/store.py``."""

    # recovery
    def load_state(self) -> NodeState: ...
    def blocks(self) -> Sequence[StoredBlock]: ...
    def sealed_notes(self) -> dict[int, tuple[str, tuple[str, ...]]]: ...
    def stored_entries(self) -> int:
        """How many entries the log files hold from leaf 0 on, as found (0 when empty)."""
        ...

    def truncate(self, size: int) -> None:
        """Make the log files hold exactly the log of ``size`` entries."""
        ...

    def iter_entries(self, size: int) -> Iterator[tuple[int, bytes]]:
        """The first ``size`` entries in order; raises a ``SwiftchainError`` where damaged."""
        ...

    def read_tile(self, level: int, index: int, width: int) -> bytes | None:
        """The first ``width`` hashes of tile ``(level, index)``, or None if not stored."""
        ...

    # writes: a block's files, then its commit record; seals, rejections, alarms
    def write_log(
        self,
        first_index: int,
        entries: Sequence[bytes],
        tiles: Sequence[tuple[int, int, int, bytes]],
    ) -> None: ...
    def write_block(
        self, height: int, tree_size: int, checkpoint: str, cut_offset: int
    ) -> None: ...
    def seal_block(self, height: int, note: str, signers: Sequence[str]) -> None: ...
    def write_rejections(self, rows: Iterable[tuple[int, str, str, str]]) -> None: ...
    def raise_alarm(self, alarm: Alarm, now: datetime | None = None) -> bool:
        """Store ``alarm`` once (by its id); True if it is new."""
        ...

    # reads (the node's entry index and the service)
    def read_entries(self, start: int, end: int) -> list[bytes]: ...
    def find_rejection(self, entry_id: str) -> StoredRejection | None: ...
    def count_rejections(self) -> int: ...
    def alarms(self) -> Sequence[StoredAlarm]: ...


class PolledRecord(Protocol):
    """A record read from a topic (a kafka-python ``ConsumerRecord`` has these)."""

    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def value(self) -> bytes: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]] | None: ...


class Reader(Protocol):
    """One partition of one topic, read in order from where it was opened."""

    def poll(self, timeout_ms: int) -> Sequence[PolledRecord]:
        """The next records, waiting up to ``timeout_ms`` for the first one."""
        ...

    def close(self) -> None: ...


class Readers(Protocol):
    """Opens the node's two readers (each thread opens and closes its own)."""

    def ordering(self, topic: str, from_offset: int) -> Reader:
        """The ordering topic from ``from_offset`` on."""
        ...

    def cosignatures(self, topic: str) -> Reader:
        """The cosignatures topic from its beginning."""
        ...


class Producer(Protocol):
    """Sends records (the node's time-to-cut messages and its cosignatures)."""

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any: ...
    def flush(self, timeout: float | None = None) -> Any: ...
