"""Swiftchain against immudb on the same work, in the same run, on this machine.

    python bench/immudb_bench.py             # 100,000 writes, 10,000 proofs, 10 rounds
    python bench/immudb_bench.py --quick     # 1,000 writes, 20 proofs, 2 rounds

The work: N commitments (a 32-byte value under a record key) written with verification, then
M inclusion proofs fetched and verified, by the same number of concurrent clients (threads of
this process) on each side:

* **ours**: the whole local platform (Kafka, FerretDB, three chain nodes with quorum 2, the
  services, mTLS). A client anchors 1,000 record versions through one ``AnchorRecords`` stream
  (the SDK signs them with one signature), then asks ``GetReceipt`` (waiting) for the version
  the log ordered last and verifies its evidence bundle offline: once that one is sealed, so is
  every version of the stream ordered before it. A version's latency is its stream's, from
  building the drafts to a verified sealed receipt. Our reads, two ways:

  - **ours** (the figures named ``ours``): ``GetReceipt`` per version through the anchoring
    service, and its evidence bundle (quorum-cosigned checkpoint, inclusion proof) verified
    offline.
  - **mirror**: verified reads from the first chain node's public mirror (C2SP tlog-tiles over
    HTTP, ``chain/node/mirror.py``), proved client side by ``sdk.mirror.VerifiedMirror``. The
    hospital learned each sampled version's leaf index once, from its sealed receipt
    (``GetReceipt`` after the writes, before the read rounds: not timed, not counted; the
    hospital also checks there that the receipt's entry carries its commitment). Each client
    thread keeps what an immudb client keeps, its own verified state: the checkpoint it verified
    (the quorum's signatures checked against the consortium's keys, and a consistency proof from
    the checkpoint it held before), fetched and verified again at the start of every round and
    whenever a leaf is past it; that first read of a round carries it in its latency. (Each
    thread connects and verifies its first checkpoint before the rounds, not counted, as the
    other clients connect in the write warm-up.) A read fetches the entry's bundle and the hash
    tiles its proof needs, builds the inclusion proof, verifies it against the verified
    checkpoint's root, and checks that the entry is the one the hospital wrote (its entry id and
    commitment), so that it proves the right record, not just some leaf; its latency runs from
    the first request to that check. The thread also keeps every tile and entry bundle it
    fetched, across rounds (their bytes never change): immudb's protocol has no equivalent of
    that cache, so the same reads are also measured without it (**mirror_uncached**: every read
    fetches its bundle and tiles again). Both report the mirror requests per read. Server CPU
    counts every process of the platform, as for ``ours``, not only the node that serves the
    mirror.
* **immudb** (``devstack/immudb.py``, default settings, one fsync per commit), through its
  Python client immudb-py: ``verifiedSet`` per key (immudb-py has no batched verified write;
  the server checks at most 30 concurrent calls, so clients stay below that), then
  ``verifiedGet`` per key; each client keeps its own verified state, so every answer is proved
  against what that client saw before (inclusion plus consistency).

The writes run in rounds, ours and immudb's alternating (ABBA), so that a change in the load of
the shared machine hits both; the reads likewise (``ours``, ``mirror``, ``mirror_uncached``,
immudb, then the other way round), over the same random sample of keys, with the same number of
client threads on every path. Since our server CPU counts every process of the platform, busy or
idling, the table is followed by each of our read paths' server CPU per read by process, and by
what the platform's processes spend with no reads running (a few seconds right before and right
after the read rounds).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "protos"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from immudb import ImmudbClient  # noqa: E402

from bench.common import (  # noqa: E402
    bench_hospital,
    bench_platform,
    cpu_seconds,
    figure,
    idle_cores,
    percentile,
    platform_pids,
    rss_bytes,
)
from chain.consortium import ConsortiumConfig  # noqa: E402
from chain.entry import read_body  # noqa: E402
from chain.evidence import parse_bundle  # noqa: E402
from devstack.immudb import DEFAULT_PASSWORD, DEFAULT_USER, Immudb, ensure_immudb  # noqa: E402
from sdk.anchoring import HospitalClient  # noqa: E402
from sdk.mirror import MirrorClient, VerifiedMirror  # noqa: E402

SUBJECT = "pt-BENCHIMMUDBPEERBENCH00"


def record_key(i: int) -> str:
    """The record key of commitment ``i`` (the same on both sides)."""
    return f"rec-{i:07d}"


def document(i: int) -> bytes:
    return b"swiftchain vs immudb, document %d" % i


@dataclass(frozen=True)
class Written:
    """What the hospital keeps of one anchored version: its entry id and commitment."""

    entry_id: str
    commitment: bytes


@dataclass(frozen=True)
class Leaf:
    """A version as the hospital proves it from a mirror: its leaf index (from its sealed
    receipt) and what the entry at that leaf must carry."""

    index: int
    entry_id: str
    commitment: bytes


@dataclass
class Side:
    """What one system did: per-operation latencies (s), wall and server CPU time per phase,
    and the requests its reads made where they are counted (the mirror paths; else 0)."""

    name: str
    write_latency: list[float] = field(default_factory=list)
    read_latency: list[float] = field(default_factory=list)
    write_wall: float = 0.0
    read_wall: float = 0.0
    write_server_cpu: float = 0.0
    read_server_cpu: float = 0.0
    write_client_cpu: float = 0.0
    read_client_cpu: float = 0.0
    read_requests: int = 0
    #: Server CPU seconds of the reads by process name.
    read_cpu_by_process: dict[str, float] = field(default_factory=dict)


def run_threads(work: Sequence[Callable[[], None]]) -> float:
    """Run each callable on its own thread; wall seconds until all ended (first error re-raised)."""
    errors: list[BaseException] = []

    def guarded(job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as error:  # re-raised in the caller's thread
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(job,)) for job in work]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    if errors:
        raise errors[0]
    return wall


def split(items: Sequence[int], parts: int) -> list[list[int]]:
    """``items`` dealt round-robin into ``parts`` lists."""
    return [list(items[k::parts]) for k in range(parts)]


class Ours:
    """Swiftchain's side: anchoring through the platform's SDK client."""

    def __init__(self, client: HospitalClient, batch: int) -> None:
        self.client = client
        self.batch = batch
        self.written: dict[int, Written] = {}
        self._lock = threading.Lock()

    def write_batch(self, indexes: Sequence[int], latencies: list[float]) -> None:
        """Anchor one stream and wait for a verified sealed receipt that covers it."""
        began = time.perf_counter()
        drafts = [
            self.client.record_version(record_key(i), 1, document(i), subject_id=SUBJECT)
            for i in indexes
        ]
        results = self.client.anchor_signed(self.client.sign(drafts), timeout=600)
        failed = [r for r in results if r.WhichOneof("outcome") != "receipt"]
        if failed:
            raise RuntimeError(f"{len(failed)} versions were refused, e.g. {failed[0].error}")
        last = max(results, key=lambda r: r.receipt.ordering_offset)
        deadline = time.monotonic() + 300
        while not self.client.receipt(last.receipt.entry_id, wait=True, timeout=35):
            if time.monotonic() > deadline:
                raise TimeoutError(f"entry {last.receipt.entry_id} not sealed within 300 s")
        elapsed = time.perf_counter() - began
        with self._lock:
            latencies.extend([elapsed] * len(indexes))
            for i, draft, result in zip(indexes, drafts, results, strict=True):
                self.written[i] = Written(result.receipt.entry_id, draft.commitment.value)

    def write(self, indexes: Sequence[int], clients: int, latencies: list[float]) -> float:
        queue = list(reversed(chunks(indexes, self.batch)))
        lock = threading.Lock()

        def worker() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    batch = queue.pop()
                self.write_batch(batch, latencies)

        return run_threads([worker] * clients)

    def read(self, indexes: Sequence[int], clients: int, latencies: list[float]) -> float:
        def worker(mine: list[int]) -> Callable[[], None]:
            def run() -> None:
                for i in mine:
                    began = time.perf_counter()
                    if not self.client.receipt(self.written[i].entry_id, wait=True, timeout=35):
                        raise RuntimeError(f"no sealed receipt for {record_key(i)}")
                    latencies.append(time.perf_counter() - began)

            return run

        return run_threads([worker(part) for part in split(indexes, clients)])

    def leaves(self, indexes: Sequence[int], clients: int) -> dict[int, Leaf]:
        """Each version's leaf, from its sealed receipt (verified, and checked to carry the
        version's entry id and commitment)."""
        found: dict[int, Leaf] = {}

        def worker(mine: list[int]) -> Callable[[], None]:
            def run() -> None:
                for i in mine:
                    written = self.written[i]
                    receipt = self.client.receipt(written.entry_id, wait=True, timeout=35)
                    if not receipt:
                        raise RuntimeError(f"no sealed receipt for {record_key(i)}")
                    [entry] = parse_bundle(receipt).entries
                    body = read_body(entry.entry)
                    if (body.entry_id, body.commitment) != (written.entry_id, written.commitment):
                        raise RuntimeError(f"the receipt of {record_key(i)} is another entry's")
                    found[i] = Leaf(entry.leaf_index, written.entry_id, written.commitment)

            return run

        run_threads([worker(part) for part in split(indexes, clients)])
        return found


