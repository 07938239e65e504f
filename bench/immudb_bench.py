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
  building the drafts to a verified sealed receipt. Reading: ``GetReceipt`` per version and its
  evidence bundle (quorum-cosigned checkpoint, inclusion proof) verified offline.
* **immudb** (``devstack/immudb.py``, default settings, one fsync per commit), through its
  Python client immudb-py: ``verifiedSet`` per key (immudb-py has no batched verified write;
  the server checks at most 30 concurrent calls, so clients stay below that), then
  ``verifiedGet`` per key; each client keeps its own verified state, so every answer is proved
  against what that client saw before (inclusion plus consistency).

The writes run in rounds, ours and immudb's alternating (ABBA), so that a change in the load of
the shared machine hits both; the reads likewise, over the same random sample of keys.
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
from collections.abc import Callable, Sequence
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
    percentile,
    rss_bytes,
)
from devstack.immudb import DEFAULT_PASSWORD, DEFAULT_USER, Immudb, ensure_immudb  # noqa: E402
from sdk.anchoring import HospitalClient  # noqa: E402

SUBJECT = "pt-BENCHIMMUDBPEERBENCH00"


def record_key(i: int) -> str:
    """The record key of commitment ``i`` (the same on both sides)."""
    return f"rec-{i:07d}"


def document(i: int) -> bytes:
    return b"swiftchain vs immudb, document %d" % i


@dataclass
class Side:
    """What one system did: per-operation latencies (s), wall and server CPU time per phase."""

    name: str
    write_latency: list[float] = field(default_factory=list)
    read_latency: list[float] = field(default_factory=list)
    write_wall: float = 0.0
    read_wall: float = 0.0
    write_server_cpu: float = 0.0
    read_server_cpu: float = 0.0
    write_client_cpu: float = 0.0
    read_client_cpu: float = 0.0


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
        self.entry_ids: dict[int, str] = {}
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
            for i, result in zip(indexes, results, strict=True):
                self.entry_ids[i] = result.receipt.entry_id

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
                    if not self.client.receipt(self.entry_ids[i], wait=True, timeout=35):
                        raise RuntimeError(f"no sealed receipt for {record_key(i)}")
                    latencies.append(time.perf_counter() - began)

            return run

        return run_threads([worker(part) for part in split(indexes, clients)])


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


