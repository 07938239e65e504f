"""Chaos drills (issue #24): the broker, a chain node and FerretDB, each SIGKILLed while a
hospital anchors a steady stream of versions, right after a burst of them, with the stack's own
supervisor (what ``make up`` runs) bringing it back.

Afterwards: every version that got a promise receipt is on the sealed log, no entry id and no
leaf is on it twice, and the three nodes are on the same root at the same tree size, that root
recomputed here from the entries themselves; every other process answered SERVING on every
health poll during the drill and was never restarted; the supervisor said one line for the exit
and one for the restart; versions are promised again after the restart. In the node drill the
two other nodes go on sealing, with their quorum of two, before the supervisor has even started
the third again.

Each drill ends with the stack healthy (:meth:`Platform.heal` in ``finally``), and the drills
run after every other end-to-end test of the session (tests/e2e/conftest.py).
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chain.entry import read_body
from chain.hashing import leaf_hash
from chain.tiles import MemoryHashStore
from sdk.anchoring import HospitalClient
from services.platform.caller import Role
from swiftchain.chain.v1 import chain_service_pb2 as chain_pb
from swiftchain.chain.v1 import chain_service_pb2_grpc
from tests.e2e.platform import Platform, Principal, wait_for

pytestmark = pytest.mark.e2e

#: Versions each drill streams, BATCH at a time every PAUSE seconds (at most 40 a second).
VERSIONS = 2_000
BATCH = 10
PAUSE = 0.25
#: Versions promised before the kill.
KILL_AFTER = 400
#: Versions anchored in one call just before the kill, so that the nodes, the services and the
#: database are busy with them when it comes: a process that was waiting on the killed one
#: then has work in flight, not only idle connections.
BURST = 1_000
SUBJECT = "pt-AAAAAAAAAAAAAAAAAAAAAA"
NODES = ("hospital-a", "hospital-b", "hospital-c")
#: The node the drills read the log from (never the one they kill).
READER = "hospital-b"
#: How long a health check may take before it counts as not answering.
HEALTH_DEADLINE = 5.0
#: What a hospital may hear while a backend restarts: try again (the service said so, or the
#: call outlived the hospital's deadline while the service waited for the broker).
ACCEPTABLE_REFUSALS = {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


class Load:
    """A hospital anchoring :data:`VERSIONS` versions at a bounded rate, in a thread of its
    own, and more in one call when told (:meth:`anchor`); what each call got is kept (promise
    receipts by entry id, with when they came)."""

    def __init__(self, client: HospitalClient, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._lock = threading.Lock()
        self._promised: dict[str, float] = {}
        self.refused = 0
        self.errors: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"load {prefix}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def running(self) -> bool:
        return self._thread.is_alive()

    def promised(self) -> dict[str, float]:
        """Entry id -> the monotonic time its promise receipt came back."""
        with self._lock:
            return dict(self._promised)

    def _run(self) -> None:
        for start in range(0, VERSIONS, BATCH):
            if self._stop.wait(PAUSE):
                return
            self.anchor(start, BATCH, timeout=20)

    def anchor(self, first: int, count: int, timeout: float) -> None:
        """Anchor versions ``first`` … ``first + count - 1`` in one call and keep what each
        got (a call that fails refuses them all)."""
        drafts = [
            self._client.record_version(
                f"{self._prefix}-{i}", 1, f"{self._prefix} {i}".encode(), subject_id=SUBJECT
            )
            for i in range(first, first + count)
        ]
        try:
            results = self._client.anchor(drafts, timeout=timeout)
        except grpc.RpcError as error:
            with self._lock:
                self.refused += len(drafts)
                self.errors[error.code().name] += 1
            return
        except Exception as error:  # kept, so that the drill says what the load met
            with self._lock:
                self.refused += len(drafts)
                self.errors[type(error).__name__] += 1
            return
        now = time.monotonic()
        with self._lock:
            for result in results:
                if result.WhichOneof("outcome") == "receipt":
                    self._promised[result.receipt.entry_id] = now
                else:
                    self.refused += 1
                    self.errors[_CODE_NAMES.get(result.error.code, "UNKNOWN")] += 1


class Watch:
    """Until stopped, polls every gRPC process but ``victim`` for its health (every 0.5 s) and
    every node but ``victim`` for its sealed tree size (every 0.1 s); each answer is kept with
    the monotonic time it came."""

    def __init__(self, platform: Platform, victim: str) -> None:
        admin = platform.admin
        names = [p.name for p in platform.stack.grpc_processes if p.name != victim]
        self._health = {
            name: health_pb2_grpc.HealthStub(platform.channel(admin, name)) for name in names
        }
        self._chain = {
            node: chain_service_pb2_grpc.ChainServiceStub(platform.channel(admin, node))
            for node in NODES
            if node != victim
        }
        #: (time, process, SERVING / NOT_SERVING / the gRPC code of a failed check)
        self.health: list[tuple[float, str, str]] = []
        #: (time, node, sealed tree size)
        self.sizes: list[tuple[float, str, int]] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._poll_health, name="watch health", daemon=True),
            threading.Thread(target=self._poll_sizes, name="watch sizes", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _poll_health(self) -> None:
        request = health_pb2.HealthCheckRequest()
        while not self._stop.wait(0.5):
            for name, stub in self._health.items():
                try:
                    status = health_pb2.HealthCheckResponse.ServingStatus.Name(
                        stub.Check(request, timeout=HEALTH_DEADLINE).status
                    )
                except grpc.RpcError as error:
                    status = error.code().name
                self.health.append((time.monotonic(), name, status))

    def _poll_sizes(self) -> None:
        request = chain_pb.GetCheckpointRequest()
        while not self._stop.wait(0.1):
            for node, stub in self._chain.items():
                try:
                    size = stub.GetCheckpoint(request, timeout=2).checkpoint.tree_size
                except grpc.RpcError:
                    continue
                self.sizes.append((time.monotonic(), node, size))

    def not_serving(self) -> list[str]:
        """Every poll that did not answer SERVING, as ``process: status``."""
        return [f"{name}: {status}" for _, name, status in self.health if status != "SERVING"]

    def sealed_between(self, node: str, begin: float, end: float) -> tuple[int, int]:
        """``node``'s sealed tree size as last seen at ``begin`` and as last seen before
        ``end``."""
        before = [size for at, n, size in self.sizes if n == node and at <= begin]
        during = [size for at, n, size in self.sizes if n == node and begin < at < end]
        first = before[-1] if before else 0
        return first, max(during, default=first)


class SealedLog:
    """The sealed log as :data:`READER` serves it, read with GetEntries and kept (the drills
    only read what was sealed since the last one): entry ids, leaf hashes, and the root
    recomputed from them."""

    def __init__(self, platform: Platform) -> None:
        self._stub = chain_service_pb2_grpc.ChainServiceStub(
            platform.channel(platform.admin, READER)
        )
        self.ids: list[str] = []
        self.leaves: list[bytes] = []
        self.hashes = MemoryHashStore()

    @property
    def size(self) -> int:
        return len(self.leaves)

    def sealed(self) -> chain_pb.SealedCheckpoint:
        """The reader's latest sealed checkpoint."""
        return self._stub.GetCheckpoint(chain_pb.GetCheckpointRequest(), timeout=10).checkpoint

    def read_to(self, size: int) -> None:
        """Read the entries up to ``size`` (as far as is sealed)."""
        while self.size < size:
            page = self._stub.GetEntries(
                chain_pb.GetEntriesRequest(start=self.size, end=size), timeout=30
            )
            if not page.entries:
                return
            for entry in page.entries:
                self.ids.append(read_body(entry).entry_id)
                self.leaves.append(leaf_hash(entry))
            self.hashes.extend(self.leaves[-len(page.entries) :])


