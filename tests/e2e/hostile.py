"""A hostile client of a running platform (issue #24): it holds thousands of idle streams on
every process and writes poison records to every topic while the demo runs.

The servers' limits count an anonymous caller by its network address, so a neighbour that
holds thousands of streams comes from many addresses: :class:`StreamHolder` reaches each
public port through relays of its own that connect from other loopback addresses
(127.0.0.2, 127.0.0.3, ...), and each server sees as many neighbours. Every group of streams
asks for more than one caller may hold, so the servers refuse some: each refusal must be
RESOURCE_EXHAUSTED with a retry hint. The streams are grpc.aio calls on an event loop of the
holder's own thread, while the test goes on in its own.

:class:`PoisonWriter` writes records no consumer can use (a null value, no bytes, bytes that
are no protobuf, a protobuf of another type) to every topic, as the stack's admin: the worst
case of a client that holds a certificate the broker lets write anywhere.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.parties import Principal, StackParties
from services.platform.kafka import KafkaSecurity, make_producer
from services.platform.tls import client_credentials, public_client_credentials
from services.platform.topics import COSIGNATURES_TOPIC, EVENT_TOPICS, ORDERING_TOPIC
from swiftchain.audit.v1 import audit_service_pb2, audit_service_pb2_grpc
from swiftchain.chain.v1 import chain_service_pb2, chain_service_pb2_grpc, ordering_pb2
from swiftchain.consent.v1 import consent_service_pb2, consent_service_pb2_grpc

_T = TypeVar("_T")
_SERVING = health_pb2.HealthCheckResponse.SERVING
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
#: Seconds a group of streams may take to settle (each answered, refused, or as many refused
#: as the limit says) before the holder calls it a hang.
SETTLE_TIMEOUT = 120.0


# --- streams ----------------------------------------------------------------------------------


class _Loop:
    """An asyncio event loop on a daemon thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="hostile", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        if not self._thread.is_alive():
            self.loop.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:  # the other side went away: so does this one
        pass
    finally:
        writer.close()