class TileKeepingClient(MirrorClient):
    """A mirror client that counts its requests and, with ``keep_tiles``, keeps every tile and
    entry bundle it fetched (the bytes at a tile's path never change; the checkpoint is fetched
    anew every time)."""

    def __init__(self, base_url: str, keep_tiles: bool) -> None:
        super().__init__(base_url)
        self.keep_tiles = keep_tiles
        self.requests = 0
        self._kept: dict[str, bytes] = {}

    def get(self, path: str) -> bytes:
        keep = self.keep_tiles and path != "checkpoint"
        found = self._kept.get(path) if keep else None
        if found is None:
            found = super().get(path)
            self.requests += 1
            if keep:
                self._kept[path] = found
        return found


class MirrorReads:
    """Our reads from a chain node's public mirror: one :class:`~sdk.mirror.VerifiedMirror` (its
    verified checkpoint, its connection and, with ``keep_tiles``, its tiles) per client thread,
    kept across rounds, as each immudb client keeps its state."""

    def __init__(
        self,
        url: str,
        config: ConsortiumConfig,
        clients: int,
        leaves: Mapping[int, Leaf],
        *,
        keep_tiles: bool,
    ) -> None:
        self.leaves = leaves
        self.clients = [TileKeepingClient(url, keep_tiles) for _ in range(clients)]
        self.mirrors = [VerifiedMirror(client, config) for client in self.clients]

    @property
    def requests(self) -> int:
        """Requests made to the mirror so far, by every thread."""
        return sum(client.requests for client in self.clients)

    def warm_up(self) -> None:
        """Connect every thread and verify its first checkpoint, all at once (not counted: the
        immudb clients and ours connect and get their first state in the write warm-up)."""

        def verify_first(mirror: VerifiedMirror) -> Callable[[], None]:
            def run() -> None:
                mirror.refresh()

            return run

        run_threads([verify_first(mirror) for mirror in self.mirrors])
        for client in self.clients:
            client.requests = 0

    def close(self) -> None:
        """Close every thread's connection."""
        for client in self.clients:
            client.close()

    def read_one(self, mirror: VerifiedMirror, i: int) -> None:
        """Prove version ``i`` from the mirror against ``mirror``'s verified checkpoint and check
        that the proved entry is the version the hospital wrote."""
        leaf = self.leaves[i]
        proved = mirror.prove(leaf.index)
        body = read_body(proved.entry)
        if (body.entry_id, body.commitment) != (leaf.entry_id, leaf.commitment):
            raise RuntimeError(f"leaf {leaf.index} from the mirror is not {record_key(i)}")

    def read(self, indexes: Sequence[int], clients: int, latencies: list[float]) -> float:
        def worker(mirror: VerifiedMirror, mine: list[int]) -> Callable[[], None]:
            def run() -> None:
                for n, i in enumerate(mine):
                    began = time.perf_counter()
                    if n == 0:  # a round starts from a freshly verified checkpoint
                        mirror.refresh()
                    self.read_one(mirror, i)
                    latencies.append(time.perf_counter() - began)

            return run

        parts = split(indexes, clients)
        return run_threads(
            [worker(m, p) for m, p in zip(self.mirrors[:clients], parts, strict=True)]
        )