@pytest.fixture(scope="module")
def chaos_hospital(platform: Platform) -> Principal:
    hospital = platform.register_organization("chaos hospital", Role.HOSPITAL, "hospital-chaos")
    platform.wait_key_active(hospital, hospital.id, hospital.key_id)
    return hospital


@pytest.fixture(scope="module")
def sealed_log(platform: Platform) -> SealedLog:
    return SealedLog(platform)


@dataclass
class Drill:
    """What a drill saw."""

    killed_at: float
    restarted_at: float
    watch: Watch


def checkpoints(platform: Platform) -> dict[str, tuple[int, bytes]]:
    """Every node's latest sealed (tree size, root hash)."""
    seen = {}
    for node in NODES:
        with platform.channel(platform.admin, node) as channel:
            checkpoint = (
                chain_service_pb2_grpc.ChainServiceStub(channel)
                .GetCheckpoint(chain_pb.GetCheckpointRequest(), timeout=10)
                .checkpoint
            )
        seen[node] = (checkpoint.tree_size, checkpoint.root_hash)
    return seen


def node_statuses(platform: Platform) -> dict[str, str]:
    """Every node's own account of where it is (GetNodeStatus), for a failure message."""
    seen = {}
    for node in NODES:
        try:
            with platform.channel(platform.admin, node) as channel:
                status = chain_service_pb2_grpc.ChainServiceStub(channel).GetNodeStatus(
                    chain_pb.GetNodeStatusRequest(), timeout=10
                )
        except grpc.RpcError as error:
            seen[node] = f"no answer: {error.code().name}"
            continue
        seen[node] = (
            f"offset {status.applied_offset}/{status.end_offset}, tree {status.tree_size}, "
            f"height {status.height}, pending {status.pending_entries}, "
            f"sealed {status.last_sealed.tree_size}, unsealed blocks {status.unsealed_blocks}, "
            f"alarms {status.alarm_count}"
        )
    return seen