class _Relay:
    """Takes connections on 127.0.0.1 and forwards each to ``target`` from address
    ``source``: whoever listens on ``target`` sees the caller at ``source``."""

    def __init__(self, target: tuple[str, int], source: str) -> None:
        self._target = target
        self._source = source
        self._pipes: list[asyncio.Task[Any]] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        """Listen; return the address to connect to."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await asyncio.open_connection(*self._target, local_addr=(self._source, 0))
        except OSError:
            writer.close()
            return
        loop = asyncio.get_running_loop()
        self._pipes += [
            loop.create_task(_pump(reader, upstream[1])),
            loop.create_task(_pump(upstream[0], writer)),
        ]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pipe in self._pipes:
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)


def retry_delay(error: grpc.aio.AioRpcError) -> float | None:
    """The ``google.rpc.RetryInfo`` delay a refusal carries, in seconds (None without one)."""
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        for detail in status_pb2.Status.FromString(value).details:
            if detail.type_url == _RETRY_INFO:
                info = error_details_pb2.RetryInfo.FromString(detail.value)
                return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


@dataclass
class HeldStream:
    """One server stream: what it answered, and how it ended."""

    call: Any
    answers: int = 0
    #: Answers that were not what an idle stream of its kind may say (a health watch that hears
    #: anything but SERVING).
    unexpected: list[str] = field(default_factory=list)
    #: The status it ended with, if the server ended it with an error.
    error: grpc.aio.AioRpcError | None = None
    #: The server ended it with OK (an idle stream never ends by itself).
    ended: bool = False
    #: The test closed it.
    closed: bool = False
    task: asyncio.Task[None] | None = None

    async def follow(self, check: Callable[[Any], str | None]) -> None:
        """Read the answers until the stream ends."""
        try:
            async for answer in self.call:
                self.answers += 1
                problem = check(answer)
                if problem:
                    self.unexpected.append(problem)
        except grpc.aio.AioRpcError as error:
            self.error = error
        except asyncio.CancelledError:
            if not self.closed:  # cancelled by anyone but this test
                raise
        else:
            self.ended = not self.closed

    @property
    def held(self) -> bool:
        """Held open by the server (until now, or until the test closed it)."""
        return self.error is None and not self.ended

    @property
    def open(self) -> bool:
        """Held open by the server and not closed yet by the test."""
        return self.held and not self.closed


@dataclass
class StreamGroup:
    """Streams of one kind that one caller opened on one server, more than it may hold."""

    label: str
    #: The most streams one caller may hold on that server.
    limit: int
    #: Whether an accepted stream may stay silent (nothing to send yet): it then counts as
    #: held until the server ends it.
    silent: bool
    streams: list[HeldStream] = field(default_factory=list)

    @property
    def held(self) -> list[HeldStream]:
        """The streams the server holds open."""
        return [s for s in self.streams if s.held]

    @property
    def refused(self) -> list[grpc.aio.AioRpcError]:
        """How the server ended the others with an error."""
        return [s.error for s in self.streams if s.error is not None]

    def settled(self) -> bool:
        """Every stream answered or ended (or, for silent streams, as many ended as the
        limit leaves no room for)."""
        if self.silent:
            return len(self.streams) - len(self.held) >= len(self.streams) - self.limit
        return all(s.answers or not s.held for s in self.streams)

    def problems(self) -> list[str]:
        """What a hostile caller must never see: a refusal that is not RESOURCE_EXHAUSTED with
        a retry hint, a stream ended after it was answered (the server let go of an idle
        stream), more streams held than the limit, answers an idle stream never gets."""
        found = [
            f"{self.label}: refused with {e.code().name} ({e.details()}) and retry hint "
            f"{retry_delay(e)}"
            for e in self.refused
            if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or not retry_delay(e)
        ]
        dropped = [s for s in self.streams if s.answers and not s.held]
        if dropped:
            found.append(f"{self.label}: {len(dropped)} streams ended after they were answered")
        ended = [s for s in self.streams if s.ended and not s.answers]
        if ended:
            found.append(f"{self.label}: {len(ended)} streams ended with OK, unanswered")
        if len(self.held) > self.limit:
            found.append(f"{self.label}: {len(self.held)} held, over the limit of {self.limit}")
        found += [f"{self.label}: {problem}" for s in self.streams for problem in s.unexpected]
        return found


def _serving(answer: health_pb2.HealthCheckResponse) -> str | None:
    return None if answer.status == _SERVING else f"health said {answer.status}"


def _anything(_answer: Any) -> str | None:
    return None


@dataclass(frozen=True)
class StreamPlan:
    """How many streams :class:`StreamHolder` opens: per caller and server, ``over`` more than
    ``limit`` (the servers' ``max_streams_per_caller``), from ``neighbours`` addresses on every
    public port, and as a regulator and a patient on the main ones."""

    limit: int
    over: int = 10
    neighbours: int = 3

    @property
    def per_group(self) -> int:
        """Streams asked for by one caller of one server."""
        return self.limit + self.over

    def addresses(self) -> list[str]:
        """The neighbours' addresses."""
        return [f"127.0.0.{2 + n}" for n in range(self.neighbours)]


class StreamHolder:
    """Holds the streams of a :class:`StreamPlan` on every process of a stack; see the module
    docstring. Use from one thread (the test's); the streams live on the holder's."""

    def __init__(self, parties: StackParties, regulator: Principal, patient: Principal) -> None:
        self._parties = parties
        self._regulator = regulator
        self._patient = patient
        self._loop = _Loop()
        self._relays: list[_Relay] = []
        self._channels: list[grpc.aio.Channel] = []
        self.groups: list[StreamGroup] = []
        #: The relay to each public port from each neighbour address, by (process, address).
        self._relayed: dict[tuple[str, str], str] = {}

    # --- opening ------------------------------------------------------------------------------

    def hold(self, plan: StreamPlan) -> None:
        """Open every stream of ``plan`` and wait until each group has settled (see
        :meth:`StreamGroup.settled`); AssertionError naming the groups that did not within
        :data:`SETTLE_TIMEOUT` (a stream neither answered nor refused: a hang)."""
        # The patient's token comes from a (synchronous) login: fetched on this thread.
        bearer = self._parties.bearer(self._patient)
        checkpoints = {node: self._sealed_size(node) for node, _ in self._parties.ports.nodes}
        self._loop.run(self._open(plan, bearer, checkpoints))
        self._loop.run(self._settle(), timeout=SETTLE_TIMEOUT + 30)

    def _sealed_size(self, node: str) -> int:
        """The tree size of ``node``'s latest sealed checkpoint; 0 while none is sealed."""
        try:
            return self._parties.sealed_checkpoint(node).tree_size
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.FAILED_PRECONDITION:  # nothing sealed yet
                return 0
            raise

    async def _open(
        self, plan: StreamPlan, bearer: tuple[tuple[str, str], ...], sizes: dict[str, int]
    ) -> None:
        await self._open_anonymous(plan)
        await self._open_authenticated(plan, bearer, sizes)

    async def _open_anonymous(self, plan: StreamPlan) -> None:
        """Health watches on every public port, from each neighbour address."""
        parties = self._parties
        ca_pem = parties.pki.ca_pem
        for process in parties.grpc_process_names():
            for address in plan.addresses():
                relay = _Relay(("127.0.0.1", parties.ports.public_port(process)), address)
                self._relays.append(relay)
                target = await relay.start()
                self._relayed[(process, address)] = target
                channel = self._channel(target, public_client_credentials(ca_pem))
                watch = health_pb2_grpc.HealthStub(channel).Watch
                self._start(
                    StreamGroup(f"{process} Health.Watch from {address}", plan.limit, False),
                    plan.per_group,
                    functools.partial(watch, health_pb2.HealthCheckRequest()),
                    _serving,
                )

    async def _open_authenticated(
        self, plan: StreamPlan, bearer: tuple[tuple[str, str], ...], sizes: dict[str, int]
    ) -> None:
        """Checkpoint watches on every node and trail follows as the regulator, notification
        watches as the patient."""
        parties = self._parties
        ca_pem = parties.pki.ca_pem
        regulator = client_credentials(self._main_folder(self._regulator))
        for node, size in sizes.items():
            chain = chain_service_pb2_grpc.ChainServiceStub(
                self._channel(parties.target(node), regulator)
            )
            request = chain_service_pb2.WatchCheckpointsRequest(from_tree_size=size)
            self._start(
                # silent until the first checkpoint is sealed, on a fresh stack
                StreamGroup(f"{node} WatchCheckpoints as the regulator", plan.limit, True),
                plan.per_group,
                functools.partial(chain.WatchCheckpoints, request),
                _anything,
            )
        audit = audit_service_pb2_grpc.AuditServiceStub(
            self._channel(parties.target("audit"), regulator)
        )
        trail = audit_service_pb2.StreamTrailRequest(
            filter=audit_service_pb2.TrailFilter(patient_subject_id=self._patient.id), follow=True
        )
        self._start(
            StreamGroup("audit StreamTrail(follow) as the regulator", plan.limit, True),
            plan.per_group,
            lambda: audit.StreamTrail(trail),
            _anything,
        )
        consent = consent_service_pb2_grpc.ConsentServiceStub(
            self._channel(parties.target("consent", public=True), public_client_credentials(ca_pem))
        )
        watch_request = consent_service_pb2.WatchNotificationsRequest(
            patient_subject_id=self._patient.id
        )
        self._start(
            StreamGroup("consent WatchNotifications as the patient", plan.limit, True),
            plan.per_group,
            lambda: consent.WatchNotifications(watch_request, metadata=bearer),
            _anything,
        )

    @staticmethod
    def _main_folder(principal: Principal) -> Path:
        assert principal.tls_dir is not None, f"{principal.label} has no certificate"
        return principal.tls_dir

    def _channel(self, target: str, credentials: grpc.ChannelCredentials) -> grpc.aio.Channel:
        channel = grpc.aio.secure_channel(target, credentials)
        self._channels.append(channel)
        return channel

    def _start(
        self,
        group: StreamGroup,
        count: int,
        call: Callable[[], Any],
        check: Callable[[Any], str | None],
    ) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(count):
            stream = HeldStream(call())
            stream.task = loop.create_task(stream.follow(check))
            group.streams.append(stream)
        self.groups.append(group)

    async def _settle(self) -> None:
        deadline = asyncio.get_running_loop().time() + SETTLE_TIMEOUT
        pause = 0.1
        while not all(group.settled() for group in self.groups):
            if asyncio.get_running_loop().time() > deadline:
                waiting = [g.label for g in self.groups if not g.settled()]
                raise AssertionError(
                    f"streams neither answered nor refused after {SETTLE_TIMEOUT:.0f}s: {waiting}"
                )
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, 1.0)

    # --- what the servers did -----------------------------------------------------------------

    def counts(self) -> tuple[int, int, int]:
        """(streams asked for, held, refused) over every group."""
        asked = sum(len(g.streams) for g in self.groups)
        held = sum(len(g.held) for g in self.groups)
        return asked, held, asked - held

    def anonymous_held(self) -> int:
        """Anonymous health watches the servers hold."""
        return sum(len(g.held) for g in self.groups if "Health.Watch" in g.label)

    def problems(self) -> list[str]:
        """Every group's :meth:`StreamGroup.problems`."""
        return [problem for group in self.groups for problem in group.problems()]

    # --- closing ------------------------------------------------------------------------------

    def close(self) -> int:
        """Cancel every stream the servers still hold and wait until each has ended; return
        how many there were. The channels and relays stay for :meth:`reopen_one`."""
        return self._loop.run(self._close(), timeout=120)

    async def _close(self) -> int:
        still_open = [s for g in self.groups for s in g.streams if s.open]
        for stream in still_open:
            stream.closed = True
            stream.call.cancel()
        await asyncio.gather(*(s.task for g in self.groups for s in g.streams if s.task))
        return len(still_open)

    def reopen_one(self, process: str, address: str) -> HeldStream:
        """One more health watch on ``process`` from ``address`` (closed again at once): the
        server holds it only if it let go of the streams :meth:`close` ended."""
        return self._loop.run(self._reopen_one(process, address), timeout=60)

    async def _reopen_one(self, process: str, address: str) -> HeldStream:
        channel = self._channel(
            self._relayed[(process, address)], public_client_credentials(self._parties.pki.ca_pem)
        )
        watch = health_pb2_grpc.HealthStub(channel).Watch
        stream = HeldStream(watch(health_pb2.HealthCheckRequest()))
        try:
            async for answer in stream.call:
                stream.answers += 1
                stream.unexpected += [p for p in (_serving(answer),) if p]
                break
        except grpc.aio.AioRpcError as error:
            stream.error = error
        stream.closed = True
        stream.call.cancel()
        return stream

    def shutdown(self) -> None:
        """Close the channels and relays and end the holder's thread."""
        try:
            self._loop.run(self._shutdown(), timeout=60)
        finally:
            self._loop.close()

    async def _shutdown(self) -> None:
        open_tasks = [
            s for g in self.groups for s in g.streams if s.task is not None and not s.task.done()
        ]
        for stream in open_tasks:
            stream.closed = True
            stream.call.cancel()
        await asyncio.gather(*(s.task for s in open_tasks if s.task), return_exceptions=True)
        for channel in self._channels:
            await channel.close()
        for relay in self._relays:
            await relay.close()