class Theirs:
    """immudb's side: one immudb-py client (with its own verified state) per thread."""

    def __init__(self, address: str, clients: int) -> None:
        self.clients = []
        for _ in range(clients):
            client = ImmudbClient(address)
            client.login(DEFAULT_USER, DEFAULT_PASSWORD)
            self.clients.append(client)

    def write(self, indexes: Sequence[int], clients: int, latencies: list[float]) -> float:
        def worker(client: ImmudbClient, mine: list[int]) -> Callable[[], None]:
            def run() -> None:
                for i in mine:
                    value = hashlib.sha256(document(i)).digest()
                    began = time.perf_counter()
                    state = client.verifiedSet(record_key(i).encode(), value)
                    latencies.append(time.perf_counter() - began)
                    if not state.verified:
                        raise RuntimeError(f"immudb's verifiedSet of {record_key(i)} unverified")

            return run

        parts = split(indexes, clients)
        return run_threads(
            [worker(c, p) for c, p in zip(self.clients[:clients], parts, strict=True)]
        )

    def read(self, indexes: Sequence[int], clients: int, latencies: list[float]) -> float:
        def worker(client: ImmudbClient, mine: list[int]) -> Callable[[], None]:
            def run() -> None:
                for i in mine:
                    began = time.perf_counter()
                    got = client.verifiedGet(record_key(i).encode())
                    latencies.append(time.perf_counter() - began)
                    if not got.verified or got.value != hashlib.sha256(document(i)).digest():
                        raise RuntimeError(f"immudb's verifiedGet of {record_key(i)} failed")

            return run

        parts = split(indexes, clients)
        return run_threads(
            [worker(c, p) for c, p in zip(self.clients[:clients], parts, strict=True)]
        )