def alarms(platform: Platform) -> dict[str, list[str]]:
    """Every node's alarms, most recent first, as ``kind: detail``."""
    seen = {}
    for node in NODES:
        with platform.channel(platform.admin, node) as channel:
            listed = chain_service_pb2_grpc.ChainServiceStub(channel).ListAlarms(
                chain_pb.ListAlarmsRequest(page_size=1000), timeout=10
            )
        seen[node] = [
            f"{chain_pb.AlarmKind.Name(alarm.kind)}: {alarm.detail}" for alarm in listed.alarms
        ]
    return seen


def run_drill(platform: Platform, hospital: Principal, sealed_log: SealedLog, victim: str) -> Drill:
    """Anchor under load, SIGKILL ``victim`` once KILL_AFTER versions are promised, let the
    stack's supervisor bring it back, and check what every drill must hold (module
    docstring); the stack is healed whatever happens."""
    platform.heal()  # a drill starts from a healthy stack
    heard = len(platform.said)
    alarmed = {node: len(raised) for node, raised in alarms(platform).items()}
    supervisor = platform.stack.supervisor()
    supervising = threading.Event()
    supervisor_thread = threading.Thread(
        target=supervisor.run, args=(supervising,), name="supervisor", daemon=True
    )
    watch = Watch(platform, victim)
    load = Load(platform.hospital_client(hospital), f"chaos-{victim}-{uuid.uuid4().hex[:8]}")
    supervisor_thread.start()
    try:
        watch.start()
        load.start()
        began = time.monotonic()
        wait_for(
            f"{KILL_AFTER} promised versions",
            lambda: len(load.promised()) >= KILL_AFTER or not load.running(),
            timeout=120,
        )
        assert len(load.promised()) >= KILL_AFTER, f"the load stopped early: {load.errors}"
        load.anchor(VERSIONS, BURST, timeout=120)
        killed_at = time.monotonic()
        platform.kill(victim)
        wait_for(
            f"the supervisor to restart {victim}",
            lambda: supervisor.restarts(victim) >= 1,
            timeout=60,
        )
        restarted_at = next(
            at
            for at, line in platform.said[heard:]
            if re.fullmatch(rf"{re.escape(victim)}\s+restarted \(restart 1\)", line)
        )
        wait_for("the load to end", lambda: not load.running(), timeout=240)
        ended = time.monotonic()
        promised = load.promised()
        after = sum(1 for at in promised.values() if at > restarted_at)
        assert after > 0, (
            f"no version was promised after {victim} was restarted "
            f"({len(promised)} before, {load.refused} refused: {dict(load.errors)})"
        )

        def unsealed() -> set[str]:
            sealed_log.read_to(sealed_log.sealed().tree_size)
            return set(promised) - set(sealed_log.ids)

        _wait_sealed(unsealed, len(promised))
        try:
            wait_for(
                "every node on the same sealed checkpoint",
                lambda: len(set(checkpoints(platform).values())) == 1,
                timeout=120,
            )
        except AssertionError as error:
            raise AssertionError(f"{error}; the nodes say: {node_statuses(platform)}") from None
        [(size, root)] = set(checkpoints(platform).values())
        agreed_at = time.monotonic()
        sealed_log.read_to(size)
        assert sealed_log.size == size
        assert sealed_log.hashes.root() == root, "the nodes' root is not that of their entries"
        twice = [i for i, n in Counter(sealed_log.ids).items() if n > 1]
        assert not twice, f"{len(twice)} entry ids on the log more than once, e.g. {twice[:3]}"
        assert len(set(sealed_log.leaves)) == size, "a leaf is on the log more than once"
        # nothing was wrong with any record or member: a backend away is no reason for alarm
        raised = {
            node: found[: len(found) - alarmed[node]] for node, found in alarms(platform).items()
        }
        assert not any(raised.values()), f"alarms raised during the drill: {raised}"
    finally:
        load.stop()
        watch.stop()
        supervising.set()
        supervisor_thread.join(timeout=30)
        platform.heal()
    assert not watch.not_serving(), (
        f"processes other than {victim} did not answer SERVING: "
        f"{Counter(watch.not_serving()).most_common(5)}"
    )
    assert set(load.errors) <= ACCEPTABLE_REFUSALS, f"the hospital was told {dict(load.errors)}"
    said = [line for _, line in platform.said[heard:]]
    assert len(said) == 2, said
    assert re.fullmatch(
        rf"{re.escape(victim)}\s+exited \(killed by signal 9\) after \d+s; restarting in 1s "
        r"\(crash 1 in a row\)",
        said[0],
    ), said
    assert re.fullmatch(rf"{re.escape(victim)}\s+restarted \(restart 1\)", said[1]), said
    print(  # the drill's figures, for whoever runs it with -s
        f"{victim}: {len(promised):,} versions promised ({after:,} after the restart), "
        f"{load.refused:,} refused {dict(load.errors)}; killed {killed_at - began:.1f}s into the "
        f"load, restarted {restarted_at - killed_at:.1f}s later, load ended {ended - began:.1f}s "
        f"after it began; "
        f"all sealed and agreed {agreed_at - ended:.1f}s after the load, at tree size {size:,}"
    )
    return Drill(killed_at, restarted_at, watch)