def _cpu(pids: Sequence[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def measured(
    side: Side,
    phase: str,
    run: Callable[[list[float]], float],
    server_pids: Sequence[int],
) -> None:
    """Run one round of ``phase`` ('write' or 'read') for ``side``, adding to its totals."""
    latencies = side.write_latency if phase == "write" else side.read_latency
    server0, client0 = _cpu(server_pids), cpu_seconds(os.getpid())
    wall = run(latencies)
    server, client = _cpu(server_pids) - server0, cpu_seconds(os.getpid()) - client0
    setattr(side, f"{phase}_wall", getattr(side, f"{phase}_wall") + wall)
    setattr(side, f"{phase}_server_cpu", getattr(side, f"{phase}_server_cpu") + server)
    setattr(side, f"{phase}_client_cpu", getattr(side, f"{phase}_client_cpu") + client)


class System(Protocol):
    """One side's client: runs a round of writes or reads, appending each operation's latency;
    returns the round's wall seconds."""

    def write(self, indexes: Sequence[int], clients: int, latencies: list[float]) -> float: ...

    def read(self, indexes: Sequence[int], clients: int, latencies: list[float]) -> float: ...


def chunks(items: Sequence[int], size: int) -> list[list[int]]:
    """``items`` in consecutive lists of ``size``."""
    return [list(items[s : s + size]) for s in range(0, len(items), size)]


def alternate(
    phase: str, rounds: list[list[int]], systems: list[tuple[Side, System, list[int]]], clients: int
) -> None:
    """Run ``phase`` round by round on every system, in ABBA order (the first system leads the
    even rounds, the last the odd ones)."""
    for r, part in enumerate(rounds):
        for side, system, pids in systems if r % 2 == 0 else systems[::-1]:
            print(
                f"  {phase} round {r + 1}/{len(rounds)}: {side.name} {len(part):,}...", flush=True
            )
            run = system.write if phase == "write" else system.read
            measured(side, phase, functools.partial(run, part, clients), pids)


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
    with bench_platform() as platform, tempfile.TemporaryDirectory(prefix="immudb-") as tmp:
        immudb = Immudb(Path(tmp) / "immudb")
        try:
            print(f"starting immudb on {immudb.address}...")
            immudb.start()
            hospital = bench_hospital(platform)
            ours = Ours(platform.hospital_client(hospital), args.batch)
            theirs = Theirs(immudb.address, clients)
            stack = platform.stack
            ours_pids = [stack.kafka.process.pid, stack.mongo.process.pid] + [
                p.process.pid for p in stack.grpc_processes
            ]
            our_pids = [pid for pid in ours_pids if pid is not None]
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
            systems: list[tuple[Side, System, list[int]]] = [
                (ours_side, ours, our_pids),
                (theirs_side, theirs, [immudb_pid]),
            ]
            per_round = -(-writes // rounds)
            alternate("write", chunks(indexes, per_round), systems, clients)
            node_growth = [
                rss_bytes(pid) - rss0 for pid, rss0 in zip(node_pids, node_rss0, strict=True)
            ]
            immudb_growth = rss_bytes(immudb_pid) - immudb_rss0
            sample = random.Random(20261203).sample(indexes, reads)
            per_read = -(-reads // max(1, min(rounds, 5)))
            alternate("read", chunks(sample, per_read), systems, clients)
        finally:
            immudb.stop()
    report(ours_side, theirs_side, writes, reads, clients, node_growth, immudb_growth)
    return 0


def report(
    ours: Side,
    theirs: Side,
    writes: int,
    reads: int,
    clients: int,
    node_growth: list[int],
    immudb_growth: int,
) -> None:
    """The table, and the figure lines for run_all.py."""
    rows: list[tuple[str, str, float, float, str]] = []
    for phase, count in (("write", writes), ("read", reads)):
        ours_rate = count / getattr(ours, f"{phase}_wall")
        theirs_rate = count / getattr(theirs, f"{phase}_wall")
        rows.append((phase, "per_s", ours_rate, theirs_rate, "/s"))
        for p in (50, 99):
            rows.append(
                (
                    phase,
                    f"p{p}_ms",
                    percentile(getattr(ours, f"{phase}_latency"), p) * 1e3,
                    percentile(getattr(theirs, f"{phase}_latency"), p) * 1e3,
                    "ms",
                )
            )
        rows.append(
            (
                phase,
                "server_cpu_ms_per_op",
                getattr(ours, f"{phase}_server_cpu") / count * 1e3,
                getattr(theirs, f"{phase}_server_cpu") / count * 1e3,
                "ms",
            )
        )
        rows.append(
            (
                phase,
                "client_cpu_ms_per_op",
                getattr(ours, f"{phase}_client_cpu") / count * 1e3,
                getattr(theirs, f"{phase}_client_cpu") / count * 1e3,
                "ms",
            )
        )
    print()
    print(
        f"immudb_bench: {writes:,} verified writes, {reads:,} verified reads, "
        f"{clients} clients a side"
    )
    print(f"  {'phase':<6} {'figure':<22} {'ours':>12} {'immudb':>12} {'ours/immudb':>12}")
    for phase, name, mine, peer, unit in rows:
        ratio = mine / peer if peer else float("nan")
        print(f"  {phase:<6} {name:<22} {mine:>12,.2f} {peer:>12,.2f} {ratio:>12.2f}")
        figure(f"{phase}.ours.{name}", mine, unit)
        figure(f"{phase}.immudb.{name}", peer, unit)
        if peer:  # a CPU time below the clock tick reads 0: no ratio then
            figure(f"{phase}.ratio.{name}", ratio, "x")
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