def _cpu(pids: Mapping[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def measured(
    side: Side,
    phase: str,
    run: Callable[[list[float]], float],
    server_pids: Mapping[str, int],
) -> None:
    """Run one round of ``phase`` ('write' or 'read') for ``side``, adding to its totals."""
    latencies = side.write_latency if phase == "write" else side.read_latency
    server0, client0 = _cpu(server_pids), cpu_seconds(os.getpid())
    wall = run(latencies)
    spent = {name: seconds - server0[name] for name, seconds in _cpu(server_pids).items()}
    server, client = sum(spent.values()), cpu_seconds(os.getpid()) - client0
    if phase == "read":
        for name, seconds in spent.items():
            side.read_cpu_by_process[name] = side.read_cpu_by_process.get(name, 0.0) + seconds
    setattr(side, f"{phase}_wall", getattr(side, f"{phase}_wall") + wall)
    setattr(side, f"{phase}_server_cpu", getattr(side, f"{phase}_server_cpu") + server)
    setattr(side, f"{phase}_client_cpu", getattr(side, f"{phase}_client_cpu") + client)


class Operation(Protocol):
    """One side's round of writes or reads: ``clients`` threads work through ``indexes``,
    appending each operation's latency; returns the round's wall seconds."""

    def __call__(self, indexes: Sequence[int], clients: int, latencies: list[float]) -> float: ...


def chunks(items: Sequence[int], size: int) -> list[list[int]]:
    """``items`` in consecutive lists of ``size``."""
    return [list(items[s : s + size]) for s in range(0, len(items), size)]


def alternate(
    phase: str,
    rounds: list[list[int]],
    systems: list[tuple[Side, Operation, dict[str, int]]],
    clients: int,
) -> None:
    """Run ``phase`` round by round on every system, in ABBA order (the first system leads the
    even rounds, the last the odd ones)."""
    for r, part in enumerate(rounds):
        for side, operation, pids in systems if r % 2 == 0 else systems[::-1]:
            print(
                f"  {phase} round {r + 1}/{len(rounds)}: {side.name} {len(part):,}...", flush=True
            )
            measured(side, phase, functools.partial(operation, part, clients), pids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 writes, 20 proofs")
    parser.add_argument("--writes", type=int, help="commitments written (default 100,000)")
    parser.add_argument("--reads", type=int, help="inclusion proofs read (default 10,000)")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 10; quick 2)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients a side")
    parser.add_argument("--batch", type=int, default=1000, help="versions per AnchorRecords")
    args = parser.parse_args(argv)
    writes = args.writes or (1_000 if args.quick else 100_000)
    reads = min(args.reads or (20 if args.quick else 10_000), writes)
    rounds = args.rounds or (2 if args.quick else 10)
    clients = args.clients
    if clients >= 30:
        parser.error("immudb refuses more than 30 concurrent calls by default; use --clients < 30")
    ensure_immudb(log=print)
    ours_side, theirs_side = Side("ours"), Side("immudb")
    mirror_sides = [Side("mirror"), Side("mirror_uncached")]
    with bench_platform() as platform, tempfile.TemporaryDirectory(prefix="immudb-") as tmp:
        immudb = Immudb(Path(tmp) / "immudb")
        try:
            print(f"starting immudb on {immudb.address}...")
            immudb.start()
            hospital = bench_hospital(platform)
            ours = Ours(platform.hospital_client(hospital), args.batch)
            theirs = Theirs(immudb.address, clients)
            stack = platform.stack
            our_pids = platform_pids(platform)
            node_names = {name for name, _ in stack.ports.nodes}
            node_pids = [
                p.process.pid
                for p in stack.grpc_processes
                if p.name in node_names and p.process.pid is not None
            ]
            immudb_pid = immudb.process.pid
            assert immudb_pid is not None
            # Warm-up, not counted: connections, first-call costs, the anchoring caches.
            warm = [writes + k for k in range(min(args.batch, 200))]
            ours.write(warm, 1, [])
            theirs.write(warm, 1, [])
            node_rss0 = [rss_bytes(pid) for pid in node_pids]
            immudb_rss0 = rss_bytes(immudb_pid)
            indexes = list(range(writes))
            immudb_pids = {"immudb": immudb_pid}
            writers: list[tuple[Side, Operation, dict[str, int]]] = [
                (ours_side, ours.write, our_pids),
                (theirs_side, theirs.write, immudb_pids),
            ]
            per_round = -(-writes // rounds)
            alternate("write", chunks(indexes, per_round), writers, clients)
            node_growth = [
                rss_bytes(pid) - rss0 for pid, rss0 in zip(node_pids, node_rss0, strict=True)
            ]
            immudb_growth = rss_bytes(immudb_pid) - immudb_rss0
            sample = random.Random(20261203).sample(indexes, reads)
            print(f"  the hospital learns the leaves of {reads:,} versions (not timed)...")
            leaves = ours.leaves(sample, clients)
            mirror_name, mirror_port = stack.ports.mirrors[0]
            mirror_url = f"http://127.0.0.1:{mirror_port}"
            print(f"  mirror reads from {mirror_name}'s mirror, {mirror_url}")
            config = platform.consortium.load()
            mirrors = [
                MirrorReads(mirror_url, config, clients, leaves, keep_tiles=keep)
                for keep in (True, False)
            ]
            for mirror in mirrors:
                mirror.warm_up()
            readers: list[tuple[Side, Operation, dict[str, int]]] = [
                (ours_side, ours.read, our_pids),
                *[(side, m.read, our_pids) for side, m in zip(mirror_sides, mirrors, strict=True)],
                (theirs_side, theirs.read, immudb_pids),
            ]
            per_read = -(-reads // max(1, min(rounds, 5)))
            idle_seconds = 1.0 if args.quick else 5.0
            idle_before = idle_cores(our_pids, idle_seconds)
            try:
                alternate("read", chunks(sample, per_read), readers, clients)
            finally:
                for side, mirror in zip(mirror_sides, mirrors, strict=True):
                    side.read_requests = mirror.requests
                    mirror.close()
            idle_after = idle_cores(our_pids, idle_seconds)
        finally:
            immudb.stop()
    report([ours_side, *mirror_sides], theirs_side, writes, reads, clients)
    report_read_cpu([ours_side, *mirror_sides], reads, idle_before, idle_after)
    report_memory(writes, node_growth, immudb_growth)
    return 0


def ratio_name(side: Side) -> str:
    """The figure prefix of ``side``'s ratios to immudb (``ratio`` for ``ours``, as before)."""
    return "ratio" if side.name == "ours" else f"{side.name}_ratio"


def side_figures(side: Side, phase: str, count: int) -> dict[str, float]:
    """Figure name -> value of ``side`` in ``phase`` ('write' or 'read') of ``count`` ops."""
    latencies = getattr(side, f"{phase}_latency")
    values = {
        "per_s": count / getattr(side, f"{phase}_wall"),
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "server_cpu_ms_per_op": getattr(side, f"{phase}_server_cpu") / count * 1e3,
        "client_cpu_ms_per_op": getattr(side, f"{phase}_client_cpu") / count * 1e3,
    }
    if phase == "read" and side.read_requests:
        values["requests_per_op"] = side.read_requests / count
    return values


#: The unit of each figure.
UNITS = {
    "per_s": "/s",
    "p50_ms": "ms",
    "p99_ms": "ms",
    "server_cpu_ms_per_op": "ms",
    "client_cpu_ms_per_op": "ms",
    "requests_per_op": "requests",
}
#: Column headers of the table, by figure name.
COLUMNS = {
    "per_s": "per s",
    "p50_ms": "p50 ms",
    "p99_ms": "p99 ms",
    "server_cpu_ms_per_op": "server CPU ms",
    "client_cpu_ms_per_op": "client CPU ms",
    "requests_per_op": "requests",
}


def report(ours: Sequence[Side], theirs: Side, writes: int, reads: int, clients: int) -> None:
    """The table (one row per side and phase, then each of ours against immudb), and the
    figure lines for run_all.py: ``<phase>.<side>.<figure>`` and ``<phase>.<ratio>.<figure>``
    (see :func:`ratio_name`). Per-op figures are per write or per read."""
    print()
    print(
        f"immudb_bench: {writes:,} verified writes, {reads:,} verified reads, "
        f"{clients} clients a side"
    )
    print(f"  {'phase':<6} {'side':<24}" + "".join(f"{h:>14}" for h in COLUMNS.values()))
    for phase, count in (("write", writes), ("read", reads)):
        peer = side_figures(theirs, phase, count)
        mine = [
            (side, side_figures(side, phase, count))
            for side in ours
            if getattr(side, f"{phase}_latency")
        ]
        for side, values in [*mine, (theirs, peer)]:
            _row(phase, side.name, values)
            for name, value in values.items():
                figure(f"{phase}.{side.name}.{name}", value, UNITS[name])
        for side, values in mine:
            ratios = {
                name: value / peer[name] for name, value in values.items() if peer.get(name)
            }  # a CPU time below the clock tick reads 0: no ratio then
            _row(phase, f"{side.name}/immudb", ratios)
            for name, ratio in ratios.items():
                figure(f"{phase}.{ratio_name(side)}.{name}", ratio, "x")


def _row(phase: str, label: str, values: Mapping[str, float]) -> None:
    cells = "".join(
        f"{values[name]:>14,.3f}" if name in values else f"{'-':>14}" for name in COLUMNS
    )
    print(f"  {phase:<6} {label:<24}{cells}")


def report_read_cpu(
    ours: Sequence[Side],
    reads: int,
    idle_before: Mapping[str, float],
    idle_after: Mapping[str, float],
) -> None:
    """Where each of our read paths' server CPU went, by process, and how much of it the
    platform spends with no reads at all (its processes' CPU, in cores, over a few seconds
    right before and right after the read rounds)."""
    before, after = sum(idle_before.values()), sum(idle_after.values())
    print(
        f"  our processes with no reads running: {before:.3f} cores before the read rounds, "
        f"{after:.3f} after ("
        + ", ".join(f"{name} {cores:.3f}" for name, cores in _largest(idle_after))
        + ")"
    )
    figure("read.platform_idle_cores_before", before, "cores")
    figure("read.platform_idle_cores_after", after, "cores")
    for side in ours:
        idle_ms = (before + after) / 2 * side.read_wall / reads * 1e3
        by_process = {n: s / reads * 1e3 for n, s in side.read_cpu_by_process.items()}
        print(
            f"  {side.name} server CPU ms per read by process: "
            + ", ".join(f"{name} {ms:.3f}" for name, ms in _largest(by_process))
            + f"; the idle rate over its {side.read_wall:.1f} s of reads: {idle_ms:.3f}"
        )
        figure(f"read.{side.name}.idle_cpu_ms_per_op", idle_ms, "ms")


def _largest(values: Mapping[str, float], count: int = 6) -> list[tuple[str, float]]:
    return sorted(values.items(), key=lambda item: -item[1])[:count]


def report_memory(writes: int, node_growth: list[int], immudb_growth: int) -> None:
    """The chain nodes' and immudb's RSS growth over the writes, and its figure lines."""
    mib = 2**20
    node_mib = sum(node_growth) / len(node_growth) / mib
    node_per_million = node_mib / writes * 1e6
    immudb_per_million = immudb_growth / writes * 1e6 / mib
    print(f"  RSS growth over the writes: chain node {node_mib:,.1f}"
          f" MiB (mean of {len(node_growth)}), immudb {immudb_growth / mib:,.1f} MiB; per million "
          f"entries {node_per_million:,.0f} and {immudb_per_million:,.0f} MiB")  # fmt: skip
    figure("memory.node_rss_growth", node_mib, "MiB")
    figure("memory.immudb_rss_growth", immudb_growth / mib, "MiB")
    figure("memory.node_rss_per_million", node_per_million, "MiB")
    figure("memory.immudb_rss_per_million", immudb_per_million, "MiB")


if __name__ == "__main__":
    raise SystemExit(main())