def _wait_sealed(unsealed: Callable[[], set[str]], promised: int) -> None:
    """Wait until no promised version is missing from the sealed log; name how many are."""
    missing: set[str] = set()

    def none_missing() -> bool:
        missing.clear()
        missing.update(unsealed())
        return not missing

    try:
        wait_for("every promised version on the sealed log", none_missing, timeout=180)
    except AssertionError as error:
        raise AssertionError(
            f"{len(missing):,} of {promised:,} promised versions are not on the sealed log: {error}"
        ) from None


def test_the_broker_sigkilled_under_load_is_restarted_and_nothing_is_lost(
    platform: Platform, chaos_hospital: Principal, sealed_log: SealedLog
) -> None:
    run_drill(platform, chaos_hospital, sealed_log, "kafka")


def test_a_chain_node_sigkilled_under_load_is_restarted_and_the_others_keep_sealing(
    platform: Platform, chaos_hospital: Principal, sealed_log: SealedLog
) -> None:
    drill = run_drill(platform, chaos_hospital, sealed_log, "hospital-a")
    for node in ("hospital-b", "hospital-c"):
        at_kill, before_restart = drill.watch.sealed_between(
            node, drill.killed_at, drill.restarted_at
        )
        assert before_restart > at_kill, (
            f"{node} sealed nothing between the kill of hospital-a and its restart "
            f"({drill.restarted_at - drill.killed_at:.1f}s later): tree size {at_kill}"
        )
        print(f"{node} sealed from tree size {at_kill:,} to {before_restart:,} meanwhile")


def test_ferretdb_sigkilled_under_load_is_restarted_and_nothing_is_lost(
    platform: Platform, chaos_hospital: Principal, sealed_log: SealedLog
) -> None:
    run_drill(platform, chaos_hospital, sealed_log, "ferretdb")
