"""What a :class:`~chain.node.node.ChainNode` needs from the world, as narrow interfaces.

The node does its I/O through these: a :class:`NodeStore` (``chain/node/store.py`` on Mongo in
production), a :class:`Producer` (an idempotent Kafka producer) and :class:`Readers` that open
the two topics it reads (``chain/node/kafka_readers.py``). Tests run the node on in-memory fakes
of all three.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
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
    @property
    def tail_first(self) -> int | None: ...
    @property
    def tail(self) -> bytes | None: ...
    #: Tiles the block left partial: dicts with ``level``, ``index``, ``width``, ``data``.
    @property
    def partial_tiles(self) -> Sequence[Mapping[str, Any]] | None: ...


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
    """The node's small state and its entries (DESIGN §3.4); see ``chain/node/store.py``."""

    # recovery
    def load_state(self) -> NodeState: ...
    def blocks(self) -> Sequence[StoredBlock]: ...
    def restore_tail(self, size: int, blocks: Sequence[StoredBlock]) -> None: ...
    def iter_entries(self, size: int) -> Iterator[tuple[int, bytes]]: ...
    def read_all_tiles(self) -> dict[tuple[int, int], tuple[int, bytes]]: ...
    def sealed_notes(self) -> dict[int, tuple[str, tuple[str, ...]]]: ...

    # blocks, seals, rejections, alarms
    def write_entries(
        self, first_index: int, entries: Sequence[bytes]
    ) -> tuple[int, list[bytes]]: ...
    def write_full_tiles(self, tiles: Iterable[tuple[int, int, int, bytes]]) -> None: ...
    def write_block(
        self,
        height: int,
        tree_size: int,
        checkpoint: str,
        cut_offset: int,
        tail: tuple[int, list[bytes]],
        partial_tiles: Sequence[tuple[int, int, int, bytes]] = (),
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