# --- poison -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Poison:
    """A poison record written: where it landed, and what it was."""

    topic: str
    partition: int
    offset: int
    kind: str


def _junk() -> bytes:
    # Eleven bytes with the high bit set are a varint longer than protobuf allows: whatever
    # random bytes follow, no parser takes it for a message.
    return b"\xff" * 11 + os.urandom(53)


def _of_another_type(topic: str) -> bytes:
    """A well-formed protobuf of a type that does not belong on ``topic``."""
    if topic == ORDERING_TOPIC:  # a cosignature where entries go
        return ordering_pb2.Cosignature(
            node="hospital-a", height=1, tree_size=1, checkpoint="forged", signature_line="—"
        ).SerializeToString()
    if topic == COSIGNATURES_TOPIC:  # an ordering record where cosignatures go
        record = ordering_pb2.OrderingRecord(ttc=ordering_pb2.TimeToCut(height=1, node="x"))
        return record.SerializeToString()
    # a cosignature where event envelopes go
    return ordering_pb2.Cosignature(node="hospital-a", tree_size=3).SerializeToString()


#: The poison of every topic: (kind, a function of the topic giving the value).
POISON_KINDS: tuple[tuple[str, Callable[[str], bytes | None]], ...] = (
    ("null value", lambda _topic: None),
    ("empty value", lambda _topic: b""),
    ("random bytes", lambda _topic: _junk()),
    ("another type", _of_another_type),
)
#: Every topic the platform reads.
POISONED_TOPICS: tuple[str, ...] = (ORDERING_TOPIC, COSIGNATURES_TOPIC, *EVENT_TOPICS)


