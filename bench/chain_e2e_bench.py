"""End-to-end benchmark of the chain: three real nodes (quorum 2) on a real Kafka and FerretDB.

    python bench/chain_e2e_bench.py            # 100,000 entries; 10 s at 1,000 entries/s
    python bench/chain_e2e_bench.py --quick    # 5,000 entries; 3 s at 1,000 entries/s

1. Throughput: entries batch-signed in batches of 10,000 (signed before the clock starts) are
   sent as fast as the producer goes; the figure is entries / (time until a quorum-sealed
   checkpoint covers the last one), as seen by one node's WatchCheckpoints stream.
2. Seal latency: single-signed entries sent at a steady 1,000 entries/s, ten every 10 ms; for
   each entry, the time from its send to the first sealed checkpoint that covers it (p50, p99),
   split at the checkpoint's cut time (the Kafka time of the record that cut the block, in its
   ``cut-time`` line): send -> cut is the wait for a block to end (batch timeout, time-to-cut
   round trip), cut -> seal seen is persisting, cosigning through Kafka and the watch stream.
3. The same at the same rate with each tick's ten entries batch-signed (one signature per ten,
   as a submitter that signs what it has every 10 ms would): the nodes verify a tenth of the
   signatures.
Everything runs on this machine: Kafka, FerretDB, three node processes and this client.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "protos"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from bench.common import bench_servers, figure  # noqa: E402
from chain.checkpoint import parse_checkpoint  # noqa: E402
from chain.note import parse_note  # noqa: E402
from devstack.chain_cluster import MEMBERS, ChainCluster  # noqa: E402
from swiftchain.chain.v1 import chain_service_pb2  # noqa: E402

THROUGHPUT_TARGET = 20_000  # sealed entries/s
P99_TARGET_MS = 150.0


@dataclass(frozen=True)
class Seen:
    """A sealed checkpoint as the watcher first saw it."""

    at: float  # perf_counter
    wall: float  # time.time(), to compare with the cut time
    tree_size: int
    cut_time: float  # the checkpoint's cut-time line, in seconds since the epoch


@dataclass
class Latencies:
    """Per entry, in ms: send -> sealed checkpoint seen, and the two parts of it."""

    total: list[float] = field(default_factory=list)
    send_to_cut: list[float] = field(default_factory=list)
    cut_to_seal: list[float] = field(default_factory=list)


class SealWatcher:
    """Follows one node's sealed checkpoints and records when each size was first seen."""

    def __init__(self, cluster: ChainCluster, node: str) -> None:
        self.seen: list[Seen] = []
        self._cluster = cluster
        self._node = node
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self._cluster.client(self._node) as stub:
            stream = stub.WatchCheckpoints(chain_service_pb2.WatchCheckpointsRequest())
            try:
                for response in stream:
                    at, wall = time.perf_counter(), time.time()
                    text = parse_note(response.checkpoint.note.encode()).text
                    self.seen.append(
                        Seen(
                            at,
                            wall,
                            response.checkpoint.tree_size,
                            parse_checkpoint(text).cut_time_ms / 1000,
                        )
                    )
                    if self._stop.is_set():
                        stream.cancel()
                        return
            except grpc.RpcError:
                return  # the node stopped at the end of the run

    def wait_size(self, size: int, timeout: float) -> float:
        """perf_counter time at which ``size`` was first covered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for seen in self.seen:
                if seen.tree_size >= size:
                    return seen.at
            time.sleep(0.005)
        raise TimeoutError(f"size {size} not sealed within {timeout}s")

    def stop(self) -> None:
        self._stop.set()


def throughput(cluster: ChainCluster, watcher: SealWatcher, base: int, count: int) -> float:
    batches = []
    for start in range(0, count, 10_000):
        bodies = [cluster.record_body() for _ in range(min(10_000, count - start))]
        batches.append(cluster.hospital.sign_batch(bodies))
    began = time.perf_counter()
    for entries in batches:
        cluster.submit(entries)
    sealed_at = watcher.wait_size(base + count, timeout=600)
    return count / (sealed_at - began)


def latency(
    cluster: ChainCluster,
    watcher: SealWatcher,
    base: int,
    rate: int,
    seconds: float,
    *,
    batch_signed: bool = False,
) -> Latencies:
    total = int(rate * seconds)
    per_tick = max(1, rate // 100)  # send every 10 ms
    bodies = [cluster.record_body() for _ in range(total)]
    if batch_signed:
        entries = [
            entry
            for i in range(0, total, per_tick)
            for entry in cluster.hospital.sign_batch(bodies[i : i + per_tick])
        ]
    else:
        entries = [cluster.hospital.sign_entry(body) for body in bodies]
    sent: list[float] = []  # time.time() of each entry's send
    began = time.perf_counter()
    for i in range(0, total, per_tick):
        target = began + i / rate
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        chunk = entries[i : i + per_tick]
        now = time.time()
        cluster.submit(chunk)
        sent.extend([now] * len(chunk))
    watcher.wait_size(base + total, timeout=120)
    seals = sorted(watcher.seen, key=lambda seen: seen.tree_size)
    result = Latencies()
    pointer = 0
    for i, sent_at in enumerate(sent):
        size_needed = base + i + 1
        while seals[pointer].tree_size < size_needed:
            pointer += 1
        seal = seals[pointer]
        result.total.append((seal.wall - sent_at) * 1000)
        result.send_to_cut.append((seal.cut_time - sent_at) * 1000)
        result.cut_to_seal.append((seal.wall - seal.cut_time) * 1000)
    return result


def p50_p99(values: list[float]) -> tuple[float, float]:
    """Median and 99th percentile."""
    return statistics.median(values), statistics.quantiles(values, n=100)[98]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run, for the test suite")
    parser.add_argument("--entries", type=int, default=None)
    parser.add_argument("--rate", type=int, default=1000)
    args = parser.parse_args(argv)
    count = args.entries or (5_000 if args.quick else 100_000)
    seconds = 3.0 if args.quick else 10.0
    with (
        tempfile.TemporaryDirectory(prefix="swiftchain-bench-") as tmp,
        bench_servers(Path(tmp)) as (bootstrap, mongo_uri),
    ):
        cluster = ChainCluster(
            Path(tmp) / "cluster", bootstrap, mongo_uri, batch_max=2000, batch_timeout_ms=20
        )
        try:
            cluster.start_all()
            cluster.submit([cluster.hospital_key_entry()])
            cluster.wait_sealed_size(MEMBERS[0], 1)
            watcher = SealWatcher(cluster, MEMBERS[0])
            rate = throughput(cluster, watcher, 1, count)
            for member in MEMBERS:  # let every node catch up before measuring latency
                cluster.wait_sealed_size(member, 1 + count, timeout=600)
            single = latency(cluster, watcher, 1 + count, args.rate, seconds)
            base = 1 + count + len(single.total)
            batched = latency(cluster, watcher, base, args.rate, seconds, batch_signed=True)
            watcher.stop()
        finally:
            cluster.stop_all()
    p50, p99 = p50_p99(single.total)
    figure("sealed_per_s", rate, "entries/s")
    figure("seal_p50_ms", p50, "ms")
    figure("seal_p99_ms", p99, "ms")
    rows = [("single-signed", single), ("batch-signed by 10", batched)]
    for prefix, result in (("seal", single), ("seal_batch_signed", batched)):
        for part, values in (
            ("send_to_cut", result.send_to_cut),
            ("cut_to_seal", result.cut_to_seal),
        ):
            low, high = p50_p99(values)
            figure(f"{prefix}_{part}_p50_ms", low, "ms")
            figure(f"{prefix}_{part}_p99_ms", high, "ms")
        if result is batched:
            low, high = p50_p99(result.total)
            figure(f"{prefix}_p50_ms", low, "ms")
            figure(f"{prefix}_p99_ms", high, "ms")
    print(f"{'benchmark':<66} {'figure':>16}  target")
    print(
        f"{'sealed entries/s, batched (' + format(count, ',') + ' entries)':<66} "
        f"{rate:>16,.0f}  >= {THROUGHPUT_TARGET:,}"
    )
    for label, result in rows:
        at = f"at {args.rate} entries/s, {label} (ms)"
        total = p50_p99(result.total)
        print(
            f"{'seal latency p50 / p99 ' + at:<66} {total[0]:>7.1f} / {total[1]:>6.1f}  "
            f"p99 <= {P99_TARGET_MS:.0f}"
        )
        for part, values in (
            ("send -> cut", result.send_to_cut),
            ("cut -> seal seen", result.cut_to_seal),
        ):
            low, high = p50_p99(values)
            print(f"{'  of which ' + part:<66} {low:>7.1f} / {high:>6.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
