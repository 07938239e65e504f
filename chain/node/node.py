"""The running chain node: Kafka order in, blocks and cosigned checkpoints out (DESIGN §3.2-3.4).

Two threads do the work. The *sequencing* thread (:class:`~chain.node.ordering.OrderingLoop`)
reads ``chain.ordering.v1`` in order from the offset after the last persisted block, persists
each block it cuts, and hands it here: this node signs the checkpoint and publishes the
signature. The *cosigning* thread reads ``chain.cosignatures.v1`` from the start and checks
each member's line (:func:`~chain.cosigning.read_cosignature`). A
:class:`~chain.cosigning.CosignatureBook` decides, from the lines and the checkpoints this node
computed itself, when a checkpoint is sealed (``quorum`` distinct members signed our text) and
which alarms to raise; this module stores both. Readers (the ChainService) see only sealed
checkpoints.

All I/O goes through :mod:`chain.node.ports`: the store, the producer and the topic readers are
given to the node, so it runs on in-memory fakes as well as on Mongo and Kafka.

Nothing on either topic stops the node: a record it cannot use is set aside in its store
(:mod:`services.platform.poison`), counted, and raised as a ``POISON_RECORD`` alarm (a forged or
broken cosignature as ``BAD_COSIGNATURE``); on the ordering topic it is also a rejection at its
offset, the same on every node. The broker or the database away is retried with backoff. Both
threads are supervised (:mod:`services.platform.threads`): one that dies anyway stops the other
and takes the process down, health NOT_SERVING, for its supervisor to restart it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from google.protobuf.message import DecodeError
from opentelemetry import metrics

from chain.alarms import POISON_RECORD, Alarm
from chain.consortium import ConsortiumConfig
from chain.cosigning import CosignatureBook, Outcome, SealedCheckpoint, read_cosignature
from chain.entry import ParsedEntry, parse_entry
from chain.errors import InvalidInputError, PreconditionError, VerificationError
from chain.membership import MemberSet, MembershipLog, MembershipRejectedError
from chain.node.entry_index import EntryIndex
from chain.node.entry_spans import EntrySpans
from chain.node.ordering import OrderingLoop
from chain.node.ports import IDLE_WAIT_MS, NodeStore, Producer, Readers
from chain.node.recovery import recover
from chain.note import Signer, signature_line
from chain.sequencer import Block, OrderedRecord, Rejection, Sequencer, entry_record
from chain.tiles import MemoryHashStore
from chain.validation import EntryValidator
from services.platform.poison import PoisonRecord, PoisonSink, set_aside
from services.platform.threads import Stopped, ThreadRegistry, retry_transient, start_supervised
from services.platform.topics import COSIGNATURES_TOPIC, ORDERING_TOPIC
from swiftchain.chain.v1 import ordering_pb2
from swiftchain.common.v1 import common_pb2

__all__ = ["ChainNode", "SealedCheckpoint"]

T = TypeVar("T")
_log = logging.getLogger(__name__)
_meter = metrics.get_meter("swiftchain.chain.node")
_alarms_raised = _meter.create_counter(
    "swiftchain.chain.alarms", description="Alarms raised by this node, by kind and member"
)
_blocks_sealed = _meter.create_counter(
    "swiftchain.chain.checkpoints_sealed", description="Checkpoints this node sealed"
)


#: The most cosignature lines a node holds back until it sequenced their size.
MAX_DEFERRED = 10_000


class ChainNode:
    """One consortium member's node. Create, :meth:`start`, and :meth:`stop` when done.

    ``threads`` supervises its two threads (the process's registry by default); ``poison`` keeps
    the records it sets aside (the process's store by default, see
    :func:`services.platform.poison.use_store`)."""

    def __init__(
        self,
        *,
        name: str,
        config: ConsortiumConfig,
        signer: Signer,
        store: NodeStore,
        producer: Producer,
        readers: Readers,
        ordering_topic: str = ORDERING_TOPIC,
        cosignatures_topic: str = COSIGNATURES_TOPIC,
        threads: ThreadRegistry | None = None,
        poison: PoisonSink | None = None,
    ) -> None:
        if signer.name != name:
            raise VerificationError(f"expected a signing key named {name!r}, got {signer.name!r}")
        self.name = name
        self.config = config
        self._signer = signer
        self._store = store
        self._producer = producer
        self._readers = readers
        self._ordering_topic = ordering_topic
        self._cosignatures_topic = cosignatures_topic
        self.tree = MemoryHashStore()
        self._entry_spans = EntrySpans(name)
        self._index = EntryIndex(store.read_entries)
        self.can_sign = True
        self._lock = threading.Lock()
        self._sealed_changed = threading.Condition(self._lock)
        #: The member sets along the log: advanced by the sequencing thread, read by the
        #: cosigning thread for checkpoints this node computed (sizes it moved past already).
        self.membership = MembershipLog(MemberSet.from_consortium(config))
        # The cosignatures and seals, guarded by _lock (both threads use it, and the readers).
        self._book = CosignatureBook(config, name, self.membership)
        # Cosignature lines for sizes this node has not sequenced yet that did not verify under
        # the keys it knows: a member admitted, or a key replaced, by votes it has not read.
        self._deferred: list[tuple[int, bytes, int]] = []
        self._stop = threading.Event()
        self._supervisor = threads
        self._poison = poison
        self._threads: list[threading.Thread] = []
        self._ordering: OrderingLoop | None = None
        self.alarm_count = 0
        self.failure: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Recover from the store, then start the sequencing and cosigning threads."""
        self._recover()
        for target, name in ((self._sequence_loop, "sequencer"), (self._cosign_loop, "cosigner")):
            thread = start_supervised(name, self._guard(target), registry=self._supervisor)
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop both threads (the store stays consistent whenever this happens)."""
        self._stop.set()
        with self._lock:
            self._sealed_changed.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._producer.flush(timeout)

    @property
    def running(self) -> bool:
        """True while both threads are alive."""
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        """``target``, which on dying stops the other thread too (and is reported by the
        supervisor: the process goes down rather than serve a log that stopped)."""

        def run() -> None:
            try:
                target()
            except BaseException as error:
                if not self._stop.is_set():
                    self.failure = error
                self._stop.set()
                raise

        return run

    def _retry(self, operation: Callable[[], T], doing: str) -> T:
        """``operation()``, retried while the store or the broker is away."""
        return retry_transient(operation, stop=self._stop, doing=f"node {self.name}: {doing}")

    def _recover(self) -> None:
        recovery = recover(
            self._store, self.config, self.name, self.tree, self._index, self.membership
        )
        self.can_sign = recovery.can_sign
        for alarm in recovery.alarms:
            self._raise(alarm)
        with self._lock:
            for sealed in recovery.sealed:
                self._book.restore(sealed)
            for block in recovery.unsealed:
                self._book.computed(block.height, block.tree_size, block.text, block.cut_offset)
        # Cosignatures are sent unflushed: those of persisted blocks not yet sealed may have been
        # lost with the process, so they are sent again (a line read twice is ignored).
        for block in recovery.unsealed:
            self._publish_cosignature(block.height, block.tree_size, block.text)
        state = recovery.state
        sequencer = Sequencer(
            self.config,
            self.tree,
            EntryValidator(recovery.registry, membership=self.membership),
            next_height=state.height + 1,
            previous_hash=recovery.previous_hash,
        )
        self._ordering = OrderingLoop(
            node_name=self.name,
            sequencer=sequencer,
            store=self._store,
            tree=self.tree,
            index=self._index,
            producer=self._producer,
            topic=self._ordering_topic,
            batch_timeout_ms=self.config.batch_timeout_ms,
            spans=self._entry_spans,
            on_persisted=self._persisted,
            on_rejected=self._notify_progress,
            applied_offset=state.applied_offset,
            on_undecodable=self._undecodable_ordering,
        )
        _log.info(
            "node %s recovered: %d entries, height %d, offset %d%s",
            self.name,
            state.tree_size,
            state.height,
            state.applied_offset,
            "" if self.can_sign else " — REFUSING TO SIGN: the store disagrees with itself",
        )

    # ------------------------------------------------------------------ sequencing

    def _sequence_loop(self) -> None:
        assert self._ordering is not None
        reader = self._readers.ordering(self._ordering_topic, self._ordering.applied_offset + 1)
        try:
            self._ordering.run(reader, self._stop)
        finally:
            reader.close()

    def _persisted(self, block: Block) -> None:
        """A block is stored: sign its checkpoint, and seal it if the others signed first."""
        checkpoint = block.checkpoint
        with self._lock:
            outcome = self._book.computed(
                checkpoint.height, checkpoint.size, block.text, block.cut_offset
            )
            self._sealed_changed.notify_all()
        self._publish_cosignature(checkpoint.height, checkpoint.size, block.text)
        self._entry_spans.persisted(block.cut_offset, checkpoint.size)
        self._apply(outcome)
        self._retry_deferred(checkpoint.size)

    def _retry_deferred(self, tree_size: int) -> None:
        """Check again the lines deferred for sizes up to ``tree_size``, now sequenced."""
        with self._lock:
            due = [d for d in self._deferred if d[0] <= tree_size]
            self._deferred = [d for d in self._deferred if d[0] > tree_size]
        for _, value, offset in due:
            self._on_cosignature(value, offset)

    def _publish_cosignature(self, height: int, tree_size: int, text: str) -> None:
        """Sign a persisted block's checkpoint and send the line to the cosignatures topic.

        Not flushed: the producer (idempotent, acks=all) delivers it in the background while
        the next block is read, instead of the sequencing thread waiting a broker round trip per
        block (its p50 6 ms, p99 58 ms under load). A line lost in a crash is sent again by
        :meth:`_recover`; a line read twice is ignored, and Ed25519 lines are deterministic."""
        if not self.can_sign:
            return
        message = ordering_pb2.Cosignature(
            node=self.name,
            height=height,
            tree_size=tree_size,
            checkpoint=text,
            signature_line=signature_line(self._signer, text),
        )
        value = message.SerializeToString()
        self._retry(
            lambda: self._producer.send(self._cosignatures_topic, value, key=self.name.encode()),
            f"publishing the cosignature of block {height}",
        )

    # ------------------------------------------------------------------ cosigning

    def _cosign_loop(self) -> None:
        reader = self._readers.cosignatures(self._cosignatures_topic)
        try:
            while not self._stop.is_set():
                records: Sequence[Any] = self._retry(
                    lambda: reader.poll(IDLE_WAIT_MS), "reading cosignatures"
                )
                for record in records:
                    self._on_cosignature_record(record)
        finally:
            reader.close()

    def _on_cosignature_record(self, record: Any) -> None:
        """Take one record of the cosignatures topic, or set it aside."""
        value: bytes | None = record.value
        if value is None:
            reason = "expected a Cosignature, got a record with no value"
        elif not value:
            reason = "expected a Cosignature, got an empty record"
        else:
            try:
                ordering_pb2.Cosignature.FromString(value)
            except DecodeError:
                reason = "expected a Cosignature, got other bytes"
            else:
                try:
                    self._on_cosignature(value, record.offset)
                except Stopped:
                    raise
                except Exception as error:  # a record we cannot apply must not stop the node
                    reason = f"could not apply the cosignature: {type(error).__name__}: {error}"
                else:
                    return
        self._set_aside(self._cosignatures_topic, record.offset, reason, value)

    def _on_cosignature(self, value: bytes, offset: int) -> None:
        cosignature = read_cosignature(value, self.config, self.membership)  # outside the lock
        if isinstance(cosignature, Alarm) and self._defer(value, offset):
            return
        if isinstance(cosignature, Alarm):
            self._keep(self._cosignatures_topic, offset, cosignature.detail, value)
            self._raise(cosignature)
            return
        with self._lock:
            outcome = self._book.add(cosignature)
            if outcome.sealed is not None:
                self._sealed_changed.notify_all()
        self._apply(outcome)

    def _defer(self, value: bytes, offset: int) -> bool:
        """Keep an unverifiable line for a size this node has not sequenced yet (at most
        :data:`MAX_DEFERRED` of them); True if kept."""
        tree_size = ordering_pb2.Cosignature.FromString(value).tree_size
        with self._lock:
            if tree_size <= self.tree.size or len(self._deferred) >= MAX_DEFERRED:
                return False
            self._deferred.append((tree_size, value, offset))
        return True

    def _apply(self, outcome: Outcome) -> None:
        """Store what an event did: its alarms, then its seal."""
        for alarm in outcome.alarms:
            self._raise(alarm)
        sealed = outcome.sealed
        if sealed is None:
            return
        # Visible first (the book holds it, waiters are woken), stored after: the seal follows
        # from the cosignatures topic, which a restarted node reads from the start, so a crash
        # between the two loses nothing; and the write (p99 28 ms on FerretDB under load) no
        # longer delays every reader.
        self._retry(
            lambda: self._store.seal_block(sealed.height, sealed.note, sealed.signers),
            f"storing the seal of block {sealed.height}",
        )
        _blocks_sealed.add(1)
        self._entry_spans.sealed(sealed.tree_size)

    def _raise(self, alarm: Alarm) -> None:
        """Store ``alarm`` once; count and log it if it is new."""
        if self._retry(lambda: self._store.raise_alarm(alarm), f"storing a {alarm.kind} alarm"):
            self.alarm_count += 1
            _alarms_raised.add(1, {"kind": alarm.kind, "member": alarm.member})
            _log.error("ALARM %s: %s", alarm.kind, alarm.detail)

    def _undecodable_ordering(self, record: OrderedRecord, rejection: Rejection) -> None:
        """A record of the ordering topic that was not an ordering record (the sequencer
        rejected it at its offset, as every node does)."""
        self._set_aside(self._ordering_topic, record.offset, rejection.reason, record.value)

    def _keep(self, topic: str, offset: int, reason: str, value: bytes | None) -> bool:
        """Keep a record this node cannot use in its store and count it; True if new."""
        # Named as the node's Kafka clients are (chain/node/kafka_readers.py).
        consumer = f"chain-node-{self.name}"
        if topic != self._ordering_topic:
            consumer += "-cosign"
        record = PoisonRecord(consumer, topic, 0, offset, reason, value)
        return set_aside(record, self._stop, sink=self._poison)

    def _set_aside(self, topic: str, offset: int, reason: str, value: bytes | None) -> None:
        """Keep the record (see :meth:`_keep`) and raise a ``POISON_RECORD`` alarm about it."""
        self._keep(topic, offset, reason, value)
        where = f"{topic}/0/{offset}"
        detail = f"set aside {topic} partition 0 offset {offset}: {reason}"
        self._raise(Alarm(POISON_RECORD, "", self.tree.size, detail, source=where))

    # ------------------------------------------------------------------ membership votes

    def submit_membership(self, raw: bytes, action: str) -> ParsedEntry:
        """Send a member's signed vote (``action``: ``proposal`` or ``approval``) to the
        ordering topic, once it holds against the member set this node has reached: what the
        log would reject there is refused (:class:`PreconditionError` naming the rejection
        reason) instead of ordered. The log still decides at the entry's own position."""
        parsed = parse_entry(raw)
        got = (
            parsed.body.membership.WhichOneof("action")
            if parsed.kind == common_pb2.ENTRY_KIND_MEMBERSHIP
            else f"{parsed.kind_name} entry"
        )
        if got != action:
            raise InvalidInputError(f"expected a MEMBERSHIP entry carrying a {action}, got {got}")
        try:
            self.membership.check(parsed)
        except MembershipRejectedError as error:
            raise PreconditionError(
                f"the log would reject this {action} at leaf {self.membership.position} "
                f"({error.reason}): {error}"
            ) from None
        value = entry_record(raw)
        self._retry(
            lambda: self._producer.send(self._ordering_topic, value), f"submitting a {action}"
        )
        self._retry(lambda: self._producer.flush(), f"submitting a {action}")
        return parsed

    def membership_entries(self, tree_size: int) -> list[tuple[int, bytes]]:
        """The MEMBERSHIP entries below ``tree_size`` (a persisted size) and their leaf indexes,
        in log order: what a verifier needs to follow the votes from the genesis."""
        indexes = [i for i in list(self.membership.entry_indexes) if i < tree_size]
        return [(i, self._store.read_entries(i, i + 1)[0]) for i in indexes]

    # ------------------------------------------------------------------ reads

    @property
    def store(self) -> NodeStore:
        """The node's store (read-only use by the service)."""
        return self._store

    @property
    def applied_offset(self) -> int:
        """The ordering offset of the last persisted block's cut (-1 before any)."""
        return self._ordering.applied_offset if self._ordering else -1

    @property
    def end_offset(self) -> int:
        """The ordering offset after the last record read."""
        return self._ordering.end_offset if self._ordering else 0

    @property
    def pending_count(self) -> int:
        """Valid entries waiting for the next cut."""
        return self._ordering.sequencer.pending_count if self._ordering else 0

    def is_pending(self, entry_id: str) -> bool:
        """True if ``entry_id`` is valid and waiting for the next cut."""
        ordering = self._ordering
        return ordering is not None and any(
            e.parsed.entry_id == entry_id for e in list(ordering.sequencer.pending)
        )

    def find_leaf(self, entry_id: str) -> int | None:
        """The leaf index of ``entry_id`` if it is in a persisted block, else None."""
        return self._index.find_leaf(entry_id)

    def latest_sealed(self) -> SealedCheckpoint | None:
        """The newest sealed checkpoint, if any."""
        with self._lock:
            return self._book.latest

    def sealed_checkpoints(self, from_size: int = 0) -> list[SealedCheckpoint]:
        """Sealed checkpoints with tree size >= ``from_size``, oldest first."""
        with self._lock:
            return self._book.sealed_from(from_size)

    def sealed_at(self, tree_size: int) -> SealedCheckpoint | None:
        """The sealed checkpoint of exactly ``tree_size`` leaves, if there is one."""
        with self._lock:
            return self._book.sealed_at(tree_size)

    def _notify_progress(self) -> None:
        with self._lock:
            self._sealed_changed.notify_all()

    def wait_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Wait up to ``timeout`` s until ``condition()`` holds; it is checked now and after
        every block, seal and rejection. Returns whether it held."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                if condition():
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    return False
                self._sealed_changed.wait(remaining)

    def wait_sealed(
        self, predicate: Callable[[SealedCheckpoint], bool], timeout: float
    ) -> SealedCheckpoint | None:
        """Wait up to ``timeout`` s for a sealed checkpoint satisfying ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                latest = self._book.latest
                if latest is not None and predicate(latest):
                    return latest
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    return None
                self._sealed_changed.wait(remaining)