class PoisonWriter:
    """Writes poison to every topic as the principal of ``tls_dir`` (a Kafka client
    certificate of the stack's PKI)."""

    def __init__(self, bootstrap: str, tls_dir: Path) -> None:
        self._producer = make_producer(
            bootstrap, "hostile", security=KafkaSecurity.tls(tls_dir), linger_ms=0
        )
        self.written: list[Poison] = []
        self._rounds = 0

    def round(self) -> list[Poison]:
        """One of each :data:`POISON_KINDS` on every topic of :data:`POISONED_TOPICS`, on the
        next partition of each in turn; return them (also kept in :attr:`written`)."""
        written: list[Poison] = []
        for topic in POISONED_TOPICS:
            partitions = sorted(self._producer.partitions_for(topic) or {0})
            partition = partitions[self._rounds % len(partitions)]
            for kind, value in POISON_KINDS:
                sent = self._producer.send(
                    topic, value=value(topic), key=b"hostile", partition=partition
                ).get(timeout=60)
                written.append(Poison(topic, sent.partition, sent.offset, kind))
        self._rounds += 1
        self.written += written
        return written

    def sent_to(self, topic: str) -> list[Poison]:
        """The poison written to ``topic`` so far."""
        return [p for p in self.written if p.topic == topic]

    def close(self) -> None:
        """Flush and close the producer."""
        self._producer.close(timeout=30)


__all__ = [
    "POISONED_TOPICS",
    "POISON_KINDS",
    "Poison",
    "PoisonWriter",
    "StreamGroup",
    "StreamHolder",
    "StreamPlan",
    "retry_delay",
]
